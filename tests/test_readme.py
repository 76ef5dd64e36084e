"""The README's quick start runs as written (with fewer epochs)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here trains with fit


def test_quick_start_runs(tmp_path, monkeypatch):
    text = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", text, re.S).group(1)
    assert "epochs=10" in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.replace("epochs=10", "epochs=2"), "README.md", "exec"), namespace)
    assert namespace["history"].history["val_accuracy"][-1] > 0.8
    assert (tmp_path / "runs" / "digits" / "epoch_2").is_dir()
