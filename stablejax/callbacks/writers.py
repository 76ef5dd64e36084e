"""Callbacks that write a file each epoch: :class:`ModelCheckpoint` (the model, or the
run state) and :class:`CSVLogger` (the logs), with Keras's names and semantics."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp

from stablejax._checks import require
from stablejax.callbacks.base import Callback, check_verbose, writable_path
from stablejax.callbacks.monitor import MonitorCallback
from stablejax.steps import TrainState


@dataclass
class ModelCheckpoint(MonitorCallback):
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
        super().__init__(self.monitor, self.mode)  # checks them; min_delta is 0
        check_verbose(self.verbose)
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
        writable_path(path, "ModelCheckpoint filepath", file=path.endswith(".keras"))
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
            value = self.monitored(logs)
            # Keras's messages: its best starts at inf (-inf in "max" mode).
            best = float(own["best"]) if bool(own["has_best"]) else self.sign * math.inf
            if bool(own["has_best"]) and not self.improves(value, own["best"]):
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
        writable_path(os.fspath(self.filename), "CSVLogger filename", file=True)

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
