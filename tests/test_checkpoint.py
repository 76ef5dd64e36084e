import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stablejax import checkpoint
from stablejax.checkpoint import CheckpointError

REPO = Path(checkpoint.__file__).resolve().parents[1]


class RunState(NamedTuple):
    params: dict
    opt: list
    step: jax.Array
    key: jax.Array


def run_state(seed=0, width=4):
    rng = np.random.default_rng(seed)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, -3.4e38], np.float32)
    return RunState(
        params={
            "layers": [
                {"kernel": jnp.asarray(rng.standard_normal((3, width), np.float32)),
                 "bias": jnp.asarray(special)},
                {"kernel": jnp.asarray(rng.standard_normal((width, 2))).astype(jnp.bfloat16)},
            ],
            "scale": jnp.asarray(rng.standard_normal(2).astype(np.float32)),
        },
        opt=[jnp.int32(seed + 7), {"mu": jnp.asarray(rng.integers(-5, 5, 3), jnp.int32)}],
        step=jnp.asarray(2**31 - 1 - seed, jnp.int32),
        key=jax.random.key_data(jax.random.key(seed)),
    )


def bits(x):
    """The raw bytes of an array, so NaN payloads, -0.0 and bfloat16 compare exactly."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x).tobytes(), np.asarray(x).dtype, np.shape(x)


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert isinstance(y, jax.Array)
        assert bits(x) == bits(y)


def data_files(path):
    """Orbax's array data files inside a checkpoint, largest first."""
    files = [p for p in Path(path).rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


# ---------------------------------------------------------------- round trips


def test_round_trip_is_bitwise_and_keeps_the_pytree_type(tmp_path):
    state = run_state()
    checkpoint.save(tmp_path / "ckpt", state)
    restored = checkpoint.restore(tmp_path / "ckpt", run_state(seed=1))
    assert type(restored) is RunState
    assert restored.params["layers"][1]["kernel"].dtype == jnp.bfloat16
    assert restored.key.dtype == jnp.uint32
    assert_bitwise_equal(state, restored)


def test_typed_prng_key_round_trip(tmp_path):
    state = {"key": jax.random.key(3), "keys": jax.random.split(jax.random.key(4), 5),
             "rbg": jax.random.key(5, impl="rbg")}
    checkpoint.save(tmp_path / "k", state)
    like = {"key": jax.random.key(0), "keys": jax.random.split(jax.random.key(0), 5),
            "rbg": jax.random.key(0, impl="rbg")}
    restored = checkpoint.restore(tmp_path / "k", like)
    assert_bitwise_equal(state, restored)
    assert jax.random.key_impl(restored["rbg"]) == jax.random.key_impl(state["rbg"])
    # Same key, same draws: the restored stream continues the saved one.
    np.testing.assert_array_equal(
        jax.random.normal(restored["key"], (4,)), jax.random.normal(state["key"], (4,))
    )


def test_scalars_numpy_and_abstract_templates(tmp_path):
    state = {"epoch": 3, "lr": np.float32(0.5), "table": np.arange(6, dtype=np.uint32)}
    checkpoint.save(tmp_path / "s", state)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype), state)
    restored = checkpoint.restore(tmp_path / "s", like)
    assert int(restored["epoch"]) == 3 and restored["epoch"].dtype == jnp.int32
    assert restored["lr"].dtype == jnp.float32 and float(restored["lr"]) == 0.5
    np.testing.assert_array_equal(restored["table"], np.arange(6, dtype=np.uint32))


def test_resumed_optax_adam_continues_bitwise(tmp_path):
    # Resuming must be indistinguishable from never stopping: compare with Optax run
    # straight through.
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(3)}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.exponential_decay(
        1e-2, 3, 0.5)))

    @jax.jit
    def step(params, opt_state, i):
        grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1.0)) + 0.1, params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    state = (params, opt.init(params))
    for i in range(3):
        state = step(*state, i)
    checkpoint.save(tmp_path / "adam", {"params": state[0], "opt": state[1]})
    template = {"params": params, "opt": opt.init(params)}
    restored = checkpoint.restore(tmp_path / "adam", template)
    resumed = (restored["params"], restored["opt"])
    for i in range(3, 6):
        state = step(*state, i)
        resumed = step(*resumed, i)
    assert_bitwise_equal(state, resumed)


def test_nnx_state_round_trip(tmp_path):
    from flax import nnx

    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
    saved = nnx.state(model)
    checkpoint.save(tmp_path / "nnx", {"model": saved})
    other = nnx.state(
        nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(1)), nnx.BatchNorm(4, rngs=nnx.Rngs(1)))
    )
    restored = checkpoint.restore(tmp_path / "nnx", {"model": other})
    assert isinstance(restored["model"], nnx.State)
    assert_bitwise_equal(nnx.to_pure_dict(saved), nnx.to_pure_dict(restored["model"]))
    # The template is a template: it is not overwritten.
    kernel = nnx.to_pure_dict(other)["layers"][0]["kernel"]
    assert not np.array_equal(kernel, nnx.to_pure_dict(saved)["layers"][0]["kernel"])
    # The pure-dict form of the same state reads the same checkpoint.
    pure = checkpoint.restore(tmp_path / "nnx", {"model": nnx.to_pure_dict(other)})
    assert_bitwise_equal(nnx.to_pure_dict(saved), pure["model"])


# ---------------------------------------------------------------- errors


def test_existing_path_needs_force(tmp_path):
    checkpoint.save(tmp_path / "c", run_state(0))
    with pytest.raises(FileExistsError, match="force"):
        checkpoint.save(tmp_path / "c", run_state(1))
    checkpoint.save(tmp_path / "c", run_state(1), force=True)
    assert_bitwise_equal(run_state(1), checkpoint.restore(tmp_path / "c", run_state(0)))


def test_empty_state_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        checkpoint.save(tmp_path / "e", {"nothing": ()})


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "absent")):
        checkpoint.restore(tmp_path / "absent", run_state())


def test_shape_mismatch_names_the_leaf(tmp_path):
    state = {"params": {"layers": [{"kernel": jnp.zeros((64, 300))}]}}
    checkpoint.save(tmp_path / "c", state)
    like = {"params": {"layers": [{"kernel": jnp.zeros((784, 300))}]}}
    with pytest.raises(CheckpointError) as info:
        checkpoint.restore(tmp_path / "c", like)
    assert "params/layers/0/kernel: shape (64, 300), expected (784, 300)" in str(info.value)
    assert str(tmp_path / "c") in str(info.value)


def test_dtype_and_structure_mismatch_name_the_leaves(tmp_path):
    checkpoint.save(tmp_path / "c", run_state())
    state = run_state()
    wrong_dtype = state._replace(step=jnp.float32(1.0))
    with pytest.raises(CheckpointError, match="step: dtype int32, expected float32"):
        checkpoint.restore(tmp_path / "c", wrong_dtype)
    extra = state._replace(params={**state.params, "gamma": jnp.ones(2)})
    with pytest.raises(CheckpointError, match="params/gamma is not in the checkpoint"):
        checkpoint.restore(tmp_path / "c", extra)
    fewer = state._replace(opt=state.opt[:1])
    with pytest.raises(CheckpointError, match="opt/1/mu is in the checkpoint, not expected"):
        checkpoint.restore(tmp_path / "c", fewer)


def test_truncated_data_file(tmp_path):
    path = tmp_path / "c"
    checkpoint.save(path, run_state(width=2000))
    target = data_files(path)[0]
    with open(target, "r+b") as f:
        f.truncate(target.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=str(path)):
        checkpoint.restore(path, run_state(width=2000))


def test_overwritten_data_byte(tmp_path):
    # Orbax's storage reads a changed byte of raw float data without complaint; the
    # manifest's checksums must catch it.
    path = tmp_path / "c"
    checkpoint.save(path, run_state(width=2000))
    _flip_byte(path)
    with pytest.raises(CheckpointError, match=str(path)):
        checkpoint.restore(path, run_state(width=2000))


def test_missing_manifest(tmp_path):
    path = tmp_path / "c"
    checkpoint.save(path, run_state())
    (path / "_CHECKPOINT_METADATA").unlink()
    with pytest.raises(CheckpointError, match=str(path)):
        checkpoint.restore(path, run_state())


def _deep_state(width):
    """Twelve blocks of an encoder, with paths as long as real models' (~40 characters)."""
    return {"params": {"encoder": {f"block_{i}": {"attention": {"kernel": jnp.zeros((width, 8))}}
                                   for i in range(12)}}}


def _edit_manifest(path, edit):
    meta = path / "_CHECKPOINT_METADATA"
    content = json.loads(meta.read_text())
    edit(content["custom_metadata"]["leaves"])
    meta.write_text(json.dumps(content))


def _epoch_item(directory, item):
    """Overwrites every file of an epoch checkpoint's JSON item with broken JSON."""
    checkpoint.save_epoch(directory, 1, run_state(), history={"loss": [1.0]},
                          config={"lr": 0.1})
    for f in (directory / "epoch_1" / item).rglob("*"):
        if f.is_file():
            f.write_text("{broken")
    return directory / "epoch_1"


def _unfinished(tmp_path):
    path = tmp_path / "c.orbax-checkpoint-tmp-1"
    path.mkdir()
    return path, lambda: checkpoint.restore(path, run_state())


def _saved(tmp_path, damage, like=None, state=None):
    """A saved checkpoint, damaged by ``damage(path)``, and restoring it into ``like``."""
    path = tmp_path / "c"
    checkpoint.save(path, run_state(width=2000) if state is None else state)
    damage(path)
    like = run_state(width=2000) if like is None else like
    return path, lambda: checkpoint.restore(path, like)


def _flip_byte(path):
    target = data_files(path)[0]
    with open(target, "r+b") as f:
        f.seek(target.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _epoch(tmp_path, item):
    path = _epoch_item(tmp_path / "run", item)
    if item == "history":
        return path, lambda: checkpoint.restore_latest(tmp_path / "run", run_state())
    return path, lambda: checkpoint.saved_config(tmp_path / "run", 1)


# One case per way a checkpoint fails to read: (the checkpoint's path, the failing call).
BROKEN = {
    "missing": lambda t: (t / "absent", lambda: checkpoint.restore(t / "absent", run_state())),
    "unfinished": _unfinished,
    "truncated data file": lambda t: _saved(t, lambda p: data_files(p)[0].write_bytes(
        data_files(p)[0].read_bytes()[:100])),
    # Orbax's error quoted TensorStore's whole spec here: 1,800 characters.
    "missing data file": lambda t: _saved(t, lambda p: [f.unlink() for f in data_files(p)]),
    "flipped byte": lambda t: _saved(t, _flip_byte),
    "no metadata file": lambda t: _saved(t, lambda p: (p / "_CHECKPOINT_METADATA").unlink()),
    "unreadable metadata": lambda t: _saved(
        t, lambda p: (p / "_CHECKPOINT_METADATA").write_text("{broken")),
    "no manifest": lambda t: _saved(t, lambda p: _edit_manifest(p, dict.clear)),
    "no checksum": lambda t: _saved(
        t, lambda p: _edit_manifest(p, lambda leaves: leaves["step"].update(crc32=None))),
    "manifest entries without shapes": lambda t: _saved(
        t, lambda p: _edit_manifest(p, lambda leaves: [e.clear() for e in leaves.values()])),
    "twelve shapes differ": lambda t: _saved(t, lambda p: None, like=_deep_state(784),
                                             state=_deep_state(64)),
    "twelve leaves missing": lambda t: _saved(
        t, lambda p: None, state=_deep_state(64),
        like={"params": {"decoder": _deep_state(64)["params"]["encoder"]}}),
    "broken history": lambda t: _epoch(t, "history"),
    "broken config": lambda t: _epoch(t, "config"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_checkpoint_errors_are_one_short_line_naming_the_path(tmp_path, case, caplog):
    path, call = BROKEN[case](tmp_path)
    with pytest.raises(CheckpointError) as info:
        call()
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message and "tensorstore" not in message.lower()
    # At most 300 characters with a path of 60 (pytest's temporary paths are longer).
    assert len(message.replace(str(path), "p" * 60)) <= 300, message


def test_a_mismatch_names_two_leaves_and_counts_the_rest(tmp_path):
    path, call = BROKEN["twelve shapes differ"](tmp_path)
    with pytest.raises(CheckpointError) as info:
        call()
    assert str(info.value) == (
        f"checkpoint {path} does not match the state given: "
        "params/encoder/block_0/attention/kernel: shape (64, 8), expected (784, 8); "
        "params/encoder/block_1/attention/kernel: shape (64, 8), expected (784, 8) "
        "(and 10 more); build it as the saved one was")


@pytest.mark.parametrize("save", [
    lambda path: checkpoint.save(path / "c", run_state()),
    lambda path: checkpoint.save_epoch(path / "run", 1, run_state()),
], ids=["save", "save_epoch"])
def test_saving_under_a_file_is_refused_before_writing(tmp_path, save):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=f"'{blocker}.*is, or is under, a file"):
        save(blocker)
    assert blocker.read_text() == "" and sorted(tmp_path.iterdir()) == [blocker]


# ---------------------------------------------------------------- per-epoch checkpoints


def test_keep_last_k(tmp_path):
    for epoch in range(1, 6):
        checkpoint.save_epoch(tmp_path, epoch, run_state(epoch), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_4", "epoch_5"]
    assert checkpoint.latest_epoch(tmp_path) == 5
    epoch, state, history = checkpoint.restore_latest(tmp_path, run_state())
    assert epoch == 5 and history is None
    assert_bitwise_equal(run_state(5), state)
    assert_bitwise_equal(run_state(4), checkpoint.restore(tmp_path / "epoch_4", run_state()))


def test_keep_none_keeps_everything_and_going_back_drops_later_epochs(tmp_path):
    for epoch in range(4):
        checkpoint.save_epoch(tmp_path, epoch, run_state(epoch), keep=None)
    assert checkpoint.latest_epoch(tmp_path) == 3
    assert len(list(tmp_path.iterdir())) == 4
    # Resuming from epoch 1 and saving epoch 2 abandons the old epochs 2 and 3.
    checkpoint.save_epoch(tmp_path, 2, run_state(20), keep=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0", "epoch_1", "epoch_2"]
    assert_bitwise_equal(run_state(20), checkpoint.restore_latest(tmp_path, run_state())[1])


def test_latest_epoch_ignores_unfinished_saves(tmp_path):
    assert checkpoint.latest_epoch(tmp_path / "absent") is None
    assert checkpoint.restore_latest(tmp_path / "absent", run_state()) is None
    checkpoint.save_epoch(tmp_path, 3, run_state(3))
    unfinished = tmp_path / "epoch_4.orbax-checkpoint-tmp"
    unfinished.mkdir()
    (unfinished / "_CHECKPOINT_METADATA").write_text("{}")
    (tmp_path / "epoch_5.deleting-0123").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert checkpoint.latest_epoch(tmp_path) == 3
    assert checkpoint.restore_latest(tmp_path, run_state())[0] == 3
    with pytest.raises(CheckpointError, match="unfinished"):
        checkpoint.restore(unfinished, run_state())


def test_debris_of_a_crash_mid_delete_is_emptied(tmp_path):
    checkpoint.save_epoch(tmp_path, 1, run_state(1), keep=1)
    debris = tmp_path / ".stablejax-deleting" / "epoch_1"  # a delete killed mid-way
    debris.mkdir(parents=True)
    (debris / "_CHECKPOINT_METADATA").write_text("{}")
    assert checkpoint.latest_epoch(tmp_path) == 1
    checkpoint.save_epoch(tmp_path, 2, run_state(2), keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_2"]


def test_history_is_saved_with_its_epoch(tmp_path):
    history = {"loss": [0.5, 0.25, float("nan")], "lr": [1e-3, 1e-3, 5e-4]}
    for epoch in (1, 2):
        checkpoint.save_epoch(tmp_path, epoch, run_state(epoch), history={"epoch": [epoch]})
    checkpoint.save_epoch(tmp_path, 3, run_state(3), history=history)
    epoch, state, restored = checkpoint.restore_latest(tmp_path, run_state())
    assert epoch == 3
    assert_bitwise_equal(run_state(3), state)
    assert restored["lr"] == history["lr"] and restored["loss"][:2] == history["loss"][:2]
    assert np.isnan(restored["loss"][2])
    # Going back replaces the later epochs, history included.
    checkpoint.save_epoch(tmp_path, 2, run_state(20), history={"epoch": [20]})
    assert checkpoint.restore_latest(tmp_path, run_state())[2] == {"epoch": [20]}


@pytest.mark.parametrize(
    "kwargs,name", [({"epoch": -1}, "epoch"), ({"epoch": 1.5}, "epoch"), ({"keep": 0}, "keep")]
)
def test_save_epoch_validation(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        checkpoint.save_epoch(tmp_path, **{"epoch": 1, **kwargs}, state=run_state())


CRASHING_SAVE = textwrap.dedent(
    """
    import sys
    import jax.numpy as jnp
    import numpy as np
    from stablejax import checkpoint

    big = np.random.default_rng(0).standard_normal(50_000_000, dtype=np.float32)  # 200 MB
    checkpoint.save_epoch(sys.argv[1], 2, {"big": jnp.asarray(big)})
    """
)


@pytest.mark.slow
def test_killed_save_leaves_the_previous_checkpoint(tmp_path):
    checkpoint.save_epoch(tmp_path, 1, run_state(1))
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SAVE, str(tmp_path)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    unfinished = tmp_path / "epoch_2.orbax-checkpoint-tmp"
    try:
        deadline = time.monotonic() + 120
        while not unfinished.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the save never started"
            time.sleep(0.002)
        time.sleep(0.2)  # let it write part of the data
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert unfinished.exists() and not (tmp_path / "epoch_2").exists()
    assert checkpoint.latest_epoch(tmp_path) == 1
    epoch, state, history = checkpoint.restore_latest(tmp_path, run_state())
    assert epoch == 1 and history is None
    assert_bitwise_equal(run_state(1), state)
    with pytest.raises(CheckpointError):
        checkpoint.restore(unfinished, {"big": jnp.zeros(50_000_000)})
    # The next save of that epoch replaces the debris.
    checkpoint.save_epoch(tmp_path, 2, run_state(2))
    assert not unfinished.exists()
    assert checkpoint.restore_latest(tmp_path, run_state())[0] == 2


@pytest.mark.parametrize(
    "epoch, keep, match",
    [(-1, 3, "epoch"), (1.5, 3, "epoch"), (1, 0, "keep"), (1, 2.0, "keep")],
)
def test_save_epoch_rejects_bad_arguments(tmp_path, epoch, keep, match):
    with pytest.raises(ValueError, match=match):
        checkpoint.save_epoch(tmp_path, epoch, run_state(1), keep=keep)
    assert checkpoint.latest_epoch(tmp_path) is None


# ---------------------------------------------------------------- stablejax 0.1.0 checkpoints

FIXTURE = REPO / "tests" / "data" / "checkpoint_v0_1"


def fixture_run():
    """`setup()` of the script that wrote the 0.1.0 fixture: model, tx, data, callbacks."""
    spec = importlib.util.spec_from_file_location(
        "make_checkpoint_v0_1", FIXTURE.parent / "make_checkpoint_v0_1.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.setup()


def fixture_template():
    """The fixture's model, tx, data, callbacks and a run-state template filled as `fit` does."""
    import stablejax as sj

    model, tx, data, callbacks = fixture_run()
    like = sj.train.init_state(model, tx)
    for i, cb in enumerate(callbacks):
        like.callbacks[str(i)] = cb.init(like)
    return model, tx, data, callbacks, like


def recorded_state(like):
    """The epoch-2 state as 0.1.0 itself restored it (``checkpoint_v0_1_epoch_2.npz``)."""
    recorded = np.load(FIXTURE.parent / "checkpoint_v0_1_epoch_2.npz")
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    assert sorted(recorded.files) == sorted(jax.tree_util.keystr(p) for p, _ in with_paths)
    leaves = []
    for path, leaf in with_paths:
        value = jnp.asarray(recorded[jax.tree_util.keystr(path)])
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf))
        leaves.append(value)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def test_restores_a_checkpoint_written_by_0_1_0(tmp_path):
    directory = tmp_path / "run"
    shutil.copytree(FIXTURE, directory)
    *_, like = fixture_template()
    epoch, state, history = checkpoint.restore_latest(directory, like)
    assert epoch == 2
    with open(FIXTURE / "history_2.json") as f:
        assert history == json.load(f)
    assert len(history["loss"]) == 2
    assert_bitwise_equal(recorded_state(like), state)


@pytest.mark.slow
def test_resumes_a_run_checkpointed_by_0_1_0(tmp_path):
    import stablejax as sj

    directory = tmp_path / "run"
    shutil.copytree(FIXTURE, directory)
    model, tx, data, callbacks, _ = fixture_template()
    resumed = sj.fit(model, tx, data, epochs=3, batch_size=16, callbacks=callbacks,
                     checkpoint_dir=directory, verbose=0)
    # The same third epoch, continued from the state 0.1.0 recorded, without checkpoints.
    model, tx, data, callbacks, like = fixture_template()
    continued = sj.fit(model, tx, data, epochs=3, batch_size=16, callbacks=callbacks,
                       state=recorded_state(like), verbose=0)
    with open(FIXTURE / "history_2.json") as f:
        old = json.load(f)
    assert resumed.history == {k: v + continued.history[k] for k, v in old.items()}
    assert len(resumed.history["loss"]) == 3
    assert_bitwise_equal(continued.state, resumed.state)
    # It resumed rather than started again (which would have rewritten epochs 1 and 2):
    # the old epochs are untouched and the new one is written in the current layout.
    assert checkpoint.latest_epoch(directory) == 3
    assert (directory / "epoch_3" / "state").is_dir()
    for epoch in (1, 2):
        assert not (directory / f"epoch_{epoch}" / "state").exists()
        assert (directory / f"history_{epoch}.json").is_file()
    assert checkpoint.restore_latest(directory, resumed.state)[2] == resumed.history


def test_keep_last_k_removes_0_1_0_epochs_with_their_history(tmp_path):
    directory = tmp_path / "run"
    shutil.copytree(FIXTURE, directory)
    checkpoint.save_epoch(directory, 3, run_state(3), history={"loss": [1.0]}, keep=2)
    assert sorted(p.name for p in directory.iterdir()) == ["epoch_2", "epoch_3", "history_2.json"]
    checkpoint.save_epoch(directory, 1, run_state(1), keep=2)
    assert sorted(p.name for p in directory.iterdir()) == ["epoch_1"]
