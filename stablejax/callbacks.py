"""Callbacks for :func:`stablejax.fit`, with Keras's names and semantics.

A callback subclasses :class:`Callback` and overrides the hooks it needs. Its own state
(whatever ``init`` returns) lives in the run state, ``TrainState.callbacks[str(i)]`` for
the i-th callback, so it is saved with a checkpoint and a resumed run continues exactly::

    >>> import stablejax as sj
    >>> callbacks = [sj.callbacks.EarlyStopping("val_loss", patience=3,
    ...                                         restore_best_weights=True)]
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stablejax import optimizers, plateau
from stablejax._checks import (
    check_range,
    non_negative,
    require,
    require_int,
    writable_directory,
)
from stablejax.plateau import _improves
from stablejax.steps import TrainState
from stablejax.stopping import EarlyStoppingFns, early_stopping

__all__ = [
    "Callback",
    "ReduceLROnPlateau",
    "EarlyStopping",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "CSVLogger",
    "LambdaCallback",
]


def _writable_path(path: str, name: str, *, file: bool) -> None:
    """Raises ``ValueError`` naming ``name`` and ``path`` before training when a callback
    could not write there: its directory is under a file or not writable (it is created
    if missing), or the path is a directory where a file goes (``file``) or a file where
    a checkpoint directory goes. A directory part with ``{...}`` fields (formatted from
    the logs each epoch) cannot be known in advance and is not checked."""
    directory = os.path.dirname(path)
    if "{" in directory:
        return
    writable_directory(directory or os.curdir, f"{name} {path!r}: its directory")
    if file and os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is a directory: give a file path")
    if not file and os.path.isfile(path):
        raise ValueError(f"{name} {path!r} is a file: give a directory path (a checkpoint "
                         "directory is written there), or a .keras file path")


class Callback:
    """The hooks :func:`stablejax.fit` calls; each default does nothing.

    ``own`` is the callback's state, as returned by :meth:`init` and later hooks; keep
    it a pytree of arrays (or empty) so checkpoints can hold it.
    """

    def set_model(self, model: Any, tx: Any) -> None:
        """Called by :func:`stablejax.fit` before training with the ``nnx`` model and the
        optimizer it trains (Keras's ``set_model``); the default keeps nothing."""
        del model, tx

    def set_params(self, params: dict[str, Any]) -> None:
        """Called by :func:`stablejax.fit` after :meth:`set_model`, before training, with
        the run's settings (Keras's ``set_params``): ``epochs``, ``steps`` (updates per
        epoch), ``verbose``, ``loss`` (a name or the callable) and ``input_shape`` (one
        sample's shape). The default keeps them as ``self.params``; raising here stops
        ``fit`` before anything trains."""
        self.params = dict(params)

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


_PLATEAU_DEFAULTS = {"factor": 0.1, "patience": 10, "min_delta": 1e-4, "cooldown": 0,
                     "min_lr": 0.0}


def _check_verbose(verbose: Any) -> None:
    if verbose not in (0, 1) or isinstance(verbose, float):
        raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")


def _check_mode(mode: Any) -> None:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")


class ReduceLROnPlateau(Callback):
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
        if not isinstance(monitor, str):
            raise ValueError(f"monitor must be the name of a logged value, got {monitor!r}")
        check_range("factor", factor, 0, 1, low_open=True, high_open=True)
        require_int("patience", patience, 0)
        _check_verbose(verbose)
        _check_mode(mode)
        non_negative("min_delta", min_delta)
        require_int("cooldown", cooldown, 0)
        non_negative("min_lr", min_lr)
        self.monitor, self.factor, self.patience, self.verbose = monitor, factor, patience, verbose
        self.mode, self.min_delta, self.cooldown, self.min_lr = mode, min_delta, cooldown, min_lr

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
        wanted = _mode_for(self.monitor, self.mode)
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
        sign = 1.0 if wanted == "min" else -1.0
        return {
            "best": jnp.asarray(sign * jnp.inf, jnp.float32),
            "wait": jnp.asarray(0, jnp.int32),
            "cooldown_counter": jnp.asarray(0, jnp.int32),
            "count": jnp.asarray(0, jnp.int32),
        }

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        """Advances the plateau state with ``logs[monitor]``; never stops training."""
        value = _monitored(logs, self.monitor)
        if not own:  # the optimizer's reduce_on_plateau transform does the work
            opt_state = plateau.observe(state.opt_state, jnp.float32(value))
            return state._replace(opt_state=opt_state), own, False
        sign = 1.0 if _mode_for(self.monitor, self.mode) == "min" else -1.0
        best, wait = own["best"], int(own["wait"])
        cooldown_counter, count = int(own["cooldown_counter"]), int(own["count"])
        if cooldown_counter > 0:
            cooldown_counter -= 1
            wait = 0
        # The transform's float32 test, so that both ways agree.
        improved = count == 0 or bool(
            _improves(sign, jnp.float32(value), jnp.float32(self.min_delta), best)
        )
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


def _monitored(logs: dict, monitor: str) -> float:
    if monitor not in logs:
        hint = (": pass validation_data or validation_split to fit, or monitor a training "
                "value" if monitor.startswith("val_") and not any(
                    k.startswith("val_") for k in logs) else "")
        raise ValueError(f"monitor {monitor!r} is not among the logged values "
                         f"{sorted(logs)}{hint}")
    return logs[monitor]


@dataclass
class EarlyStopping(Callback):
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
        _check_mode(self.mode)
        _check_verbose(self.verbose)
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
            _mode_for(self.monitor, self.mode),
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
            own["machine"], jnp.float32(_monitored(logs, self.monitor))
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
        _check_verbose(self.verbose)

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


@dataclass
class ModelCheckpoint(Callback):
    """Saves the model after each epoch, or only when ``logs[monitor]`` improves (Keras's).

    The path is ``filepath.format(epoch=epoch + 1, **logs)``, so it may hold Keras's
    fields such as ``"run/{epoch:02d}-{val_loss:.2f}.keras"``. A path ending in
    ``.keras`` is written with :func:`stablejax.keras_format.save` (the model and, unless
    ``save_weights_only``, the optimizer and its state: the optimizer must then be one
    Keras can express, an alias such as ``sj.nadam(1e-3, clipnorm=1.0)`` with a float rate
    or a schedule Keras has, see :func:`stablejax.keras_format.save`; the file's input shape is
    ``fit``'s samples' and its loss ``fit``'s, which must then be a name), checked by a
    trial write before training starts; any other path is a directory
    written with :mod:`stablejax.checkpoint`: with ``save_weights_only`` every variable of
    the model (read it back with ``sj.checkpoint.load_model(path, model)``), otherwise the
    run state without the callbacks' state (``sj.checkpoint.restore(path,
    sj.train.init_state(model, tx))``, which ``fit(state=...)`` continues). An existing
    file or checkpoint at the path is replaced.

    With ``save_best_only`` a path is written only when ``logs[monitor]`` improves on the
    best value so far (``v < best`` in "min" mode, ``v > best`` in "max"; the first value
    always improves unless ``initial_value_threshold`` is given, which is then the value
    to beat). The best value is part of the run state, so a resumed run continues it.

    Args:
      filepath: the path pattern (str or path-like).
      monitor: the logged value compared with ``save_best_only``. Default ``"val_loss"``.
      verbose: 0 silent, 1 prints each save. Default 0.
      save_best_only: save only on improvement. Default False.
      save_weights_only: save the model's variables only. Default False.
      mode: ``"auto"``, ``"min"`` or ``"max"``; ``"auto"`` is "max" for a monitor
        containing "acc", "min" otherwise. Default ``"auto"``.
      save_freq: only ``"epoch"`` (Keras's default) is supported.
      initial_value_threshold: the value to beat first with ``save_best_only``. Default
        None.

    Raises:
      ValueError: for a bad argument, or, with ``save_best_only``, a ``monitor`` missing
        from the logs (Keras warns and saves instead); ``KeyError`` when ``filepath``
        names a field the logs lack.
    """

    filepath: str | os.PathLike
    monitor: str = "val_loss"
    verbose: int = 0
    save_best_only: bool = False
    save_weights_only: bool = False
    mode: str = "auto"
    save_freq: str = "epoch"
    initial_value_threshold: float | None = None
    model: Any = field(default=None, init=False, repr=False)
    tx: Any = field(default=None, init=False, repr=False)
    params: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.filepath, str | os.PathLike):
            raise ValueError(f"filepath must be a path (str), got {self.filepath!r}")
        self.filepath = os.fspath(self.filepath)
        if not isinstance(self.monitor, str):
            raise ValueError(f"monitor must be the name of a logged value, got {self.monitor!r}")
        _check_verbose(self.verbose)
        _check_mode(self.mode)
        if self.save_freq != "epoch":
            raise ValueError(f"save_freq must be 'epoch' (saving every n batches is not "
                             f"supported), got {self.save_freq!r}")
        if self.filepath.endswith(".h5"):
            raise ValueError(f"filepath {self.filepath!r}: HDF5 weight files are not written; "
                             "use a .keras path (add save_weights_only=True for the model "
                             "alone) or a directory for a stablejax checkpoint")
        if self.initial_value_threshold is not None:
            require("initial_value_threshold", self.initial_value_threshold,
                    lambda v: v == v, "any number but NaN")

    def set_model(self, model: Any, tx: Any) -> None:
        """Keeps the model and optimizer that the saves describe."""
        self.model, self.tx = model, tx

    def set_params(self, params: dict[str, Any]) -> None:
        """Keeps the run's settings; for a ``.keras`` path, writes the model once into a
        scratch directory, so that a model, optimizer or loss Keras cannot hold is a
        ``ValueError`` before training rather than after the first epoch."""
        super().set_params(params)
        path = os.fspath(self.filepath)
        _writable_path(path, "ModelCheckpoint filepath", file=path.endswith(".keras"))
        if not path.endswith(".keras") or self.model is None:
            return
        with tempfile.TemporaryDirectory() as scratch:
            try:
                self._save(os.path.join(scratch, "check.keras"), None)
            except ValueError as error:
                raise ValueError(
                    f"ModelCheckpoint({self.filepath!r}) cannot write this run as a .keras "
                    f"file: {error}. save_weights_only=True writes the model without its "
                    "optimizer and loss; a path not ending in .keras writes stablejax "
                    "checkpoints"
                ) from None

    def init(self, state: TrainState) -> Any:
        """The best value so far (``initial_value_threshold`` or none yet)."""
        del state
        threshold = self.initial_value_threshold
        return {"best": jnp.asarray(0.0 if threshold is None else threshold, jnp.float32),
                "has_best": jnp.asarray(threshold is not None)}

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        """Formats the path and saves (on improvement only with ``save_best_only``)."""
        epoch = int(state.epoch)
        path = os.fspath(self.filepath).format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = _monitored(logs, self.monitor)
            sign = 1.0 if _mode_for(self.monitor, self.mode) == "min" else -1.0
            # Keras's messages: its best starts at inf (-inf in "max" mode).
            best = float(own["best"]) if bool(own["has_best"]) else sign * math.inf
            if bool(own["has_best"]) and not bool(
                _improves(sign, jnp.float32(value), jnp.float32(0.0), own["best"])
            ):
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from "
                          f"{best:.5f}")
                return state, own, False
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best:.5f} to "
                      f"{value:.5f}, saving model to {path}")
            own = {"best": jnp.asarray(value, jnp.float32), "has_best": jnp.asarray(True)}
        elif self.verbose:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        self._save(path, state)
        return state, own, False

    def _save(self, path: str, state: TrainState | None) -> None:
        from flax import nnx

        from stablejax import checkpoint, keras_format

        if self.model is None:
            raise ValueError("ModelCheckpoint saves the model of a fit run: pass it in "
                             "fit(callbacks=[...])")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if path.endswith(".keras"):
            tx = None if self.save_weights_only else self.tx
            loss = self.params.get("loss", "sparse_categorical_crossentropy")
            if tx is not None and not isinstance(loss, str):
                raise ValueError("a custom loss has no Keras name for the file's compile "
                                 "config")
            keras_format.save(path, self.model, state, tx,
                              input_shape=self.params.get("input_shape"), loss=loss)
        elif state is None:
            raise ValueError("a checkpoint directory is written from the run state")
        elif self.save_weights_only:
            copy = nnx.merge(nnx.graphdef(self.model), state.params, state.rest)
            checkpoint.save(path, nnx.state(copy), force=True)
        else:
            checkpoint.save(path, state._replace(callbacks={}), force=True)


@dataclass
class CSVLogger(Callback):
    """Writes one row per epoch to a CSV file: ``epoch`` (0-based) and the logs (Keras's).

    As Keras writes it: a header ``epoch`` followed by the log names, sorted, then one
    row per epoch; when the first epoch's logs hold no ``val_`` value, a ``val_`` column
    per log name is added and filled with ``NA``. The file is opened at the first epoch
    of a ``fit`` call (truncated, or with ``append=True`` appended to, the header written
    only if the file is empty), flushed after each row and closed when training ends.
    Resuming a run from a checkpoint needs ``append=True`` to keep the earlier rows.

    Args:
      filename: the file to write (str or path-like).
      separator: the field separator, one character. Default ``","``.
      append: append to an existing file. Default False.
    """

    filename: str | os.PathLike
    separator: str = ","
    append: bool = False
    _file: Any = field(default=None, init=False, repr=False)
    _writer: Any = field(default=None, init=False, repr=False)
    _keys: list[str] | None = field(default=None, init=False, repr=False)
    _header: bool = field(default=True, init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.filename, str | os.PathLike):
            raise ValueError(f"filename must be a path (str), got {self.filename!r}")
        self.filename = os.fspath(self.filename)
        if not (isinstance(self.separator, str) and len(self.separator) == 1):
            raise ValueError(f"separator must be one character, got {self.separator!r}")
        if not isinstance(self.append, bool):
            raise ValueError(f"append must be True or False, got {self.append!r}")

    def set_params(self, params: dict[str, Any]) -> None:
        """Keeps the run's settings and checks, before training, that ``filename`` can be
        written (its directory is created if needed)."""
        super().set_params(params)
        _writable_path(os.fspath(self.filename), "CSVLogger filename", file=True)

    def _open(self) -> None:
        header = True
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                header = not f.readline()
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._header = header

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        """Writes the epoch's row."""
        if self._file is None or self._file.closed:
            self._open()
            self._writer, self._keys = None, None
        if self._keys is None:
            self._keys = sorted(logs)
            if self._keys and not any(k.startswith("val_") for k in self._keys):
                self._keys += [f"val_{k}" for k in self._keys]
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch", *self._keys],
                                          delimiter=self.separator)
            if self._header:
                self._writer.writeheader()
        row: dict[str, Any] = {"epoch": int(state.epoch)}
        row.update({k: logs.get(k, "NA") for k in self._keys})
        self._writer.writerow(row)
        self._file.flush()
        return state, own, False

    def on_train_end(self, state: TrainState, own: Any) -> TrainState:
        """Closes the file."""
        del own
        if self._file is not None and not self._file.closed:
            self._file.close()
        self._writer = None
        return state


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
