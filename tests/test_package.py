"""The package's import contract: the pure core loads no Flax, Orbax, scikit-learn or tqdm."""

import subprocess
import sys

import pytest

HEAVY = ("flax", "orbax", "sklearn", "tqdm", "matplotlib")


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
