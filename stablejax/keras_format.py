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
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import math
import numbers
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stablejax import activations, nn, optimizers, schedules, steps, transforms

__all__ = [
    "ACTIVATIONS",
    "LAYERS",
    "OPTIMIZERS",
    "SCHEDULES",
    "config",
    "load",
    "optimizer",
    "save",
]

PathLike = str | os.PathLike

LAYERS = (
    "InputLayer", "Flatten", "Dense", "BatchNormalization", "Activation", "PReLU",
    "LeakyReLU", "ELU", "Dropout",
)
OPTIMIZERS = ("SGD", "Adagrad", "RMSprop", "Adam", "Nadam")
SCHEDULES = ("ExponentialDecay", "PiecewiseConstantDecay", "InverseTimeDecay")
ACTIVATIONS = ("linear", "relu", "elu", "selu", "sigmoid", "tanh", "softmax", "leaky_relu")

# The format this module writes: the files are those Keras 3.15.1 writes.
KERAS_VERSION = "3.15.1"

# Keras 3's defaults of each optimizer's own arguments, in the order of its get_config
# (which writes name, learning_rate, the base options, then these).
_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "SGD": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "Adagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
    "RMSprop": {
        "learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False,
    },
    "Adam": {
        "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False,
    },
    "Nadam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
}
_BASE_OPTIONS: dict[str, Any] = {
    "weight_decay": None, "clipnorm": None, "global_clipnorm": None, "clipvalue": None,
    "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
    "loss_scale_factor": None, "gradient_accumulation_steps": None,
}
_SCHEDULE_KEYS = {
    "ExponentialDecay": ("initial_learning_rate", "decay_steps", "decay_rate", "staircase"),
    "InverseTimeDecay": ("initial_learning_rate", "decay_steps", "decay_rate", "staircase"),
    "PiecewiseConstantDecay": ("boundaries", "values"),
}
_ALIASES: dict[str, Callable[..., optax.GradientTransformationExtraArgs]] = {
    "SGD": optimizers.sgd, "Adagrad": optimizers.adagrad, "RMSprop": optimizers.rmsprop,
    "Adam": optimizers.adam, "Nadam": optimizers.nadam,
}
_CLASS_NAMES = {alias.__name__: class_name for class_name, alias in _ALIASES.items()}


# ---------------------------------------------------------------------------------------
# Optimizers


def _schedule_description(description: Any) -> dict[str, Any]:
    """A Keras schedule's ``{"class_name", "config"}`` completed as Keras writes it."""
    if not isinstance(description, dict) or "class_name" not in description:
        raise ValueError(
            f"learning_rate must be a number or a Keras schedule's {{'class_name': ..., "
            f"'config': ...}}, got {description!r}"
        )
    name, cfg = description["class_name"], dict(description.get("config") or {})
    if name not in _SCHEDULE_KEYS:
        raise ValueError(f"unsupported learning-rate schedule {name!r}; supported: {SCHEDULES}")
    missing = [key for key in _SCHEDULE_KEYS[name] if key not in cfg and key != "staircase"]
    if missing:
        raise ValueError(f"schedule {name} lacks {missing}")
    unknown = sorted(set(cfg) - set(_SCHEDULE_KEYS[name]) - {"name"})
    if unknown:
        raise ValueError(f"schedule {name} takes no argument(s) {unknown}")
    if "staircase" in _SCHEDULE_KEYS[name]:
        cfg.setdefault("staircase", False)
    cfg.setdefault("name", name)
    return _object("keras.optimizers.schedules", name, cfg)


def _schedule(description: dict[str, Any]) -> optax.Schedule:
    """The stablejax schedule for a Keras schedule's ``{"class_name", "config"}``."""
    description = _schedule_description(description)
    name, cfg = description["class_name"], description["config"]
    if name == "PiecewiseConstantDecay":
        return schedules.piecewise_constant(cfg["boundaries"], cfg["values"])
    lr0, steps_, rate = cfg["initial_learning_rate"], cfg["decay_steps"], cfg["decay_rate"]
    staircase = bool(cfg["staircase"])
    if name == "ExponentialDecay":
        return schedules.exponential_decay(lr0, steps_, rate, staircase)
    # Keras's lr0 / (1 + rate * p), p = t / steps (floored with staircase): the same
    # expression as power_decay's with c = 1.
    return schedules.power_decay(lr0, steps_, rate=rate, staircase=staircase)


def _object(module: str, class_name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": cfg, "registered_name": None}


def _clip(value: Any) -> float | None:
    # Keras clips only for a threshold > 0 (None and 0 mean no clipping).
    return float(value) if value else None


def optimizer(class_name: str, **config: Any) -> optax.GradientTransformationExtraArgs:
    """The stablejax optimizer for a Keras optimizer's class name and config.

    ``optimizer("Adam", learning_rate=1e-3, clipnorm=1.0)`` is ``stablejax.adam(1e-3,
    clipnorm=1.0)``: the alias, which :func:`save` can write back (as it can any alias).
    Missing arguments take Keras 3's defaults, which are the aliases' defaults.

    Args:
      class_name: ``"SGD"``, ``"Adagrad"``, ``"RMSprop"``, ``"Adam"`` or ``"Nadam"`` (any
        case).
      **config: Keras's arguments: ``learning_rate`` (a number or a Keras schedule as
        written in a ``.keras`` file, ``{"class_name": "ExponentialDecay", "config":
        {...}}``, see :data:`SCHEDULES`), the optimizer's own (``momentum``,
        ``nesterov``, ``rho``, ``centered``, ``beta_1``, ``beta_2``, ``epsilon``,
        ``amsgrad``, ``initial_accumulator_value``), ``clipvalue``, ``clipnorm``,
        ``global_clipnorm`` (None or 0: no clipping, as in Keras), and ``name``,
        ``ema_momentum``, ``ema_overwrite_frequency``, which change nothing (:func:`save`
        writes Keras's defaults for them). Nadam's momentum schedule is Keras 3's
        (``momentum_decay=1``).

    Raises:
      ValueError: for another optimizer, an unknown argument, ``weight_decay``,
        ``use_ema``, ``loss_scale_factor`` or ``gradient_accumulation_steps`` (not
        reproduced), or a bad value (the alias's own check).

    Example:
      >>> tx = optimizer("sgd", learning_rate=0.1, momentum=0.9, nesterov=True)
      >>> import jax.numpy as jnp
      >>> print(tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))[0])  # -0.1 * (1 + 0.9)
      [-0.19]
    """
    names = {name.lower(): name for name in OPTIMIZERS}
    if not isinstance(class_name, str) or class_name.lower() not in names:
        raise ValueError(f"unsupported optimizer {class_name!r}; supported: {OPTIMIZERS}")
    class_name = names[class_name.lower()]
    own = _HYPERPARAMETERS[class_name]
    unknown = sorted(set(config) - set(own) - set(_BASE_OPTIONS) - {"name"})
    if unknown:
        raise ValueError(f"{class_name} takes no argument(s) {unknown}")
    options = {key: config.get(key, default) for key, default in _BASE_OPTIONS.items()}
    refused = [
        f"{key}={options[key]!r}"
        for key in ("weight_decay", "loss_scale_factor", "gradient_accumulation_steps")
        if options[key]
    ] + (["use_ema=True"] if options["use_ema"] else [])
    if refused:
        raise ValueError(f"{class_name} with {', '.join(refused)} is not supported")
    lr = config.get("learning_rate", own["learning_rate"])
    learning_rate = _schedule(lr) if isinstance(lr, dict) else lr
    kwargs = {key: config.get(key, default) for key, default in own.items()
              if key != "learning_rate"}
    if class_name == "SGD" and not kwargs["momentum"]:
        # Keras keeps no momentum variable then; its Nesterov step is plain SGD.
        kwargs["nesterov"] = False
    clips = {key: _clip(options[key]) for key in ("clipvalue", "clipnorm", "global_clipnorm")}
    return _ALIASES[class_name](learning_rate, **kwargs, **clips)


def _number(value: Any) -> int | float:
    """A schedule's argument as JSON writes it: an integer stays one."""
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _keras_schedule(schedule: Callable[..., Any]) -> dict[str, Any]:
    """Keras's ``{"class_name", "config"}`` of a schedule that Keras has a class for."""
    description = schedules.describe(schedule)
    keras_names = ("stablejax.schedules.exponential_decay, power_decay (c=1) and "
                   "piecewise_constant (inclusive='right') have Keras classes")
    if description is None:
        raise ValueError(f"learning_rate={schedule!r} is a function with no Keras schedule "
                         f"class; {keras_names}")
    name, args = description
    if name in ("exponential_decay", "power_decay"):
        cfg: dict[str, Any] = {
            "initial_learning_rate": _number(args["lr0"]), "decay_steps": _number(args["s"]),
            "decay_rate": _number(args["rate"]), "staircase": bool(args["staircase"])}
        if name == "exponential_decay":
            return _schedule_description({"class_name": "ExponentialDecay", "config": cfg})
        if float(args["c"]) == 1:
            return _schedule_description({"class_name": "InverseTimeDecay", "config": cfg})
        raise ValueError(f"learning_rate: power_decay with c={args['c']!r} has no Keras "
                         "schedule class (InverseTimeDecay is c=1)")
    if name == "piecewise_constant":
        if args["inclusive"] == "right":
            return _schedule_description({"class_name": "PiecewiseConstantDecay", "config": {
                "boundaries": [_number(b) for b in args["boundaries"]],
                "values": [_number(v) for v in args["values"]]}})
        raise ValueError(f"learning_rate: piecewise_constant with inclusive="
                         f"{args['inclusive']!r} has no Keras schedule class "
                         "(PiecewiseConstantDecay is inclusive='right')")
    raise ValueError(f"learning_rate: schedules.{name} has no Keras schedule class; "
                     f"{keras_names}")


def _keras_optimizer(tx: optax.GradientTransformation) -> tuple[str, dict[str, Any]]:
    """Keras's class name and complete config of an optimizer that an alias built.

    Raises ``ValueError`` naming each argument Keras's optimizer cannot hold.
    """
    description = optimizers.describe(tx)
    if description is None:
        raise ValueError("tx has no Keras description: build it with a stablejax alias "
                         "(sj.sgd, sj.adagrad, sj.rmsprop, sj.adam, sj.nadam), "
                         "keras_format.optimizer(...) or take it from load()")
    name, args = description
    class_name = _CLASS_NAMES[name]
    refused = []
    if float(args["decay"]) != 0:
        refused.append(f"decay={args['decay']!r} (Keras 2's legacy decay, which Keras 3 "
                       "ignores; use a schedule)")
    if args["plateau"] is not None:
        refused.append("plateau= (Keras reduces the rate with its ReduceLROnPlateau "
                       "callback, outside the optimizer)")
    if name == "nadam" and float(args["momentum_decay"]) != 1:
        refused.append(f"momentum_decay={args['momentum_decay']!r} (Keras 3's Nadam is "
                       "momentum_decay=1.0)")
    lr = args["learning_rate"]
    try:
        learning_rate = _keras_schedule(lr) if callable(lr) else float(lr)
    except ValueError as error:
        refused.append(str(error))
    if refused:
        raise ValueError(f"tx ({name}) cannot be written as Keras's {class_name}: "
                         + "; ".join(refused))
    clips = {key: None if args[key] is None else float(args[key])
             for key in ("clipnorm", "global_clipnorm", "clipvalue")}
    own = {key: type(default)(args[key])  # Keras checks that a float is a float
           for key, default in _HYPERPARAMETERS[class_name].items() if key != "learning_rate"}
    return class_name, {"name": _snake(class_name), "learning_rate": learning_rate,
                        **_BASE_OPTIONS, **clips, **own}


def _slot_groups(class_name: str, cfg: dict[str, Any]) -> list[tuple[str, ...]]:
    """Keras's optimizer variables after ``iterations`` (and the rate): groups of slots,
    each group interleaved over the trainable variables (``m0, v0, m1, v1, ...``)."""
    if class_name == "SGD":
        return [("momentum",)] if cfg["momentum"] else []
    if class_name == "Adagrad":
        return [("accumulator",)]
    if class_name == "RMSprop":
        groups: list[tuple[str, ...]] = [("velocity",)]
        return (groups + ([("momentum",)] if cfg["momentum"] > 0 else [])
                + ([("average_gradient",)] if cfg["centered"] else []))
    if class_name == "Adam":
        return [("momentum", "velocity")] + ([("velocity_hat",)] if cfg["amsgrad"] else [])
    return [("momentum", "velocity")]  # Nadam, then its u_product


def _layout(class_name: str, cfg: dict[str, Any], count: int) -> list[tuple[str, int | None]]:
    """``(slot, trainable index or None)`` for each of Keras's optimizer variables."""
    layout: list[tuple[str, int | None]] = [("iterations", None)]
    if not isinstance(cfg["learning_rate"], dict):
        layout.append(("learning_rate", None))
    for group in _slot_groups(class_name, cfg):
        layout += [(slot, i) for i in range(count) for slot in group]
    if class_name == "Nadam":
        layout.append(("u_product", None))
    return layout


_STATE_TYPES = (
    optax.InjectStatefulHyperparamsState,
    transforms.ScaleByAdamState,
    transforms.ScaleByNadamState,
    transforms.ScaleByAdagradState,
    transforms.ScaleByRmspropState,
    transforms.ScaleByMomentumState,
)


def _states(opt_state: optax.OptState) -> dict[type, Any]:
    """The optimizer's sub-states by type (one of each in an alias's state)."""
    found: dict[type, Any] = {}

    def visit(node: Any) -> None:
        if isinstance(node, _STATE_TYPES):
            found.setdefault(type(node), node)
            if isinstance(node, optax.InjectStatefulHyperparamsState):
                visit(node.inner_state)
        elif isinstance(node, tuple):
            for child in node:
                visit(child)

    visit(opt_state)
    return found


def _fill_opt_state(
    opt_state: optax.OptState,
    class_name: str,
    cfg: dict[str, Any],
    slots: dict[str, Any],
    schedule: optax.Schedule | None,
) -> optax.OptState:
    """``opt_state`` (an alias's fresh state) holding Keras's optimizer variables."""
    iterations = jnp.asarray(slots["iterations"], jnp.int32)
    # Keras's RMSprop keeps +lr * g / sqrt(...) in its momentum, ours the update's sign.
    sign = -1.0 if class_name == "RMSprop" else 1.0

    def fill(node: Any) -> Any:
        if isinstance(node, optax.InjectStatefulHyperparamsState):
            hyper = dict(node.hyperparams)
            old = hyper["learning_rate"]
            if schedule is None:
                hyper["learning_rate"] = jnp.asarray(slots["learning_rate"], old.dtype)
            else:  # the rate of the last update, as after that update here
                last = max(int(slots["iterations"]) - 1, 0)
                hyper["learning_rate"] = jnp.asarray(schedule(last), old.dtype)
            hyper_states = {
                key: state._replace(count=iterations) for key, state in
                node.hyperparams_states.items()
            }
            return node._replace(
                count=iterations, hyperparams=hyper, hyperparams_states=hyper_states,
                inner_state=fill(node.inner_state),
            )
        if isinstance(node, transforms.ScaleByAdamState):
            return node._replace(
                count=iterations, mu=slots["momentum"], nu=slots["velocity"],
                nu_max=slots["velocity_hat"] if cfg["amsgrad"] else None,
            )
        if isinstance(node, transforms.ScaleByNadamState):
            return node._replace(
                count=iterations, mu=slots["momentum"], nu=slots["velocity"],
                mu_product=jnp.asarray(slots["u_product"], node.mu_product.dtype),
            )
        if isinstance(node, transforms.ScaleByAdagradState):
            return node._replace(accumulator=slots["accumulator"])
        if isinstance(node, transforms.ScaleByRmspropState):
            return node._replace(
                mean_square=slots["velocity"],
                mean_gradient=slots["average_gradient"] if cfg["centered"] else None,
            )
        if isinstance(node, transforms.ScaleByMomentumState):
            return node._replace(velocity=jax.tree.map(lambda v: sign * v, slots["momentum"]))
        if isinstance(node, tuple) and not hasattr(node, "_fields"):
            return tuple(fill(child) for child in node)
        return node

    return fill(opt_state)


def _read_opt_state(
    opt_state: optax.OptState, class_name: str, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Keras's optimizer variables held by an alias's state: slot name -> value or tree."""
    found = _states(opt_state)
    inject = found.get(optax.InjectStatefulHyperparamsState)
    if inject is None:
        raise ValueError("the optimizer state holds no injected learning rate: it is not the "
                         "state of a stablejax optimizer")
    slots: dict[str, Any] = {
        "iterations": inject.count, "learning_rate": inject.hyperparams["learning_rate"],
    }
    sign = -1.0 if class_name == "RMSprop" else 1.0
    for kind, state in found.items():
        if kind in (transforms.ScaleByAdamState, transforms.ScaleByNadamState):
            slots.update(momentum=state.mu, velocity=state.nu)
            if kind is transforms.ScaleByAdamState and cfg["amsgrad"]:
                slots["velocity_hat"] = state.nu_max
            if kind is transforms.ScaleByNadamState:
                slots["u_product"] = state.mu_product
        elif kind is transforms.ScaleByAdagradState:
            slots["accumulator"] = state.accumulator
        elif kind is transforms.ScaleByRmspropState:
            slots["velocity"] = state.mean_square
            if cfg["centered"]:
                slots["average_gradient"] = state.mean_gradient
        elif kind is transforms.ScaleByMomentumState:
            slots["momentum"] = jax.tree.map(lambda v: sign * v, state.velocity)
    return slots


# ---------------------------------------------------------------------------------------
# Layers


def _dtype_name(cfg: dict[str, Any]) -> str:
    dtype = cfg.get("dtype", "float32")
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name", "float32")
    return str(dtype)


def _activation_fn(name: Any, where: str, problems: list[str]) -> Any:
    if name is None:
        return "linear"
    if not isinstance(name, str) or name not in ACTIVATIONS:
        problems.append(f"{where}: activation {name!r} (supported: {', '.join(ACTIVATIONS)})")
        return "linear"
    return name


class _Plan:
    """One Keras layer as a stablejax module: its weights' attributes and shapes."""

    def __init__(self, keras_name: str, module: nnx.Module,
                 weights: Sequence[tuple[str, tuple[int, ...]]] = (), trainable: int = 0):
        self.keras_name = keras_name
        self.module = module
        self.weights = list(weights)  # (attribute path in the module, shape), Keras's order
        self.trainable = trainable  # how many of the first weights are trainable


def _chain(cfg: dict[str, Any], path: str) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """The layer configs of a Sequential model or functional chain, and the input shape."""
    kind = cfg.get("class_name")
    inner = cfg.get("config") or {}
    layers = list(inner.get("layers") or [])
    if kind not in ("Sequential", "Functional", "Model"):
        raise ValueError(f"{path}: the model is a {kind!r}; only Sequential models and "
                         "functional chains of layers load")
    if kind != "Sequential":
        previous = None
        for layer in layers:
            nodes = layer.get("inbound_nodes") or []
            sources = [
                arg["config"]["keras_history"][0]
                for node in nodes for arg in node.get("args", [])
                if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__"
            ]
            expected: list[str] = [previous] if previous is not None else []
            if len(nodes) > 1 or sources != expected:
                raise ValueError(f"{path}: layer {layer.get('name')!r} is not fed by the layer "
                                 "before it; only functional chains of layers load")
            previous = layer.get("name") or layer.get("config", {}).get("name")
    shape = None
    for layer in layers:
        if layer.get("class_name") == "InputLayer":
            c = layer.get("config", {})
            shape = c.get("batch_shape") or c.get("batch_input_shape")
    shape = shape or inner.get("build_input_shape") or (cfg.get("build_config") or {}).get(
        "input_shape")
    if shape is None and layers:
        shape = (layers[0].get("build_config") or {}).get("input_shape")
    if shape is None or any(d is None for d in shape[1:]):
        raise ValueError(f"{path}: the model's input shape is not in its config")
    return [layer for layer in layers if layer.get("class_name") != "InputLayer"], tuple(
        int(d) for d in shape[1:])


def _plan_layers(
    layers: list[dict[str, Any]], sample: tuple[int, ...], path: str
) -> list[_Plan]:
    """A :class:`_Plan` per Keras layer; raises naming every layer that does not map."""
    rngs = nnx.Rngs(0)  # initial values only; the file's weights replace them
    problems: list[str] = []
    plans: list[_Plan] = []
    for layer in layers:
        kind = layer.get("class_name")
        cfg = layer.get("config") or {}
        name = str(cfg.get("name") or layer.get("name"))
        where = f"{kind} {name!r}"
        if kind not in LAYERS:
            problems.append(f"{where}: unsupported layer")
            continue
        if _dtype_name(cfg) != "float32":
            problems.append(f"{where}: dtype {_dtype_name(cfg)!r} (only float32 loads)")
        if cfg.get("trainable", True) is False:
            problems.append(f"{where}: frozen (trainable=False)")
        for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                    "kernel_constraint", "bias_constraint", "beta_regularizer",
                    "gamma_regularizer", "beta_constraint", "gamma_constraint",
                    "alpha_regularizer", "alpha_constraint", "quantization_config"):
            if cfg.get(key) is not None:
                problems.append(f"{where}: {key} (not supported)")
        if cfg.get("lora_rank"):
            problems.append(f"{where}: LoRA (not supported)")
        if kind == "Flatten":
            if cfg.get("data_format", "channels_last") != "channels_last" and len(sample) > 1:
                problems.append(f"{where}: data_format='channels_first'")
            plans.append(_Plan(name, nn.Flatten()))
            sample = (math.prod(sample),)
        elif kind == "Dense":
            units, fan_in = int(cfg["units"]), sample[-1]
            activation = _activation_fn(cfg.get("activation"), where, problems)
            use_bias = bool(cfg.get("use_bias", True))
            dense = nn.Dense(fan_in, units, activation=activation, use_bias=use_bias, rngs=rngs)
            weights = [("kernel", (fan_in, units))] + ([("bias", (units,))] if use_bias else [])
            plans.append(_Plan(name, dense, weights, len(weights)))
            sample = (*sample[:-1], units)
        elif kind == "BatchNormalization":
            axis = cfg.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
            if axis not in (-1, len(sample)):
                problems.append(f"{where}: axis={axis!r} (only the last axis)")
            if cfg.get("renorm"):
                problems.append(f"{where}: renorm=True")
            scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
            n = sample[-1]
            bn = nn.BatchNorm(n, momentum=float(cfg.get("momentum", 0.99)),
                              epsilon=float(cfg.get("epsilon", 1e-3)), use_scale=scale,
                              use_bias=center, rngs=rngs)
            trainable = [("scale", (n,))] * scale + [("bias", (n,))] * center
            plans.append(_Plan(name, bn, [*trainable, ("mean", (n,)), ("var", (n,))],
                               len(trainable)))
        elif kind == "PReLU":
            shared = cfg.get("shared_axes") or []
            shared = [shared] if isinstance(shared, int) else shared
            shape = tuple(1 if i + 1 in shared else d for i, d in enumerate(sample))
            plans.append(_Plan(name, nn.PReLU(shape), [("alpha", shape)], 1))
        elif kind == "Activation":
            plans.append(_Plan(name, nn.Activation(
                _activation_fn(cfg.get("activation"), where, problems))))
        elif kind == "LeakyReLU":
            slope = float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))
            fn = functools.partial(activations.leaky_relu, negative_slope=slope)
            plans.append(_Plan(name, nn.Activation(fn)))
        elif kind == "ELU":
            fn = functools.partial(activations.elu, alpha=float(cfg.get("alpha", 1.0)))
            plans.append(_Plan(name, nn.Activation(fn)))
        elif kind == "Dropout":
            if float(cfg.get("rate", 0.0)) != 0:
                problems.append(f"{where}: rate={cfg.get('rate')} (Keras's random masks are not "
                                "reproduced; only rate=0 loads)")
            plans.append(_Plan(name, nn.Activation(None)))
    if problems:
        raise ValueError(f"{path}: cannot load these layers: " + "; ".join(problems)
                         + f". Supported layers: {', '.join(LAYERS)}")
    return plans


def _variable(module: nnx.Module, attribute: str) -> nnx.Variable:
    for part in attribute.split("/"):
        module = getattr(module, part)
    return module  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# Files


def _path(path: Any) -> str:
    """``path`` as a str; ``TypeError`` naming it unless it is a str or path-like."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or path-like (the .keras file), got {path!r}")
    return str(os.fspath(path))


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
    try:
        return h5py.File(io.BytesIO(blob), "r")
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
    return _read(_path(path))[0]


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
    path = _path(path)
    cfg, blob = _read(path)
    layers, sample = _chain(cfg, path)
    plans = _plan_layers(layers, sample, path)
    model = nnx.Sequential(*[plan.module for plan in plans])
    groups = _h5_names([layer.get("class_name", "") for layer in layers])
    trainable: list[str] = []  # parameter paths in Keras's order of trainable variables
    with _open_h5(blob, path) as h5:
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
                _variable(plan.module, attribute)[...] = jnp.asarray(array, jnp.float32)
            trainable += [f"layers/{i}/{a}" for a, _ in plan.weights[: plan.trainable]]
        description = (cfg.get("compile_config") or {}).get("optimizer")
        if not description:
            return model, None, None
        if not isinstance(description, dict):
            raise ValueError(f"{path}: the optimizer {description!r} is not a Keras "
                             "optimizer config")
        opt_cfg = dict(description.get("config") or {})
        try:
            tx = optimizer(str(description.get("class_name")), **opt_cfg)
        except ValueError as err:
            raise ValueError(f"{path}: cannot load the optimizer: {err}") from None
        class_name, full = _keras_optimizer(tx)
        state = steps.init_state(model, tx)
        if "optimizer/vars" not in h5 or len(h5["optimizer/vars"]) == 0:
            return model, tx, state
        values = _arrays(h5, "optimizer/vars", path, "the optimizer's variables")
    layout = _layout(class_name, full, len(trainable))
    head = 1 + (not isinstance(full["learning_rate"], dict))  # iterations (and the rate)
    if len(values) == head < len(layout):
        # Compiled but never built (no update ran): no slot variables were saved.
        if int(values[0]) != 0:
            raise ValueError(f"{path}: the optimizer ran {int(values[0])} steps but saved no "
                             "slot variables")
        if head == 2:
            tx = optimizer(class_name, **{**full, "learning_rate": float(values[1])})
            state = steps.init_state(model, tx)
        return model, tx, state
    if len(values) != len(layout):
        raise ValueError(
            f"{path}: the optimizer {class_name} has {len(values)} variables in "
            f"model.weights.h5; {len(trainable)} trainable weights need {len(layout)}")
    params = dict(_path_leaves(state.params))
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
        slots[slot] = _tree(state.params, by_path)
    schedule = None
    if isinstance(full["learning_rate"], dict):
        schedule = _schedule(full["learning_rate"])
    else:
        tx = optimizer(class_name, **{**full, "learning_rate": float(slots["learning_rate"])})
        state = steps.init_state(model, tx)
    opt_state = _fill_opt_state(state.opt_state, class_name, full, slots, schedule)
    step = jnp.asarray(slots["iterations"], jnp.int32)
    state = state._replace(opt_state=opt_state, step=step)
    # One buffer per leaf (the counts above share one), committed as init_state's are, so
    # that fit can donate the state and compiles once.
    return model, tx, jax.tree.map(steps._own_buffer, state)


def _path_leaves(tree: Any) -> list[tuple[str, Any]]:
    return [(nn.path_name(p), leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def _tree(like: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``like`` (a parameter tree) with its leaves taken from ``arrays`` by path."""
    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: jnp.asarray(arrays[nn.path_name(p)], leaf.dtype), like)


def _dtype_policy() -> dict[str, Any]:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
            "registered_name": None}


def _initializer(class_name: str) -> dict[str, Any]:
    cfg = {"seed": None} if class_name == "GlorotUniform" else {}
    return _object("keras.initializers", class_name, cfg)


def _keras_activation(module: nnx.Module, where: str) -> tuple[str | None, dict[str, Any]]:
    """``(name, {})`` for an activation Keras names, or ``(None, {class_name, config})``
    for one that takes a layer of its own (LeakyReLU, ELU, PReLU)."""
    if isinstance(module, nn.PReLU):
        return None, {"class_name": "PReLU", "weights": [module.alpha[...]]}
    fn = getattr(module, "fn", None)
    if isinstance(module, nn.Activation) and fn is not None:
        for name in ACTIVATIONS:
            if fn is activations.get(name):
                return name, {}
        if isinstance(fn, functools.partial) and not fn.args:
            keywords = fn.keywords
            if fn.func is activations.leaky_relu and set(keywords) <= {"negative_slope"}:
                slope = float(keywords.get("negative_slope", 0.2))
                return None, {"class_name": "LeakyReLU", "config": {"negative_slope": slope}}
            if fn.func is activations.elu and set(keywords) <= {"alpha"}:
                return None, {"class_name": "ELU", "config": {"alpha": float(
                    keywords.get("alpha", 1.0))}}
    raise ValueError(f"{where}: activation {fn if fn is not None else module!r} has no Keras "
                     f"equivalent (Keras names: {', '.join(ACTIVATIONS)}; LeakyReLU, ELU and "
                     "PReLU layers)")


def _keras_layers(
    model: nnx.Sequential, sample: tuple[int, ...]
) -> list[tuple[str, dict[str, Any], list[tuple[str, Any]], int]]:
    """``(class_name, config, [(parameter path, value)], trainable count)`` per Keras layer."""
    out: list[tuple[str, dict[str, Any], list[tuple[str, Any]], int]] = []

    def activation_layer(extra: dict[str, Any], prefix: str) -> None:
        if extra["class_name"] == "PReLU":
            alpha = np.asarray(extra["weights"][0])
            if alpha.shape == sample:
                shared = None
            elif alpha.ndim == 0 or alpha.size == 1:
                shared = list(range(1, len(sample) + 1))
                alpha = alpha.reshape((1,) * len(sample))
            else:
                raise ValueError(f"{prefix}: PReLU slopes of shape {alpha.shape} on inputs of "
                                 f"shape {sample} have no Keras equivalent")
            cfg = {"alpha_initializer": _initializer("Zeros"), "alpha_regularizer": None,
                   "alpha_constraint": None, "shared_axes": shared}
            out.append(("PReLU", cfg, [(f"{prefix}/alpha", alpha)], 1))
        else:
            out.append((extra["class_name"], dict(extra["config"]), [], 0))

    for i, layer in enumerate(model.layers):
        where = f"layer {i} ({type(layer).__name__})"
        if isinstance(layer, nn.Flatten):
            out.append(("Flatten", {"data_format": "channels_last"}, [], 0))
            sample = (math.prod(sample),)
        elif isinstance(layer, nn.Dense):
            if layer.in_features != sample[-1]:
                raise ValueError(f"{where}: takes {layer.in_features} features, gets "
                                 f"{sample[-1]}")
            name, extra = _keras_activation(layer.activation, where)
            cfg = {
                "units": layer.out_features, "activation": name or "linear",
                "use_bias": layer.bias is not None,
                "kernel_initializer": _initializer("GlorotUniform"),
                "bias_initializer": _initializer("Zeros"),
                "kernel_regularizer": None, "bias_regularizer": None,
                "kernel_constraint": None, "bias_constraint": None,
                "quantization_config": None,
            }
            weights = [(f"layers/{i}/kernel", layer.kernel[...])]
            if layer.bias is not None:
                weights.append((f"layers/{i}/bias", layer.bias[...]))
            out.append(("Dense", cfg, weights, len(weights)))
            sample = (*sample[:-1], layer.out_features)
            if extra:
                activation_layer(extra, f"layers/{i}/activation")
        elif isinstance(layer, nn.BatchNorm):
            if layer.axis not in (-1, len(sample)) or not layer.trainable:
                raise ValueError(f"{where}: only a trainable batch norm over the last axis "
                                 "has a Keras equivalent")
            if getattr(layer, "frozen_calls", None) is not None and int(
                    layer.frozen_calls[...]) > 0:
                raise ValueError(f"{where}: frozen for {int(layer.frozen_calls[...])} more "
                                 "calls; Keras has no such state")
            cfg = {
                "axis": -1, "momentum": float(layer.momentum), "epsilon": float(layer.epsilon),
                "center": layer.use_bias, "scale": layer.use_scale,
                "beta_initializer": _initializer("Zeros"),
                "gamma_initializer": _initializer("Ones"),
                "moving_mean_initializer": _initializer("Zeros"),
                "moving_variance_initializer": _initializer("Ones"),
                "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
                "gamma_constraint": None, "synchronized": False,
            }
            weights = [(f"layers/{i}/{name}", _variable(layer, name)[...])
                       for name, used in (("scale", layer.use_scale), ("bias", layer.use_bias))
                       if used]
            trainable = len(weights)
            weights += [(f"layers/{i}/mean", layer.mean[...]), (f"layers/{i}/var", layer.var[...])]
            out.append(("BatchNormalization", cfg, weights, trainable))
        elif isinstance(layer, nn.PReLU | nn.Activation):
            name, extra = _keras_activation(layer, where)
            if extra:
                activation_layer(extra, f"layers/{i}")
            else:
                out.append(("Activation", {"activation": name}, [], 0))
        else:
            raise ValueError(f"{where}: no Keras equivalent; save models of "
                             "stablejax.nn Flatten, Dense, BatchNorm, Activation and PReLU layers")
    return out


def _snake(class_name: str) -> str:
    """Keras's snake case of a class name: Dense -> dense, PReLU -> p_re_lu."""
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5_names(class_names: Sequence[str]) -> list[str]:
    """The weights file's group of each layer: Keras names them by class, not by the
    layer's own name (``dense``, ``dense_1``, ... in the order of the layers)."""
    used: dict[str, int] = {}
    names = []
    for class_name in class_names:
        base = _snake(class_name)
        if base in used:
            used[base] += 1
            names.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            names.append(base)
    return names


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
        return _object("keras.losses", class_name, dict(cfg))
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
    path = _path(path)
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory; save writes a .keras file (a zip "
                         "archive), e.g. os.path.join(path, 'model.keras')")
    if not isinstance(model, nnx.Sequential):
        raise ValueError(f"model must be an nnx.Sequential, got {type(model).__name__}")
    stacks = [i for i, layer in enumerate(model.layers) if isinstance(layer, nn.Stack)]
    if stacks:
        raise ValueError(f"layers {stacks} are scanned stacks; save sj.nn.unroll(model) "
                         "instead")
    if state is not None:
        model = nnx.clone(model)
        steps.update_model(model, state)
    if input_shape is None:
        first = model.layers[0] if model.layers else None
        if isinstance(first, nn.Dense):
            input_shape = (first.in_features,)
        elif isinstance(first, nn.BatchNorm):
            input_shape = (first.num_features,)
        else:
            raise ValueError("input_shape is required: the model's first layer does not say "
                             "the shape of a sample")
    sample = tuple(int(d) for d in input_shape)
    described = _keras_optimizer(tx) if tx is not None else None
    specs = _keras_layers(model, sample)

    names = _h5_names([class_name for class_name, *_ in specs])
    batch_shape = [None, *sample]
    layer_configs: list[dict[str, Any]] = [_object("keras.layers", "InputLayer", {
        "batch_shape": batch_shape, "dtype": "float32", "sparse": False, "ragged": False,
        "name": "input_layer", "optional": False})]
    for name, (class_name, cfg, _, _) in zip(names, specs, strict=True):
        layer_cfg = {"name": name, "trainable": True, "dtype": _dtype_policy(), **cfg}
        layer_configs.append(_object("keras.layers", class_name, layer_cfg))
    model_cfg = _object("keras", "Sequential", {
        "name": "sequential", "trainable": True, "dtype": _dtype_policy(),
        "layers": layer_configs, "build_input_shape": batch_shape})
    model_cfg["build_config"] = {"input_shape": batch_shape}

    trainable: list[str] = []
    h5_bytes = io.BytesIO()
    with h5py.File(h5_bytes, "w") as h5:
        h5.create_group("layers")
        for name, (_, _, weights, count) in zip(names, specs, strict=True):
            group = h5.create_group(f"layers/{name}/vars")
            group.attrs["name"] = name
            for k, (_, value) in enumerate(weights):
                group.create_dataset(str(k), data=np.asarray(value, np.float32))
            trainable += [p for p, _ in weights[:count]]
        if described is not None:
            class_name, full = described
            if state is None:
                _, params, _ = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
                opt_state = tx.init(params)  # type: ignore[union-attr]
            else:
                opt_state = state.opt_state
            slots = _read_opt_state(opt_state, class_name, full)
            if not isinstance(full["learning_rate"], dict):
                # As Keras writes it: the current rate, a float32 value.
                full = {**full, "learning_rate": float(np.float32(slots["learning_rate"]))}
            trees = {slot: dict(_path_leaves(value)) for slot, value in slots.items()
                     if not isinstance(value, jax.Array | np.ndarray)}
            group = h5.create_group("optimizer/vars")
            group.attrs["name"] = full["name"]
            for k, (slot, index) in enumerate(_layout(class_name, full, len(trainable))):
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
            model_cfg["compile_config"] = {
                "optimizer": _object("keras.optimizers", class_name, full),
                "loss": _keras_loss(loss), "loss_weights": None,
                "metrics": list(metrics) or None,
                "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1,
                "jit_compile": True,
            }
        vars_group = h5.create_group("vars")
        vars_group.attrs["name"] = "sequential"
    from stablejax import __version__

    metadata = {
        "keras_version": KERAS_VERSION,
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "saved_by": f"stablejax {__version__}",
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(model_cfg))
        archive.writestr("model.weights.h5", h5_bytes.getvalue())
