"""Section ``optimizers``: SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam and Nadam at
their Keras default rate and at a tenth and ten times it, on a shallow ELU + He net."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optax
from flax import nnx

from stablejax import optimizers
from stablejax.study._training import Context, deep_mlp, final
from stablejax.sweep import SweepRun

# The net of the sections "optimizers" and "schedules": hidden layers of `width` units.
SHALLOW_DEPTH = 5
RATE_FACTORS = (0.1, 1.0, 10.0)


def optimizer_table() -> list[tuple[str, Callable[[float], optax.GradientTransformation],
                                    float]]:
    """(name, learning rate -> optimizer, Keras's default rate)."""
    return [
        ("SGD", lambda lr: optimizers.sgd(lr), 0.01),
        ("momentum", lambda lr: optimizers.sgd(lr, momentum=0.9), 0.01),
        ("Nesterov", lambda lr: optimizers.sgd(lr, momentum=0.9, nesterov=True), 0.01),
        ("AdaGrad", lambda lr: optimizers.adagrad(lr), 0.001),
        ("RMSProp", lambda lr: optimizers.rmsprop(lr), 0.001),
        ("Adam", lambda lr: optimizers.adam(lr), 0.001),
        ("Nadam", lambda lr: optimizers.nadam(lr), 0.001),
    ]


def shallow(ctx: Context) -> Callable[[int], nnx.Module]:
    """``seed -> mlp``: :data:`SHALLOW_DEPTH` ELU hidden layers, Keras's initialiser."""
    return deep_mlp(ctx, "elu", None, None, depth=SHALLOW_DEPTH)


def val_score(runs: list[SweepRun]) -> float:
    """The section's one score: mean final val accuracy over the seeds, a seed without
    one (NaN) left out, -inf when none has one (ranked last)."""
    values = np.asarray(final(runs, "val_accuracy"), np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else -math.inf


@dataclass
class OptimizerRuns:
    """One optimizer's runs: its Keras default rate and the runs at each rate."""

    default: float
    by_rate: dict[float, list[SweepRun]]

    def best_rate(self) -> float:
        """The rate of the highest :func:`val_score` (the first of equals)."""
        return max(self.by_rate, key=lambda r: val_score(self.by_rate[r]))


@dataclass
class OptimizersResults:
    """Every optimizer's runs, in :func:`optimizer_table`'s order."""

    optimizers: dict[str, OptimizerRuns]
    seeds: list[int]

    def ranking(self, at_default: bool) -> list[str]:
        """The optimizers by :func:`val_score`, best first, at their default rate or at
        their best."""
        def score(name: str) -> float:
            o = self.optimizers[name]
            return val_score(o.by_rate[o.default if at_default else o.best_rate()])

        return sorted(self.optimizers, key=lambda k: -score(k))


def measure(ctx: Context) -> OptimizersResults:
    """Trains :func:`shallow` with each optimizer at its default rate times each of
    :data:`RATE_FACTORS`; the rates and seeds of one optimizer as one program."""
    make = shallow(ctx)
    found = {}
    for name, build, default in optimizer_table():
        rates = [default * f for f in RATE_FACTORS]
        seeds = [s for _ in rates for s in ctx.seeds]
        runs = ctx.sweep(f"optimizers: {name}", make, build(default), seeds,
                         learning_rates=[r for r in rates for _ in ctx.seeds])
        n = len(ctx.seeds)
        found[name] = OptimizerRuns(
            default, {rate: runs[i * n:(i + 1) * n] for i, rate in enumerate(rates)})
    return OptimizersResults(found, ctx.seeds)


def programs() -> int:
    """The compiled programs the section trains (for the progress bar)."""
    return len(optimizer_table())
