"""Samples per second of the notes' model: stablejax's train step against hand-written ones.

The model: 784-300-100-10 with three batch norms (input, after each hidden layer), ELU,
He initialisation, logits output, sparse cross-entropy. Every row trains the same model
class on the same random data in the same process; ratios are to the hand-written Flax
NNX + Optax step (``nnx.split``/``nnx.merge`` inside ``jax.jit``, donated state).

Rows:
  handwritten   split/merge + jax.jit + optax, no safety checks (the reference)
  nnx.jit       flax.nnx.Optimizer under nnx.jit
  make_train_step   stablejax.train.make_train_step (skips non-finite steps)
  (no guard)        the same with skip_nonfinite=False
  fit-style scan    stablejax's scan over 32 on-device batches per compiled call

Run: ``python benchmarks/train_step.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import stablejax as sj
from stablejax import train

LOSS = "sparse_categorical_crossentropy_from_logits"


def model(seed: int = 0) -> nnx.Module:
    return sj.nn.mlp([300, 100], input_shape=(28, 28), activation="elu", batch_norm="after",
                     output_activation=None, rngs=nnx.Rngs(seed))


def handwritten(tx):
    m = model()
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    opt_state = tx.init(params)

    @jax.jit
    def step(carry, batch):
        params, rest, opt_state = carry
        x, y = batch

        def loss_fn(params):
            mm = nnx.merge(graphdef, params, rest, copy=True)
            loss = sj.losses.sparse_categorical_crossentropy_from_logits(mm(x), y)
            return loss, nnx.split(mm, nnx.Param, ...)[2]

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state), loss

    step = jax.jit(step.__wrapped__, donate_argnums=0)
    return step, jax.tree.map(jnp.array, (params, rest, opt_state))


def nnx_jit(tx):
    m = model()
    optimizer = nnx.Optimizer(m, tx, wrt=nnx.Param)

    @nnx.jit(donate_argnums=(0, 1))
    def step(m, optimizer, x, y):
        def loss_fn(m):
            return sj.losses.sparse_categorical_crossentropy_from_logits(m(x), y)

        loss, grads = nnx.value_and_grad(loss_fn)(m)
        optimizer.update(m, grads)
        return loss

    return (lambda carry, batch: (carry, step(*carry, *batch))), (m, optimizer)


def ours(tx, skip_nonfinite=True):
    m = model()
    step = train.make_train_step(m, tx, LOSS, skip_nonfinite=skip_nonfinite)
    return step, train.init_state(m, tx)


def ours_unguarded(tx):
    return ours(tx, skip_nonfinite=False)


def time_loop(step, carry, batches, rounds: int) -> tuple[float, object]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in batches:
            carry, out = step(carry, batch)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    return statistics.median(times), carry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    args = parser.parse_args()
    steps, rounds = (128, 3) if args.quick else (384, 5)  # multiples of 32 for the scan
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__}, optax {optax.__version__}, device {jax.devices()[0]}")
    print(f"{'batch':>5} {'optimizer':>9} {'implementation':>16} {'samples/s':>10} {'ratio':>6}")
    for batch_size in (32, 256):
        x = jnp.asarray(rng.normal(size=(steps, batch_size, 28, 28)), jnp.float32)
        y = jnp.asarray(rng.integers(0, 10, size=(steps, batch_size)), jnp.int32)
        batches = [(x[i], y[i]) for i in range(steps)]
        for name, make_tx in (("sgd", lambda: optax.sgd(0.01)),
                              ("adam", lambda: optax.adam(1e-3))):
            rows = {}
            builders = {"handwritten": handwritten, "nnx.jit": nnx_jit, "make_train_step": ours,
                        "  (no guard)": ours_unguarded}
            carries = {}
            for label, build in builders.items():
                step, carry = build(make_tx())
                carry, _ = step(carry, batches[0])  # compile
                carries[label] = (step, carry)
            # Interleave the implementations round by round so drift hits all alike.
            for _ in range(rounds):
                for label, (step, carry) in carries.items():
                    t, carry = time_loop(step, carry, batches, 1)
                    carries[label] = (step, carry)
                    rows.setdefault(label, []).append(t)
            scan_model = model()
            tx = make_tx()
            run = sj.steps.make_train_scan(scan_model, tx, LOSS)
            state = train.init_state(scan_model, tx)
            xs, ys = x.reshape(-1, 28, 28), y.reshape(-1)
            index = jnp.arange(steps * batch_size, dtype=jnp.int32).reshape(-1, 32, batch_size)
            state, out = run(state, xs, ys, index[0], 0, 32)
            scan_times = []
            for _ in range(rounds):
                start = time.perf_counter()
                for chunk in index:
                    state, out = run(state, xs, ys, chunk, 0, 32)
                jax.block_until_ready(out)
                scan_times.append(time.perf_counter() - start)
            rows["fit-style scan"] = scan_times
            reference = steps * batch_size / statistics.median(rows["handwritten"])
            for label, times in rows.items():
                n = (len(index) * 32 if label == "fit-style scan" else steps) * batch_size
                rate = n / statistics.median(times)
                print(f"{batch_size:>5} {name:>9} {label:>16} {rate:>10.0f} "
                      f"{rate / reference:>6.3f}")


if __name__ == "__main__":
    main()
