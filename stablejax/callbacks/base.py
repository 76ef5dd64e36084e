"""The callback protocol, and the checks that callbacks share.

:class:`Callback` is what :func:`stablejax.fit` calls; :func:`writable_path` and
:func:`check_verbose` are the argument checks the callbacks of this package share.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from stablejax._checks import writable_directory
from stablejax.steps import TrainState


def writable_path(path: str, name: str, *, file: bool) -> None:
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


def check_verbose(verbose: Any) -> None:
    """Raises ``ValueError`` unless ``verbose`` is 0 or 1 (Keras's silent or verbose)."""
    if verbose not in (0, 1) or isinstance(verbose, float):
        raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
