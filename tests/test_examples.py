"""Every script in examples/ runs, with a tiny budget, and learns."""

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here trains with fit

EXAMPLES = Path(__file__).parent.parent / "examples"


NUMBERED = sorted(EXAMPLES.glob("[0-9]*.py"))


def test_every_example_is_tested():
    names = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert names == sorted([p.name for p in NUMBERED] + ["notes_recipe.py", "deep_sigmoid.py"])
    assert len(NUMBERED) >= 9


# Examples that configure JAX before importing it run in a fresh interpreter; the others
# in this one (a new interpreter costs seconds of imports per example).
OWN_PROCESS = {"10_data_parallel.py"}


@pytest.mark.parametrize("script", [p for p in NUMBERED if p.name not in OWN_PROCESS],
                         ids=lambda p: p.name)
def test_numbered_example_runs_in_process(script, monkeypatch, capsys):
    monkeypatch.setenv("STABLEJAX_EXAMPLE_EPOCHS", "1")
    monkeypatch.chdir(EXAMPLES.parent)
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("script", [p for p in NUMBERED if p.name in OWN_PROCESS],
                         ids=lambda p: p.name)
def test_numbered_example_runs(script):
    env = dict(os.environ, STABLEJAX_EXAMPLE_EPOCHS="1", STABLEJAX_CACHE_DIR="off")
    root = str(EXAMPLES.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


def test_notes_recipe_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["notes_recipe.py", "--epochs", "1", "--epochs-b", "1"])
    runpy.run_path(str(EXAMPLES / "notes_recipe.py"), run_name="__main__")
    out = capsys.readouterr().out
    accuracy = {m[0]: float(m[1]) for m in re.findall(r"model (\w) val_accuracy: ([\d.]+)", out)}
    # Ten digit classes after one epoch: well above chance (0.1). Model B's one epoch
    # trains only its new head with SGD(0.01), too little to judge; it must report.
    assert accuracy["A"] > 0.8
    assert 0.0 <= accuracy["B"] <= 1.0


def test_deep_sigmoid_defines_a_model_whose_gradients_vanish():
    # The file only defines make_model (for `stablejax prescribe --model`): nothing runs.
    import stablejax as sj

    namespace = runpy.run_path(str(EXAMPLES / "deep_sigmoid.py"))
    model = namespace["make_model"](0)
    digits = sj.data.digits()
    report = sj.diagnostics.signal_propagation(model, (digits.train.x[:256],
                                                       digits.train.y[:256]))
    assert report.verdict == "vanishing"
    assert sum(row.activation == "sigmoid" for row in sj.diagnostics.recommend(model)) == 20
