"""Callbacks that watch one logged value: :class:`MonitorCallback` and the two that act
on a plateau of it, :class:`ReduceLROnPlateau` and :class:`EarlyStopping`.

The watching (``monitor``, ``mode``, ``min_delta``, the improvement test) is Keras's and
is written once, in :class:`MonitorCallback`, on :mod:`stablejax._monitor`, the test the
``reduce_on_plateau`` and ``early_stopping`` state machines use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stablejax import optimizers, plateau
from stablejax._checks import check_range, non_negative, require_int
from stablejax._monitor import check_mode, improves, resolve, sign_of
from stablejax.callbacks.base import Callback, check_verbose
from stablejax.steps import TrainState
from stablejax.stopping import EarlyStoppingFns, early_stopping

_PLATEAU_DEFAULTS = {"factor": 0.1, "patience": 10, "min_delta": 1e-4, "cooldown": 0,
                     "min_lr": 0.0}


class MonitorCallback(Callback):
    """A callback that watches ``logs[monitor]`` in ``mode``, with Keras's arguments.

    Keras's ``ReduceLROnPlateau``, ``EarlyStopping`` and ``ModelCheckpoint`` share them:
    ``mode="auto"`` is "max" for a monitor whose name contains "acc", "min" otherwise
    (:attr:`resolved_mode`), and a value improves on the best so far when
    ``value + min_delta < best`` ("min") or ``value - min_delta > best`` ("max"), both
    taken in float32 (:meth:`improves`). The arguments are checked here, once; a
    dataclass subclass calls ``super().__init__(self.monitor, self.mode,
    self.min_delta)`` from its ``__post_init__``.

    Args:
      monitor: the name of the logged value to watch. Default ``"val_loss"``.
      mode: ``"auto"``, ``"min"`` or ``"max"``. Default ``"auto"``.
      min_delta: smallest change that counts as an improvement (absolute), a finite
        number >= 0 (Keras takes the absolute value of a negative one; here it is
        refused). Default 0.0.

    Whether ``monitor`` is logged at all is only known once the first epoch ends:
    :meth:`monitored` raises ``ValueError`` then.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        if not isinstance(monitor, str):
            raise ValueError(f"monitor must be the name of a logged value, got {monitor!r}")
        check_mode(mode)
        non_negative("min_delta", min_delta)
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta

    @property
    def resolved_mode(self) -> str:
        """``"min"`` or ``"max"``: ``mode`` with ``"auto"`` resolved from ``monitor``."""
        return resolve(self.monitor, self.mode)

    @property
    def sign(self) -> float:
        """``+1`` in "min" mode, ``-1`` in "max": ``sign * value`` is to be lowered."""
        return sign_of(self.resolved_mode)

    def monitored(self, logs: dict[str, float]) -> float:
        """``logs[monitor]``; ``ValueError`` listing the logged names when it is missing
        (with the fix when a ``val_`` value is watched in a run without validation)."""
        if self.monitor not in logs:
            hint = (": pass validation_data or validation_split to fit, or monitor a "
                    "training value" if self.monitor.startswith("val_") and not any(
                        k.startswith("val_") for k in logs) else "")
            raise ValueError(f"monitor {self.monitor!r} is not among the logged values "
                             f"{sorted(logs)}{hint}")
        return logs[self.monitor]

    def improves(self, value: Any, best: Any) -> bool:
        """Whether ``value`` improves on ``best`` by more than ``min_delta``, all three
        taken in float32 (as the ``reduce_on_plateau`` transform compares them)."""
        return bool(improves(self.sign, jnp.float32(value),
                                      jnp.float32(self.min_delta), jnp.float32(best)))


class ReduceLROnPlateau(MonitorCallback):
    r"""Reduces the learning rate when ``logs[monitor]`` stops improving (Keras's callback).

    Keras 3's ``ReduceLROnPlateau``, step for step, once per epoch ("min" mode shown,
    "max" flips the test)::

        if cooldown_counter > 0: cooldown_counter -= 1; wait = 0
        if first value or v + min_delta < best: best = v; wait = 0
        elif cooldown_counter == 0:
            wait += 1
            if wait >= patience and lr > float32(min_lr):
                lr = max(lr * factor, min_lr); cooldown_counter = cooldown; wait = 0

    It works with any optimizer, in one of two ways:

    * the optimizer holds a ``stablejax.reduce_on_plateau`` transform (``sj.sgd(0.01,
      plateau=sj.reduce_on_plateau(patience=5))``): the callback feeds it ``logs[monitor]``
      and the transform's settings rule; its state is in the optimizer state. An
      argument given here with a value other than Keras's default must equal the
      transform's, or ``init`` raises ``ValueError`` naming both values;
    * otherwise the callback runs the algorithm itself on the optimizer's injected
      learning rate (:func:`stablejax.optimizers.set_learning_rate`, so the optimizer
      needs a float ``learning_rate``, as every ``stablejax`` alias built with one has),
      with ``lr`` computed in float64 and stored in float32, as Keras's variable is. Its
      state (``best``, ``wait``, ``cooldown_counter``, ``count``) is in the run state, so
      a checkpoint resumes it.

    Both give the same learning rates for the same monitored values (the transform
    multiplies a float32 scale, so they may differ by an ulp after several reductions).

    Args:
      monitor: the logged value to watch. Default ``"val_loss"``.
      factor: multiplier of the rate at each reduction, in (0, 1). Default 0.1.
      patience: epochs without improvement before a reduction, an integer in [0, inf).
        Default 10.
      verbose: 0 silent, 1 prints each reduction. Default 0.
      mode: ``"auto"``, ``"min"`` or ``"max"``; ``"auto"`` is "max" for a monitor
        containing "acc", "min" otherwise. Default ``"auto"``.
      min_delta: smallest change that counts as an improvement (absolute), a finite
        number >= 0 (Keras takes the absolute value of a negative one; here it is
        refused). Default 1e-4.
      cooldown: after a reduction, ``cooldown - 1`` epochs are not counted, an integer in
        [0, inf). Default 0.
      min_lr: floor of the learning rate, a finite number >= 0. Default 0.0.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        super().__init__(monitor, mode, min_delta)
        check_range("factor", factor, 0, 1, low_open=True, high_open=True)
        require_int("patience", patience, 0)
        check_verbose(verbose)
        require_int("cooldown", cooldown, 0)
        non_negative("min_lr", min_lr)
        self.factor, self.patience, self.verbose = factor, patience, verbose
        self.cooldown, self.min_lr = cooldown, min_lr

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor!r}, "
                f"patience={self.patience!r}, verbose={self.verbose!r}, mode={self.mode!r}, "
                f"min_delta={self.min_delta!r}, cooldown={self.cooldown!r}, "
                f"min_lr={self.min_lr!r})")

    def _given(self) -> dict[str, float]:
        """The arguments set to other values than Keras's defaults."""
        return {name: getattr(self, name) for name, default in _PLATEAU_DEFAULTS.items()
                if getattr(self, name) != default}

    def init(self, state: TrainState) -> Any:
        """Checks the optimizer: its plateau transforms agree with the arguments, or,
        without one, its learning rate can be set. Returns the callback's state."""
        wanted = self.resolved_mode
        found = plateau.states(state.opt_state)
        for node in found:
            mode = "min" if float(node.sign) > 0 else "max"
            if mode != wanted:
                direction = "upward" if wanted == "max" else "downward"
                raise ValueError(
                    f"monitor {self.monitor!r} improves {direction} (mode={self.mode!r}), so "
                    f"reduce_on_plateau needs mode={wanted!r}, got mode={mode!r}"
                )
            for name, value in self._given().items():
                theirs = np.asarray(getattr(node, name)).item()
                if np.asarray(value, np.asarray(getattr(node, name)).dtype).item() != theirs:
                    raise ValueError(
                        f"ReduceLROnPlateau({name}={value!r}) conflicts with the optimizer's "
                        f"reduce_on_plateau transform ({name}={theirs!r}); set it in one "
                        "place: in the transform, or here with an optimizer built without "
                        "plateau="
                    )
        if found:
            return {}
        try:
            optimizers.set_learning_rate(
                state.opt_state, optimizers.current_learning_rate(state.opt_state)
            )
        except ValueError as e:
            raise ValueError(
                f"ReduceLROnPlateau cannot set this optimizer's learning rate: {e}, or "
                "with plateau=sj.reduce_on_plateau(...) to reduce the schedule's rates"
            ) from None
        return {
            "best": jnp.asarray(self.sign * jnp.inf, jnp.float32),
            "wait": jnp.asarray(0, jnp.int32),
            "cooldown_counter": jnp.asarray(0, jnp.int32),
            "count": jnp.asarray(0, jnp.int32),
        }

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        """Advances the plateau state with ``logs[monitor]``; never stops training."""
        value = self.monitored(logs)
        if not own:  # the optimizer's reduce_on_plateau transform does the work
            opt_state = plateau.observe(state.opt_state, jnp.float32(value))
            return state._replace(opt_state=opt_state), own, False
        best, wait = own["best"], int(own["wait"])
        cooldown_counter, count = int(own["cooldown_counter"]), int(own["count"])
        if cooldown_counter > 0:
            cooldown_counter -= 1
            wait = 0
        # The transform's float32 test, so that both ways agree.
        improved = count == 0 or self.improves(value, best)
        if improved:
            best, wait = jnp.asarray(value, jnp.float32), 0
        elif cooldown_counter == 0:
            wait += 1
            lr = float(optimizers.current_learning_rate(state.opt_state))
            if wait >= self.patience and lr > np.float32(self.min_lr):
                new_lr = max(lr * self.factor, self.min_lr)
                state = state._replace(
                    opt_state=optimizers.set_learning_rate(state.opt_state, new_lr)
                )
                cooldown_counter, wait = self.cooldown, 0
                if self.verbose:
                    print(f"\nEpoch {int(state.epoch) + 1}: ReduceLROnPlateau reducing "
                          f"learning rate to {new_lr}.")
        own = {
            "best": jnp.asarray(best, jnp.float32),
            "wait": jnp.asarray(wait, jnp.int32),
            "cooldown_counter": jnp.asarray(cooldown_counter, jnp.int32),
            "count": optax.safe_increment(jnp.asarray(count, jnp.int32)),
        }
        return state, own, False


@dataclass
class EarlyStopping(MonitorCallback):
    """Stops ``fit`` when ``logs[monitor]`` stops improving (Keras's ``EarlyStopping``).

    Keras 3's arguments, order and defaults; the algorithm is
    :func:`stablejax.stopping.early_stopping`. ``restore_best_weights=True`` puts back the
    parameters and statistics of the best epoch when training ends, stopped early or not
    (as Keras 3 does). ``mode="auto"`` means "max" for a monitor containing "acc", "min"
    otherwise. The state (best value, wait, best weights) is part of the run state, so
    a resumed run stops exactly where an uninterrupted one would.

    Args:
      monitor: the logged value to watch. Default ``"val_loss"``.
      min_delta: smallest change that counts as an improvement (absolute), in [0, inf)
        (Keras takes the absolute value of a negative one; here it is refused). Default 0.
      patience: epochs without improvement before stopping, an integer in [0, inf).
        Default 0.
      verbose: 0 silent, 1 prints when it stops and restores. Default 0.
      mode: ``"auto"``, ``"min"`` or ``"max"``. Default ``"auto"``.
      baseline: a value to beat: ``wait`` is only reset by values that also beat it.
        Default None.
      restore_best_weights: restore the best epoch's weights at the end. Default False.
      start_from_epoch: epochs ignored at the start, an integer in [0, inf). Default 0.
      restore_best: the former name of ``restore_best_weights``, still accepted; giving
        both with different values raises ``ValueError``.
    """

    monitor: str = "val_loss"
    min_delta: float = 0.0
    patience: int = 0
    verbose: int = 0
    mode: str = "auto"
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: int = 0
    restore_best: bool | None = None
    machine: EarlyStoppingFns = field(init=False, repr=False)

    def __post_init__(self):
        super().__init__(self.monitor, self.mode, self.min_delta)  # checks them
        check_verbose(self.verbose)
        if self.restore_best is not None:
            if self.restore_best_weights and not self.restore_best:
                raise ValueError("restore_best is the former name of restore_best_weights; "
                                 "give one of them, got restore_best_weights=True and "
                                 "restore_best=False")
            self.restore_best_weights = bool(self.restore_best)
        self.restore_best = self.restore_best_weights
        self.machine = early_stopping(
            self.patience,
            self.min_delta,
            self.resolved_mode,
            self.baseline,
            self.start_from_epoch,
        )

    def init(self, state: TrainState) -> Any:
        """The callback's initial state (and a copy of the weights with restore_best_weights)."""
        own = {"machine": self.machine.init(), "stopped": jnp.asarray(False)}
        if self.restore_best_weights:
            # A copy: the state's own buffers are donated to the next train step.
            own["best"] = jax.tree.map(jnp.copy, (state.params, state.rest))
        return own

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        """Advances the early-stopping state; keeps the best weights; says whether to stop."""
        machine, improved, stop = self.machine.update(
            own["machine"], jnp.float32(self.monitored(logs))
        )
        own = dict(own, machine=machine, stopped=stop)
        if self.restore_best_weights and bool(improved):
            own["best"] = jax.tree.map(jnp.copy, (state.params, state.rest))
        if self.verbose and bool(stop):
            print(f"Epoch {int(state.epoch) + 1}: early stopping")
        return state, own, bool(stop)

    def stopped(self, own: Any) -> bool:
        """True once this callback has stopped the run."""
        return bool(own["stopped"])

    def on_train_end(self, state: TrainState, own: Any) -> TrainState:
        """Puts back the best epoch's parameters and statistics with restore_best_weights."""
        if self.restore_best_weights and int(own["machine"].best_epoch) >= 0:
            if self.verbose:
                print("Restoring model weights from the end of the best epoch: "
                      f"{int(own['machine'].best_epoch) + 1}.")
            params, rest = own["best"]
            return state._replace(params=params, rest=rest)
        return state
