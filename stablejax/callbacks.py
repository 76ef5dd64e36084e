"""Callbacks for :func:`stablejax.fit`, with Keras's names and semantics.

A callback subclasses :class:`Callback` and overrides the hooks it needs. Its own state
(whatever ``init`` returns) lives in the run state, ``TrainState.callbacks[str(i)]`` for
the i-th callback, so it is saved with a checkpoint and a resumed run continues exactly::

    >>> import stablejax as sj
    >>> callbacks = [sj.callbacks.EarlyStopping("val_loss", patience=3, restore_best=True)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from stablejax import optimizers, plateau
from stablejax.steps import TrainState
from stablejax.stopping import EarlyStoppingFns, early_stopping

__all__ = ["Callback", "ReduceLROnPlateau", "EarlyStopping", "LearningRateScheduler"]


class Callback:
    """The hooks :func:`stablejax.fit` calls; each default does nothing.

    ``own`` is the callback's state, as returned by :meth:`init` and later hooks; keep
    it a pytree of arrays (or empty) so checkpoints can hold it.
    """

    def init(self, state: TrainState) -> Any:
        """Called once before training (also on resume, then overwritten by the
        checkpointed value); returns the callback's initial state."""
        del state
        return {}

    def on_epoch_begin(self, state: TrainState, own: Any, epoch: int) -> TrainState:
        """Called before epoch ``epoch`` (0-based, absolute); returns the run state."""
        del own, epoch
        return state

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        """Called after each epoch with its logs; returns ``(state, own, stop)``."""
        del logs
        return state, own, False

    def on_train_end(self, state: TrainState, own: Any) -> TrainState:
        """Called once when training ends (or stops early); returns the run state."""
        del own
        return state

    def stopped(self, own: Any) -> bool:
        """Whether this callback's state says training has already stopped (a run that
        resumes such a state trains no further)."""
        del own
        return False

    def step_stats(self, grads: Any, params: Any) -> dict[str, jax.Array]:
        """Scalars to compute inside the compiled train step, ``{name: value}``.

        Called while ``fit`` traces its step, with the step's gradients and the
        parameters before the update (both pytrees of arrays); use ``jax.numpy`` only.
        ``fit`` averages each value over the epoch's finite steps, weighted by batch
        size as the loss is, and adds it to the logs that :meth:`on_epoch_end` and the
        history see. The default computes nothing, and the step is compiled without it.
        """
        del grads, params
        return {}


def _mode_for(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


@dataclass
class ReduceLROnPlateau(Callback):
    """Feeds ``logs[monitor]`` to every ``reduce_on_plateau`` transform in the optimizer.

    The algorithm and its hyperparameters live in ``stablejax.reduce_on_plateau``, which
    must be part of the optimizer (e.g. ``sj.sgd(0.01, plateau=sj.reduce_on_plateau(
    patience=5))``); its state is in the optimizer state, so it is saved and resumed.
    """

    monitor: str = "val_loss"

    def init(self, state: TrainState) -> Any:
        """Checks the optimizer holds a plateau transform whose mode suits the monitor."""
        found = plateau.states(state.opt_state)
        if not found:
            raise ValueError(
                "ReduceLROnPlateau needs a stablejax.reduce_on_plateau transform in the "
                "optimizer, e.g. sj.sgd(0.01, plateau=sj.reduce_on_plateau(patience=5))"
            )
        wanted = _mode_for(self.monitor, "auto")
        for node in found:
            mode = "min" if float(node.sign) > 0 else "max"
            if mode != wanted:
                raise ValueError(
                    f"monitor {self.monitor!r} improves upward, so reduce_on_plateau needs "
                    f"mode={wanted!r}, got mode={mode!r}"
                    if wanted == "max"
                    else f"monitor {self.monitor!r} improves downward, so reduce_on_plateau "
                    f"needs mode={wanted!r}, got mode={mode!r}"
                )
        return {}

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        """Advances the plateau state with ``logs[monitor]``; never stops training."""
        opt_state = plateau.observe(state.opt_state, jnp.float32(_monitored(logs, self.monitor)))
        return state._replace(opt_state=opt_state), own, False


def _monitored(logs: dict, monitor: str) -> float:
    if monitor not in logs:
        raise ValueError(f"monitor {monitor!r} is not among the logged values {sorted(logs)}")
    return logs[monitor]


@dataclass
class EarlyStopping(Callback):
    """Stops ``fit`` when ``logs[monitor]`` stops improving (Keras's ``EarlyStopping``).

    ``restore_best=True`` puts back the parameters and statistics of the best epoch when
    training stops or ends. ``mode="auto"`` means "max" for a monitor containing "acc",
    "min" otherwise. The state (best value, wait, best weights) is part of the run
    state, so a resumed run stops exactly where an uninterrupted one would.
    """

    monitor: str = "val_loss"
    patience: int = 0
    min_delta: float = 0.0
    mode: str = "auto"
    baseline: float | None = None
    start_from_epoch: int = 0
    restore_best: bool = False
    machine: EarlyStoppingFns = field(init=False, repr=False)

    def __post_init__(self):
        if self.mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {self.mode!r}")
        self.machine = early_stopping(
            self.patience,
            self.min_delta,
            _mode_for(self.monitor, self.mode),
            self.baseline,
            self.start_from_epoch,
        )

    def init(self, state: TrainState) -> Any:
        """The callback's initial state (and a copy of the weights with restore_best)."""
        own = {"machine": self.machine.init(), "stopped": jnp.asarray(False)}
        if self.restore_best:
            # A copy: the state's own buffers are donated to the next train step.
            own["best"] = jax.tree.map(jnp.copy, (state.params, state.rest))
        return own

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        """Advances the early-stopping state; keeps the best weights; says whether to stop."""
        machine, improved, stop = self.machine.update(
            own["machine"], jnp.float32(_monitored(logs, self.monitor))
        )
        own = dict(own, machine=machine, stopped=stop)
        if self.restore_best and bool(improved):
            own["best"] = jax.tree.map(jnp.copy, (state.params, state.rest))
        return state, own, bool(stop)

    def stopped(self, own: Any) -> bool:
        """True once this callback has stopped the run."""
        return bool(own["stopped"])

    def on_train_end(self, state: TrainState, own: Any) -> TrainState:
        """Puts back the best epoch's parameters and statistics with restore_best."""
        if self.restore_best and int(own["machine"].best_epoch) >= 0:
            params, rest = own["best"]
            return state._replace(params=params, rest=rest)
        return state


@dataclass
class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch to ``schedule(epoch)``.

    Keras's ``LearningRateScheduler``: ``epoch`` is 0-based and absolute (a resumed run
    continues its count; no ``initial_epoch`` needed). ``schedule(epoch, lr)`` is tried
    first, then ``schedule(epoch)``. The optimizer must take a constant learning rate
    through ``optax.inject_hyperparams`` (every ``stablejax`` alias built with a float
    ``learning_rate`` does); see ``stablejax.optimizers.set_learning_rate``.
    """

    schedule: Callable

    def init(self, state: TrainState) -> Any:
        """Checks that the optimizer's learning rate can be set."""
        optimizers.set_learning_rate(
            state.opt_state, optimizers.current_learning_rate(state.opt_state)
        )
        return {}

    def on_epoch_begin(self, state: TrainState, own: Any, epoch: int) -> TrainState:
        """Sets the rate of the coming epoch."""
        current = float(optimizers.current_learning_rate(state.opt_state))
        try:
            lr = self.schedule(epoch, current)
        except TypeError:
            lr = self.schedule(epoch)
        lr = float(lr)
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"schedule({epoch}) must be a finite number >= 0, got {lr!r}")
        return state._replace(opt_state=optimizers.set_learning_rate(state.opt_state, lr))
