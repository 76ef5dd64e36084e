"""The reader: :func:`load` a ``.keras`` file as a model, optimizer and state; :func:`config`."""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stablejax import steps
from stablejax.keras_format import layer_map, optimizer_map, optimizer_state
from stablejax.keras_format._common import (
    PathLike,
    check_path,
    h5_names,
    path_leaves,
    tree_from,
    variable,
)
from stablejax.keras_format._common import (
    h5py as h5py_module,
)

if TYPE_CHECKING:
    import h5py


def _read(path: str) -> tuple[dict[str, Any], bytes]:
    """``config.json`` parsed and ``model.weights.h5``'s bytes; one-line errors naming
    ``path`` for anything that is not a readable ``.keras`` archive."""
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory; expected a .keras file (the zip archive "
                         "that Keras 3 or keras_format.save writes)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file; expected a .keras file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for required in ("config.json", "model.weights.h5"):
                if required not in names:
                    raise ValueError(f"{path}: not a Keras 3 .keras file: it has no {required} "
                                     f"(it holds {sorted(names)})")
            raw, blob = archive.read("config.json"), archive.read("model.weights.h5")
    except PermissionError:
        raise
    # A damaged archive fails in zipfile, in its seeks (OSError) or in zlib.
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable .keras file (a zip archive): {err}") from None
    try:
        cfg = json.loads(raw)
    except ValueError as err:  # not JSON, or not text
        raise ValueError(f"{path}: config.json is not valid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: config.json does not describe a model")
    return cfg, blob


def _open_h5(blob: bytes, path: str) -> h5py.File:
    h5 = h5py_module()
    try:
        return h5.File(io.BytesIO(blob), "r")
    except OSError as err:
        raise ValueError(f"{path}: model.weights.h5 is not a readable HDF5 file ({err})") from None


def _arrays(h5: h5py.File, group: str, path: str, what: str) -> list[np.ndarray]:
    """The datasets ``group/0, group/1, ...`` of the weights file."""
    if group not in h5:
        raise ValueError(f"{path}: model.weights.h5 has no {group!r} ({what})")
    entries = h5[group]
    keys = sorted(entries.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    if keys != [str(i) for i in range(len(keys))]:
        raise ValueError(f"{path}: {group!r} holds unexpected entries {keys} ({what})")
    return [np.asarray(entries[key]) for key in keys]


def config(path: PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a ``.keras`` file: the model's layers and, under
    ``"compile_config"``, its optimizer, loss and metrics as Keras wrote them."""
    return _read(check_path(path))[0]


def load(
    path: PathLike,
) -> tuple[nnx.Sequential, optax.GradientTransformationExtraArgs | None, steps.TrainState | None]:
    """Reads a Keras 3 ``.keras`` file as ``(model, tx, state)``.

    ``model`` is an ``nnx.Sequential`` of ``stablejax.nn`` layers (one per Keras layer but
    ``InputLayer``; see the module docstring for the mapping) with the saved weights and
    batch-norm moving statistics, in training mode. ``tx`` is the optimizer of the
    model's ``compile_config`` built by :func:`optimizer` (so :func:`save` can write it
    back), and ``state`` a :class:`~stablejax.steps.TrainState` of ``model`` holding the
    saved optimizer variables (moments, Nadam's momentum product, ``iterations`` as the
    optimizer's and the schedule's count, the current learning rate) with ``step`` =
    ``iterations`` and ``epoch`` = 0. ``fit(model, tx, data, state=state, epochs=k)``
    then runs the next ``k`` epochs as Keras would (``epochs`` counts from the loaded
    state; Keras does not save its epoch). A model saved without an optimizer gives
    ``tx = state = None``.

    Raises:
      ValueError: naming the file and what is wrong: a directory, not a readable zip
        archive (or a damaged one), no ``config.json`` or ``model.weights.h5``, a
        ``config.json`` that is not JSON, unsupported layers (all of them named),
        activations, optimizer or schedule, a layer's weights missing, of the wrong
        number or shape, or optimizer variables that do not fit the optimizer.
      FileNotFoundError: when ``path`` does not exist.
      TypeError: when ``path`` is not a str or path-like.
    """
    path = check_path(path)
    cfg, blob = _read(path)
    layers, sample = layer_map.chain(cfg, path)
    plans = layer_map.plan_layers(layers, sample, path)
    model = nnx.Sequential(*[plan.module for plan in plans])
    groups = h5_names([layer.get("class_name", "") for layer in layers])
    with _open_h5(blob, path) as h5:
        trainable = _load_weights(h5, plans, groups, path)
        description = (cfg.get("compile_config") or {}).get("optimizer")
        if not description:
            return model, None, None
        tx = _optimizer(description, path)
        described = optimizer_map.keras_optimizer(tx)
        state = steps.init_state(model, tx)
        if "optimizer/vars" not in h5 or len(h5["optimizer/vars"]) == 0:
            return model, tx, state
        values = _arrays(h5, "optimizer/vars", path, "the optimizer's variables")
    tx, state = _restore_optimizer(path, model, tx, described, state, trainable, values)
    return model, tx, state


def _load_weights(
    h5: h5py.File, plans: list[layer_map.Plan], groups: list[str], path: str
) -> list[str]:
    """Sets each layer's weights from the file; returns the trainable ones' parameter
    paths in Keras's order of trainable variables."""
    trainable: list[str] = []
    for i, (plan, group) in enumerate(zip(plans, groups, strict=True)):
        if not plan.weights:
            continue
        what = f"the weights of layer {plan.keras_name!r}"
        arrays = _arrays(h5, f"layers/{group}/vars", path, what)
        if len(arrays) != len(plan.weights):
            raise ValueError(f"{path}: layer {plan.keras_name!r} has {len(arrays)} weights "
                             f"in model.weights.h5, expected {len(plan.weights)}")
        for k, ((attribute, shape), array) in enumerate(
                zip(plan.weights, arrays, strict=True)):
            if array.shape != shape:
                raise ValueError(
                    f"{path}: layer {plan.keras_name!r}: weight {k} ({attribute}) has "
                    f"shape {array.shape}, expected {shape}")
            variable(plan.module, attribute)[...] = jnp.asarray(array, jnp.float32)
        trainable += [f"layers/{i}/{a}" for a, _ in plan.weights[: plan.trainable]]
    return trainable


def _optimizer(description: Any, path: str) -> optax.GradientTransformationExtraArgs:
    """The optimizer of the compile config's ``optimizer`` entry."""
    if not isinstance(description, dict):
        raise ValueError(f"{path}: the optimizer {description!r} is not a Keras "
                         "optimizer config")
    opt_cfg = dict(description.get("config") or {})
    try:
        return optimizer_map.optimizer(str(description.get("class_name")), **opt_cfg)
    except ValueError as err:
        raise ValueError(f"{path}: cannot load the optimizer: {err}") from None


def _restore_optimizer(
    path: str,
    model: nnx.Sequential,
    tx: optax.GradientTransformationExtraArgs,
    described: tuple[str, dict[str, Any]],
    state: steps.TrainState,
    trainable: list[str],
    values: list[np.ndarray],
) -> tuple[optax.GradientTransformationExtraArgs, steps.TrainState]:
    """``(tx, state)`` holding Keras's optimizer variables ``values``: the saved rate,
    the slots, ``iterations`` as the counts and as ``state.step``. ``described`` is
    ``tx``'s Keras class name and config, ``state`` its fresh state."""
    class_name, full = described
    layout = optimizer_state.layout(class_name, full, len(trainable))
    head = 1 + (not isinstance(full["learning_rate"], dict))  # iterations (and the rate)
    if len(values) == head < len(layout):
        # Compiled but never built (no update ran): no slot variables were saved.
        if int(values[0]) != 0:
            raise ValueError(f"{path}: the optimizer ran {int(values[0])} steps but saved no "
                             "slot variables")
        if head == 2:
            tx = optimizer_map.optimizer(class_name, **{**full, "learning_rate": float(values[1])})
            state = steps.init_state(model, tx)
        return tx, state
    if len(values) != len(layout):
        raise ValueError(
            f"{path}: the optimizer {class_name} has {len(values)} variables in "
            f"model.weights.h5; {len(trainable)} trainable weights need {len(layout)}")
    slots = _slots(path, layout, values, trainable, state.params)
    schedule = None
    if isinstance(full["learning_rate"], dict):
        schedule = optimizer_map.to_schedule(full["learning_rate"])
    else:
        tx = optimizer_map.optimizer(
            class_name, **{**full, "learning_rate": float(slots["learning_rate"])})
        state = steps.init_state(model, tx)
    opt_state = optimizer_state.fill_opt_state(state.opt_state, class_name, full, slots,
                                               schedule)
    step = jnp.asarray(slots["iterations"], jnp.int32)
    state = state._replace(opt_state=opt_state, step=step)
    return tx, jax.tree.map(_own_buffer, state)


def _slots(
    path: str,
    layout: list[tuple[str, int | None]],
    values: list[np.ndarray],
    trainable: list[str],
    like: Any,
) -> dict[str, Any]:
    """Keras's optimizer variables by slot: a scalar, or a tree like ``like`` (the
    parameters); raises naming a variable of the wrong shape."""
    params = dict(path_leaves(like))
    per_slot: dict[str, dict[str, np.ndarray]] = {}
    slots: dict[str, Any] = {}
    for k, ((slot, index), value) in enumerate(zip(layout, values, strict=True)):
        if index is None:
            if value.shape not in ((), (1,)):
                raise ValueError(f"{path}: optimizer variable {k} ({slot}) has shape "
                                 f"{value.shape}, expected a scalar")
            slots[slot] = value.reshape(())
            continue
        target = trainable[index]
        if value.shape != params[target].shape:
            raise ValueError(
                f"{path}: optimizer variable {k} ({slot} of {target}) has shape "
                f"{value.shape}, expected {params[target].shape}")
        per_slot.setdefault(slot, {})[target] = value
    for slot, by_path in per_slot.items():
        slots[slot] = tree_from(like, by_path)
    return slots


def _own_buffer(x: jax.typing.ArrayLike) -> jax.Array:
    # One buffer per leaf (the counts above share one) so that fit can donate the state,
    # committed to its sharding as init_state's leaves are so that fit compiles once.
    x = jnp.array(x, copy=True)
    return jax.device_put(x, x.sharding)
