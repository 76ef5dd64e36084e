"""Data parallelism: 8 simulated devices and 2 processes against one-device runs.

The device count is fixed when JAX starts, so the multi-device runs happen in
subprocesses (``XLA_FLAGS=--xla_force_host_platform_device_count=8``); the references
run on this process's single CPU device. Float32 bound: the sharded runs reorder the sums
over the batch (per-device partial sums, then an all-reduce), so they differ from one
device by rounding only. Measured on 2 epochs (18 Adam steps, batch 64, batch norm) of
digits: at most 4e-6 of each array's largest magnitude (parameters), 1e-6 for the
statistics and the optimizer state. ``BOUND`` leaves a factor of about 2.5 over that.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import small_mlp

import stablejax as sj

BOUND = 1e-5  # largest |sharded - one device| / max|one device| per array (see above)
ROOT = Path(__file__).resolve().parents[1]
N, BATCH, EPOCHS = 548, 64, 2  # 8 full batches and a tail of 36: not a multiple of 8
LOSS = "sparse_categorical_crossentropy_from_logits"  # small_mlp gives logits


def _data():
    split = sj.data.digits(seed=0).train
    return split.x[:N], split.y[:N]


def _fit(**kwargs):
    kwargs = {"batch_size": BATCH, "verbose": 0, "compilation_cache": False, "loss": LOSS,
              **kwargs}
    model = kwargs.pop("model", None) or small_mlp(output=None)
    return sj.fit(model, sj.adam(1e-2), _data(), **kwargs)


def _relative(a, b) -> float:
    """The largest |a - b| / max|b| over the leaves (PRNG keys must be equal)."""
    worst = 0.0
    for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
        worst = max(worst, float(np.max(np.abs(p - q), initial=0.0)
                                 / max(np.max(np.abs(q), initial=0.0), 1e-30)))
    return worst


def _env(devices: int | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), STABLEJAX_CACHE_DIR="off",
               JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _python(code: str, devices: int | None, timeout: float, *args: str) -> dict:
    """Runs ``code`` in a fresh interpreter; returns the JSON its last stdout line holds."""
    done = subprocess.run([sys.executable, "-c", code, *args], env=_env(devices), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


EIGHT = textwrap.dedent('''
    import json, logging, sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from test_distributed import _fit, _data, _relative, BATCH, EPOCHS, LOSS
    from conftest import small_mlp
    import stablejax as sj

    out = {"devices": jax.device_count()}
    mesh = sj.distributed.data_mesh()
    valid = sj.data.digits(seed=0).valid
    valid = (valid.x[:200], valid.y[:200])  # one evaluation batch, split 8 ways
    one = _fit(epochs=EPOCHS, validation_data=valid)  # device 0 alone: the reference
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("jax").addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    many = _fit(epochs=EPOCHS, mesh=mesh, validation_data=valid)
    jax.config.update("jax_log_compiles", False)
    out["run_compiles"] = sum(m.startswith("Compiling jit(run)") for m in records)
    out["eval_compiles"] = sum(m.startswith("Compiling jit(evaluate_set)") for m in records)
    out["param_devices"] = min(len(a.devices()) for a in jax.tree.leaves(many.state.params))
    out["history_same_keys"] = sorted(many.history) == sorted(one.history)
    out["history"] = max(abs(a - b) / max(abs(b), 1e-30) for k in one.history
                         for a, b in zip(many.history[k], one.history[k]))
    for part in ("params", "rest", "opt_state"):
        out[part] = _relative(getattr(many.state, part), getattr(one.state, part))
    records.clear()
    jax.config.update("jax_log_compiles", True)
    sharded = _fit(epochs=EPOCHS, mesh=mesh, shard_optimizer_state=True)
    jax.config.update("jax_log_compiles", False)
    out["sharded_run_compiles"] = sum(m.startswith("Compiling jit(run)") for m in records)
    for part in ("params", "rest", "opt_state"):
        out["sharded_" + part] = _relative(getattr(sharded.state, part),
                                           getattr(one.state, part))
    # Class weights in training and sample weights in validation, sharded like the data.
    weights = np.linspace(0.5, 2.0, len(valid[0])).astype(np.float32)
    weighted = {"epochs": 1, "class_weight": {0: 3.0, 7: 0.25},
                "validation_data": (*valid, weights)}
    one_weighted = _fit(**weighted)
    many_weighted = _fit(mesh=mesh, **weighted)
    out["weighted_params"] = _relative(many_weighted.state.params, one_weighted.state.params)
    out["weighted_history"] = max(abs(a - b) / max(abs(b), 1e-30) for k in one_weighted.history
                                  for a, b in zip(many_weighted.history[k],
                                                  one_weighted.history[k]))
    out["weighted_differs"] = one_weighted.history["loss"][0] != one.history["loss"][0]
    out["replicated"] = all(a.is_fully_replicated for a in jax.tree.leaves(many.state))
    out["sharded_replicated"] = all(a.is_fully_replicated for part in ("params", "rest")
                                    for a in jax.tree.leaves(getattr(sharded.state, part)))
    specs = [a.sharding.spec for a in jax.tree.leaves(sharded.state.opt_state)]
    out["sharded_leaves"] = sum(s == jax.sharding.PartitionSpec("data") for s in specs)
    out["opt_bytes"] = sj.distributed.per_device_bytes(many.state.opt_state)
    out["sharded_opt_bytes"] = sj.distributed.per_device_bytes(sharded.state.opt_state)
    # Independently: a leaf with a leading dimension divisible by 8 costs 1/8 per device.
    leaves = [np.asarray(a) for a in jax.tree.leaves(one.state.opt_state)]
    out["expected_opt_bytes"] = sum(a.nbytes for a in leaves)
    out["expected_sharded_opt_bytes"] = sum(
        a.nbytes // 8 if a.ndim and a.shape[0] % 8 == 0 else a.nbytes for a in leaves)

    # The one-step function on batches of 64 and 40 (split 8 ways) and 36 (whole on
    # every device), against the same steps on one device.
    x, y = _data()
    tx = sj.adam(1e-2)
    states = {}
    for name, kwargs in (("one", {}), ("many", {"mesh": mesh}),
                         ("sharded", {"mesh": mesh, "shard_optimizer_state": True})):
        model = small_mlp(output=None)
        step = sj.steps.make_train_step(model, tx, LOSS, **kwargs)
        state = sj.steps.init_state(model, tx)
        for lo, hi in ((0, 64), (64, 104), (104, 140)):
            state, _ = step(state, (x[lo:hi], y[lo:hi]))
        states[name] = state
        out[name + "_step_replicated"] = all(a.is_fully_replicated
                                             for a in jax.tree.leaves(state.params))
        if name == "many":
            hlo = step.lower(state, (x[:64], y[:64])).compile().as_text()
            out["step_all_reduce"] = "all-reduce" in hlo
    out["step"] = _relative(states["many"], states["one"])
    out["step_sharded"] = _relative(states["sharded"], states["one"])

    # Each device receives its 8 rows of each of 2 batches of 64, nothing more.
    rows = np.arange(128).reshape(2, 64)[:, ::-1]
    gathered = sj.distributed.gather_rows(x, rows, mesh)
    out["gathered_shards"] = sorted({s.data.shape for s in gathered.addressable_shards})
    out["gathered_equal"] = bool(np.array_equal(np.asarray(gathered), x[rows]))

    try:
        _fit(epochs=1, mesh=mesh, batch_size=12)
        out["bad_batch"] = "accepted"
    except ValueError as error:
        out["bad_batch"] = str(error)

    # A run saved on device 0 alone after its first epoch resumes on the 8 devices.
    _fit(epochs=1, checkpoint_dir=sys.argv[2])
    resumed = _fit(epochs=EPOCHS, mesh=mesh, shard_optimizer_state=True,
                   checkpoint_dir=sys.argv[2])
    out["resumed_on_8"] = _relative(resumed.state.params, one.state.params)
    out["resumed_on_8_devices"] = min(len(a.devices()) for a in jax.tree.leaves(resumed.state))

    # A run saved on 8 devices after its first epoch, resumed on 1 by the test.
    _fit(epochs=1, mesh=mesh, shard_optimizer_state=True, checkpoint_dir=sys.argv[1])
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved_on_8")
    result = _python(EIGHT, 8, 300, str(directory), str(tmp_path_factory.mktemp("saved_on_1")))
    result["checkpoint_dir"] = directory
    return result


@pytest.fixture(scope="module")
def one():
    return _fit(epochs=EPOCHS)


@pytest.mark.slow  # trains in subprocesses
def test_eight_devices_train_as_one(eight):
    assert eight["devices"] == 8
    assert eight["param_devices"] == 8  # the parameters live on every device
    assert eight["replicated"]  # the whole state, whole on each device
    assert eight["history_same_keys"]  # loss, accuracy, their val_ versions, lr, skipped
    assert eight["history"] < BOUND
    for part in ("params", "rest", "opt_state"):  # rest: the batch-norm statistics
        assert eight[part] < BOUND, (part, eight[part])
    # One compiled train program and one evaluation for the whole fit.
    assert eight["run_compiles"] == 1 and eight["eval_compiles"] == 1


@pytest.mark.slow  # trains in subprocesses
def test_weighted_training_on_eight_devices_trains_as_one(eight):
    assert eight["weighted_differs"]  # the weights changed the loss
    assert eight["weighted_params"] < BOUND
    assert eight["weighted_history"] < BOUND


@pytest.mark.slow  # trains in subprocesses
def test_sharded_optimizer_state_trains_as_one(eight):
    for part in ("params", "rest", "opt_state"):
        assert eight["sharded_" + part] < BOUND, (part, eight["sharded_" + part])
    assert eight["sharded_leaves"] > 0
    assert eight["sharded_replicated"]  # parameters and statistics stay whole
    assert eight["sharded_run_compiles"] == 1
    assert eight["opt_bytes"] == eight["expected_opt_bytes"]
    assert eight["sharded_opt_bytes"] == eight["expected_sharded_opt_bytes"]
    assert eight["sharded_opt_bytes"] < eight["opt_bytes"] / 4


@pytest.mark.slow  # trains in subprocesses
def test_each_device_receives_only_its_rows(eight):
    assert eight["gathered_shards"] == [[2, 8, 8, 8]]
    assert eight["gathered_equal"]


@pytest.mark.slow  # trains in subprocesses
def test_one_step_function_on_a_mesh(eight):
    assert eight["step_all_reduce"]  # the partitioner reduces across the devices
    assert eight["step"] < BOUND
    assert eight["step_sharded"] < BOUND
    assert eight["many_step_replicated"] and eight["sharded_step_replicated"]


@pytest.mark.slow  # trains in subprocesses
def test_checkpoint_saved_on_one_device_resumes_on_eight(eight):
    assert eight["resumed_on_8"] < BOUND
    assert eight["resumed_on_8_devices"] == 8


@pytest.mark.slow  # trains in subprocesses
def test_checkpoint_saved_on_eight_devices_resumes_on_one(eight, one):
    assert jax.device_count() == 1
    resumed = _fit(epochs=EPOCHS, checkpoint_dir=eight["checkpoint_dir"])
    assert len(resumed.history["loss"]) == EPOCHS
    for part in ("params", "rest", "opt_state"):
        assert _relative(getattr(resumed.state, part), getattr(one.state, part)) < BOUND
    devices = {d for a in jax.tree.leaves(resumed.state) for d in a.devices()}
    assert devices == {jax.devices()[0]}


TWO = textwrap.dedent('''
    import json, sys
    import stablejax as sj
    address, pid, out, shard = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
    sj.distributed.initialize(address, 2, pid, timeout=60)
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from test_distributed import _fit, EPOCHS
    mesh = sj.distributed.data_mesh()
    # One epoch saved by both processes into one directory, then resumed to the end.
    _fit(epochs=1, mesh=mesh, shard_optimizer_state=shard, checkpoint_dir=f"{out}/run")
    history = _fit(epochs=EPOCHS, mesh=mesh, shard_optimizer_state=shard,
                   checkpoint_dir=f"{out}/run")
    params = {str(i): np.asarray(a) for i, a in enumerate(jax.tree.leaves(history.state.params))}
    np.savez(f"{out}/params_{pid}.npz", **params)
    print(json.dumps({"devices": jax.device_count(), "local": jax.local_device_count(),
                      "loss": history.history["loss"]}))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # trains in subprocesses
@pytest.mark.parametrize("shard", [False, True])
def test_two_processes_train_as_one(tmp_path, shard, one):
    address = f"127.0.0.1:{_free_port()}"
    logs = [(open(tmp_path / f"out_{i}", "w"), open(tmp_path / f"err_{i}", "w"))
            for i in range(2)]  # files, not pipes: a full pipe would stall both
    procs = [subprocess.Popen([sys.executable, "-c", TWO, address, str(i), str(tmp_path),
                               str(int(shard))],
                              env=_env(None), cwd=ROOT, stdout=out, stderr=err,
                              start_new_session=True)
             for i, (out, err) in enumerate(logs)]
    try:
        for p in procs:
            p.wait(timeout=240)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for out, err in logs:
            out.close()
            err.close()
    for i, p in enumerate(procs):
        assert p.returncode == 0, (tmp_path / f"err_{i}").read_text()[-4000:]
    results = [json.loads((tmp_path / f"out_{i}").read_text().strip().splitlines()[-1])
               for i in range(2)]
    assert [(r["devices"], r["local"]) for r in results] == [(2, 1), (2, 1)]
    for r in results:
        assert len(r["loss"]) == EPOCHS
        for got, want in zip(r["loss"], one.history["loss"], strict=True):
            assert abs(got - want) / want < BOUND
    reference = [np.asarray(a) for a in jax.tree.leaves(one.state.params)]
    for pid in range(2):
        saved = np.load(tmp_path / f"params_{pid}.npz")
        got = [saved[str(i)] for i in range(len(reference))]
        assert _relative(got, reference) < BOUND


def test_unreachable_coordinator_is_a_timeout_error():
    # Nothing listens on the port: process 1 gives up after the timeout, in Python.
    address = f"127.0.0.1:{_free_port()}"
    with pytest.raises(TimeoutError, match=f"no coordinator at {address} within timeout=1 s"):
        sj.distributed.initialize(address, 2, 1, timeout=1)


@pytest.mark.slow  # waits for the timeout in a subprocess
def test_process_zero_alone_says_why_it_ends():
    # Process 0 serves the coordinator and waits for the others; jaxlib ends it at the
    # deadline, and the line before says why.
    address = f"127.0.0.1:{_free_port()}"
    code = f"import stablejax as sj; sj.distributed.initialize({address!r}, 2, 0, timeout=2)"
    done = subprocess.run([sys.executable, "-c", code], env=_env(None), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert (f"stablejax: process 0 waited timeout=2 s at {address} for the other 1 process(es) "
            "to join") in done.stderr


def test_bad_meshes_and_arguments():
    model, tx, data = small_mlp(output=None), sj.adam(1e-3), _data()
    no_data_axis = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    with pytest.raises(ValueError, match=r"mesh must have an axis named 'data'.*\('model',\)"):
        sj.fit(model, tx, data, epochs=1, mesh=no_data_axis, verbose=0)
    with pytest.raises(ValueError, match=r"mesh must have an axis named 'data'"):
        sj.steps.make_train_step(model, tx, mesh=no_data_axis)
    with pytest.raises(TypeError, match=r"mesh must be a jax.sharding.Mesh"):
        sj.fit(model, tx, data, epochs=1, mesh="data", verbose=0)
    with pytest.raises(ValueError, match=r"shard_optimizer_state=True needs a mesh"):
        sj.fit(model, tx, data, epochs=1, shard_optimizer_state=True, verbose=0)
    with pytest.raises(ValueError, match=r"devices must hold at least one device"):
        sj.distributed.data_mesh([])
    with pytest.raises(ValueError, match=r"devices must not repeat a device"):
        sj.distributed.data_mesh(jax.devices()[:1] * 2)
    for kwargs, match in (({"coordinator_address": "localhost"}, "host:port"),
                          ({"num_processes": 0}, "num_processes"),
                          ({"process_id": 2}, r"process_id must be in \[0, num_processes=2\)"),
                          ({"timeout": 0}, "timeout")):
        args = {"coordinator_address": "127.0.0.1:1", "num_processes": 2, "process_id": 1,
                **kwargs}
        with pytest.raises(ValueError, match=match):
            sj.distributed.initialize(**args)


@pytest.mark.slow  # trains in subprocesses
def test_batch_size_not_divisible_by_the_devices(eight):
    assert "batch_size=12 is not divisible by the 8 devices" in eight["bad_batch"]
    assert "batch_size=8 or 16" in eight["bad_batch"]


@pytest.mark.slow  # trains in subprocesses
def test_resuming_another_models_checkpoint_names_the_difference(eight):
    wider = small_mlp(hidden=(16,), output=None)
    expected = r"parameters/layers/2/kernel: \[64, 32\] in the checkpoint, \[64, 16\] now"
    with pytest.raises(ValueError, match=expected):
        _fit(model=wider, epochs=EPOCHS, checkpoint_dir=eight["checkpoint_dir"])


TRAIN = ["train", "--data", "synthetic", "--hidden", "16", "--batch-norm", "after",
         "--epochs", "1", "--quiet", "--no-compilation-cache"]


@pytest.mark.slow  # trains in subprocesses
def test_command_trains_on_two_devices_as_on_one(capsys):
    from stablejax import cli

    assert cli.main(TRAIN) == 0
    alone = capsys.readouterr().out
    done = subprocess.run([sys.executable, "-m", "stablejax.cli", *TRAIN, "--devices", "2"],
                          env=_env(2), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    # The table and the test line, to 4 significant digits.
    assert done.stdout.splitlines()[-3:] == alone.splitlines()[-3:]


@pytest.mark.parametrize("extra, message", [
    (["--devices", "4"], "--devices 4 but JAX sees 1 cpu device(s); on the CPU set "
                         "XLA_FLAGS=--xla_force_host_platform_device_count=4 in the "
                         "environment before starting"),
    (["--coordinator", "127.0.0.1:1"], "--coordinator, --num-processes and --process-id go "
                                       "together"),
])
def test_command_device_errors_exit_2_with_one_line(capsys, extra, message):
    from stablejax import cli

    assert cli.main(TRAIN + extra) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"stablejax: error: {message}"
