"""Every Python snippet of the docs runs: README.md, docs/guide.md, docs/keras.md and
docs/parity.md.

Fenced ```python blocks. The blocks of one file run in order in one namespace (they build
on each other: ``model``, ``rngs``, ``steps``, ...), in a temporary directory, from a
prepared namespace of what the file says the reader has (data arrays, ``n_in``, ``rngs``,
a ``run.keras`` file, ...). Keras code is skipped, as Keras is not a dependency; the rule
(``is_keras``): a block whose code uses the name ``keras`` (comments and strings aside),
or whose label, the line of text before it, says it is Keras's ("Keras:", "Keras (...):").
The numbers of blocks run and skipped per file are asserted, so that a new block is never
skipped silently. The data are tens of samples, and epoch counts are shortened by
textual replacement (``KERAS_SHORTER``, README's ``epochs=10``); each replaced text must
be in the file, so that a changed snippet is noticed.

Inline code of docs/guide.md. Every span that starts with ``sj.`` (tables, lists and
prose) is evaluated with ``eval`` in a namespace of the names the guide assumes
(``guide_names``); the spans that hold ``...`` or are not expressions are listed in
``GUIDE_SKIPPED`` with the reason, and the number evaluated is asserted.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

import stablejax as sj

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"


def python_blocks(name: str) -> list[tuple[str, str]]:
    """``(label, code)`` of every fenced ```python block of ``name``, in order; the label
    is the last line of text before the block."""
    found = re.findall(r"([^\n]*)\n+^```python\n(.*?)^```", (ROOT / name).read_text(),
                       re.S | re.M)
    return [(label.strip(), code) for label, code in found]


def is_keras(label: str, code: str) -> bool:
    """The rule for Keras code: the block uses the name ``keras``, or its label says it is
    Keras's ("Keras:", "Power scheduling. Keras:", "Keras (batch norm ...):"); the latter
    catches Keras code without the name, such as ``layer.trainable = False``."""
    return (label.endswith("Keras:") or label.startswith("Keras (")
            or any(isinstance(node, ast.Name) and node.id == "keras"
                   for node in ast.walk(ast.parse(code))))


def run_blocks(name: str, namespace: dict, shorter: dict[str, str],
               assume: dict[str, dict] | None = None) -> tuple[int, int]:
    """Run the blocks of ``name`` that are not Keras code in ``namespace``, each text of
    ``shorter`` replaced; return the numbers of blocks run and skipped.

    ``assume`` maps a text to the names the block holding it says it assumes in place of
    the file's (e.g. a regression ``model``): that block alone runs with them, in a copy
    of the namespace."""
    assume = assume or {}
    blocks = python_blocks(name)
    for old in [*shorter, *assume]:
        assert any(old in code for _, code in blocks), (name, old)
    ours = [code for label, code in blocks if not is_keras(label, code)]
    for code in ours:
        names = next((names for text, names in assume.items() if text in code), None)
        for old, new in shorter.items():
            code = code.replace(old, new)
        exec(compile(code, name, "exec"), namespace if names is None else {**namespace, **names})
    return len(ours), len(blocks) - len(ours)


def test_guide_and_parity_have_no_code_blocks():
    # parity.md's fenced blocks hold formulas, with no language; the guide's code is inline.
    for name in ("docs/parity.md", "docs/guide.md"):
        assert re.findall(r"^```\S+", (ROOT / name).read_text(), re.M) == [], name


# README's prescription: 2 sigmoid layers, not 20, and 2 seeds, not 3 (the quick budget
# as it is: about a minute on a 2-core CPU).
README_SHORTER = {"epochs=10": "epochs=2", "[32] * 20": "[32] * 2",
                  "validation_data=splits.valid)": "validation_data=splits.valid, seeds=2)"}


@pytest.mark.slow  # trains the digits MLP for 2 epochs, twice; sj.prescribe's quick budget
def test_readme_snippets_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    assert run_blocks("README.md", namespace, README_SHORTER) == (3, 0)
    assert namespace["history"].history["val_accuracy"][-1] > 0.8  # "about 0.98" at 10
    assert (tmp_path / "runs" / "digits" / "epoch_2").is_dir()
    p = namespace["p"]
    assert len(p.baseline.curve) == 5 and p.best.code in capsys.readouterr().out


# keras.md's epoch counts: 10 (clipping, the per-epoch schedule), 20 (its continuation),
# 4 + 16 (transfer learning), 100 (early stopping).
KERAS_SHORTER = {"epochs=10": "epochs=2", "epochs=20": "epochs=3",
                 "epochs=4 + 16": "epochs=1 + 1", "epochs=100": "epochs=3"}


def keras_md_names(tmp_path: Path) -> dict:
    """What docs/keras.md says the reader has: 28x28 images with integer labels
    (``X_train_B`` with binary ones), ``n_in``, ``rngs``; the ``run.keras`` Keras saved
    after 2 epochs on digits ``(x, y)``; model A saved as ``my_model_A``."""
    rng = np.random.default_rng(0)
    images = rng.random((96, 28, 28), np.float32)
    labels = rng.integers(0, 10, 96).astype(np.int32)
    shutil.copy(DATA / "keras_adam.keras", tmp_path / "run.keras")
    digits = np.load(DATA / "keras_digits.npz")
    sj.checkpoint.save_model(tmp_path / "my_model_A",
                             sj.nn.mlp([300, 100], input_shape=(28, 28), rngs=nnx.Rngs(1)))
    return {
        "X_train": images[:32], "y_train": labels[:32],
        "X_valid": images[32:48], "y_valid": labels[32:48],
        "X_train_scaled": images[:32],
        "X_train_B": images[48:80], "y_train_B": labels[48:80] % 2,
        "X_valid_B": images[80:], "y_valid_B": labels[80:] % 2,
        "n_in": 64, "rngs": nnx.Rngs(0),
        "x": digits["pixels"].astype(np.float32) / 16, "y": digits["labels"].astype(np.int32),
    }


@pytest.mark.slow  # trains with fit 8 times, 15 epochs in all
def test_keras_md_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = keras_md_names(tmp_path)
    regression = {  # the clipping block's "`model` a regression network, `y_train` real targets"
        "model": sj.nn.mlp([30], input_shape=(28, 28), output_size=1, output_activation=None,
                           rngs=nnx.Rngs(0)),
        "y_train": np.random.default_rng(1).normal(size=32).astype(np.float32)}
    assert run_blocks("docs/keras.md", namespace, KERAS_SHORTER,
                      assume={'loss="mse"': regression}) == (22, 18)
    # The first block's run, one epoch on from Keras's 2: Keras's 3rd epoch, within
    # tests/test_keras_format.py's bound (relative to each kernel's largest magnitude).
    model, _, _ = sj.keras_format.load("next.keras")
    reference = np.load(DATA / "keras_adam.npz")
    for i in (1, 3):
        layer = model.layers[i]
        assert isinstance(layer, sj.nn.Dense)
        expected = reference[f"keras/epoch3/{i}/0"]  # its kernel
        error = np.max(np.abs(np.asarray(layer.kernel[...]) - expected))
        assert error <= 1e-5 * np.max(np.abs(expected)), (i, error)


def guide_names(tmp_path: Path) -> dict:
    """The names docs/guide.md's inline code assumes, small."""
    rng = np.random.default_rng(0)
    model = sj.nn.mlp([16], input_shape=(8, 8), batch_norm="after", rngs=nnx.Rngs(0))
    model_a = sj.nn.mlp([16, 16], input_shape=(8, 8), rngs=nnx.Rngs(1))
    sj.checkpoint.save_model(tmp_path / "model_a", model_a)
    model_b = sj.transfer.reuse(model_a, sj.nn.Dense(16, 1, activation="sigmoid",
                                                     rngs=nnx.Rngs(2)))
    steps = 4
    return {
        "sj": sj, "n_in": 64, "rngs": nnx.Rngs(0), "n": 16, "shape": 16,
        "scale": 2.0, "mode": "fan_in", "distribution": "normal",
        "model": model, "layer": model.layers[2],
        "x": rng.random((16, 8, 8), np.float32), "y": rng.integers(0, 10, 16).astype(np.int32),
        "dir": str(tmp_path / "model_a"), "model_a": model_a, "model_b": model_b,
        "head": sj.nn.Dense(16, 1, activation="sigmoid", rngs=nnx.Rngs(3)),
        "tx": sj.sgd(), "trainable": sj.transfer.not_matching(sj.transfer.reused_paths(model_a)),
        "steps": steps, "steps_per_epoch": steps, "lr": 0.01, "lr0": 0.01, "s": 20 * steps,
        "fn": lambda epoch: 0.01 * 0.1 ** (epoch / 20),
        "boundaries": [5 * steps, 55 * steps], "values": [0.01, 0.005, 0.001],
        "factor": 0.5, "patience": 5,
    }


GUIDE_SKIPPED = {
    "sj.activations.*": "a wildcard for the module's functions, not an expression",
    "sj.fit(model, tx, (x, y), epochs=...)": "`...` stands for the reader's epochs",
    "sj.fit(..., checkpoint_dir=...)": "`...` stands for the reader's arguments",
    "sj.fit(..., mesh=sj.distributed.data_mesh())": "`...` stands for the reader's arguments",
    "sj.distributed.initialize(...)": "`...` stands for the reader's coordinator and ids",
}


def is_expression(code: str) -> bool:
    """Whether ``code`` parses as one Python expression."""
    try:
        ast.parse(code, mode="eval")
    except SyntaxError:
        return False
    return True


def test_guide_inline_calls_run(tmp_path):
    spans = re.findall(r"`(sj\.[^`]*)`", (ROOT / "docs/guide.md").read_text())
    assert {s for s in spans if "..." in s or not is_expression(s)} == set(GUIDE_SKIPPED)
    evaluated = [s for s in spans if s not in GUIDE_SKIPPED]
    namespace = guide_names(tmp_path)
    failed = {}
    for span in evaluated:
        try:
            eval(compile(span, "docs/guide.md", "eval"), namespace)
        except Exception as error:  # noqa: BLE001 (every failing span is reported)
            failed[span] = repr(error)
    assert failed == {}
    assert len(evaluated) == 54
