"""The optimizer map: Keras optimizer and schedule configs <-> stablejax's aliases.

:func:`optimizer` builds the alias for a Keras optimizer's class name and config;
:func:`keras_optimizer` gives back Keras's class name and complete config of an optimizer
an alias built (every alias records its arguments: :func:`stablejax.optimizers.describe`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import optax

from stablejax import optimizers, schedules
from stablejax.keras_format._common import keras_object, snake

OPTIMIZERS = ("SGD", "Adagrad", "RMSprop", "Adam", "Nadam")
SCHEDULES = ("ExponentialDecay", "PiecewiseConstantDecay", "InverseTimeDecay")

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
    return keras_object("keras.optimizers.schedules", name, cfg)


def to_schedule(description: dict[str, Any]) -> optax.Schedule:
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
    learning_rate = to_schedule(lr) if isinstance(lr, dict) else lr
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


def keras_optimizer(tx: optax.GradientTransformation) -> tuple[str, dict[str, Any]]:
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
    return class_name, {"name": snake(class_name), "learning_rate": learning_rate,
                        **_BASE_OPTIONS, **clips, **own}


