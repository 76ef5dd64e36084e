"""What Keras's ``sample_weight`` and ``class_weight`` cost ``fit``: steady samples/s.

A weighted batch computes one loss per sample (the batch-mean loss on one-sample
batches, ``jax.vmap``-ed) and their weighted sum over the batch size, and carries the
weights through the device loop beside the labels. The guide's model (784-300-100-10,
three batch norms, ELU, Adam) trains on 20,000 random 28x28 samples in batches of 32 for
3 epochs, unweighted, with ``sample_weight`` and with ``class_weight``, in this process;
the figure is the median samples/s of epochs 2-3 (compilation excluded) as a ratio to
the unweighted run's.

Run: ``python benchmarks/sample_weight.py``.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ["STABLEJAX_CACHE_DIR"] = "off"

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import stablejax as sj  # noqa: E402

SAMPLES, BATCH, EPOCHS = 20_000, 32, 3


def samples_per_second(x: np.ndarray, y: np.ndarray, **weights) -> float:
    """Median samples/s of epochs 2.. of one ``fit`` run."""
    marks: list[float] = []
    clock = sj.train.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: marks.append(time.perf_counter()),
        on_train_end=lambda logs: marks.append(time.perf_counter()))
    model = sj.nn.mlp([300, 100], input_shape=(28, 28), activation="elu",
                      batch_norm="after", rngs=nnx.Rngs(0))
    sj.fit(model, sj.adam(1e-3), (x, y), epochs=EPOCHS, batch_size=BATCH, verbose=0,
           callbacks=[clock], compilation_cache=False, **weights)
    seconds = [b - a for a, b in zip(marks[1:-1], marks[2:], strict=True)]
    return SAMPLES / statistics.median(seconds)


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, SAMPLES).astype(np.int32)
    rows = {
        "unweighted": {},
        "sample_weight": {"sample_weight": rng.uniform(0.5, 2.0, SAMPLES)},
        "class_weight": {"class_weight": {c: 1.0 + c / 10 for c in range(10)}},
    }
    rates = {name: samples_per_second(x, y, **kwargs) for name, kwargs in rows.items()}
    print(f"| fit, batch {BATCH}, Adam | samples/s | ratio to unweighted |")
    print("|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / rates['unweighted']:.2f} |")


if __name__ == "__main__":
    main()
