"""The notes' remedies applied to a model already built: each returns a changed copy.

- :func:`matched_init`: the kernels whose variance is off their activation's entry of
  the initialisation table redrawn with the matched initialiser (any ``nnx.Module``
  whose activations :func:`stablejax.diagnostics.recommend` sees).
- :func:`with_activation`: every hidden activation replaced (SELU, ELU, leaky ReLU...),
  the hidden kernels redrawn with the new activation's initialiser.
- :func:`with_batch_norm`: a :class:`stablejax.nn.BatchNorm` after every hidden layer's
  activation (the notes' first batch-norm model).

The last two rebuild the layers of an ``nnx.Sequential`` (an ``sj.nn.mlp`` included):
hidden kernel layers are the ``Dense``/``nnx.Linear`` layers before the last one, whose
activation (the output's) is kept. A model with stacks (``mlp(scan_layers=True)``) is
unrolled (:func:`stablejax.nn.unroll`), changed, and stacked again: every run of two or
more consecutive identical blocks (a kernel layer and the layers up to the next) becomes
one :class:`stablejax.nn.Stack`, so it still compiles once per block.
:func:`stablejax.prescription.prescribe` measures each on the user's model.

Example::

    >>> from flax import nnx
    >>> import stablejax as sj
    >>> model = sj.nn.mlp([16, 16], input_shape=(8,), activation="sigmoid",
    ...                   rngs=nnx.Rngs(0))
    >>> selu = sj.remedies.with_activation(model, "selu")
    >>> [r.activation for r in sj.diagnostics.recommend(selu)]
    ['selu', 'selu', 'softmax']
    >>> all(r.ok for r in sj.diagnostics.recommend(selu))
    True
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from stablejax import activations, initializers, nn
from stablejax._checks import describe, index
from stablejax.diagnostics import recommend
from stablejax.nn.norm import check_momentum_epsilon

__all__ = ["matched_init", "with_activation", "with_batch_norm", "SequentialOnly"]


class SequentialOnly(ValueError):
    """A remedy that rebuilds layers met a model whose layers it cannot rebuild."""


def matched_init(model: nnx.Module, *, seed: int = 0) -> nnx.Module:
    """A copy of ``model`` whose mis-initialised kernels are redrawn from the table.

    Every kernel layer that :func:`stablejax.diagnostics.recommend` finds off its
    activation's variance (``scale / fan`` outside a factor ``sqrt(2)``) gets a kernel
    drawn by that activation's initialiser (Glorot uniform for none, tanh, sigmoid,
    softmax; He normal for the ReLU family and ELU; LeCun normal for SELU) from
    ``jax.random.key(seed)``; every other variable is copied unchanged.

    Raises:
      ValueError: no kernel is off the table (nothing to change), or a bad ``seed``.
      TypeError: ``model`` is not an ``nnx.Module``.
    """
    index("seed", seed, 0)
    rows = [row for row in recommend(model) if not row.ok and row.expected is not None]
    if not rows:
        raise ValueError("every kernel already has the variance its activation wants: "
                         "matched_init would change nothing")
    model = nnx.clone(model)
    key = jax.random.key(seed)
    for i, row in enumerate(rows):
        param, block = _kernel(model, row.name)
        shape = param.shape if block is None else param.shape[1:]
        draw = initializers.for_activation(row.activation)(jax.random.fold_in(key, i),
                                                           shape, param.dtype)
        param[...] = draw if block is None else param[...].at[block].set(draw)
    return model


def with_activation(model: nnx.Module, activation: str, *, seed: int = 0) -> nnx.Sequential:
    """A copy of the ``nnx.Sequential`` ``model`` with every hidden activation replaced.

    Each hidden kernel layer (a ``Dense`` or ``nnx.Linear`` before the last kernel
    layer) applies ``activation`` (a ``Dense``'s own, or the activation layer or
    function that follows it) and gets a kernel drawn by
    ``stablejax.initializers.for_activation(activation)``, its bias zeroed, from
    ``jax.random.key(seed)``. The output layer and every other layer are copied.

    Raises:
      SequentialOnly (a ``ValueError``): ``model`` is not an ``nnx.Sequential`` of
        layers (kernel layers ``Dense``/``nnx.Linear``, activations, others without
        kernels), or has no hidden kernel layer.
      ValueError: an unknown ``activation`` or a bad ``seed``.
    """
    initializers.for_activation(activation)
    index("seed", seed, 0)
    layers = _layers(model)
    key = jax.random.key(seed)
    for n, (j, end) in enumerate(_hidden(layers)):
        fan_in, units = layers[j].kernel.shape
        acts = [k for k in range(j + 1, end) if _is_activation(layers[k])]
        if isinstance(layers[j], nn.Dense) and not _is_linear(layers[j].activation):
            layers[j].activation = nn.Activation(activation)
        elif acts:
            layers[acts[0]] = nn.Activation(activation)
        else:
            layers.insert(j + 1, nn.Activation(activation))
        kernel = initializers.for_activation(activation)(jax.random.fold_in(key, n),
                                                         (fan_in, units), layers[j].kernel.dtype)
        layers[j].kernel[...] = kernel
        if getattr(layers[j], "bias", None) is not None:
            layers[j].bias[...] = 0 * layers[j].bias[...]
    return _rebuilt(model, layers)


def with_batch_norm(model: nnx.Module, *, momentum: float = 0.99,
                    epsilon: float = 1e-3) -> nnx.Sequential:
    """A copy of the ``nnx.Sequential`` ``model`` with batch norm after each hidden layer.

    A :class:`stablejax.nn.BatchNorm` (``momentum`` and ``epsilon``: Keras's defaults
    0.99 and 1e-3) over the layer's units follows each hidden kernel layer's activation
    (after a ``Dense`` that applies its own, or after the activation layer that follows
    a linear one), as in the notes' first batch-norm model. Every other layer is copied.

    The moving statistics forget their initial values (mean 0, variance 1) as
    ``momentum ** t`` after ``t`` updates: with 0.99, 37% of them are left after 100
    updates and evaluation (which uses them) lags training. For a short run pick
    ``momentum <= 0.001 ** (1 / t)`` (0.966 for 200 updates).

    Raises:
      SequentialOnly (a ``ValueError``): as :func:`with_activation`, or ``model``
        already holds a batch norm.
      ValueError: a bad ``momentum`` or ``epsilon``.
    """
    check_momentum_epsilon(momentum, epsilon)
    layers = _layers(model)
    if any(isinstance(layer, nnx.BatchNorm) for layer in layers):
        raise SequentialOnly("the model already has batch norm")
    for j, end in reversed(_hidden(layers)):
        acts = [k for k in range(j + 1, end) if _is_activation(layers[k])]
        after = acts[0] if acts else j
        layers.insert(after + 1, nn.BatchNorm(layers[j].kernel.shape[1], momentum=momentum,
                                              epsilon=epsilon, rngs=nnx.Rngs(0)))
    return _rebuilt(model, layers)


def _rebuilt(model: Any, layers: list[Any]) -> nnx.Sequential:
    """``layers`` as a Sequential, restacked when ``model`` had stacks."""
    if not any(isinstance(layer, nn.Stack) for layer in model.layers):
        return nnx.Sequential(*layers)
    starts = [j for j, layer in enumerate(layers) if _has_kernel(layer)]
    blocks = [layers[a:b] for a, b in zip(starts, [*starts[1:], len(layers)], strict=True)]
    out: list[Any] = layers[: starts[0]]
    run: list[list[Any]] = []
    for block in [*blocks, None]:
        if run and (block is None or _signature(block) != _signature(run[0])):
            out += ([nn.Stack([nnx.Sequential(*b) for b in run])] if len(run) >= 2
                    else run[0])
            run = []
        if block is not None:
            run.append(block)
    return nnx.Sequential(*out)


def _signature(block: list[Any]) -> tuple[Any, ...]:
    """What must agree for two blocks to stack: the graph, each variable's shape."""
    graphdef, state = nnx.split(nnx.Sequential(*block))
    return repr(graphdef), tuple(np.shape(a) for a in jax.tree.leaves(state))


def _layers(model: Any) -> list[Any]:
    """The layers of an unrolled copy of ``model``; refuses what cannot be rebuilt."""
    if not isinstance(model, nnx.Sequential):
        raise SequentialOnly(f"the model is not an nnx.Sequential (it is "
                             f"{describe(model)}): its layers cannot be rebuilt")
    layers = list(nn.unroll(model).layers)
    for j, layer in enumerate(layers):
        if _has_kernel(layer) and not isinstance(layer, nnx.Linear):
            raise SequentialOnly(f"layer {j} ({type(layer).__name__}) is a kernel layer "
                                 "other than Dense/nnx.Linear")
        if (isinstance(layer, nnx.Module) and not _has_kernel(layer)
                and any(_has_kernel(m) for _, m in nnx.iter_modules(layer))):
            raise SequentialOnly(f"layer {j} ({type(layer).__name__}) holds kernel layers "
                                 "inside it")
    return layers


def _hidden(layers: list[Any]) -> list[tuple[int, int]]:
    """``(j, end)`` for each hidden kernel layer ``j``; ``end`` is the next kernel layer."""
    kernels = [j for j, layer in enumerate(layers) if _has_kernel(layer)]
    if len(kernels) < 2:
        raise SequentialOnly("the model has no hidden kernel layer (one before the output)")
    return list(zip(kernels[:-1], kernels[1:], strict=True))


def _has_kernel(layer: Any) -> bool:
    return isinstance(getattr(layer, "kernel", None), nnx.Param)


def _is_activation(layer: Any) -> bool:
    return isinstance(layer, nn.Activation | nn.PReLU | nn.RReLU) or (
        callable(layer) and not isinstance(layer, nnx.Module))


def _is_linear(layer: Any) -> bool:
    return isinstance(layer, nn.Activation) and layer.fn is activations.get(None)


def _kernel(model: nnx.Module, name: str) -> tuple[nnx.Param, int | None]:
    """The kernel parameter of the layer at ``name`` (recommend's spelling) and, inside
    a stack (``.../blocks[k]/...``), the block's index along its leading axis."""
    obj: Any = model
    block = None
    for part in name.split("/"):
        if part.startswith("blocks[") and part.endswith("]"):
            obj, block = obj.blocks, int(part[len("blocks["):-1])
        elif part.isdigit():
            obj = obj[int(part)]
        else:
            obj = getattr(obj, part)
    return obj.kernel, block
