"""The names of a model's variables: :func:`path_name` and :func:`variables`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from stablejax.nn.norm import FrozenCalls
from stablejax.nn.stack import Stack

__all__ = ["path_name", "variables"]


def path_name(path: Sequence[Any]) -> str:
    """``"layers/2/kernel"`` for a variable's path (raw keys or ``jax.tree_util`` keys).

    The one spelling of parameter paths used by :func:`variables` and the freezing
    functions of ``stablejax.transfer``; a Variable's own ``.value`` step is dropped.

    Example::

        >>> from stablejax.nn import path_name
        >>> path_name(("layers", 2, "kernel"))
        'layers/2/kernel'
    """
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value":
            continue
        names.append(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))))
    return "/".join(names)


def variables(model: nnx.Module) -> list[tuple[str, bool]]:
    """Lists ``(path, trainable)`` for every variable of ``model``, per layer.

    ``trainable`` is True for ``nnx.Param`` (learned by backpropagation) and False for
    everything else (``nnx.BatchStat`` moving statistics, RNG state). This is the JAX
    answer to Keras's ``[(v.name, v.trainable) for v in layer.variables]``; for a batch
    norm layer it gives ``scale`` (gamma) and ``bias`` (beta) trainable, ``mean`` and
    ``var`` not.

    A :class:`Stack` (``mlp(..., scan_layers=True)``) keeps one array per variable for
    all its blocks; it is listed once per block, block by block, with the block's index
    after ``blocks``: ``layers/4/blocks[2]/layers/0/kernel`` is the slice ``[2]`` of the
    stacked array at ``layers/4/blocks/layers/0/kernel`` (the path that ``nnx.state``,
    :func:`path_name` and ``stablejax.transfer`` use). A batch norm's shared
    ``frozen_calls`` counter is not stacked and is listed once, without an index.

    Example::

        >>> from flax import nnx
        >>> from stablejax.nn import BatchNorm, mlp, variables
        >>> variables(BatchNorm(3, rngs=nnx.Rngs(0)))
        [('bias', True), ('mean', False), ('scale', True), ('var', False)]
        >>> model = mlp([4, 4, 4], input_shape=(2,), scan_layers=True, rngs=nnx.Rngs(0))
        >>> [name for name, _ in variables(model)]  # doctest: +NORMALIZE_WHITESPACE
        ['layers/1/bias', 'layers/1/kernel',
         'layers/2/blocks[0]/layers/0/bias', 'layers/2/blocks[0]/layers/0/kernel',
         'layers/2/blocks[1]/layers/0/bias', 'layers/2/blocks[1]/layers/0/kernel',
         'layers/3/bias', 'layers/3/kernel']
    """
    flat = [(tuple(path), var) for path, var in nnx.to_flat_state(nnx.state(model))]
    stacks = [
        ((*path, "blocks"), module.length)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, Stack)
    ]

    def stack_of(path: tuple[Any, ...], var: nnx.Variable) -> tuple[tuple[Any, ...], int] | None:
        if isinstance(var, FrozenCalls):
            return None
        return next(((p, n) for p, n in stacks if path[: len(p)] == p), None)

    listed: list[tuple[str, bool]] = []
    done = set()
    for path, var in flat:
        stack = stack_of(path, var)
        if stack is None:
            listed.append((path_name(path), isinstance(var, nnx.Param)))
        elif stack[0] not in done:
            done.add(stack[0])
            prefix, length = stack
            members = [(p, v) for p, v in flat if stack_of(p, v) == stack]
            for i in range(length):
                for p, v in members:
                    name = path_name((*prefix[:-1], f"blocks[{i}]", *p[len(prefix):]))
                    listed.append((name, isinstance(v, nnx.Param)))
    return listed
