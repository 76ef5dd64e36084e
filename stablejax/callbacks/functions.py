"""Callbacks that run the user's functions: :class:`LearningRateScheduler` (the rate of
each epoch) and :class:`LambdaCallback` (Keras's hooks as plain functions)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stablejax import optimizers
from stablejax.callbacks.base import Callback, check_verbose
from stablejax.steps import TrainState


@dataclass
class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch to ``schedule(epoch)``.

    Keras's ``LearningRateScheduler``: ``epoch`` is 0-based and absolute (a resumed run
    continues its count; no ``initial_epoch`` needed). ``schedule(epoch, lr)`` is tried
    first, then ``schedule(epoch)``. The optimizer must take a constant learning rate
    through ``optax.inject_hyperparams`` (every ``stablejax`` alias built with a float
    ``learning_rate`` does); see ``stablejax.optimizers.set_learning_rate``.
    ``verbose=1`` prints Keras's line for each epoch's rate (default 0: silent).
    """

    schedule: Callable
    verbose: int = 0

    def __post_init__(self):
        if not callable(self.schedule):
            raise ValueError(f"schedule must be a callable schedule(epoch, lr) or "
                             f"schedule(epoch), got {self.schedule!r}")
        check_verbose(self.verbose)

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
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")
        return state._replace(opt_state=optimizers.set_learning_rate(state.opt_state, lr))


class LambdaCallback(Callback):
    """Keras's ``LambdaCallback``: plain functions with Keras's signatures as the hooks.

    ``on_train_begin(logs)`` runs before training (``logs`` empty), ``on_epoch_begin(epoch,
    logs)`` before each epoch (``logs`` empty), ``on_epoch_end(epoch, logs)`` after it with
    the epoch's logs (``loss``, metrics, ``val_`` values, ``lr``, ``skipped``), and
    ``on_train_end(logs)`` at the end with the last epoch's logs; ``epoch`` is 0-based and
    absolute. The functions see copies of the logs, and their return values are ignored.
    Batch hooks do not exist: ``fit`` runs an epoch's batches in one compiled loop on the
    device. A subclass of :class:`Callback` is the way to change the run state or stop.

    Example:
      >>> import stablejax as sj
      >>> seen = []
      >>> log = sj.train.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    """

    def __init__(
        self,
        on_epoch_begin: Callable[[int, dict[str, float]], Any] | None = None,
        on_epoch_end: Callable[[int, dict[str, float]], Any] | None = None,
        on_train_begin: Callable[[dict[str, float]], Any] | None = None,
        on_train_end: Callable[[dict[str, float]], Any] | None = None,
    ):
        for name, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a callable or None, got {fn!r}")
        self._epoch_begin, self._epoch_end = on_epoch_begin, on_epoch_end
        self._train_begin, self._train_end = on_train_begin, on_train_end
        self._last_logs: dict[str, float] = {}

    def set_params(self, params: dict[str, Any]) -> None:
        """Keeps the run's settings, then calls ``on_train_begin({})``."""
        super().set_params(params)
        self._last_logs = {}
        if self._train_begin is not None:
            self._train_begin({})

    def on_epoch_begin(self, state: TrainState, own: Any, epoch: int) -> TrainState:
        """Calls ``on_epoch_begin(epoch, {})``."""
        if self._epoch_begin is not None:
            self._epoch_begin(epoch, {})
        return state

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        """Calls ``on_epoch_end(epoch, logs)``."""
        self._last_logs = dict(logs)
        if self._epoch_end is not None:
            self._epoch_end(int(state.epoch), dict(logs))
        return state, own, False

    def on_train_end(self, state: TrainState, own: Any) -> TrainState:
        """Calls ``on_train_end(logs)`` with the last epoch's logs."""
        if self._train_end is not None:
            self._train_end(dict(self._last_logs))
        return state
