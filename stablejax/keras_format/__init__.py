"""Keras 3 ``.keras`` files: continue a Keras run here, or a run of ours in Keras.

A ``.keras`` file is a zip archive of ``config.json`` (the model's layers and, when the
model was compiled, its optimizer), ``metadata.json`` and ``model.weights.h5`` (HDF5: each
layer's variables under ``layers/<name>/vars/<i>``, the optimizer's under
``optimizer/vars/<i>``). :func:`load` reads one into a ``stablejax.nn`` model, the
equivalent stablejax optimizer and a :class:`~stablejax.steps.TrainState` holding the
saved optimizer variables; :func:`save` writes one that ``keras.models.load_model`` reads
and that continues training in Keras::

    model, tx, state = sj.keras_format.load("run.keras")  # trained 2 epochs in Keras
    history = sj.fit(model, tx, (x, y), epochs=1, state=state, shuffle=False)  # epoch 3
    sj.keras_format.save("next.keras", model, history.state, tx, input_shape=(8, 8))
    # keras.models.load_model("next.keras").fit(x, y, shuffle=False) runs epoch 4

What maps (anything else is refused with a ``ValueError`` naming it):

============================  ===============================================
Keras                         stablejax
============================  ===============================================
``Sequential``, or a          ``flax.nnx.Sequential`` (``InputLayer`` gives the
functional chain              input shape and no layer)
``Flatten``                   :class:`stablejax.nn.Flatten`
``Dense(activation=a)``       :class:`stablejax.nn.Dense` (kernel, bias)
``BatchNormalization``        :class:`stablejax.nn.BatchNorm` (last axis)
``Activation(a)``             :class:`stablejax.nn.Activation`
``PReLU``                     :class:`stablejax.nn.PReLU`
``LeakyReLU(s)``, ``ELU(a)``  ``Activation(partial(leaky_relu / elu, ...))``
``Dropout(rate=0)``           ``Activation(None)`` (rate > 0 is refused: Keras's
                              random masks cannot be reproduced)
``SGD``, ``Adagrad``,         :func:`stablejax.sgd` ... :func:`stablejax.nadam`
``RMSprop``, ``Adam``,        with the saved hyperparameters and ``clipvalue``,
``Nadam``                     ``clipnorm``, ``global_clipnorm``
``ExponentialDecay``,         :func:`~stablejax.schedules.exponential_decay`,
``PiecewiseConstantDecay``,   :func:`~stablejax.schedules.piecewise_constant`,
``InverseTimeDecay``          :func:`~stablejax.schedules.power_decay`
============================  ===============================================

Activations by name: ``linear``, ``relu``, ``elu``, ``selu``, ``sigmoid``, ``tanh``,
``softmax``, ``leaky_relu``. Layers must be float32 and trainable; weight decay, EMA,
loss scaling and gradient accumulation are refused. The initialisers, regularisers
(which must be absent) and the loss are not part of the mapping: pass the loss to
``fit`` (``config(path)["compile_config"]["loss"]`` names Keras's: a loss name, or a loss
object's description; one with ``"from_logits": true`` in its ``config`` is stablejax's
name with ``_from_logits``, e.g. ``"sparse_categorical_crossentropy_from_logits"``).

Every stablejax alias (:func:`stablejax.sgd` ... :func:`stablejax.nadam`) records its
arguments (:func:`stablejax.optimizers.describe`), so :func:`save` writes an optimizer
built directly by one, as well as one from :func:`optimizer` or :func:`load`; what Keras
cannot hold (``decay=``, ``plateau=``, Nadam's ``momentum_decay`` other than 1, a
schedule without a Keras class) is refused naming the argument.

Numbers: a Keras run continued here, and a run of ours continued in Keras, agree to
float32 rounding: tests/test_keras_format.py holds both directions to 1e-5 relative to
each array's largest value after an epoch of 8 updates from a state recorded in a file,
against numbers recorded from Keras 3.15.1 (measured 4.5e-7 on the recording machine,
6.3e-7 on an AMD EPYC; longer runs are not compared across machines, whose float32
roundings differ: docs/keras.md, "The tested bound").

The package: :mod:`~stablejax.keras_format.reader` (:func:`load`, :func:`config`),
:mod:`~stablejax.keras_format.writer` (:func:`save`), :mod:`~stablejax.keras_format.layer_map`
(Keras layer configs <-> ``stablejax.nn`` layers), :mod:`~stablejax.keras_format.optimizer_map`
(Keras optimizer and schedule configs <-> the aliases, :func:`optimizer`) and
:mod:`~stablejax.keras_format.optimizer_state` (Keras's optimizer variables <-> an alias's
state). h5py (``pip install 'stablejax[keras]'``) is imported when a file is read or
written.
"""

from __future__ import annotations

from stablejax.keras_format._common import PathLike
from stablejax.keras_format.layer_map import ACTIVATIONS, LAYERS
from stablejax.keras_format.optimizer_map import OPTIMIZERS, SCHEDULES, optimizer
from stablejax.keras_format.reader import config, load
from stablejax.keras_format.writer import KERAS_VERSION, save

__all__ = [
    "ACTIVATIONS",
    "KERAS_VERSION",
    "LAYERS",
    "OPTIMIZERS",
    "SCHEDULES",
    "PathLike",
    "config",
    "load",
    "optimizer",
    "save",
]
