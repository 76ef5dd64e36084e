"""Optional dependencies: imported on first use, with the extra that installs them named.

The core (Optax transforms, Flax layers, ``fit``) needs none of them::

    pip install stablejax[data]    # scikit-learn: the bundled digits
    pip install stablejax[plots]   # matplotlib: figures of the study and diagnostics
    pip install stablejax[keras]   # h5py: Keras 3 .keras files
    pip install stablejax[all]     # all three (the `stablejax study` command needs them)
"""

from __future__ import annotations

import importlib
from types import ModuleType

# The extra that installs each optional module (by its top-level import name).
EXTRAS = {"sklearn": "data", "matplotlib": "plots", "h5py": "keras"}


def require(module: str, purpose: str) -> ModuleType:
    """Imports ``module`` (e.g. ``"h5py"`` or ``"matplotlib.figure"``) and returns it.

    Raises ``ImportError`` naming ``purpose`` and the extra to install when its package
    is missing.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != top:  # the package is there but broken: its own error is clearer
            raise
        extra = EXTRAS[top]
        raise ImportError(
            f"{purpose} needs {top}, which is not installed: pip install "
            f"'stablejax[{extra}]' (or 'stablejax[all]')"
        ) from None
