"""Section ``clip``: a deep ReLU net at a learning rate that makes it explode, without
clipping and with ``clipvalue``, ``clipnorm`` and ``global_clipnorm``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from stablejax import optimizers
from stablejax.study._training import Context, deep_mlp, final
from stablejax.sweep import SweepRun

# SGD with momentum 0.9 at this rate makes the deep ReLU + He net explode.
CLIP_LEARNING_RATE = 0.1
CLIP_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
                 ("no clipping", {}), ("clipvalue=1", {"clipvalue": 1.0}),
                 ("clipnorm=1", {"clipnorm": 1.0}),
                 ("global_clipnorm=1", {"global_clipnorm": 1.0}))


@dataclass
class ClipResults:
    """The runs of each clipping variant (one per seed), by the variant's label."""

    runs: dict[str, list[SweepRun]]
    classes: int
    seeds: list[int]
    steps: int  # updates per epoch

    def diverged(self, run: SweepRun) -> bool:
        """Diverged: the last epoch's loss is not finite or no better than chance
        (``ln classes``)."""
        last = run.history["loss"][-1]
        return not math.isfinite(last) or last >= math.log(self.classes)

    def diverged_count(self, label: str) -> int:
        """How many runs of variant ``label`` diverged."""
        return sum(self.diverged(r) for r in self.runs[label])

    def best(self) -> str:
        """The variant of the highest mean final validation accuracy."""
        return max(self.runs, key=lambda k: np.mean(final(self.runs[k], "val_accuracy")))


def measure(ctx: Context) -> ClipResults:
    """Trains the deep ReLU net of the ``init`` section (no batch norm, default
    initialiser) with SGD, momentum 0.9, :data:`CLIP_LEARNING_RATE` and each of
    :data:`CLIP_VARIANTS`."""
    make = deep_mlp(ctx, "relu", None, None)
    runs = {}
    for label, options in CLIP_VARIANTS:
        tx = optimizers.sgd(CLIP_LEARNING_RATE, momentum=0.9, **options)
        runs[label] = ctx.sweep(f"clip: {label}", make, tx, ctx.seeds)
    return ClipResults(runs, ctx.data.classes, ctx.seeds, ctx.steps)


def programs() -> int:
    """The compiled programs the section trains (for the progress bar)."""
    return len(CLIP_VARIANTS)
