"""stablejax: the classic recipe for training deep networks stably, in pure JAX.

Initialisers matched to the activation, non-saturating activations, a Keras-semantics
batch norm, gradient clipping, Keras-exact optimizers and learning-rate schedules as
plain Optax transforms, performance scheduling, transfer learning and a ``fit`` loop::

    import optax, stablejax as sj
    tx = optax.chain(sj.clip_by_global_norm(1.0), sj.nadam(1e-3))

Importing the package loads only the pure core (JAX and Optax). The modules that need
Flax, Orbax, scikit-learn, tqdm, matplotlib or h5py (``nn``, ``steps``, ``callbacks``,
``loop``, ``train``, ``checkpoint``, ``data``, ``transfer``, ``diagnostics``, ``cli``,
``sweep``, ``study``, ``keras_format``, ``distributed``) and ``sj.fit`` load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stablejax import (
    activations,
    clipping,
    combine,
    guard,
    initializers,
    losses,
    optimizers,
    plateau,
    schedules,
    stopping,
    transforms,
)
from stablejax.clipping import clip_by_global_norm, clip_by_norm, clip_by_value
from stablejax.combine import switch
from stablejax.guard import SkipNonfiniteState, all_finite, skip_nonfinite
from stablejax.optimizers import (
    adagrad,
    adam,
    current_learning_rate,
    nadam,
    rmsprop,
    set_learning_rate,
    sgd,
)
from stablejax.plateau import (
    ReduceOnPlateauState,
    observe,
    plateau_scale,
    reduce_on_plateau,
)
from stablejax.schedules import (
    exponential_decay,
    one_cycle,
    per_epoch,
    piecewise_constant,
    power_decay,
    warmup,
)
from stablejax.stopping import EarlyStoppingState, early_stopping
from stablejax.transforms import (
    ScaleByAdagradState,
    ScaleByAdamState,
    ScaleByMomentumState,
    ScaleByNadamState,
    ScaleByRmspropState,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_momentum,
    scale_by_nadam,
    scale_by_rmsprop,
)

if TYPE_CHECKING:
    from stablejax import (
        callbacks,
        checkpoint,
        compilation_cache,
        data,
        diagnostics,
        distributed,
        evaluation,
        feeding,
        keras_format,
        loop,
        lr_finder,
        metrics,
        nn,
        prescription,
        remedies,
        resuming,
        steps,
        study,
        sweep,
        train,
        transfer,
    )
    from stablejax.loop import fit
    from stablejax.lr_finder import lr_find
    from stablejax.prescription import prescribe

__version__ = "0.1.0"

# Loaded on first use: they import Flax, Orbax, scikit-learn or tqdm.
_LAZY_MODULES = (
    "callbacks", "checkpoint", "cli", "compilation_cache", "data", "diagnostics", "distributed",
    "evaluation", "feeding", "keras_format", "loop", "lr_finder", "metrics", "nn",
    "prescription", "remedies", "resuming", "steps",
    "study", "sweep", "train", "transfer",
)
_LAZY_NAMES = {"fit": "loop", "lr_find": "lr_finder", "prescribe": "prescription"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"stablejax.{name}")
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f"stablejax.{_LAZY_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stablejax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))


__all__ = [
    "activations",
    "callbacks",
    "checkpoint",
    "clipping",
    "combine",
    "compilation_cache",
    "data",
    "diagnostics",
    "distributed",
    "evaluation",
    "feeding",
    "guard",
    "initializers",
    "keras_format",
    "loop",
    "losses",
    "lr_finder",
    "metrics",
    "nn",
    "optimizers",
    "plateau",
    "prescription",
    "remedies",
    "resuming",
    "schedules",
    "steps",
    "stopping",
    "study",
    "sweep",
    "train",
    "transfer",
    "transforms",
    "SkipNonfiniteState",
    "all_finite",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "skip_nonfinite",
    "adagrad",
    "adam",
    "current_learning_rate",
    "nadam",
    "rmsprop",
    "set_learning_rate",
    "sgd",
    "switch",
    "EarlyStoppingState",
    "ReduceOnPlateauState",
    "early_stopping",
    "observe",
    "plateau_scale",
    "reduce_on_plateau",
    "exponential_decay",
    "one_cycle",
    "per_epoch",
    "piecewise_constant",
    "power_decay",
    "warmup",
    "fit",
    "lr_find",
    "prescribe",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByMomentumState",
    "ScaleByNadamState",
    "ScaleByRmspropState",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_momentum",
    "scale_by_nadam",
    "scale_by_rmsprop",
    "__version__",
]
