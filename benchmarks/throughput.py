"""Whole runs of the notes' model: ``stablejax.fit`` against Keras 3, PyTorch and Flax linen.

The model: Flatten -> BatchNorm -> Dense(300, ELU, He) -> BatchNorm -> Dense(100, ELU,
He) -> BatchNorm -> Dense(10) on 28x28 inputs (batch norm momentum 0.99, epsilon 1e-3),
sparse cross-entropy from logits, trained on random Fashion-MNIST-shaped data (20,000
samples, 10 classes) for 5 epochs, shuffled, the last partial batch kept.

Every run is timed from the call that starts training to its return, compilation
included, with a per-epoch clock. Columns:

  wall        seconds for the whole run (``fit`` called to ``fit`` returned)
  epoch 1     seconds of the first epoch (compilation included)
  steady      samples/s over epochs 2..5 (median epoch)
  vs ref      wall and steady ratios to the Keras 3 row (``fit`` with the JAX backend);
              to the Flax linen loop when Keras is not installed

Rows run in one process, interleaved round by round, medians over rounds. Keras and
PyTorch rows run only when those packages are installed (they are never dependencies;
Keras needs ``KERAS_BACKEND=jax``, which this script sets). JAX's persistent compilation
cache is off for every row but one, so every round compiles, as a first run does; the
row "stablejax fit, cached" runs with the cache that an untimed run of the same
configuration filled (a new process running a configuration it ran before).

The last table times the README's main command in fresh processes, with an empty
compilation cache and then with the cache it filled.

Run: ``python benchmarks/throughput.py`` (``--quick`` for 1 round of 2 configurations);
the table is printed and written to ``benchmarks/results/throughput-<platform>.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["STABLEJAX_CACHE_DIR"] = "off"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import stablejax as sj  # noqa: E402

SAMPLES, EPOCHS, CLASSES = 20_000, 5, 10
README_COMMAND = [
    "train", "--data", "digits", "--hidden", "300", "100", "--activation", "selu",
    "--batch-norm", "after", "--optimizer", "nadam", "--lr", "1e-3", "--schedule",
    "exponential", "--epochs", "10", "--quiet",
]


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((SAMPLES, 28, 28), dtype=np.float32)
    y = rng.integers(0, CLASSES, SAMPLES).astype(np.int32)
    return x, y


class _Clock(sj.callbacks.Callback):
    def __init__(self, marks: list[float]):
        self.marks = marks

    def on_epoch_end(self, state, own, logs):
        self.marks.append(time.perf_counter())
        return state, own, False


def run_stablejax(x, y, batch_size: int, optimizer: str) -> list[float]:
    model = sj.nn.mlp([300, 100], input_shape=(28, 28), activation="elu",
                      batch_norm="after", output_activation=None, rngs=nnx.Rngs(0))
    tx = sj.sgd(0.01) if optimizer == "sgd" else sj.adam(1e-3)
    marks = [time.perf_counter()]
    sj.fit(model, tx, (x, y), epochs=EPOCHS, batch_size=batch_size, verbose=0,
           loss="sparse_categorical_crossentropy_from_logits", callbacks=[_Clock(marks)])
    marks.append(time.perf_counter())
    return marks


def run_keras(x, y, batch_size: int, optimizer: str) -> list[float]:
    import keras

    layers = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28)), layers.Flatten(), layers.BatchNormalization(),
        layers.Dense(300, activation="elu", kernel_initializer="he_normal"),
        layers.BatchNormalization(),
        layers.Dense(100, activation="elu", kernel_initializer="he_normal"),
        layers.BatchNormalization(), layers.Dense(10),
    ])
    opt = keras.optimizers.SGD(0.01) if optimizer == "sgd" else keras.optimizers.Adam(1e-3)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    marks = [time.perf_counter()]

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            marks.append(time.perf_counter())

    model.fit(x, y, batch_size=batch_size, epochs=EPOCHS, verbose=0, callbacks=[Clock()])
    marks.append(time.perf_counter())
    return marks


def run_torch(x, y, batch_size: int, optimizer: str) -> list[float]:
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Flatten(), nn.BatchNorm1d(784, eps=1e-3, momentum=0.01),
        nn.Linear(784, 300), nn.ELU(), nn.BatchNorm1d(300, eps=1e-3, momentum=0.01),
        nn.Linear(300, 100), nn.ELU(), nn.BatchNorm1d(100, eps=1e-3, momentum=0.01),
        nn.Linear(100, 10),
    )
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, fused=True)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    loss_fn = nn.CrossEntropyLoss()
    marks = [time.perf_counter()]
    for _ in range(EPOCHS):
        order = torch.randperm(len(xt))
        model.train()
        for start in range(0, len(xt), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        loss.item()
        marks.append(time.perf_counter())
    marks.append(time.perf_counter())
    return marks


def run_linen(x, y, batch_size: int, optimizer: str) -> list[float]:
    """The usual hand-written Flax linen + Optax loop: one jit step per batch."""
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            bn = dict(use_running_average=not train, momentum=0.99, epsilon=1e-3)
            x = nn.BatchNorm(**bn)(x.reshape(len(x), -1))
            for width in (300, 100):
                x = nn.elu(nn.Dense(width, kernel_init=jax.nn.initializers.he_normal())(x))
                x = nn.BatchNorm(**bn)(x)
            return nn.Dense(10)(x)

    module = MLP()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 28, 28)), train=False)
    tx = optax.sgd(0.01) if optimizer == "sgd" else optax.adam(1e-3, eps=1e-7)
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    def step(carry, xb, yb):
        params, stats, opt_state = carry

        def loss_fn(params):
            logits, new = module.apply({"params": params, "batch_stats": stats}, xb,
                                       train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, new["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    step = jax.jit(step, donate_argnums=0)
    carry = (params, stats, opt_state)
    rng = np.random.default_rng(0)
    marks = [time.perf_counter()]
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            carry, loss = step(carry, x[idx], y[idx])
        float(loss)
        marks.append(time.perf_counter())
    marks.append(time.perf_counter())
    return marks


def use_cache(directory: str | None) -> None:
    """Turns JAX's persistent compilation cache on in ``directory``, or off (None)."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    jax.config.update("jax_enable_compilation_cache", directory is not None)
    if directory is not None:
        sj.compilation_cache.enable(directory)
    cc.reset_cache()  # JAX decides once whether to use the cache: ask it again


def run_stablejax_cached(x, y, batch_size: int, optimizer: str) -> list[float]:
    with tempfile.TemporaryDirectory() as cache:
        use_cache(cache)
        try:
            run_stablejax(x, y, batch_size, optimizer)  # fills the cache, untimed
            return run_stablejax(x, y, batch_size, optimizer)
        finally:
            use_cache(None)


def available() -> dict:
    runners = {"stablejax fit": run_stablejax, "stablejax fit, cached": run_stablejax_cached}
    try:
        import keras  # noqa: F401

        runners["Keras 3 fit (JAX)"] = run_keras
    except Exception:  # not installed, or no JAX backend
        pass
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        runners["PyTorch eager"] = run_torch
    except ImportError:
        pass
    runners["Flax linen + Optax loop"] = run_linen
    return runners


def summarise(marks_per_round: list[list[float]]) -> dict[str, float]:
    walls, firsts, steadies = [], [], []
    for marks in marks_per_round:
        start, epochs, end = marks[0], marks[1:-1], marks[-1]
        walls.append(end - start)
        firsts.append(epochs[0] - start)
        steadies.append(SAMPLES / statistics.median(np.diff(epochs)))
    return {"wall": statistics.median(walls), "epoch 1": statistics.median(firsts),
            "steady": statistics.median(steadies)}


def readme_command() -> list[float]:
    """Seconds of the README's main command: empty cache, then the cache it filled."""
    times = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, STABLEJAX_CACHE_DIR=cache)
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "stablejax.cli", *README_COMMAND], env=env,
                           check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, two configurations")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    configs = [(32, "sgd"), (32, "adam"), (256, "sgd"), (256, "adam")]
    if args.quick:
        configs = [(32, "adam"), (256, "adam")]
    runners = available()
    use_cache(None)
    x, y = data()
    platform = jax.default_backend()
    lines = [
        f"# Throughput: {SAMPLES:,} samples x {EPOCHS} epochs of the notes' model",
        "",
        f"jax {jax.__version__}, platform {platform}, {os.cpu_count()} CPUs; "
        f"{rounds} round(s), medians; command: `python benchmarks/throughput.py"
        f"{' --quick' if args.quick else ''}`",
        "",
        "| batch, optimizer | implementation | wall s | epoch 1 s | steady samples/s "
        "| wall vs ref | steady vs ref |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch_size, optimizer in configs:
        marks: dict[str, list[list[float]]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, run in runners.items():
                marks[name].append(run(x, y, batch_size, optimizer))
        results = {name: summarise(m) for name, m in marks.items()}
        ref = results.get("Keras 3 fit (JAX)", results["Flax linen + Optax loop"])
        for name, r in results.items():
            lines.append(
                f"| {batch_size}, {optimizer} | {name} | {r['wall']:.2f} | {r['epoch 1']:.2f} "
                f"| {r['steady']:,.0f} | {r['wall'] / ref['wall']:.2f} "
                f"| {r['steady'] / ref['steady']:.2f} |"
            )
        print("\n".join(lines[-len(results):]), flush=True)
    first, second = readme_command()
    lines += [
        "",
        "| README main command (10 epochs of digits) | seconds |",
        "|---|---|",
        f"| first run (empty compilation cache) | {first:.2f} |",
        f"| second run (cache filled by the first) | {second:.2f} |",
    ]
    print("\n".join(lines[-4:]))
    out = Path(__file__).parent / "results" / f"throughput-{platform}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
