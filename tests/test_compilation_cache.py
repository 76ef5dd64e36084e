"""The persistent compilation cache: where it lives, how it turns off, that a rerun hits it."""

import json
import os
import subprocess
import sys

import jax
import pytest

from stablejax import compilation_cache

# One small fit in a fresh process; prints how many compiled programs it read from the
# persistent cache, counted by JAX's own monitoring event.
FIT = """
import json, sys
from jax import monitoring
hits = []
monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits"
    else None)
import stablejax as sj
from flax import nnx
data = sj.data.synthetic_classification(50, num_features=4, num_classes=3)
model = sj.nn.mlp([8], input_shape=(4,), output_size=3, rngs=nnx.Rngs(0))
history = sj.fit(model, sj.adam(1e-2), data, epochs=2, batch_size=16, verbose=0,
                 validation_data=data, compilation_cache=sys.argv[1] == "on")
print(json.dumps({"hits": len(hits), "loss": history.history["loss"]}))
"""


def _fit_in_new_process(env: dict, cache: str = "on") -> dict:
    out = subprocess.run([sys.executable, "-c", FIT, cache], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.slow
def test_a_second_run_reads_its_programs_from_the_cache(tmp_path):
    env = dict(os.environ, STABLEJAX_CACHE_DIR=str(tmp_path / "cache"))
    first = _fit_in_new_process(env)
    assert first["hits"] == 0
    assert any((tmp_path / "cache").iterdir())
    second = _fit_in_new_process(env)
    assert second["hits"] >= 2  # the train call and the evaluation at least
    assert second["loss"] == first["loss"]  # a cached program computes the same numbers
    off = _fit_in_new_process(env, cache="off")
    assert off["hits"] == 0


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STABLEJAX_CACHE_DIR", str(tmp_path / "mine"))
    assert compilation_cache.default_directory() == tmp_path / "mine"
    for off in ("off", "0", "False", "no", ""):
        monkeypatch.setenv("STABLEJAX_CACHE_DIR", off)
        assert compilation_cache.default_directory() is None
        assert compilation_cache.enable() is None
    monkeypatch.delenv("STABLEJAX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jax.config.jax_compilation_cache_dir is None  # the tests never set one
    assert compilation_cache.default_directory() == tmp_path / "xdg" / "stablejax" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))
    try:  # a directory the user gave JAX is kept
        assert compilation_cache.default_directory() == tmp_path / "users"
    finally:
        jax.config.update("jax_compilation_cache_dir", None)


def test_an_unwritable_directory_turns_the_cache_off(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert compilation_cache.enable(blocker / "cache") is None


@pytest.mark.parametrize("flag, written", [([], True), (["--no-compilation-cache"], False)])
def test_the_command_writes_the_cache_unless_told_not_to(tmp_path, flag, written):
    cache = tmp_path / "cache"
    env = dict(os.environ, STABLEJAX_CACHE_DIR=str(cache))
    subprocess.run([sys.executable, "-m", "stablejax.cli", "train", "--data", "synthetic",
                    "--hidden", "8", "--epochs", "1", "--quiet", *flag], env=env, check=True,
                   capture_output=True)
    assert (cache.is_dir() and any(cache.iterdir())) == written
