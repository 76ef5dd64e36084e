"""Diagnostics: do gradients vanish or explode, and does the forward signal survive?

- :func:`signal_propagation`: one forward and one backward pass on one batch, measured
  layer by layer as in Glorot & Bengio's figures, with a verdict ("vanishing",
  "exploding" or "healthy") and the fix from docs/guide.md.
- :func:`record_gradient_stats`: an Optax transformation that keeps the global gradient
  norm and each leaf's norm in its state, so a compiled train step can report them.
- :func:`recommend`: the classic initialisation table applied to a built model.
- :class:`GradientMonitor`: a ``fit`` callback that adds gradient norms and the
  first-to-last gradient ratio to the history, and warns when they vanish or explode.

The thresholds share one scale, an order of magnitude (see :func:`signal_propagation`).

Reference: Glorot & Bengio (2010), "Understanding the difficulty of training deep
feedforward neural networks".
"""

from __future__ import annotations

import contextvars
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stablejax import initializers, losses, nn
from stablejax._checks import writable_directory
from stablejax.callbacks import Callback
from stablejax.steps import TrainState

__all__ = [
    "LayerStats",
    "SignalReport",
    "check_plot_path",
    "signal_propagation",
    "RecordGradientStatsState",
    "record_gradient_stats",
    "Recommendation",
    "recommend",
    "GradientMonitor",
    "ORDER_OF_MAGNITUDE",
    "SATURATED_DERIVATIVE",
    "MAJORITY",
    "VARIANCE_TOLERANCE",
]

# A signal (activation std, kernel-gradient std) that changes by more than this factor
# between the first and the last hidden layer is vanishing or exploding.
ORDER_OF_MAGNITUDE = 10.0
# A sigmoid or tanh unit is saturated on a sample when its derivative there is below this
# fraction of the activation's peak derivative.
SATURATED_DERIVATIVE = 0.1
# A layer fails when more than this fraction of its outputs are saturated or its units dead.
MAJORITY = 0.5
# recommend: a kernel variance within this factor of the table's scale / fan is ok.
VARIANCE_TOLERANCE = math.sqrt(2.0)

# Peak derivative of each saturating activation, and its derivative written in its output.
_SATURATING: dict[str, tuple[float, Callable[[jax.Array], jax.Array]]] = {
    "sigmoid": (0.25, lambda s: s * (1.0 - s)),
    "tanh": (1.0, lambda t: 1.0 - t * t),
}
_FAMILY = {"glorot_uniform": "Glorot", "he_normal": "He", "lecun_normal": "LeCun"}


# ----------------------------------------------------------------------------- the layers


@dataclass
class _Site:
    """A layer that signal_propagation measures: a kernel layer or an activation."""

    name: str  # the layer's path, spelled as stablejax.nn.variables spells it
    layer: Any  # the module (or, in an nnx.Sequential, the plain function)
    applies: str  # name of the activation the layer applies itself ("linear": none)
    container: int | None  # id of the enclosing nnx.Sequential, None elsewhere
    feeds: str = ""  # kernel layers: the activation that decides their initialiser

    @property
    def kernel(self) -> jax.Array | None:
        kernel = getattr(self.layer, "kernel", None)
        return kernel[...] if isinstance(kernel, nnx.Param) else None


def _activation_name(layer: Any) -> str:
    if isinstance(layer, nn.PReLU):
        return "prelu"
    if isinstance(layer, nn.RReLU):
        return "rrelu"
    fn = layer.fn if isinstance(layer, nn.Activation) else layer
    name = getattr(fn, "__name__", type(fn).__name__)
    return "sigmoid" if name == "logistic" else name


def _has_kernel(layer: Any) -> bool:
    return isinstance(getattr(layer, "kernel", None), nnx.Param)


class _Probed(nnx.Module):
    """A measured layer: records its pre-activation and output, adds a zero probe to it."""

    def __init__(self, layer: Any, site: int) -> None:
        self.layer = layer
        self.site = site

    def __call__(self, x: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        if isinstance(self.layer, nn.Dense):  # Dense applies its activation itself
            pre = nnx.Linear.__call__(self.layer, x, *args, **kwargs)
            out = self.layer.activation(pre)
        elif _has_kernel(self.layer):
            pre = out = self.layer(x, *args, **kwargs)
        else:  # an activation: its input is its pre-activation
            pre, out = x, self.layer(x, *args, **kwargs)
        recording = _RECORDING.get()
        if recording is not None:
            if recording.probes is not None:
                out = out + recording.probes[len(recording.seen)]
            recording.seen.append((self.site, pre, out))
        return out


@dataclass
class _Recording:
    probes: Sequence[jax.Array] | None  # one zero per layer call, in call order
    seen: list[tuple[int, jax.Array, jax.Array]] = field(default_factory=list)


# Set only while an instrumented copy of the model runs (see _recorded_call).
_RECORDING: contextvars.ContextVar[_Recording | None] = contextvars.ContextVar(
    "stablejax_diagnostics_recording", default=None
)


def _recorded_call(module: nnx.Module, x: jax.Array,
                   probes: Sequence[jax.Array] | None = None) -> tuple[Any, _Recording]:
    """``module(x)`` for an instrumented copy, with the record of its measured calls."""
    recording = _Recording(probes)
    token = _RECORDING.set(recording)
    try:
        outputs = module(x)
    finally:
        _RECORDING.reset(token)
    return outputs, recording


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}/{key}" if prefix else str(key)


def _instrument(model: nnx.Module) -> tuple[Any, list[_Site]]:
    """A copy of ``model`` whose measured layers are wrapped in :class:`_Probed`.

    Each :class:`stablejax.nn.Stack` becomes an ``nnx.Sequential`` of its blocks (as
    ``nn.unroll`` does), so its blocks are measured one by one; the names keep the
    stacked layout's spelling (``layers/4/blocks[2]/layers/0``).
    """
    sites: list[_Site] = []

    def visit(obj: Any, name: str, container: int | None) -> Any:
        if _has_kernel(obj) or isinstance(obj, nn.Activation | nn.PReLU | nn.RReLU) or (
            container is not None and callable(obj) and not isinstance(obj, nnx.Module)
        ):
            applies = (
                _activation_name(obj.activation) if isinstance(obj, nn.Dense)
                else "linear" if _has_kernel(obj) else _activation_name(obj)
            )
            sites.append(_Site(name, obj, applies, container))
            return _Probed(obj, len(sites) - 1)
        if isinstance(obj, nn.Stack):
            return nnx.Sequential(*[visit(block, _join(name, f"blocks[{i}]"), None)
                                    for i, block in enumerate(obj.unstack())])
        if isinstance(obj, nnx.Sequential):
            for j, layer in enumerate(list(obj.layers)):
                obj.layers[j] = nnx.data(visit(layer, _join(name, f"layers/{j}"), id(obj)))
            return obj
        if isinstance(obj, nnx.Module):
            for key, child in list(nnx.iter_children(obj)):
                if isinstance(child, nnx.Module):
                    new = visit(child, _join(name, key), None)
                    if new is not child:
                        if isinstance(key, int):
                            obj[key] = nnx.data(new)  # type: ignore[index]
                        else:
                            setattr(obj, str(key), nnx.data(new))
        return obj

    clone = visit(nnx.clone(model), "", None)
    for i, site in enumerate(sites):
        site.feeds = site.applies
        if site.kernel is not None and site.applies == "linear" and site.container is not None:
            # A Dense without its own activation (batch_norm="before") feeds the next
            # activation of its Sequential, before the next kernel layer.
            for later in sites[i + 1:]:
                if later.container != site.container or later.kernel is not None:
                    break
                site.feeds = later.applies
                break
    return clone, sites


def _expected_variance(activation: str, shape: Sequence[int]) -> tuple[str, float] | None:
    try:
        entry = initializers.table_entry(activation)
    except ValueError:
        return None
    return entry.initializer, entry.variance(shape)


# ------------------------------------------------------------------- signal_propagation


@dataclass(frozen=True)
class LayerStats:
    """One measured layer of a :class:`SignalReport` (one row per call of the layer).

    Attributes:
      name: the layer's path (``"layers/2"``, ``"layers/4/blocks[0]/layers/0"``).
      activation: the activation that decides the layer's initialiser: its own, or for
        a kernel layer without one the activation that follows it in its
        ``nnx.Sequential`` (``batch_norm="before"``); ``"linear"`` for none.
      fan_in: the kernel's fan-in (None for an activation layer).
      kernel_std: the kernel's standard deviation.
      table_std: ``sqrt(scale / fan)`` of the initialiser the table matches to
        ``activation`` (None when it has no entry).
      pre_mean, pre_std: the pre-activation's (the affine output, or an activation
        layer's input) mean and standard deviation over the batch and the units.
      act_mean, act_std: the same of the layer's output.
      grad_std: standard deviation of the loss's gradient w.r.t. the layer's output.
      kernel_grad_std: standard deviation of the loss's gradient w.r.t. the kernel.
      saturated: sigmoid and tanh outputs: the fraction of outputs (samples x units)
        whose derivative is below ``SATURATED_DERIVATIVE`` of the peak (None otherwise).
      dead: layers that apply an activation: the fraction of units whose output is 0
        for every sample of the batch (None otherwise).
    """

    name: str
    activation: str
    fan_in: int | None
    kernel_std: float | None
    table_std: float | None
    pre_mean: float
    pre_std: float
    act_mean: float
    act_std: float
    grad_std: float
    kernel_grad_std: float | None
    saturated: float | None
    dead: float | None


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3g}"


@dataclass(frozen=True)
class SignalReport:
    """What :func:`signal_propagation` measured, and its verdict.

    Attributes:
      layers: one :class:`LayerStats` per measured layer call, in call order.
      loss: the batch's loss.
      grad_ratio: std of the first kernel layer's kernel gradient over that of the last
        hidden kernel layer (the one before the output layer); 1 with one kernel layer.
      forward_ratio: std of the last hidden layer's activation over the first's.
      saturated: the largest saturated fraction of a hidden layer (0 if none saturates).
      dead: the largest dead fraction of a hidden layer.
      verdict: ``"vanishing"``, ``"exploding"`` or ``"healthy"``.
      reason: the evidence (layer, figure) and the fix of docs/guide.md, in one sentence.
    """

    layers: list[LayerStats]
    loss: float
    grad_ratio: float
    forward_ratio: float
    saturated: float
    dead: float
    verdict: str
    reason: str

    def to_markdown(self) -> str:
        """The layers as a Markdown table, then the figures and the verdict."""
        head = ["layer", "activation", "fan_in", "kernel std", "table std", "pre mean",
                "pre std", "act mean", "act std", "grad std", "kernel grad std",
                "saturated", "dead"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.layers:
            cells = [r.name or "model", r.activation, r.fan_in, r.kernel_std, r.table_std,
                     r.pre_mean, r.pre_std, r.act_mean, r.act_std, r.grad_std,
                     r.kernel_grad_std, r.saturated, r.dead]
            lines.append("| " + " | ".join(c if isinstance(c, str) else _fmt(c)
                                           for c in cells) + " |")
        lines += [
            "",
            f"loss {_fmt(self.loss)}, grad ratio (first / last hidden kernel gradient std) "
            f"{_fmt(self.grad_ratio)}, forward ratio (last / first hidden activation std) "
            f"{_fmt(self.forward_ratio)}, saturated {_fmt(self.saturated)}, "
            f"dead {_fmt(self.dead)}",
            "",
            f"**{self.verdict}**: {self.reason}",
        ]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Writes a PNG of the forward and backward signal per layer, on a log axis.

        Forward: each layer's activation std; backward: the std of the gradient w.r.t.
        each layer's output, as in Glorot & Bengio's figures. Uses matplotlib's Agg
        canvas directly, so no global backend is changed.

        ``path`` is checked by :func:`check_plot_path` before drawing: a ``.png`` file
        path whose directory is created if missing.
        """
        path = check_plot_path(path)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        def positive(values: list[float]) -> list[float]:
            return [v if v > 0 and math.isfinite(v) else math.nan for v in values]

        fig = Figure(figsize=(max(6.0, 0.3 * len(self.layers)), 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        steps = range(len(self.layers))
        ax.plot(steps, positive([r.act_std for r in self.layers]), "o-",
                label="forward: activation std")
        ax.plot(steps, positive([r.grad_std for r in self.layers]), "s-",
                label="backward: std of the gradient w.r.t. the output")
        ax.set_yscale("log")
        ax.set_xticks(list(steps), [r.name or "model" for r in self.layers], rotation=90,
                      fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("standard deviation")
        ax.set_title(f"{self.verdict}: grad ratio {_fmt(self.grad_ratio)}, "
                     f"forward ratio {_fmt(self.forward_ratio)}")
        ax.legend()
        fig.savefig(path, dpi=100)


def check_plot_path(path: Any, name: str = "path") -> str:
    """``path`` as a string, checked for :meth:`SignalReport.plot` before any drawing.

    It must be a ``str`` or ``os.PathLike`` (else ``TypeError``) ending in ``.png`` and
    not a directory (else ``ValueError``); its directory is created if missing and must
    be writable (``ValueError`` when it is, or is under, a file, or lacks permission).
    Messages start with ``name`` and the path, e.g. ``"--plot 'out/x.png': ..."``.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not path.lower().endswith(".png") or os.path.isdir(path):
        raise ValueError(f"{name} {path!r} must be a file path ending in .png (a PNG is "
                         "written)")
    writable_directory(os.path.dirname(path) or os.curdir, f"{name} {path!r}: its directory")
    return path


def _std(x: jax.Array) -> jax.Array:
    return jnp.std(x.astype(jnp.float32))


def _figures(applies: str, pre: jax.Array, out: jax.Array, grad: jax.Array,
             kernel: jax.Array | None, kernel_grad: jax.Array | None) -> dict[str, jax.Array]:
    """One layer's figures, as 0-d arrays (computed inside the compiled pass)."""
    out32 = out.astype(jnp.float32)
    figures = {"pre_mean": jnp.mean(pre.astype(jnp.float32)), "pre_std": _std(pre),
               "act_mean": jnp.mean(out32), "act_std": _std(out), "grad_std": _std(grad)}
    if kernel is not None and kernel_grad is not None:
        figures |= {"kernel_std": _std(kernel), "kernel_grad_std": _std(kernel_grad)}
    if applies in _SATURATING:
        peak, derivative = _SATURATING[applies]
        figures["saturated"] = jnp.mean(derivative(out32) < SATURATED_DERIVATIVE * peak)
    if applies != "linear":
        units = out32.reshape(-1, out32.shape[-1]) if out32.ndim else out32.reshape(1, 1)
        figures["dead"] = jnp.mean(jnp.all(units == 0, axis=0))
    return figures


def _layer_stats(site: _Site, figures: dict[str, Any]) -> LayerStats:
    kernel = site.kernel
    fan_in = table_std = None
    if kernel is not None:
        fan_in = int(initializers.compute_fans(kernel.shape)[0])
        expected = _expected_variance(site.feeds, kernel.shape)
        table_std = None if expected is None else math.sqrt(expected[1])
    value = {k: float(v) for k, v in figures.items()}
    return LayerStats(
        name=site.name, activation=site.feeds, fan_in=fan_in,
        kernel_std=value.get("kernel_std"), table_std=table_std, pre_mean=value["pre_mean"],
        pre_std=value["pre_std"], act_mean=value["act_mean"], act_std=value["act_std"],
        grad_std=value["grad_std"], kernel_grad_std=value.get("kernel_grad_std"),
        saturated=value.get("saturated"), dead=value.get("dead"),
    )


def _fix(layers: list[LayerStats], hidden: list[int], direction: str) -> str:
    """The guide's fix: the matched initialiser, else a non-saturating activation or BN."""
    for i in hidden:
        r = layers[i]
        if r.kernel_std is None or r.table_std is None or r.fan_in is None:
            continue
        ratio = (r.kernel_std / r.table_std) ** 2
        if not 1 / VARIANCE_TOLERANCE <= ratio <= VARIANCE_TOLERANCE:
            entry = initializers.table_entry(r.activation)
            return (f"use {_FAMILY[entry.initializer]} initialisation with {r.activation} "
                    f"(variance {entry.scale:g} / {entry.mode}; {r.name}'s kernel variance is "
                    f"{ratio:.3g}x that)")
    activations = {layers[i].activation for i in hidden}
    if activations & set(_SATURATING):
        act = sorted(activations & set(_SATURATING))[0]
        fix = (f"replace {act} with a non-saturating activation (SELU > ELU > leaky ReLU, "
               "each with its matched initialisation) or add batch norm")
    elif activations & {"relu"} and direction == "dead":
        fix = "use leaky ReLU, ELU or SELU (they do not die) with He/LeCun initialisation"
    else:
        fix = "add batch norm"
    return fix + (" and clip gradients" if direction == "exploding" else "")


def _verdict(layers: list[LayerStats], kernel_rows: list[int], act_rows: list[int],
             hidden: list[int], loss: float, grad_ratio: float, forward_ratio: float,
             ) -> tuple[str, str]:
    band = ORDER_OF_MAGNITUDE
    depth = max(1, len(kernel_rows) - 2)  # layer-to-layer steps between first and last hidden

    def per_layer(ratio: float) -> str:
        return f"{ratio ** (1 / depth):.3g} per layer" if ratio > 0 else "0 per layer"

    first, last = kernel_rows[0], kernel_rows[max(0, len(kernel_rows) - 2)]
    if not math.isfinite(loss):
        return "exploding", (f"the loss is {loss}: the signal overflowed; "
                             f"{_fix(layers, hidden, 'exploding')}")
    a_first, a_last = layers[act_rows[0]], layers[act_rows[-1]]
    if not forward_ratio >= 1 / band or forward_ratio > band:  # NaN counts as collapsed
        kind = "exploding" if forward_ratio > band else "vanishing"
        how = "grows" if kind == "exploding" else "collapses"
        return kind, (
            f"the forward signal {how}: the activation std goes from {_fmt(a_first.act_std)} "
            f"({a_first.name}) to {_fmt(a_last.act_std)} ({a_last.name}), a factor "
            f"{_fmt(forward_ratio)} ({per_layer(forward_ratio)}); {_fix(layers, hidden, kind)}"
        )
    g_first, g_last = layers[first].kernel_grad_std, layers[last].kernel_grad_std
    if math.isnan(grad_ratio) or not 1 / band <= grad_ratio <= band:
        kind = "exploding" if grad_ratio > band else "vanishing"
        if math.isnan(grad_ratio):
            evidence = "no gradient reaches the hidden kernels (their gradients are all 0)"
        else:
            evidence = (
                f"the kernel gradient std of {layers[first].name} ({_fmt(g_first)}) is "
                f"{_fmt(grad_ratio)} times that of {layers[last].name} ({_fmt(g_last)}), "
                f"{per_layer(grad_ratio)} toward the input"
            )
        return kind, f"{evidence}; {_fix(layers, hidden, kind)}"
    for attr, what in (("saturated", "outputs of {} are saturated"),
                       ("dead", "units of {} are dead")):
        values = [(getattr(layers[i], attr), i) for i in hidden
                  if getattr(layers[i], attr) is not None]
        if values and max(values)[0] > MAJORITY:
            value, i = max(values)
            name = f"{layers[i].name} ({layers[i].activation})"
            return "vanishing", (
                f"{value:.0%} of the {what.format(name)}, and such units pass back almost "
                "no gradient; "
                f"{_fix(layers, hidden, 'dead' if attr == 'dead' else 'vanishing')}"
            )
    return "healthy", (
        f"the kernel gradient std changes by a factor {_fmt(grad_ratio)} from "
        f"{layers[first].name} to {layers[last].name} and the activation std by "
        f"{_fmt(forward_ratio)}, both within an order of magnitude, and no hidden layer "
        f"is mostly saturated or dead; nothing to fix"
    )


def _check_model(model: Any) -> None:
    """Raises unless ``model`` is an ``nnx.Module`` with at least one kernel layer."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx Module, got {type(model).__name__}")
    if not any(_has_kernel(m) for _, m in nnx.iter_modules(model)):
        raise ValueError("model has no layer with a kernel (stablejax.nn.Dense, flax.nnx."
                         "Linear, ...): the diagnostics measure kernel layers, add one")


def _batch_part(label: str, value: Any) -> jax.Array:
    """``x`` or ``y`` of a batch as an array: real numbers, finite, at least one sample."""
    try:
        array = value if isinstance(value, jax.Array) else np.asarray(value)
    except ValueError as error:  # a ragged nested list
        raise ValueError(f"batch {label} must be a rectangular array ({error})") from None
    if not (jnp.issubdtype(array.dtype, jnp.number) or array.dtype == bool) or (
        jnp.issubdtype(array.dtype, jnp.complexfloating)
    ):
        raise TypeError(f"batch {label} must be an array of real numbers, got "
                        f"{type(value).__name__} of dtype {array.dtype}")
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"batch {label} must hold at least one sample along its first axis, "
                         f"got shape {array.shape}")
    if jnp.issubdtype(array.dtype, jnp.inexact) and not bool(jnp.isfinite(array).all()):
        raise ValueError(f"batch {label} holds NaN or infinite values; pass a finite batch")
    return jnp.asarray(array)


def signal_propagation(
    model: nnx.Module,
    batch: tuple[Any, Any],
    loss: str | Callable[[jax.Array, jax.Array], jax.Array] = "sparse_categorical_crossentropy",
) -> SignalReport:
    r"""Measures the forward and backward signal of ``model`` layer by layer on one batch.

    One forward and one backward pass in training mode (``model.train()``: batch
    statistics, RReLU's random slopes) on ``batch = (x, y)``, run on a copy: the model,
    its batch-norm moving statistics and RNG counts are untouched. Measured layers, one
    row per call in call order: every layer with a kernel (``flax.nnx.Linear``,
    ``stablejax.nn.Dense``, convolutions), every activation layer (``nn.Activation``,
    ``nn.PReLU``, ``nn.RReLU``) and every plain function in an ``nnx.Sequential``
    (``jax.nn.relu``, ...). A ``Dense`` applies its activation itself: its row has the
    affine output as pre-activation and the activation as output. An activation that a
    custom module applies inside its own ``__call__`` is not seen: the kernel layer
    before it reads as linear. The blocks of
    an ``nn.Stack`` (``mlp(scan_layers=True)``) are run one by one, as ``nn.unroll``
    does (same numbers to float32 rounding), and reported per block. The gradient with
    respect to a layer's output ``h`` is that with respect to a zero ``p`` added to it,
    ``dL/dh = dL/dp`` at ``p = 0``. See :class:`LayerStats` for each figure.

    The verdict, with ``g = ORDER_OF_MAGNITUDE = 10``; the checks run in this order and
    the first that fails decides:

    1. a non-finite loss: ``"exploding"`` (overflow).
    2. the forward signal: ``forward_ratio = std(a_last) / std(a_first)`` of the first
       and last hidden layers' activations. Outside ``[1/g, g]``: the signal collapses
       (``"vanishing"``) or grows (``"exploding"``) layer after layer, even when the
       gradient ratio stays near 1 (the shrinking activations and the growing
       back-propagated gradients cancel in ``dL/dW = a^T delta``).
    3. the gradients: ``grad_ratio = std(dL/dW_first) / std(dL/dW_last hidden)``.
       Below ``1/g``: ``"vanishing"``; above ``g``: ``"exploding"``.
    4. saturation and dead units: a hidden layer with more than ``MAJORITY = 1/2`` of
       its outputs saturated, or of its units dead: ``"vanishing"``.

    Why these thresholds. A shared learning rate suits every layer only while their
    gradients are within an order of magnitude of each other: so ``g = 10`` between the
    first and the last hidden layer, that is a geometric-mean factor per layer outside
    ``[10^(-1/d), 10^(1/d)]`` over the ``d`` steps between them (1.13 for 20 hidden
    layers; a matched initialisation keeps the factor at 1 up to finite-width noise, a
    variance off by ``c`` makes it ``sqrt(c)``). A unit is saturated when its derivative
    is below a tenth of its peak, the same order of magnitude: ``sigma'(z) =
    s (1 - s) < 0.025`` (sigmoid outputs within 0.0257 of 0 or 1, ``|z| > 3.64``),
    ``tanh'(z) = 1 - t^2 < 0.1`` (``|t| > 0.949``, ``|z| > 1.82``). A dead unit (output
    0 on every sample) passes back nothing. When most units of one layer pass back
    almost nothing, every layer below it gets less than half the gradient signal,
    whatever the gradient ratio says (sigmoid with N(0, 1) weights: big weights make up
    for the small derivative in the ratio, yet most units are stuck).

    The fix named in ``reason``: the table's initialiser when a hidden kernel's variance
    is off its ``scale / fan`` by more than ``VARIANCE_TOLERANCE``; else a
    non-saturating activation (SELU > ELU > leaky ReLU) for sigmoid/tanh, a non-dying
    one for dead ReLUs, batch norm otherwise; and gradient clipping when exploding.

    ``table_std`` is ``sqrt(scale / fan)``, the *variance* target of the matched
    initialiser: stablejax's (Keras's, JAX's) truncated normal is rescaled to hit it
    exactly, so compare ``kernel_std`` with it directly (a normal truncated at 2 std
    without that rescaling, PyTorch's ``trunc_normal_``, reads 12% low).

    Args:
      model: any ``flax.nnx`` model with at least one kernel layer.
      batch: ``(x, y)``: finite inputs of the shape the model takes, and targets.
      loss: a name in ``stablejax.losses.LOSSES`` or ``loss(outputs, targets) -> scalar``
        (default ``"sparse_categorical_crossentropy"``, for models ending in softmax).

    Raises:
      TypeError: ``model`` is not an ``nnx.Module``, or ``x`` or ``y`` does not hold
        real numbers (strings, objects, complex numbers, ``None``).
      ValueError: the model has no kernel layer; ``batch`` is not a pair; ``x`` or ``y``
        is empty or a scalar (no sample along the first axis), not finite, or the two
        differ in length; ``x`` does not fit the model; the loss fails on the outputs
        and ``y`` (it is run once on zero outputs first, so a loss that checks its
        targets' values, as the sparse cross-entropies check the labels' range, refuses
        bad ones here) or returns a non-scalar. All before the measured pass.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from stablejax.nn import mlp
        >>> from stablejax.diagnostics import signal_propagation
        >>> model = mlp([32] * 4, input_shape=(16,), activation="selu", rngs=nnx.Rngs(0))
        >>> x = jax.random.normal(jax.random.key(0), (128, 16))
        >>> report = signal_propagation(model, (x, jnp.arange(128) % 10))
        >>> [row.name for row in report.layers][:2], report.verdict
        (['layers/1', 'layers/2'], 'healthy')
    """
    _check_model(model)
    loss_fn = losses.get(loss)
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        size = f" of length {len(batch)}" if isinstance(batch, tuple | list) else ""
        raise ValueError(f"batch must be a pair (x, y) of inputs and targets, got "
                         f"{type(batch).__name__}{size}")
    x, y = _batch_part("x", batch[0]), _batch_part("y", batch[1])
    if len(y) != len(x):
        raise ValueError(f"batch y has {len(y)} samples and x has {len(x)}: give one target "
                         "per sample")

    clone, sites = _instrument(model)
    clone.train()
    graphdef, params, rest = nnx.split(clone, nnx.Param, ...)  # type: ignore[misc]
    called: list[int] = []

    def forward(params: nnx.State, probes: Sequence[jax.Array] | None):
        module = nnx.merge(graphdef, params, rest, copy=True)
        outputs, recording = _recorded_call(module, x, probes)
        called[:] = [site for site, _, _ in recording.seen]
        return outputs, [(pre, out) for _, pre, out in recording.seen]

    try:
        shapes = jax.eval_shape(forward, params, None)
    except (TypeError, ValueError) as error:
        raise ValueError(f"batch x of shape {tuple(x.shape)} does not fit the model "
                         f"({str(error).splitlines()[0]}); pass inputs of the shape the "
                         "model was built for") from None
    if not any(sites[s].kernel is not None for s in called):
        raise ValueError("the model's forward pass calls none of its kernel layers; "
                         "signal_propagation measures the kernel layers it calls")
    try:  # run on zero outputs, so the loss checks the targets' values too
        value_shape = loss_fn(jnp.zeros(shapes[0].shape, shapes[0].dtype), y)
    except (TypeError, ValueError, IndexError) as error:
        raise ValueError(f"the loss fails on outputs of shape {shapes[0].shape} and targets "
                         f"of shape {tuple(y.shape)} ({str(error).splitlines()[0]}); pass "
                         "targets that fit the loss, or a loss that fits the model") from None
    if getattr(value_shape, "shape", None) != ():
        raise ValueError(f"loss must return a scalar (the mean over the batch), got shape "
                         f"{getattr(value_shape, 'shape', type(value_shape).__name__)}; "
                         "average it, e.g. with jnp.mean")

    def objective(params: nnx.State, probes: list[jax.Array]):
        outputs, seen = forward(params, probes)
        return loss_fn(outputs, y), seen

    def kernels(module: nnx.Module) -> dict[int, jax.Array]:
        return {m.site: m.layer.kernel[...] for _, m in nnx.iter_modules(module)
                if isinstance(m, _Probed) and _has_kernel(m.layer)}

    def measure(params: nnx.State, probes: list[jax.Array]):
        (value, seen), (param_grads, probe_grads) = jax.value_and_grad(
            objective, argnums=(0, 1), has_aux=True)(params, probes)
        kernel = kernels(nnx.merge(graphdef, params, rest))
        kernel_grad = kernels(nnx.merge(graphdef, param_grads, rest))
        return value, [
            _figures(sites[s].applies, pre, out, grad, kernel.get(s), kernel_grad.get(s))
            for s, (pre, out), grad in zip(called, seen, probe_grads, strict=True)
        ]

    # One compiled program: far fewer compilations than running the ops one by one.
    probes = [jnp.zeros(out.shape, out.dtype) for _, out in shapes[1]]
    value, figures = jax.device_get(jax.jit(measure)(params, probes))
    layers = [_layer_stats(sites[s], f) for s, f in zip(called, figures, strict=True)]

    kernel_rows = [i for i, s in enumerate(called) if sites[s].kernel is not None]
    hidden = list(range(kernel_rows[-1]))  # every row before the output layer's

    def activation_row(k: int) -> int:
        # A kernel layer's activation: its own, else the next activation layer before the
        # next kernel layer (batch_norm="before"), else its affine output.
        if sites[called[k]].applies != "linear":
            return k
        for i in range(k + 1, len(called)):
            if sites[called[i]].kernel is not None:
                break
            if sites[called[i]].applies != "linear":
                return i
        return k

    act_rows = [activation_row(k) for k in kernel_rows[:-1]] or [kernel_rows[0]]
    first, last = kernel_rows[0], kernel_rows[max(0, len(kernel_rows) - 2)]
    grad_ratio = _ratio(layers[first].kernel_grad_std, layers[last].kernel_grad_std)
    forward_ratio = _ratio(layers[act_rows[-1]].act_std, layers[act_rows[0]].act_std)
    saturated = max([layers[i].saturated or 0.0 for i in hidden], default=0.0)
    dead = max([layers[i].dead or 0.0 for i in hidden], default=0.0)
    verdict, reason = _verdict(layers, kernel_rows, act_rows, hidden, float(value),
                               grad_ratio, forward_ratio)
    return SignalReport(layers, float(value), grad_ratio, forward_ratio, saturated, dead,
                        verdict, reason)


def _ratio(a: float | None, b: float | None) -> float:
    a, b = a or 0.0, b or 0.0
    if b == 0:
        return math.nan if a == 0 else math.inf
    return a / b


# ------------------------------------------------------------------ record_gradient_stats


class RecordGradientStatsState(NamedTuple):
    """The norms of the latest updates seen by :func:`record_gradient_stats`."""

    global_norm: jax.Array  # 0-d: sqrt of the sum of every leaf's squared entries
    norms: optax.Updates  # one 0-d L2 norm per leaf, a pytree like the updates


def _at_least_f32(x: Any) -> Any:
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def _norm_dtype(x: Any) -> Any:
    """The dtype of a leaf's norm: at least float32, real (complex64's is float32)."""
    return jnp.finfo(_at_least_f32(x)).dtype


def _tree_paths(tree: Any, shown: int = 3) -> str:
    """A tree's first leaf paths, for a short message."""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    more = f", ... ({len(paths)} leaves)" if len(paths) > shown else ""
    return "[" + ", ".join(paths[:shown]) + more + "]"


def record_gradient_stats() -> optax.GradientTransformation:
    """Passes the updates through unchanged and keeps their norms in its state.

    ``global_norm = sqrt(sum_leaves sum(u**2))`` (``optax.tree.norm``, formerly
    ``optax.global_norm``) and, per
    leaf, ``norms = ||u||_2`` of the flattened leaf (``jnp.linalg.norm``), both in at
    least float32 (real for complex leaves). Put first in a chain to see the raw
    gradients, e.g. to log them from a compiled train step; the state starts at zeros.
    No hyperparameters. ``update`` raises ``ValueError`` when the updates' tree is not
    the one ``init`` was given (its state would change structure between steps).

    Example::

        >>> import jax.numpy as jnp, optax
        >>> import stablejax as sj
        >>> from stablejax.diagnostics import record_gradient_stats
        >>> tx = optax.chain(record_gradient_stats(), sj.adam(1e-3))
        >>> params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
        >>> state = tx.init(params)
        >>> _, state = tx.update({"w": jnp.array([3.0, 4.0]), "b": jnp.array(12.0)}, state)
        >>> float(state[0].global_norm), float(state[0].norms["w"])
        (13.0, 5.0)
    """

    def init_fn(params: optax.Params) -> RecordGradientStatsState:
        norms = jax.tree.map(lambda p: jnp.zeros((), _norm_dtype(p)), params)
        leaves = jax.tree.leaves(norms)
        return RecordGradientStatsState(
            jnp.zeros((), jnp.result_type(jnp.float32, *leaves)), norms)

    def update_fn(
        updates: optax.Updates, state: RecordGradientStatsState, params: Any = None
    ) -> tuple[optax.Updates, RecordGradientStatsState]:
        del params
        structure: Any = jax.tree.structure(updates)  # PyTreeDef has no type stub
        if structure != jax.tree.structure(state.norms):
            raise ValueError(
                f"updates do not match the tree that init was given: updates "
                f"{_tree_paths(updates)}, init {_tree_paths(state.norms)}; call init "
                "with the parameters these updates are for")
        norms = jax.tree.map(lambda u: jnp.linalg.norm(jnp.asarray(u, _at_least_f32(u))),
                             updates)
        leaves = jax.tree.leaves(norms)
        global_norm = optax.tree.norm(updates).astype(jnp.result_type(jnp.float32, *leaves))
        return updates, RecordGradientStatsState(global_norm, norms)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- recommend


@dataclass(frozen=True)
class Recommendation:
    """One kernel layer checked against the table (see :func:`recommend`)."""

    name: str  # the layer's path, as in stablejax.nn.variables
    activation: str  # the activation that decides its initialiser
    fan_in: int
    variance: float  # the kernel's actual variance
    expected: float | None  # scale / fan of the matched initialiser (None: no entry)
    ok: bool
    suggestion: str  # one line; "" when ok


def recommend(model: nnx.Module) -> list[Recommendation]:
    """The initialisation table of docs/guide.md §1.1 applied to every kernel layer.

    For each layer with a kernel (``Dense``, ``nnx.Linear``, ...; a ``Stack``'s blocks
    one by one) its activation (its own, or for a layer without one the activation that
    follows it in its ``nnx.Sequential``), the kernel's variance, and the variance
    ``scale / fan`` of ``stablejax.initializers.for_activation(activation)``: Glorot
    ``1 / fan_avg`` (none, tanh, sigmoid, softmax), He ``2 / fan_in`` (ReLU and its
    variants, ELU), LeCun ``1 / fan_in`` (SELU). The layer is ok when the two agree
    within a factor ``VARIANCE_TOLERANCE = sqrt(2)``: halfway (on a log scale) between
    the table's entries, which differ by a factor of 2 (He against LeCun, or Glorot
    with equal fans), so an ok layer is nearer its own entry than any other. The
    variance is measured from the kernel's entries; with few of them (say under 100)
    its sampling error, a relative ``sqrt(2 / n)``, nears that tolerance. An
    activation without a table entry (e.g. gelu) is reported ok, ``expected`` None;
    a kernel holding NaN or infinite values never is.

    Raises ``TypeError`` unless ``model`` is an ``nnx.Module``, and ``ValueError`` when
    it has no kernel layer.

    Example::

        >>> from flax import nnx
        >>> from stablejax.nn import mlp
        >>> from stablejax.diagnostics import recommend
        >>> rows = recommend(mlp([300, 100], activation="elu", rngs=nnx.Rngs(0)))
        >>> [(r.name, r.activation, r.fan_in, r.ok) for r in rows]
        [('layers/1', 'elu', 784, True), ('layers/2', 'elu', 300, True),
         ('layers/3', 'softmax', 100, True)]
    """
    _check_model(model)
    _, sites = _instrument(model)
    rows = []
    for site in sites:
        kernel = site.kernel
        if kernel is None:
            continue
        fan_in = int(initializers.compute_fans(kernel.shape)[0])
        variance = float(jnp.var(kernel.astype(jnp.float32)))
        init, target = _expected_variance(site.feeds, kernel.shape) or (None, None)
        if not math.isfinite(variance):
            ok, problem = False, "kernel holds NaN or infinite values"
        elif target is None:
            ok, problem = True, ""
        else:
            ok = 1 / VARIANCE_TOLERANCE <= variance / target <= VARIANCE_TOLERANCE
            problem = (f"kernel variance {variance:.3g} is {variance / target:.3g}x the "
                       f"{target:.3g} that {site.feeds} wants")
        fix = f"use kernel_init=stablejax.initializers.{init}()" if init else "re-initialise it"
        suggestion = "" if ok else f"{site.name}: {problem}; {fix}"
        rows.append(Recommendation(site.name, site.feeds, fan_in, variance, target, ok,
                                   suggestion))
    return rows


# -------------------------------------------------------------------------- during fit


def _kernel_grads(grads: Any) -> list[tuple[str, jax.Array]]:
    """The kernels (or their gradients) by path; a ``Stack``'s per block."""
    rows = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        name = nn.path_name(path)
        if name.split("/")[-1] != "kernel":
            continue
        if "/blocks/" in f"/{name}" and leaf.ndim == 3:  # an nn.Stack: one slice per block
            # Named per block as nn.variables names them: layers/4/blocks[2]/.../kernel.
            rows += [(f"/{name}".replace("/blocks/", f"/blocks[{i}]/", 1)[1:], leaf[i])
                     for i in range(leaf.shape[0])]
        else:
            rows.append((name, leaf))
    return rows


def _kernels_in_call_order(model: nnx.Module, input_shape: tuple[int, ...]) -> list[str]:
    """The paths of the kernels ``model`` calls, in the order of their first call.

    Traced with ``jax.eval_shape`` on a float32 batch of one sample of ``input_shape``
    (nothing runs), through the instrumentation of :func:`signal_propagation`; a
    ``Stack``'s kernels per block, named as :func:`_kernel_grads` names them.
    """
    clone, sites = _instrument(model)
    clone.train()
    graphdef, state = nnx.split(clone)
    called: list[int] = []

    def forward(state: nnx.State, x: jax.Array) -> Any:
        outputs, recording = _recorded_call(nnx.merge(graphdef, state, copy=True), x)
        called[:] = [site for site, _, _ in recording.seen]
        return outputs

    jax.eval_shape(forward, state, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    names = [_join(sites[s].name, "kernel") for s in called if sites[s].kernel is not None]
    return list(dict.fromkeys(names))


@dataclass
class GradientMonitor(Callback):
    """Reports gradient sizes during :func:`stablejax.fit`; warns when they vanish or explode.

    Adds two keys to the history, computed inside the compiled train step from each
    step's gradients (:meth:`~stablejax.callbacks.Callback.step_stats`) and averaged over
    the epoch's finite steps:

    - ``grad_norm``: the global L2 norm of the gradients (``optax.tree.norm``);
    - ``grad_ratio``: the standard deviation of the first kernel's gradient over that of
      the last hidden kernel's (the kernel before the output layer), as
      :func:`signal_propagation`'s ``grad_ratio``; only for models with at least three
      kernels.

    "First" and "last" are in call order, not in the order of the parameters' names:
    :meth:`set_params` traces the model once (``jax.eval_shape`` on a float32 batch of
    ``fit``'s input shape; nothing runs) to list its kernels as it calls them, a
    ``Stack``'s per block. A model that cannot be traced on float32 inputs (one that
    takes integer token ids) gets a ``UserWarning`` and no ``grad_ratio``.

    The first epoch whose ``grad_ratio`` leaves ``[1 / threshold, threshold]`` issues one
    ``UserWarning`` for the run (the callback's state remembers it across resumes),
    naming ``vanishing`` or ``exploding``, the two layers, the figure and the fix of docs/guide.md.
    Training is unchanged: the statistics are extra outputs of the step.

    Args:
      threshold: the factor between the two gradients that counts as vanishing or
        exploding, > 1; default :data:`ORDER_OF_MAGNITUDE` (10), the scale of
        :func:`signal_propagation`'s verdict: beyond it no one learning rate suits both
        layers.

    Example::

        >>> import stablejax as sj
        >>> from flax import nnx
        >>> data = sj.data.synthetic_classification(64, num_features=4, num_classes=2)
        >>> model = sj.nn.mlp([8, 8], input_shape=(4,), output_size=2, rngs=nnx.Rngs(0))
        >>> history = sj.fit(model, sj.adam(1e-2), data, epochs=1, verbose=0,
        ...                  callbacks=[sj.diagnostics.GradientMonitor()])
        >>> sorted(k for k in history.history if k.startswith("grad"))
        ['grad_norm', 'grad_ratio']
    """

    threshold: float = ORDER_OF_MAGNITUDE
    _model: Any = field(default=None, init=False, repr=False, compare=False)
    # The model's kernel paths in call order; None until set_params has traced the model.
    _kernels: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = self.threshold
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 1
        ):
            raise ValueError(f"threshold must be a finite number > 1, got {value!r}")

    def init(self, state: TrainState) -> Any:
        del state
        return {"warned": jnp.zeros((), jnp.bool_)}

    def set_model(self, model: Any, tx: Any) -> None:
        """Keeps ``model`` for :meth:`set_params` to trace."""
        del tx
        self._model = model

    def set_params(self, params: dict[str, Any]) -> None:
        """Lists the model's kernels in call order, traced on ``params["input_shape"]``."""
        super().set_params(params)
        if not isinstance(self._model, nnx.Module):
            raise TypeError(f"GradientMonitor needs a flax.nnx model from set_model, got "
                            f"{type(self._model).__name__}")
        shape = tuple(params["input_shape"])
        try:
            self._kernels = _kernels_in_call_order(self._model, shape)
        except Exception as error:  # any failure to trace leaves the order unknown
            self._kernels = []
            warnings.warn(
                f"GradientMonitor cannot trace the model on float32 inputs of shape {shape} "
                f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
                "grad_ratio is not reported", UserWarning, stacklevel=2)

    def step_stats(self, grads: Any, params: Any) -> dict[str, jax.Array]:
        del params
        if self._kernels is None:
            raise ValueError("GradientMonitor has not seen its model: pass it to "
                             "stablejax.fit(callbacks=[...]), or call set_model(model, tx) "
                             "and set_params({'input_shape': ...}) first")
        out = {"grad_norm": optax.tree.norm(grads)}
        if len(self._kernels) >= 3:  # a first and a last hidden kernel, then the output's
            kernels = dict(_kernel_grads(grads))
            first, last = kernels[self._kernels[0]], kernels[self._kernels[-2]]
            out["grad_ratio"] = _std(first) / _std(last)
        return out

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        ratio = logs.get("grad_ratio")
        if ratio is None or math.isnan(ratio) or bool(own["warned"]):
            return state, own, False
        if 1 / self.threshold <= ratio <= self.threshold:
            return state, own, False
        assert self._kernels is not None  # a grad_ratio in the logs comes from step_stats
        first, last = self._kernels[0], self._kernels[-2]
        if ratio < 1:
            kind, fix = "vanishing", (
                "match the initialisation to the activation (He with ReLU and its "
                "variants, LeCun with SELU), use a non-saturating activation, or add "
                "batch norm")
        else:
            kind, fix = "exploding", (
                "clip gradients (clipnorm or global_clipnorm), lower the learning rate, "
                "or match the initialisation to the activation")
        warnings.warn(
            f"gradients are {kind}: epoch {int(state.epoch) + 1}'s gradient std of {first} "
            f"is {ratio:.3g} times that of {last} (outside [1/{self.threshold:g}, "
            f"{self.threshold:g}]); {fix}.",
            UserWarning,
            stacklevel=2,
        )
        return state, {"warned": jnp.ones((), jnp.bool_)}, False
