"""How many train steps per compiled call ``fit`` needs: steady samples/s against the number.

Each compiled call of ``fit`` costs a dispatch and a wait for its results (the progress
bar and the non-finite check read them), so a call of few steps leaves the device idle
between calls. The notes' model (784-300-100-10, three batch norms, ELU, Adam) trains on
20,000 random 28x28 samples for 3 epochs at each ``steps_per_call``; the figure is the
median of epochs 2-3 (compilation excluded), as a ratio to the best row. ``auto`` is
``fit``'s default (``steps_per_call=None``): one call per epoch without a progress bar,
calls of about 0.1 s with one (the bar is drawn into a string here).

Run: ``python benchmarks/steps_per_call.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time

os.environ["STABLEJAX_CACHE_DIR"] = "off"

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import stablejax as sj  # noqa: E402

SAMPLES = 20_000


class _Clock(sj.callbacks.Callback):
    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_epoch_begin(self, state, own, epoch):
        self.marks.append(time.perf_counter())
        return state

    def on_epoch_end(self, state, own, logs):
        self.marks.append(time.perf_counter())
        return state, own, False


def epoch_rate(x, y, batch_size: int, steps_per_call: int | None, verbose: int = 0) -> float:
    model = sj.nn.mlp([300, 100], input_shape=(28, 28), activation="elu", batch_norm="after",
                      output_activation=None, rngs=nnx.Rngs(0))
    clock = _Clock()
    with contextlib.redirect_stderr(io.StringIO()):
        sj.fit(model, sj.adam(1e-3), (x, y), epochs=3, batch_size=batch_size, verbose=verbose,
               steps_per_call=steps_per_call, callbacks=[clock],
               loss="sparse_categorical_crossentropy_from_logits")
    seconds = [end - begin for begin, end in zip(clock.marks[2::2], clock.marks[3::2],
                                                  strict=True)]
    return SAMPLES / statistics.median(seconds)


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, SAMPLES).astype(np.int32)
    print("| batch | steps per epoch | steps_per_call | samples/s | vs best |")
    print("|---|---|---|---|---|")
    for batch_size in (32, 256):
        steps = SAMPLES // batch_size
        rates: dict[str, float] = {
            str(spc): epoch_rate(x, y, batch_size, spc) for spc in (1, 2, 4, 8, 16, 32, 64)
        }
        rates["auto, no bar"] = epoch_rate(x, y, batch_size, None, verbose=0)
        rates["auto, bar"] = epoch_rate(x, y, batch_size, None, verbose=1)
        best = max(rates.values())
        for label, rate in rates.items():
            print(f"| {batch_size} | {steps} | {label} | {rate:,.0f} | {rate / best:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
