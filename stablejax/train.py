"""Training, in one namespace: the run state and steps, the callbacks, and ``fit``.

The pieces live in :mod:`stablejax.steps` (``TrainState``, ``Weighted``, ``init_state``,
``make_train_step``, ``make_eval_step``, ``make_train_scan``, ``make_eval_scan``),
:mod:`stablejax.callbacks` (``Callback``, ``ReduceLROnPlateau``, ``EarlyStopping``,
``LearningRateScheduler``, ``ModelCheckpoint``, ``CSVLogger``, ``LambdaCallback``) and
:mod:`stablejax.loop` (``fit``, ``evaluate``, ``predict``, ``History``,
``NonFiniteError``); this module gathers them, so ``sj.train.fit`` and
``sj.train.EarlyStopping`` read as in Keras.
"""

from stablejax.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from stablejax.loop import History, NonFiniteError, evaluate, fit, predict
from stablejax.steps import (
    TrainState,
    Weighted,
    init_state,
    make_eval_scan,
    make_eval_step,
    make_train_scan,
    make_train_step,
    update_model,
)

__all__ = [
    "TrainState",
    "Weighted",
    "init_state",
    "make_train_step",
    "make_eval_step",
    "make_train_scan",
    "make_eval_scan",
    "update_model",
    "fit",
    "evaluate",
    "predict",
    "History",
    "NonFiniteError",
    "Callback",
    "ReduceLROnPlateau",
    "EarlyStopping",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "CSVLogger",
    "LambdaCallback",
]
