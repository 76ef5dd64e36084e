"""Data parallelism: samples/s of ``fit`` on 1, 2, 4, 8 devices and on 2 processes, and
the optimizer state each device holds with and without ``shard_optimizer_state``.

The notes' model (784-300-100-10, three batch norms, ELU, Adam) trains on 8,192 random
28x28 samples for 3 epochs at a global batch of 256 with ``mesh=data_mesh()`` (and once
without a mesh, the reference); the figure is the median of epochs 2-3 (compilation
excluded). Each device count runs in its own
process, started with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``; the two-process
row starts two processes of one device each, joined by ``sj.distributed.initialize`` on
loopback with gloo. On a CPU the simulated devices share the same cores, so these rows
measure the partitioning's overhead, not a speed-up; GPU rows need a machine with GPUs.

The optimizer-state bytes are those of Adam's state laid out by
``sj.distributed.state_shardings`` on 8 devices, per device, for the notes' model and a
wide one (784-4096-4096-4096-10), computed from shapes (nothing is allocated).

Run: ``python benchmarks/scaling.py`` (writes the table to stdout).
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time

os.environ["STABLEJAX_CACHE_DIR"] = "off"

SAMPLES, BATCH, EPOCHS = 8_192, 256, 3
NOTES, WIDE = [300, 100], [4096, 4096, 4096]


def _rate(mesh) -> float:
    import numpy as np
    from flax import nnx

    import stablejax as sj

    class Clock(sj.callbacks.Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_epoch_begin(self, state, own, epoch):
            self.marks.append(time.perf_counter())
            return state

        def on_epoch_end(self, state, own, logs):
            self.marks.append(time.perf_counter())
            return state, own, False

    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, SAMPLES).astype(np.int32)
    model = sj.nn.mlp(NOTES, input_shape=(28, 28), activation="elu", batch_norm="after",
                      output_activation=None, rngs=nnx.Rngs(0))
    clock = Clock()
    sj.fit(model, sj.adam(1e-3), (x, y), epochs=EPOCHS, batch_size=BATCH, verbose=0,
           callbacks=[clock], loss="sparse_categorical_crossentropy_from_logits", mesh=mesh)
    seconds = [end - begin for begin, end in zip(clock.marks[2::2], clock.marks[3::2],
                                                  strict=True)]
    return SAMPLES / statistics.median(seconds)


def _opt_bytes(hidden: list[int], mesh, shard: bool) -> int:
    """Per-device bytes of Adam's state on ``mesh``, from shapes alone."""
    import jax
    from flax import nnx

    import stablejax as sj

    def build():
        model = sj.nn.mlp(hidden, input_shape=(28, 28), batch_norm="after", rngs=nnx.Rngs(0))
        params = nnx.state(model, nnx.Param)
        return params, sj.adam(1e-3).init(params)

    params, opt_state = jax.eval_shape(build)
    zero = jax.ShapeDtypeStruct((), jax.numpy.int32)
    state = sj.steps.TrainState(params, {}, opt_state, zero, zero, zero, {})
    shardings = sj.distributed.state_shardings(state, mesh, shard)
    return sum(math.prod(s.shard_shape(a.shape)) * a.dtype.itemsize
               for a, s in zip(jax.tree.leaves(state.opt_state),
                               jax.tree.leaves(shardings.opt_state), strict=True))


def worker(devices: int) -> None:
    import jax

    import stablejax as sj

    mesh = sj.distributed.data_mesh() if devices else None
    out: dict = {"devices": jax.device_count(), "rate": _rate(mesh)}
    if devices == 8:
        out["bytes"] = {name: [_opt_bytes(hidden, mesh, shard) for shard in (False, True)]
                        for name, hidden in (("notes", NOTES), ("wide", WIDE))}
    print(json.dumps(out))


def process_worker(address: str, process_id: int) -> None:
    import stablejax as sj

    sj.distributed.initialize(address, 2, process_id, timeout=120)
    import jax

    rate = _rate(sj.distributed.data_mesh())
    print(json.dumps({"devices": jax.device_count(), "rate": rate}))


def _env(devices: int | None) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def main() -> None:
    here = os.path.abspath(__file__)
    rows = []
    for devices in (0, 1, 2, 4, 8):
        done = subprocess.run([sys.executable, here, "--devices", str(devices)],
                              env=_env(devices), capture_output=True, text=True, check=True)
        label = f"1 process x {devices} device(s)" if devices else "no mesh (reference)"
        rows.append((label, _last_json(done.stdout)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    procs = [subprocess.Popen([sys.executable, here, "--process", address, str(i)],
                              env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    rows.append(("2 processes x 1 device", _last_json(outs[0])))
    base = rows[0][1]["rate"]
    print("| run | devices | samples/s | vs no mesh |")
    print("|---|---|---|---|")
    for label, result in rows:
        print(f"| {label} | {result['devices']} | {result['rate']:,.0f} | "
              f"{result['rate'] / base:.2f} |")
    print()
    print("| model | Adam state per device, replicated | sharded on 8 devices | ratio |")
    print("|---|---|---|---|")
    for name, (whole, split) in rows[4][1]["bytes"].items():
        label = "notes' 784-300-100-10" if name == "notes" else "wide 784-4096-4096-4096-10"
        print(f"| {label} | {whole:,} B | {split:,} B | {split / whole:.3f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--devices"]:
        worker(int(sys.argv[2]))
    elif sys.argv[1:2] == ["--process"]:
        process_worker(sys.argv[2], int(sys.argv[3]))
    else:
        main()
