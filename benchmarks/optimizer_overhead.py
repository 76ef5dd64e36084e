"""Cost of one optimizer update, stablejax alias vs its closest Optax equivalent.

For each alias: the jit-compiled ``tx.update`` + ``optax.apply_updates`` with donated
parameter and state buffers, timed call by call (``block_until_ready``), the two
optimizers alternating so that both see the same machine load; the median of the calls
after warm-up. Trees: the 784-300-100-10 MLP (6 arrays) and 100 Dense layers of 100x100
(200 arrays). Prints milliseconds per update and the ratio ours / optax.

    python benchmarks/optimizer_overhead.py [--quick] [--calls N]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from stablejax import optimizers

PAIRS = {
    "sgd(momentum=0.9, nesterov)": (
        lambda: optimizers.sgd(0.01, momentum=0.9, nesterov=True),
        lambda: optax.sgd(0.01, momentum=0.9, nesterov=True),
    ),
    "adagrad": (lambda: optimizers.adagrad(0.01), lambda: optax.adagrad(0.01, eps=1e-7)),
    "rmsprop": (lambda: optimizers.rmsprop(0.001), lambda: optax.rmsprop(0.001, eps=1e-7)),
    "adam": (lambda: optimizers.adam(0.001), lambda: optax.adam(0.001, eps=1e-7)),
    "nadam": (lambda: optimizers.nadam(0.001), lambda: optax.nadam(0.001, eps=1e-7)),
}


def mlp(sizes, key):
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, sub = jax.random.split(key)
        params[f"dense_{i:03d}"] = {
            "kernel": jax.random.normal(sub, (n_in, n_out)) / n_in**0.5,
            "bias": jnp.zeros(n_out),
        }
    return params


TREES = {
    "MLP 784-300-100-10 (6 arrays)": lambda key: mlp([784, 300, 100, 10], key),
    "deep MLP 100 x 100x100 (200 arrays)": lambda key: mlp([100] * 101, key),
}


def make_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def time_pair(make_ours, make_theirs, tree, calls, warmup):
    """Median seconds per update of each optimizer, calls alternating between the two."""
    key = jax.random.PRNGKey(0)
    params = tree(key)
    grads = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)
    runs = []
    for make in (make_ours, make_theirs):
        tx = make()
        p = jax.tree.map(jnp.copy, params)
        runs.append({"step": make_step(tx), "carry": (p, tx.init(p)), "times": []})
    for i in range(warmup + calls):
        for run in runs:
            start = time.perf_counter()
            run["carry"] = jax.block_until_ready(run["step"](*run["carry"], grads))
            if i >= warmup:
                run["times"].append(time.perf_counter() - start)
    return [statistics.median(run["times"]) for run in runs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 calls, 5 warm-up")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per optimizer")
    args = parser.parse_args()
    calls, warmup = (50, 5) if args.quick else (max(args.calls, 50), 20)

    print(f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}, "
          f"median of {calls} calls")
    for tree_name, tree in TREES.items():
        print(f"\n{tree_name}")
        print(f"{'optimizer':<30}{'stablejax ms':>14}{'optax ms':>12}{'ratio':>8}")
        for name, (ours, theirs) in PAIRS.items():
            t_ours, t_theirs = time_pair(ours, theirs, tree, calls, warmup)
            print(f"{name:<30}{1e3 * t_ours:>14.3f}{1e3 * t_theirs:>12.3f}"
                  f"{t_ours / t_theirs:>8.3f}")


if __name__ == "__main__":
    main()
