"""Every script in examples/ runs, with a tiny budget, and learns."""

import re
import runpy
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here trains with fit

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == ["notes_recipe.py"]


def test_notes_recipe_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["notes_recipe.py", "--epochs", "1", "--epochs-b", "1"])
    runpy.run_path(str(EXAMPLES / "notes_recipe.py"), run_name="__main__")
    out = capsys.readouterr().out
    accuracy = {m[0]: float(m[1]) for m in re.findall(r"model (\w) val_accuracy: ([\d.]+)", out)}
    # Ten digit classes after one epoch: well above chance (0.1). Model B's one epoch
    # trains only its new head with SGD(0.01), too little to judge; it must report.
    assert accuracy["A"] > 0.8
    assert 0.0 <= accuracy["B"] <= 1.0
