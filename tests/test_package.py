"""The package's import contract: the pure core loads no Flax, Orbax, tqdm or extra; the
extras that ``_extras.require`` names are the ones pyproject.toml declares."""

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

from stablejax import _extras

HEAVY = ("flax", "orbax", "sklearn", "tqdm", "matplotlib", "h5py")


STATEMENTS = [
    "import stablejax",
    "import stablejax.transforms",
    "import stablejax as sj; sj.adam(1e-3); sj.reduce_on_plateau()",
]


@pytest.mark.parametrize("statement", STATEMENTS)
def test_the_pure_core_imports_nothing_heavy(statement):
    code = f"{statement}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert not [name for name in HEAVY if f"'{name}'" in loaded], loaded


def test_lazy_names_resolve_to_their_modules():
    import stablejax as sj
    from stablejax import loop, train

    assert sj.fit is loop.fit is train.fit
    assert sj.nn.mlp is __import__("stablejax.nn", fromlist=["mlp"]).mlp
    assert {"fit", "nn", "train", "checkpoint", "callbacks"} <= set(dir(sj))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = sj.no_such_name


ROOT = pathlib.Path(__file__).parents[1]


def requirement_names(requirements):
    return {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower() for r in requirements}


def declared():
    """pyproject.toml's core requirement names and each extra's."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return (requirement_names(project["dependencies"]),
            {name: requirement_names(r) for name, r in extras.items()})


@pytest.mark.parametrize("module, extra", sorted(_extras.EXTRAS.items()))
def test_the_extra_require_names_installs_the_module(module, extra):
    core, extras = declared()
    # The distribution that installs the import name, as pip recorded it here.
    (distribution,) = importlib.metadata.packages_distributions()[module]
    assert distribution.lower() in extras[extra] & extras["all"] & extras["test"]
    assert distribution.lower() not in core


def test_chex_is_a_test_dependency_only():
    core, extras = declared()
    assert "chex" in extras["test"]
    assert "chex" not in core
    sources = [p for p in (ROOT / "stablejax").rglob("*.py")
               if re.search(r"^\s*(import|from) chex\b", p.read_text(), re.M)]
    assert sources == []
