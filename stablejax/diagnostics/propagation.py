"""Signal propagation: one forward and one backward pass measured layer by layer.

As in Glorot & Bengio's figures (2010, "Understanding the difficulty of training deep
feedforward neural networks"), with a verdict (see ``_verdict``). The steps: check the
inputs, instrument a copy of the model, trace it (shapes, the loss on zero outputs),
measure in one compiled pass, then read the rows and judge them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stablejax import initializers, losses
from stablejax.diagnostics._probes import (
    Probed,
    Site,
    check_model,
    expected_variance,
    has_kernel,
    instrument,
    recorded_call,
    std,
)
from stablejax.diagnostics._verdict import verdict as judge
from stablejax.diagnostics.report import LayerStats, SignalReport
from stablejax.diagnostics.thresholds import SATURATED_DERIVATIVE, SATURATING

__all__ = ["signal_propagation"]


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
    check_model(model)
    loss_fn = losses.get(loss)
    x, y = _checked_batch(batch)
    clone, sites = instrument(model)
    clone.train()
    graphdef, params, rest = nnx.split(clone, nnx.Param, ...)  # type: ignore[misc]
    called: list[int] = []  # the site of each measured call, set by every trace

    def forward(params: nnx.State, probes: Sequence[jax.Array] | None):
        module = nnx.merge(graphdef, params, rest, copy=True)
        outputs, recording = recorded_call(module, x, probes)
        called[:] = [site for site, _, _ in recording.seen]
        return outputs, [(pre, out) for _, pre, out in recording.seen]

    shapes = _traced(forward, params, x)
    if not any(sites[s].kernel is not None for s in called):
        raise ValueError("the model's forward pass calls none of its kernel layers; "
                         "signal_propagation measures the kernel layers it calls")
    _check_loss(loss_fn, shapes[0], y)

    def kernels(state: nnx.State) -> dict[int, jax.Array]:
        """Each measured kernel layer's kernel (or gradient) in ``state``, by site."""
        return {m.site: m.layer.kernel[...]
                for _, m in nnx.iter_modules(nnx.merge(graphdef, state, rest))
                if isinstance(m, Probed) and has_kernel(m.layer)}

    def objective(params: nnx.State, probes: list[jax.Array]):
        outputs, seen = forward(params, probes)
        return loss_fn(outputs, y), seen

    def measure(params: nnx.State, probes: list[jax.Array]):
        (value, seen), (param_grads, probe_grads) = jax.value_and_grad(
            objective, argnums=(0, 1), has_aux=True)(params, probes)
        kernel, kernel_grad = kernels(params), kernels(param_grads)
        return value, [
            _figures(sites[s].applies, pre, out, grad, kernel.get(s), kernel_grad.get(s))
            for s, (pre, out), grad in zip(called, seen, probe_grads, strict=True)
        ]

    # One compiled program: far fewer compilations than running the ops one by one.
    probes = [jnp.zeros(out.shape, out.dtype) for _, out in shapes[1]]
    value, figures = jax.device_get(jax.jit(measure)(params, probes))
    layers = [_layer_stats(sites[s], f) for s, f in zip(called, figures, strict=True)]
    return _report(layers, [sites[s] for s in called], float(value))


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


def _checked_batch(batch: Any) -> tuple[jax.Array, jax.Array]:
    """``(x, y)`` checked: a pair of arrays of real numbers, finite, of one length."""
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        size = f" of length {len(batch)}" if isinstance(batch, tuple | list) else ""
        raise ValueError(f"batch must be a pair (x, y) of inputs and targets, got "
                         f"{type(batch).__name__}{size}")
    x, y = _batch_part("x", batch[0]), _batch_part("y", batch[1])
    if len(y) != len(x):
        raise ValueError(f"batch y has {len(y)} samples and x has {len(x)}: give one target "
                         "per sample")
    return x, y


def _traced(forward: Callable[..., Any], params: nnx.State, x: jax.Array) -> Any:
    """The shapes of ``forward(params, None)``: the outputs, then each call's (pre, out).

    Traced only (``jax.eval_shape``); raises ``ValueError`` when ``x`` does not fit.
    """
    try:
        return jax.eval_shape(forward, params, None)
    except (TypeError, ValueError) as error:
        raise ValueError(f"batch x of shape {tuple(x.shape)} does not fit the model "
                         f"({str(error).splitlines()[0]}); pass inputs of the shape the "
                         "model was built for") from None


def _check_loss(loss_fn: Callable[..., Any], outputs: Any, y: jax.Array) -> None:
    """Runs the loss on zero outputs, so it checks the targets' values too."""
    try:
        value_shape = loss_fn(jnp.zeros(outputs.shape, outputs.dtype), y)
    except (TypeError, ValueError, IndexError) as error:
        raise ValueError(f"the loss fails on outputs of shape {outputs.shape} and targets "
                         f"of shape {tuple(y.shape)} ({str(error).splitlines()[0]}); pass "
                         "targets that fit the loss, or a loss that fits the model") from None
    if getattr(value_shape, "shape", None) != ():
        raise ValueError(f"loss must return a scalar (the mean over the batch), got shape "
                         f"{getattr(value_shape, 'shape', type(value_shape).__name__)}; "
                         "average it, e.g. with jnp.mean")


def _figures(applies: str, pre: jax.Array, out: jax.Array, grad: jax.Array,
             kernel: jax.Array | None, kernel_grad: jax.Array | None) -> dict[str, jax.Array]:
    """One layer's figures, as 0-d arrays (computed inside the compiled pass)."""
    out32 = out.astype(jnp.float32)
    figures = {"pre_mean": jnp.mean(pre.astype(jnp.float32)), "pre_std": std(pre),
               "act_mean": jnp.mean(out32), "act_std": std(out), "grad_std": std(grad)}
    if kernel is not None and kernel_grad is not None:
        figures |= {"kernel_std": std(kernel), "kernel_grad_std": std(kernel_grad)}
    if applies in SATURATING:
        peak, derivative = SATURATING[applies]
        figures["saturated"] = jnp.mean(derivative(out32) < SATURATED_DERIVATIVE * peak)
    if applies != "linear":
        units = out32.reshape(-1, out32.shape[-1]) if out32.ndim else out32.reshape(1, 1)
        figures["dead"] = jnp.mean(jnp.all(units == 0, axis=0))
    return figures


def _layer_stats(site: Site, figures: dict[str, Any]) -> LayerStats:
    kernel = site.kernel
    fan_in = table_std = None
    if kernel is not None:
        fan_in = int(initializers.compute_fans(kernel.shape)[0])
        expected = expected_variance(site.feeds, kernel.shape)
        table_std = None if expected is None else math.sqrt(expected[1])
    value = {k: float(v) for k, v in figures.items()}
    return LayerStats(
        name=site.name, activation=site.feeds, fan_in=fan_in,
        kernel_std=value.get("kernel_std"), table_std=table_std, pre_mean=value["pre_mean"],
        pre_std=value["pre_std"], act_mean=value["act_mean"], act_std=value["act_std"],
        grad_std=value["grad_std"], kernel_grad_std=value.get("kernel_grad_std"),
        saturated=value.get("saturated"), dead=value.get("dead"),
    )


def _activation_row(calls: list[Site], k: int) -> int:
    """A kernel layer's activation row: its own, else the next activation layer before
    the next kernel layer (``batch_norm="before"``), else its affine output."""
    if calls[k].applies != "linear":
        return k
    for i in range(k + 1, len(calls)):
        if calls[i].kernel is not None:
            break
        if calls[i].applies != "linear":
            return i
    return k


def _report(layers: list[LayerStats], calls: list[Site], loss: float) -> SignalReport:
    """The report on the measured rows; ``calls``: the layer of each row."""
    kernel_rows = [i for i, site in enumerate(calls) if site.kernel is not None]
    hidden = list(range(kernel_rows[-1]))  # every row before the output layer's
    act_rows = [_activation_row(calls, k) for k in kernel_rows[:-1]] or [kernel_rows[0]]
    first, last = kernel_rows[0], kernel_rows[max(0, len(kernel_rows) - 2)]
    grad_ratio = _ratio(layers[first].kernel_grad_std, layers[last].kernel_grad_std)
    forward_ratio = _ratio(layers[act_rows[-1]].act_std, layers[act_rows[0]].act_std)
    saturated = max([layers[i].saturated or 0.0 for i in hidden], default=0.0)
    dead = max([layers[i].dead or 0.0 for i in hidden], default=0.0)
    verdict, reason = judge(layers, kernel_rows, act_rows, hidden, loss,
                                       grad_ratio, forward_ratio)
    return SignalReport(layers, loss, grad_ratio, forward_ratio, saturated, dead,
                        verdict, reason)


def _ratio(a: float | None, b: float | None) -> float:
    a, b = a or 0.0, b or 0.0
    if b == 0:
        return math.nan if a == 0 else math.inf
    return a / b
