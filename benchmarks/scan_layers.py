"""Compile time and step time of a deep MLP: unrolled against ``mlp(..., scan_layers=True)``.

The model: 64 input features, 100 hidden Dense layers of 64 SELU units (LeCun normal),
softmax output of 10, sparse cross-entropy, Adam, batch 32. Unrolled, every layer is in
the compiled program; with ``scan_layers=True`` the 99 layers after the first are one
stacked block run by ``jax.lax.scan``, so the program holds that block once.

Columns:
  build s     building the model (``mlp``), eagerly
  compile s   ``make_train_step(model, adam(1e-3)).lower(state, batch).compile()``,
              tracing and lowering included (no persistent compilation cache is set)
  step ms     median over rounds of the mean time of one warm step (dispatch included)
  loss        after the timed steps: the same in both layouts (same initial values)

Run: ``python benchmarks/scan_layers.py`` (``--quick`` for fewer steps; ``--depth``,
``--width`` to change the model).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import stablejax as sj


def build(depth: int, width: int, scan: bool) -> nnx.Module:
    return sj.nn.mlp([width] * depth, input_shape=(width,), activation="selu",
                     scan_layers=scan, rngs=nnx.Rngs(0))


def measure(depth: int, width: int, scan: bool, batch, steps: int, rounds: int):
    start = time.perf_counter()
    model = build(depth, width, scan)
    built = time.perf_counter() - start
    tx = sj.adam(1e-3)
    state = sj.steps.init_state(model, tx)
    step = sj.steps.make_train_step(model, tx)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    state, out = compiled(state, batch)  # first run outside the timing
    jax.block_until_ready(out)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            state, out = compiled(state, batch)
        jax.block_until_ready((state, out))
        times.append((time.perf_counter() - start) / steps)
    return built, compile_s, statistics.median(times), float(out["loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--depth", type=int, default=100, help="hidden layers (default 100)")
    parser.add_argument("--width", type=int, default=64, help="units and inputs (default 64)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    args = parser.parse_args()
    steps, rounds = (50, 3) if args.quick else (200, 5)
    rng = np.random.default_rng(0)
    batch = (jnp.asarray(rng.normal(size=(args.batch, args.width)), jnp.float32),
             jnp.asarray(rng.integers(0, 10, size=args.batch), jnp.int32))
    print(f"jax {jax.__version__}, device {jax.devices()[0]}; {args.depth} hidden layers "
          f"of {args.width} SELU units, batch {args.batch}, adam")
    print(f"{'layout':>9} {'build s':>8} {'compile s':>10} {'step ms':>8} {'loss':>8}")
    rows = {}
    for label, scan in (("unrolled", False), ("scanned", True)):
        built, compile_s, step_s, loss = measure(args.depth, args.width, scan, batch, steps,
                                                 rounds)
        rows[label] = compile_s, step_s
        print(f"{label:>9} {built:>8.2f} {compile_s:>10.2f} {1e3 * step_s:>8.3f} {loss:>8.4f}")
    (cu, su), (cs, ss) = rows["unrolled"], rows["scanned"]
    print(f"compile scanned/unrolled {cs / cu:.3f}; step scanned/unrolled {ss / su:.3f}")


if __name__ == "__main__":
    main()
