"""The dense networks of docs/guide.md §1.3 in one call: :func:`mlp`."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from flax import nnx

from stablejax import initializers
from stablejax.nn._common import (
    ActivationLike,
    as_flag,
    as_size,
    check_initializer,
    check_rngs,
)
from stablejax.nn.activation import (
    activation_layer,
    check_activation,
    check_not_softmax_of_one,
)
from stablejax.nn.dense import Dense, Flatten, default_init
from stablejax.nn.norm import BatchNorm, check_momentum_epsilon
from stablejax.nn.stack import Stack

__all__ = ["BATCH_NORM_PLACEMENTS", "mlp"]


BATCH_NORM_PLACEMENTS = (None, "after", "before")


def mlp(
    hidden: Sequence[int] = (300, 100),
    *,
    input_shape: Sequence[int] = (28, 28),
    activation: ActivationLike = "elu",
    kernel_init: initializers.Initializer | None = None,
    batch_norm: str | None = None,
    output_size: int = 10,
    output_activation: ActivationLike | None = "auto",
    momentum: float = 0.99,
    epsilon: float = 1e-3,
    scan_layers: bool = False,
    rngs: nnx.Rngs,
) -> nnx.Sequential:
    """Builds the dense networks of docs/guide.md §1.3 in one call, as an ``nnx.Sequential``.

    - ``batch_norm=None``: Flatten -> [Dense(h, activation)] * k -> Dense(output).
    - ``batch_norm="after"`` (docs/guide.md's first model): Flatten -> BatchNorm ->
      [Dense(h, activation) -> BatchNorm] * k -> Dense(output).
    - ``batch_norm="before"`` (its second model): Flatten -> BatchNorm ->
      [Dense(h, use_bias=False) -> BatchNorm -> Activation] * k -> Dense(output);
      batch norm's beta makes the Dense bias redundant.

    The output activation (``output_activation="auto"``, the default) is softmax for
    ``output_size >= 2`` (docs/guide.md's classifiers) and sigmoid for ``output_size=1``,
    Keras's ``Dense(1, activation="sigmoid")`` for a binary task. An explicit
    ``"softmax"`` with ``output_size=1`` raises ``ValueError``: softmax over one unit is
    the constant 1 and the model could not learn. ``None`` gives logits (pair it with a
    ``*_from_logits`` loss).

    With ``kernel_init=None`` each hidden layer takes the initialiser matched to
    ``activation`` and the output layer the one matched to ``output_activation``. The
    trainable and non-trainable parameter counts equal Keras's for the same
    architecture (e.g. 268,978 and 2,368 for docs/guide.md's first model).

    ``scan_layers=True`` makes deep stacks compile once. A hidden block is the
    bracketed group above; the rule: every maximal run of at least two consecutive
    blocks with the same fan-in and width, the first hidden block excepted (it follows
    the input), becomes one :class:`Stack` in the place of its layers. Its variables
    are stacked along a leading layer axis and the blocks run as one ``jax.lax.scan``,
    so the compiled program holds one block however many there are. ``hidden=[64] * 100``
    gives ``Flatten -> Dense(64) -> Stack(99 x Dense(64, 64)) -> Dense(output)``;
    ``[300, 100]`` has no such run and is built unrolled, exactly as without the flag.
    The initial values are the unrolled model's, drawn in the same order from ``rngs``
    (:func:`unroll` gives it back; :func:`copy_layers` copies between the layouts), and
    so are the outputs, batch statistics and gradients, to float32 rounding: the scan's
    body is compiled apart from its neighbours (measured on CPU in a compiled train
    step: outputs, loss and gradients bitwise equal, moving variances within 1 ulp).
    Parameter paths inside a stack are those of the stacked arrays, e.g.
    ``layers/2/blocks/layers/0/kernel`` of shape ``(99, 64, 64)``; :func:`variables`
    lists them per block. Freezing (``stablejax.transfer``) selects a whole stack, not
    single blocks of it.

    Args:
      hidden: sizes of the hidden layers, integers >= 1 (may be empty).
      input_shape: shape of one input sample (flattened first), a sequence of integers
        >= 1 such as ``(28, 28)`` or ``(64,)``.
      activation: hidden activation (name or callable).
      kernel_init: initialiser for the hidden kernels (default: matched to activation).
      batch_norm: None, ``"after"`` or ``"before"``.
      output_size: units of the output layer, an integer >= 1.
      output_activation: ``"auto"`` (softmax, or sigmoid for one unit: see above),
        ``"softmax"``, ``"sigmoid"``, None for logits, a callable, ...
      momentum, epsilon: batch-norm hyperparameters (Keras's defaults).
      scan_layers: stack repeated hidden blocks and scan over them (a bool, default False).
      rngs: ``nnx.Rngs``.

    Raises:
      ValueError: a size that is not an integer >= 1, an unknown ``batch_norm`` or
        activation name, bad batch-norm hyperparameters, softmax with ``output_size=1``,
        a non-bool ``scan_layers``.
      TypeError: ``hidden`` or ``input_shape`` not a sequence, ``kernel_init`` not
        callable, ``rngs`` not an ``nnx.Rngs``.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from stablejax.nn import mlp
        >>> model = mlp([16], input_shape=(8, 8), batch_norm="after", rngs=nnx.Rngs(0))
        >>> [type(layer).__name__ for layer in model.layers]
        ['Flatten', 'BatchNorm', 'Dense', 'BatchNorm', 'Dense']
        >>> y = model(jnp.ones((5, 8, 8)))
        >>> y.shape, round(float(y[0].sum()), 5)  # softmax rows sum to 1
        ((5, 10), 1.0)
        >>> deep = mlp([16] * 6, input_shape=(8,), batch_norm="after", scan_layers=True,
        ...            rngs=nnx.Rngs(0))
        >>> [type(layer).__name__ for layer in deep.layers]
        ['Flatten', 'BatchNorm', 'Dense', 'BatchNorm', 'Stack', 'Dense']
        >>> deep.layers[4].length, deep.layers[4].blocks.layers[0].kernel.shape
        (5, (5, 16, 16))
    """
    if batch_norm not in BATCH_NORM_PLACEMENTS:
        raise ValueError(f"batch_norm must be one of {BATCH_NORM_PLACEMENTS}, got {batch_norm!r}")
    hidden = tuple(as_size("hidden", h) for h in _sequence("hidden", hidden, "[300, 100] or [300]"))
    output_size = as_size("output_size", output_size)
    input_shape = tuple(
        as_size("input_shape", d)
        for d in _sequence("input_shape", input_shape, "(28, 28) or (64,)")
    )
    if isinstance(output_activation, str) and output_activation == "auto":
        output_activation = "sigmoid" if output_size == 1 else "softmax"
    check_not_softmax_of_one(output_activation, output_size, "output_activation",
                              "output_size")
    check_activation("activation", activation)
    check_activation("output_activation", output_activation)
    check_momentum_epsilon(momentum, epsilon)
    as_flag("scan_layers", scan_layers)
    check_initializer("kernel_init", kernel_init)
    check_rngs(rngs)

    def bn(n: int) -> BatchNorm:
        return BatchNorm(n, momentum=momentum, epsilon=epsilon, rngs=rngs)

    def block(fan_in: int, size: int) -> list[nnx.Module]:
        if batch_norm == "before":
            init = kernel_init or default_init(activation)
            return [
                Dense(fan_in, size, kernel_init=init, use_bias=False, rngs=rngs),
                bn(size),
                activation_layer(activation, size, rngs),
            ]
        dense = Dense(fan_in, size, activation=activation, kernel_init=kernel_init, rngs=rngs)
        return [dense, bn(size)] if batch_norm == "after" else [dense]

    width = math.prod(input_shape)
    layers: list[nnx.Module] = [Flatten()]
    if batch_norm is not None:
        layers.append(bn(width))
    # Every block is built in the unrolled order, so both layouts draw the same initial
    # values from ``rngs``.
    shapes = list(zip((width, *hidden)[:-1], hidden, strict=True))
    blocks = [block(fan_in, size) for fan_in, size in shapes]
    for run in _runs(shapes):
        if scan_layers and len(run) >= 2:
            layers.append(Stack([nnx.Sequential(*blocks[i]) for i in run]))
        else:
            layers += [layer for i in run for layer in blocks[i]]
    width = hidden[-1] if hidden else width
    layers.append(Dense(width, output_size, activation=output_activation, rngs=rngs))
    return nnx.Sequential(*layers)


def _sequence(name: str, value: Any, example: str) -> Any:
    """``value`` after checking that it is a sequence (of sizes), not a lone number or a string."""
    if isinstance(value, str | bytes | numbers.Number) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of sizes such as {example}, got {value!r} "
                        f"({type(value).__name__})")
    return value


def _runs(shapes: list[tuple[int, int]]) -> list[list[int]]:
    """Indices of the hidden blocks grouped into runs of equal ``(fan_in, width)``.

    The first block is always alone: it follows the input, not a hidden layer.
    """
    runs: list[list[int]] = []
    for i, shape in enumerate(shapes):
        if i >= 2 and shape == shapes[i - 1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
