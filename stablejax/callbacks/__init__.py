"""Callbacks for :func:`stablejax.fit`, with Keras's names and semantics.

A callback subclasses :class:`Callback` and overrides the hooks it needs. Its own state
(whatever ``init`` returns) lives in the run state, ``TrainState.callbacks[str(i)]`` for
the i-th callback, so it is saved with a checkpoint and a resumed run continues exactly::

    >>> import stablejax as sj
    >>> callbacks = [sj.callbacks.EarlyStopping("val_loss", patience=3,
    ...                                         restore_best_weights=True)]

The modules: :mod:`~stablejax.callbacks.base` (the protocol),
:mod:`~stablejax.callbacks.monitor` (:class:`MonitorCallback`, the base of the callbacks
that watch a logged value, and ``ReduceLROnPlateau``, ``EarlyStopping``),
:mod:`~stablejax.callbacks.writers` (``ModelCheckpoint``, ``CSVLogger``) and
:mod:`~stablejax.callbacks.functions` (``LearningRateScheduler``, ``LambdaCallback``).
"""

from stablejax.callbacks.base import Callback
from stablejax.callbacks.functions import LambdaCallback, LearningRateScheduler
from stablejax.callbacks.monitor import EarlyStopping, MonitorCallback, ReduceLROnPlateau
from stablejax.callbacks.writers import CSVLogger, ModelCheckpoint

__all__ = [
    "Callback",
    "MonitorCallback",
    "ReduceLROnPlateau",
    "EarlyStopping",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "CSVLogger",
    "LambdaCallback",
]
