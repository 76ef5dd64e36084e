"""The writer: :func:`save`, a ``stablejax.nn`` model and its optimizer as a ``.keras`` file."""

from __future__ import annotations

import datetime
import io
import json
import os
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import optax
from flax import nnx

from stablejax import nn, steps
from stablejax.keras_format import layer_map, optimizer_map, optimizer_state
from stablejax.keras_format._common import (
    PathLike,
    check_path,
    h5_names,
    keras_object,
    path_leaves,
)
from stablejax.keras_format._common import (
    h5py as h5py_module,
)

if TYPE_CHECKING:
    import h5py

# The format this module writes: the files are those Keras 3.15.1 writes.
KERAS_VERSION = "3.15.1"

# stablejax's loss names that Keras writes as a loss object: (class, its config).
_LOGIT_LOSSES = {
    "sparse_categorical_crossentropy_from_logits": ("SparseCategoricalCrossentropy", {
        "name": "sparse_categorical_crossentropy", "reduction": "sum_over_batch_size",
        "from_logits": True, "ignore_class": None}),
    "binary_crossentropy_from_logits": ("BinaryCrossentropy", {
        "name": "binary_crossentropy", "reduction": "sum_over_batch_size",
        "from_logits": True, "label_smoothing": 0.0, "axis": -1}),
}


def _keras_loss(loss: Any) -> Any:
    """The compile config's ``loss``: a Keras name as is, a from-logits name as the object."""
    if not isinstance(loss, str):
        raise ValueError(f"loss must be a loss name (str), got {loss!r}")
    if loss in _LOGIT_LOSSES:
        class_name, cfg = _LOGIT_LOSSES[loss]
        return keras_object("keras.losses", class_name, dict(cfg))
    return loss


def save(
    path: PathLike,
    model: nnx.Sequential,
    state: steps.TrainState | None = None,
    tx: optax.GradientTransformation | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    loss: str = "sparse_categorical_crossentropy",
    metrics: Sequence[str] = (),
) -> None:
    """Writes ``model`` (and its optimizer) as a Keras 3 ``.keras`` file.

    ``keras.models.load_model(path)`` gives the same network as a ``Sequential`` model,
    with the weights and moving statistics of ``state`` (or of ``model`` when ``state`` is
    None), compiled with ``tx``'s Keras optimizer, ``loss`` and ``metrics`` and holding
    the optimizer variables of ``state`` (fresh ones when ``state`` is None), so that
    Keras's ``fit`` continues the run with the same numbers. Without ``tx`` the file
    holds the model only (Keras loads it uncompiled).

    Args:
      path: the file to write (conventionally ``*.keras``); replaced if it exists.
      model: an ``nnx.Sequential`` of ``stablejax.nn`` ``Flatten``, ``Dense``,
        ``BatchNorm`` (trainable, last axis), ``Activation`` and ``PReLU`` layers, e.g.
        ``sj.nn.mlp(...)``; a scanned stack must be unrolled first (``sj.nn.unroll``).
        Activations: Keras's names (see :data:`ACTIVATIONS`), ``partial(leaky_relu,
        negative_slope=s)`` and ``partial(elu, alpha=a)`` (written as ``LeakyReLU`` and
        ``ELU`` layers), ``"prelu"`` (a ``PReLU`` layer after the ``Dense``).
      state: the run's :class:`~stablejax.steps.TrainState` (weights, statistics and
        optimizer state of ``tx``).
      tx: an optimizer that a stablejax alias returned (``sj.sgd``, ``sj.adagrad``,
        ``sj.rmsprop``, ``sj.adam``, ``sj.nadam``, directly or through :func:`optimizer`
        or :func:`load`), with its clipping, and a float learning rate or a schedule that
        Keras has: ``exponential_decay`` (``ExponentialDecay``), ``power_decay`` with
        ``c=1`` (``InverseTimeDecay``), ``piecewise_constant`` with ``inclusive="right"``
        (``PiecewiseConstantDecay``). Refused, naming the argument: ``decay=``,
        ``plateau=``, Nadam's ``momentum_decay`` other than 1, any other schedule or
        function, and a transformation no alias returned (``optax.adam``, a chain).
      input_shape: the shape of one input sample; default the first layer's width when the
        model starts with ``Dense`` or ``BatchNorm``. Required when it starts with
        ``Flatten``.
      loss: the loss written into the compile config: a Keras loss name, or one of
        stablejax's ``"sparse_categorical_crossentropy_from_logits"`` and
        ``"binary_crossentropy_from_logits"`` (written as Keras's loss object with
        ``from_logits=True``).
      metrics: Keras metric names written into the compile config.

    Raises:
      ValueError: for a layer or activation without Keras equivalent, a ``tx`` Keras
        cannot hold (see ``tx``), a ``state`` that does not belong to ``model`` and
        ``tx``, a missing ``input_shape``, or a ``path`` that is a directory.
      TypeError: for a ``path`` that is not a str or path-like.
    """
    path = check_path(path)
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory; save writes a .keras file (a zip "
                         "archive), e.g. os.path.join(path, 'model.keras')")
    h5py = h5py_module()
    model = _model_to_save(model, state)
    sample = _sample_shape(model, input_shape)
    described = optimizer_map.keras_optimizer(tx) if tx is not None else None
    specs = layer_map.keras_layers(model, sample)
    names = h5_names([class_name for class_name, *_ in specs])
    model_cfg = _model_config(names, specs, sample)
    h5_bytes = io.BytesIO()
    with h5py.File(h5_bytes, "w") as h5:
        trainable = _write_weights(h5, names, specs)
        if described is not None:
            class_name, full = described
            full = _write_optimizer(h5, class_name, full, model, state, tx, trainable)
            model_cfg["compile_config"] = {
                "optimizer": keras_object("keras.optimizers", class_name, full),
                "loss": _keras_loss(loss), "loss_weights": None,
                "metrics": list(metrics) or None,
                "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1,
                "jit_compile": True,
            }
        vars_group = h5.create_group("vars")
        vars_group.attrs["name"] = "sequential"
    _write_archive(path, model_cfg, h5_bytes.getvalue())


def _model_to_save(model: nnx.Sequential, state: steps.TrainState | None) -> nnx.Sequential:
    """``model`` checked, with the variables of ``state`` (a clone) when it is given."""
    if not isinstance(model, nnx.Sequential):
        raise ValueError(f"model must be an nnx.Sequential, got {type(model).__name__}")
    stacks = [i for i, layer in enumerate(model.layers) if isinstance(layer, nn.Stack)]
    if stacks:
        raise ValueError(f"layers {stacks} are scanned stacks; save sj.nn.unroll(model) "
                         "instead")
    if state is not None:
        model = nnx.clone(model)
        steps.update_model(model, state)
    return model


def _sample_shape(model: nnx.Sequential, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The shape of one sample: ``input_shape``, or the first layer's width."""
    if input_shape is None:
        first = model.layers[0] if model.layers else None
        if isinstance(first, nn.Dense):
            input_shape = (first.in_features,)
        elif isinstance(first, nn.BatchNorm):
            input_shape = (first.num_features,)
        else:
            raise ValueError("input_shape is required: the model's first layer does not say "
                             "the shape of a sample")
    return tuple(int(d) for d in input_shape)


def _model_config(
    names: list[str], specs: list[layer_map.Spec], sample: tuple[int, ...]
) -> dict[str, Any]:
    """``config.json``'s Sequential model (without its compile config)."""
    batch_shape = [None, *sample]
    layer_configs: list[dict[str, Any]] = [keras_object("keras.layers", "InputLayer", {
        "batch_shape": batch_shape, "dtype": "float32", "sparse": False, "ragged": False,
        "name": "input_layer", "optional": False})]
    for name, (class_name, cfg, _, _) in zip(names, specs, strict=True):
        layer_cfg = {"name": name, "trainable": True, "dtype": layer_map.dtype_policy(), **cfg}
        layer_configs.append(keras_object("keras.layers", class_name, layer_cfg))
    model_cfg = keras_object("keras", "Sequential", {
        "name": "sequential", "trainable": True, "dtype": layer_map.dtype_policy(),
        "layers": layer_configs, "build_input_shape": batch_shape})
    model_cfg["build_config"] = {"input_shape": batch_shape}
    return model_cfg


def _write_weights(h5: h5py.File, names: list[str], specs: list[layer_map.Spec]) -> list[str]:
    """Writes each layer's variables; returns the trainable ones' paths in Keras's order."""
    trainable: list[str] = []
    h5.create_group("layers")
    for name, (_, _, weights, count) in zip(names, specs, strict=True):
        group = h5.create_group(f"layers/{name}/vars")
        group.attrs["name"] = name
        for k, (_, value) in enumerate(weights):
            group.create_dataset(str(k), data=np.asarray(value, np.float32))
        trainable += [p for p, _ in weights[:count]]
    return trainable


def _write_optimizer(
    h5: h5py.File,
    class_name: str,
    full: dict[str, Any],
    model: nnx.Sequential,
    state: steps.TrainState | None,
    tx: optax.GradientTransformation | None,
    trainable: list[str],
) -> dict[str, Any]:
    """Writes the optimizer's variables in Keras's order; returns its config as written
    (with the current learning rate unless a schedule sets it)."""
    if state is None:
        _, params, _ = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
        opt_state = tx.init(params)  # type: ignore[union-attr]
    else:
        opt_state = state.opt_state
    slots = optimizer_state.read_opt_state(opt_state, class_name, full)
    if not isinstance(full["learning_rate"], dict):
        # As Keras writes it: the current rate, a float32 value.
        full = {**full, "learning_rate": float(np.float32(slots["learning_rate"]))}
    trees = {slot: dict(path_leaves(value)) for slot, value in slots.items()
             if not isinstance(value, jax.Array | np.ndarray)}
    group = h5.create_group("optimizer/vars")
    group.attrs["name"] = full["name"]
    for k, (slot, index) in enumerate(optimizer_state.layout(class_name, full, len(trainable))):
        if index is None:
            dtype = np.int32 if slot == "iterations" else np.float32
            value = np.asarray(slots[slot], dtype)
        else:
            tree = trees.get(slot)
            if tree is None or trainable[index] not in tree:
                raise ValueError(f"the optimizer state holds no {slot} for "
                                 f"{trainable[index]}: it is not the state of tx")
            value = np.asarray(tree[trainable[index]], np.float32)
        group.create_dataset(str(k), data=value)
    return full


def _write_archive(path: str, model_cfg: dict[str, Any], weights: bytes) -> None:
    """The zip archive: ``metadata.json``, ``config.json`` and ``model.weights.h5``."""
    from stablejax import __version__

    metadata = {
        "keras_version": KERAS_VERSION,
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "saved_by": f"stablejax {__version__}",
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(model_cfg))
        archive.writestr("model.weights.h5", weights)
