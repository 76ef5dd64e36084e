"""The learning-rate finder's two methods judged by the standard, and their cost.

For each case (a model and an optimizer on the bundled digits, inputs in [0, 1]):

1. the reference: the model trained for ``EPOCHS`` epochs at each rate of a log grid
   (``REFERENCE``, three per decade from 1e-4 to 3), all rates as one ``sj.sweep.run``;
   the grid's best is the lowest validation loss;
2. ``sj.lr_find(method="grid")`` and ``sj.lr_find(method="range")``, each timed
   (compile included, as a user meets it);
3. each suggestion trained the same way; it passes when its validation loss is within
   2x of the reference grid's best.

Every case is run for ``SEEDS`` model seeds (the finder and the reference share the
seed). The table gives each method's suggestion, its validation loss against the
grid's best, pass or fail, and the seconds; the last lines the hit rate of each method
and the ratio of their times.

Run: ``python benchmarks/lr_find.py`` (about 4 minutes on a 2-core CPU).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("STABLEJAX_CACHE_DIR", "off")

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import stablejax as sj  # noqa: E402

EPOCHS, SEEDS = 5, (0, 1)
REFERENCE = np.geomspace(1e-4, 3.0, 16)


def cases() -> list[tuple[str, object, object]]:
    """(name, make_model(seed), optimizer(rate)) for each case."""
    def mlp(hidden, activation, batch_norm=None):
        return lambda seed: sj.nn.mlp(hidden, input_shape=(64,), activation=activation,
                                      batch_norm=batch_norm, rngs=nnx.Rngs(seed))

    return [
        ("relu 64-64, SGD", mlp([64, 64], "relu"), sj.sgd),
        ("selu 6x32, momentum 0.9", mlp([32] * 6, "selu"),
         lambda lr: sj.sgd(lr, momentum=0.9)),
        ("tanh 128, Adam", mlp([128], "tanh"), sj.adam),
        ("elu 4x64 + batch norm, Nadam", mlp([64] * 4, "elu", "after"), sj.nadam),
        ("sigmoid 3x64, RMSProp", mlp([64] * 3, "sigmoid"), sj.rmsprop),
    ]


def val_losses(make, optimizer, rates, seed, splits) -> np.ndarray:
    """The validation loss after EPOCHS epochs at each rate (inf where it diverged)."""
    runs = sj.sweep.run(make, optimizer(float(rates[0])), splits.train,
                        seeds=[seed] * len(rates), epochs=EPOCHS,
                        validation_data=splits.valid, data_seed=seed,
                        learning_rates=[float(r) for r in rates])
    out = np.array([r.history["val_loss"][-1] for r in runs])
    out[~np.isfinite(out)] = np.inf
    return out


def main() -> None:
    splits = sj.data.digits(flatten=True)
    hits = {"grid": 0, "range": 0}
    seconds = {"grid": 0.0, "range": 0.0}
    total = 0
    print("| case | seed | grid's best (rate) | method | suggestion | val loss | "
          "ratio | pass | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, make, optimizer in cases():
        for seed in SEEDS:
            reference = val_losses(make, optimizer, REFERENCE, seed, splits)
            best = float(reference.min())
            total += 1
            for method in ("grid", "range"):
                start = time.perf_counter()
                finder = sj.lr_find(make, optimizer, splits.train,
                                    validation_data=splits.valid, method=method, seed=seed)
                took = time.perf_counter() - start
                seconds[method] += took
                got = float(val_losses(make, optimizer, [finder.suggestion], seed,
                                       splits)[0])
                ok = got <= 2 * best
                hits[method] += ok
                print(f"| {name} | {seed} | {best:.3f} ({REFERENCE[reference.argmin()]:.2g}) "
                      f"| {method} | {finder.suggestion:.3g} | {got:.3f} | "
                      f"{got / best:.2f} | {'yes' if ok else 'NO'} | {took:.1f} |")
    print()
    for method in hits:
        print(f"{method}: {hits[method]}/{total} within 2x of the grid's best, "
              f"{seconds[method]:.1f} s in all")
    print(f"time ratio grid / range: {seconds['grid'] / seconds['range']:.2f}")


if __name__ == "__main__":
    main()
