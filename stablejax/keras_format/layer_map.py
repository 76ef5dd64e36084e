"""The layer map: Keras layer configs <-> ``stablejax.nn`` layers.

Reading: :func:`chain` takes the layer configs and the input shape out of a model's
config, :func:`plan_layers` maps each to a :class:`Plan` (a module and the attributes of
its weights in Keras's order). Writing: :func:`keras_layers` maps each layer of an
``nnx.Sequential`` to Keras's class name, config and weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import nnx

from stablejax import activations, nn
from stablejax.keras_format._common import keras_object, variable

LAYERS = (
    "InputLayer", "Flatten", "Dense", "BatchNormalization", "Activation", "PReLU",
    "LeakyReLU", "ELU", "Dropout",
)
ACTIVATIONS = ("linear", "relu", "elu", "selu", "sigmoid", "tanh", "softmax", "leaky_relu")

# A layer as written: (class_name, config, [(parameter path, value)], trainable count).
Spec = tuple[str, dict[str, Any], list[tuple[str, Any]], int]

# The config keys that must be absent (None) for a layer to load.
_UNSUPPORTED_KEYS = (
    "kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
    "bias_constraint", "beta_regularizer", "gamma_regularizer", "beta_constraint",
    "gamma_constraint", "alpha_regularizer", "alpha_constraint", "quantization_config",
)


# ---------------------------------------------------------------------------------------
# Keras -> stablejax


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


class Plan:
    """One Keras layer as a stablejax module: its weights' attributes and shapes."""

    def __init__(self, keras_name: str, module: nnx.Module,
                 weights: Sequence[tuple[str, tuple[int, ...]]] = (), trainable: int = 0):
        self.keras_name = keras_name
        self.module = module
        self.weights = list(weights)  # (attribute path in the module, shape), Keras's order
        self.trainable = trainable  # how many of the first weights are trainable


def _check_chain(layers: list[dict[str, Any]], path: str) -> None:
    """Raises unless each layer of a functional model is fed by the one before it."""
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


def chain(cfg: dict[str, Any], path: str) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """The layer configs of a Sequential model or functional chain, and the input shape."""
    kind = cfg.get("class_name")
    inner = cfg.get("config") or {}
    layers = list(inner.get("layers") or [])
    if kind not in ("Sequential", "Functional", "Model"):
        raise ValueError(f"{path}: the model is a {kind!r}; only Sequential models and "
                         "functional chains of layers load")
    if kind != "Sequential":
        _check_chain(layers, path)
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


def _common_problems(cfg: dict[str, Any], where: str) -> list[str]:
    """What no layer may have: another dtype, frozen, regularisers, constraints, LoRA."""
    problems = []
    if _dtype_name(cfg) != "float32":
        problems.append(f"{where}: dtype {_dtype_name(cfg)!r} (only float32 loads)")
    if cfg.get("trainable", True) is False:
        problems.append(f"{where}: frozen (trainable=False)")
    for key in _UNSUPPORTED_KEYS:
        if cfg.get(key) is not None:
            problems.append(f"{where}: {key} (not supported)")
    if cfg.get("lora_rank"):
        problems.append(f"{where}: LoRA (not supported)")
    return problems


def _plan(
    kind: str, cfg: dict[str, Any], name: str, sample: tuple[int, ...], rngs: nnx.Rngs,
    problems: list[str],
) -> tuple[Plan, tuple[int, ...]]:
    """The :class:`Plan` of one supported Keras layer and the sample shape after it;
    appends to ``problems`` what does not map."""
    where = f"{kind} {name!r}"
    if kind == "Flatten":
        if cfg.get("data_format", "channels_last") != "channels_last" and len(sample) > 1:
            problems.append(f"{where}: data_format='channels_first'")
        return Plan(name, nn.Flatten()), (math.prod(sample),)
    if kind == "Dense":
        units, fan_in = int(cfg["units"]), sample[-1]
        activation = _activation_fn(cfg.get("activation"), where, problems)
        use_bias = bool(cfg.get("use_bias", True))
        dense = nn.Dense(fan_in, units, activation=activation, use_bias=use_bias, rngs=rngs)
        weights = [("kernel", (fan_in, units))] + ([("bias", (units,))] if use_bias else [])
        return Plan(name, dense, weights, len(weights)), (*sample[:-1], units)
    if kind == "BatchNormalization":
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
        return Plan(name, bn, [*trainable, ("mean", (n,)), ("var", (n,))],
                    len(trainable)), sample
    if kind == "PReLU":
        shared = cfg.get("shared_axes") or []
        shared = [shared] if isinstance(shared, int) else shared
        shape = tuple(1 if i + 1 in shared else d for i, d in enumerate(sample))
        return Plan(name, nn.PReLU(shape), [("alpha", shape)], 1), sample
    if kind == "Activation":
        return Plan(name, nn.Activation(
            _activation_fn(cfg.get("activation"), where, problems))), sample
    if kind == "LeakyReLU":
        slope = float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))
        fn = functools.partial(activations.leaky_relu, negative_slope=slope)
        return Plan(name, nn.Activation(fn)), sample
    if kind == "ELU":
        fn = functools.partial(activations.elu, alpha=float(cfg.get("alpha", 1.0)))
        return Plan(name, nn.Activation(fn)), sample
    # Dropout (chain leaves out InputLayer)
    if float(cfg.get("rate", 0.0)) != 0:
        problems.append(f"{where}: rate={cfg.get('rate')} (Keras's random masks are not "
                        "reproduced; only rate=0 loads)")
    return Plan(name, nn.Activation(None)), sample


def plan_layers(
    layers: list[dict[str, Any]], sample: tuple[int, ...], path: str
) -> list[Plan]:
    """A :class:`Plan` per Keras layer; raises naming every layer that does not map."""
    rngs = nnx.Rngs(0)  # initial values only; the file's weights replace them
    problems: list[str] = []
    plans: list[Plan] = []
    for layer in layers:
        kind = layer.get("class_name")
        cfg = layer.get("config") or {}
        name = str(cfg.get("name") or layer.get("name"))
        where = f"{kind} {name!r}"
        if kind not in LAYERS:
            problems.append(f"{where}: unsupported layer")
            continue
        problems += _common_problems(cfg, where)
        plan, sample = _plan(kind, cfg, name, sample, rngs, problems)
        plans.append(plan)
    if problems:
        raise ValueError(f"{path}: cannot load these layers: " + "; ".join(problems)
                         + f". Supported layers: {', '.join(LAYERS)}")
    return plans


# ---------------------------------------------------------------------------------------
# stablejax -> Keras


def dtype_policy() -> dict[str, Any]:
    """Keras's float32 dtype policy as ``config.json`` writes it."""
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
            "registered_name": None}


def _initializer(class_name: str) -> dict[str, Any]:
    cfg = {"seed": None} if class_name == "GlorotUniform" else {}
    return keras_object("keras.initializers", class_name, cfg)


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


def _activation_layer(extra: dict[str, Any], prefix: str, sample: tuple[int, ...]) -> Spec:
    """The layer of an activation that takes one (LeakyReLU, ELU, PReLU)."""
    if extra["class_name"] != "PReLU":
        return (extra["class_name"], dict(extra["config"]), [], 0)
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
    return ("PReLU", cfg, [(f"{prefix}/alpha", alpha)], 1)


def _dense(
    layer: nn.Dense, i: int, where: str, sample: tuple[int, ...]
) -> tuple[list[Spec], tuple[int, ...]]:
    """The Dense layer (and its activation's layer, if any), and the shape after them."""
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
    specs: list[Spec] = [("Dense", cfg, weights, len(weights))]
    sample = (*sample[:-1], layer.out_features)
    if extra:
        specs.append(_activation_layer(extra, f"layers/{i}/activation", sample))
    return specs, sample


def _batch_norm(layer: nn.BatchNorm, i: int, where: str, sample: tuple[int, ...]) -> Spec:
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
    weights = [(f"layers/{i}/{name}", variable(layer, name)[...])
               for name, used in (("scale", layer.use_scale), ("bias", layer.use_bias))
               if used]
    trainable = len(weights)
    weights += [(f"layers/{i}/mean", layer.mean[...]), (f"layers/{i}/var", layer.var[...])]
    return ("BatchNormalization", cfg, weights, trainable)


def keras_layers(model: nnx.Sequential, sample: tuple[int, ...]) -> list[Spec]:
    """``(class_name, config, [(parameter path, value)], trainable count)`` per Keras layer."""
    out: list[Spec] = []
    for i, layer in enumerate(model.layers):
        where = f"layer {i} ({type(layer).__name__})"
        if isinstance(layer, nn.Flatten):
            out.append(("Flatten", {"data_format": "channels_last"}, [], 0))
            sample = (math.prod(sample),)
        elif isinstance(layer, nn.Dense):
            specs, sample = _dense(layer, i, where, sample)
            out += specs
        elif isinstance(layer, nn.BatchNorm):
            out.append(_batch_norm(layer, i, where, sample))
        elif isinstance(layer, nn.PReLU | nn.Activation):
            name, extra = _keras_activation(layer, where)
            if extra:
                out.append(_activation_layer(extra, f"layers/{i}", sample))
            else:
                out.append(("Activation", {"activation": name}, [], 0))
        else:
            raise ValueError(f"{where}: no Keras equivalent; save models of "
                             "stablejax.nn Flatten, Dense, BatchNorm, Activation and PReLU layers")
    return out
