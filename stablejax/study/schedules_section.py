"""Section ``schedules``: constant, power, exponential, piecewise, performance (plateau)
and 1cycle learning rates for SGD with momentum on the optimizers section's net."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
import optax
from flax import nnx

from stablejax import callbacks, loop, optimizers, plateau, schedules
from stablejax.study._common import LOGITS
from stablejax.study._training import Context
from stablejax.study.optimizers_section import shallow

SCHEDULE_LR0 = 0.01  # SGD with momentum 0.9, as in the guide's schedule examples
SCHEDULES = ("constant", "power", "exponential", "piecewise", "performance", "1cycle")

History = dict[str, list[float]]


def schedule(name: str, total_steps: int) -> optax.Schedule | float:
    """The learning rate of each schedule over ``total_steps`` updates, from ``lr0``.

    power: ``lr0 / (1 + t / s)`` with ``s = T / 4`` (ends at ``lr0 / 5``); exponential:
    ``lr0 * 0.1 ** (t / s)`` with ``s = T / 2`` (ends at ``lr0 / 100``); piecewise:
    ``lr0``, then ``lr0 / 10`` from ``T / 2`` and ``lr0 / 100`` from ``3 T / 4``;
    1cycle: up to ``10 lr0`` over the first 30%, then down to ``10 lr0 / 25e4``.

    >>> schedule("constant", 100), schedule("performance", 100)
    (0.01, 0.01)
    """
    lr0, t = SCHEDULE_LR0, total_steps
    if name == "power":
        return schedules.power_decay(lr0, max(t / 4, 1.0))
    if name == "exponential":
        return schedules.exponential_decay(lr0, max(t / 2, 1.0))
    if name == "piecewise":
        return schedules.piecewise_constant([max(t // 2, 1), max(3 * t // 4, 2)],
                                            [lr0, lr0 / 10, lr0 / 100])
    if name == "1cycle":
        return schedules.one_cycle(10 * lr0, max(t, 2))
    return lr0  # constant; performance scheduling scales it from the epoch's val_loss


@dataclass
class SchedulesResults:
    """Each schedule's histories (one per seed) and its rate at every update."""

    histories: dict[str, list[History]]
    rates: dict[str, np.ndarray]
    seeds: list[int]
    steps: int  # updates per epoch
    total: int  # updates in all

    def final_accuracy(self) -> dict[str, float]:
        """Each schedule's final validation accuracy, the mean over seeds."""
        return {k: float(np.mean([h["val_accuracy"][-1] for h in hs]))
                for k, hs in self.histories.items()}

    def ranking(self) -> list[str]:
        """The schedules by final validation accuracy, best first."""
        return sorted(self.histories, key=lambda k: -np.mean(
            [h["val_accuracy"][-1] for h in self.histories[k]]))


def _performance(ctx: Context, make: Callable[[int], nnx.Module]) -> list[History]:
    """Performance scheduling reads each epoch's val_loss on the host: one fit per seed
    (it cannot share one program)."""
    histories = []
    for seed in ctx.seeds:
        reduce = plateau.reduce_on_plateau(factor=0.5, patience=1, learning_rate=SCHEDULE_LR0)
        tx = optimizers.sgd(SCHEDULE_LR0, momentum=0.9, plateau=reduce)
        history = loop.fit(make(seed), tx, ctx.data.train, epochs=ctx.budget.epochs,
                           batch_size=ctx.budget.batch_size,
                           validation_data=ctx.data.valid, loss=LOGITS,
                           callbacks=[callbacks.ReduceLROnPlateau("val_loss")],
                           seed=ctx.seed, verbose=0)
        histories.append(history.history)
    ctx.tick("schedules: performance")
    return histories


def measure(ctx: Context) -> SchedulesResults:
    """Trains :func:`~stablejax.study.optimizers_section.shallow` with SGD, momentum 0.9
    and each of :data:`SCHEDULES`."""
    make = shallow(ctx)
    steps = ctx.steps
    total = steps * ctx.budget.epochs
    histories: dict[str, list[History]] = {}
    rates: dict[str, np.ndarray] = {}
    for name in SCHEDULES:
        lr = schedule(name, total)
        if name == "performance":
            histories[name] = _performance(ctx, make)
            rates[name] = np.repeat(np.mean([h["lr"] for h in histories[name]], axis=0), steps)
        else:
            runs = ctx.sweep(f"schedules: {name}", make, optimizers.sgd(lr, momentum=0.9),
                             ctx.seeds)
            histories[name] = [r.history for r in runs]
            rates[name] = (np.asarray(jax.vmap(lr)(np.arange(total)))
                           if callable(lr) else np.full(total, lr))
    return SchedulesResults(histories, rates, ctx.seeds, steps, total)


def programs() -> int:
    """The compiled programs (or groups of fits) the section trains (for the progress
    bar)."""
    return len(SCHEDULES)
