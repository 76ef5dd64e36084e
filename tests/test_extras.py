"""Without the extras (scikit-learn, matplotlib, h5py) the core works and each use of a
missing one is an ImportError naming the extra that installs it.

Each case runs in a fresh interpreter where the three packages are missing, as on a
machine without them: before ``import stablejax``, every finder on ``sys.meta_path`` is
wrapped so that it finds nothing under their names, so ``import`` raises
``ModuleNotFoundError`` (for ``matplotlib.figure`` too, naming ``matplotlib``) and
``importlib.util.find_spec`` returns None.
"""

import json
import subprocess
import sys

import pytest
from flax import nnx

import stablejax as sj

BLOCKED = ("sklearn", "matplotlib", "h5py")
HIDE = """
import sys

class Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)

sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
"""


def run_without(code: str, blocked=BLOCKED) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter where the ``blocked`` packages are missing."""
    prelude = f"BLOCKED = {blocked!r}\n{HIDE}\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, timeout=300)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


@pytest.mark.parametrize("module", ["sklearn", "matplotlib.figure", "h5py"])
def test_the_packages_are_missing_in_the_subprocess(module):
    code = ("import importlib.util\n"
            f"assert importlib.util.find_spec({module.split('.')[0]!r}) is None\n"
            f"import {module}")
    result = run_without(code)
    top = module.split(".")[0]
    assert last_line(result.stderr) == f"ModuleNotFoundError: No module named {top!r}"


# Three clipped Nadam steps: run without the extras, and here as the reference.
NADAM_STEPS = """
import jax.numpy as jnp, optax
import stablejax as sj
tx = optax.chain(sj.clip_by_global_norm(1.0), sj.nadam(1e-2))
params = {"w": jnp.array([1.0, -2.0, 3.0])}
state = tx.init(params)
for step in range(3):
    updates, state = tx.update({"w": params["w"] * (step + 1)}, state, params)
    params = optax.apply_updates(params, updates)
"""

CORE_CODE = NADAM_STEPS + """
import json
from flax import nnx
data = sj.data.synthetic_classification(512, num_features=8, num_classes=3, seed=0)
model = sj.nn.mlp([16], input_shape=(8,), output_size=3, rngs=nnx.Rngs(0))
history = sj.fit(model, sj.nadam(1e-2), data, epochs=4, batch_size=64, verbose=0)
loaded = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
print(json.dumps([[float(v) for v in params["w"]], history.history["loss"], loaded]))
"""


def test_the_core_and_fit_work_without_the_extras():
    result = run_without(CORE_CODE)
    assert result.returncode == 0, result.stderr
    nadam, losses, loaded = json.loads(last_line(result.stdout))
    # The reference: the same three Nadam steps here, where the extras are installed.
    here: dict = {}
    exec(NADAM_STEPS, here)
    assert nadam == pytest.approx([float(v) for v in here["params"]["w"]], rel=1e-6)
    assert nadam != pytest.approx([1.0, -2.0, 3.0], abs=1e-3)
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0], losses
    assert loaded == []


MODEL = ("from flax import nnx\nimport stablejax as sj\n"
         "model = sj.nn.mlp([4], input_shape=(3,), output_size=2, rngs=nnx.Rngs(0))\n")
MISSING = [
    ("digits", "import stablejax as sj\nsj.data.digits()", "data"),
    ("keras_format.save",
     MODEL + "sj.keras_format.save(sys.argv[1], model, input_shape=(3,))", "keras"),
    ("keras_format.load", "import stablejax as sj\nsj.keras_format.load(sys.argv[1])",
     "keras"),
    ("SignalReport.plot",
     MODEL + "import numpy as np\n"
     "batch = (np.ones((8, 3), np.float32), np.array([0, 1] * 4))\n"
     "sj.diagnostics.signal_propagation(model, batch).plot(sys.argv[2])", "plots"),
]


@pytest.mark.parametrize("code, extra", [c[1:] for c in MISSING], ids=[c[0] for c in MISSING])
def test_a_missing_extra_is_an_import_error_naming_it(code, extra, tmp_path):
    keras_file = tmp_path / "model.keras"  # a real file: the error is h5py's, not the path's
    model = sj.nn.mlp([4], input_shape=(3,), output_size=2, rngs=nnx.Rngs(0))
    sj.keras_format.save(keras_file, model, input_shape=(3,))
    code = f"sys.argv[1:] = [{str(keras_file)!r}, {str(tmp_path / 'signal.png')!r}]\n" + code
    result = run_without(code)
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("ImportError: "), result.stderr
    assert f"pip install 'stablejax[{extra}]'" in last_line(result.stderr)
    assert not (tmp_path / "signal.png").exists()


CLI = [
    ("train-digits", ["train", "--data", "digits", "--epochs", "1"], BLOCKED, "data"),
    ("diagnose-digits", ["diagnose"], ("sklearn",), "data"),
    ("diagnose-plot", ["diagnose", "--data", "synthetic", "--plot", "{out}/s.png"],
     ("matplotlib",), "plots"),
    ("study", ["study", "--out", "{out}/study"], BLOCKED, "plots"),
    ("study-no-sklearn", ["study", "--only", "clip", "--out", "{out}/study"], ("sklearn",),
     "data"),
]


@pytest.mark.parametrize("argv, blocked, extra", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_the_command_names_a_missing_extra_in_one_line(argv, blocked, extra, tmp_path):
    argv = [a.format(out=tmp_path) for a in argv]
    code = f"from stablejax.cli import main\nsys.exit(main({argv!r}))"
    result = run_without(code, blocked)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("stablejax: error: "), result.stderr
    assert f"pip install 'stablejax[{extra}]'" in result.stderr
    assert result.stdout == ""
