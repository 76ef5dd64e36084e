"""Repeated layers run as one scan (:class:`Stack`), and models moved between the stacked
and the unrolled layout (:func:`unroll`, :func:`copy_layers`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from stablejax.nn.norm import FrozenCalls

__all__ = ["Stack", "copy_layers", "unroll"]


def _stack_split(module: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
    """``(graphdef, params, shared, rest)``: a stack's per-layer variables and shared counts."""
    return nnx.split(module, nnx.Param, FrozenCalls, ...)  # type: ignore[return-value]


class Stack(nnx.Module):
    """Identical blocks kept as one block with stacked variables, run by a scan over layers.

    ``Stack(blocks)`` takes modules of one structure (same types, shapes and settings,
    e.g. ``nnx.Sequential(Dense(64, 64), BatchNorm(64))`` repeated) and keeps a single
    module ``blocks`` whose every variable has a leading layer axis of size ``length``:
    ``stack.blocks.layers[0].kernel`` has shape ``(length, 64, 64)`` and its slice ``[i]``
    is block ``i``'s kernel. A call runs ``blocks[0]``, then ``blocks[1]``, ... on the
    output of the previous one, as ``jax.lax.scan`` over the layer axis, so the compiled
    program holds the block once whatever ``length`` is. Variables a block changes when
    called (batch-norm moving statistics, RReLU's RNG count) are written back per layer;
    the result is the same as calling the blocks one after the other.

    A batch norm's ``frozen_calls`` counter (``BatchNorm.freeze_for``) is the one
    exception: it is shared by every block (one call of the stack is one call of each
    block) and is not stacked.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from stablejax.nn import Dense, Stack
        >>> rngs = nnx.Rngs(0)
        >>> stack = Stack([Dense(4, 4, activation="relu", rngs=rngs) for _ in range(3)])
        >>> stack.length, stack.blocks.kernel.shape, stack(jnp.ones((2, 4))).shape
        (3, (3, 4, 4), (2, 4))
    """

    def __init__(self, blocks: Sequence[nnx.Module]) -> None:
        blocks = list(blocks)
        if not blocks:
            raise ValueError("blocks must hold at least one module, got none")
        graphdef, first_params, shared, first_rest = _stack_split(blocks[0])
        expected = _shapes(first_params, first_rest)
        params, rest = [], []
        for i, block in enumerate(blocks):
            g, p, _, r = _stack_split(block)
            if g != graphdef or _shapes(p, r) != expected:
                raise ValueError(f"blocks[{i}] differs in structure from blocks[0]")
            params.append(p)
            rest.append(r)

        def stack(*values: jax.Array) -> jax.Array:
            return jnp.stack(values)

        self.length = len(blocks)
        self.blocks = nnx.merge(
            graphdef, jax.tree.map(stack, *params), shared, jax.tree.map(stack, *rest)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Runs the blocks in order, as one scan over the layer axis."""
        graphdef, params, shared, rest = _stack_split(self.blocks)

        def layer(x: jax.Array, variables: tuple[nnx.State, nnx.State]):
            # copy: the block mutates its variables (statistics, RNG counts) in this trace.
            block = nnx.merge(graphdef, *variables, shared, copy=True)
            y = block(x)
            _, _, new_shared, new_rest = _stack_split(block)
            return y, (new_shared, new_rest)

        y, (new_shared, new_rest) = jax.lax.scan(layer, x, (params, rest))
        # Every block starts from the same shared counters and changes them alike.
        nnx.update(self.blocks, jax.tree.map(lambda v: v[-1], new_shared), new_rest)
        return y

    def unstack(self) -> list[nnx.Module]:
        """The blocks as separate modules (copies), in order: the unrolled layout."""
        graphdef, params, shared, rest = _stack_split(self.blocks)
        return [
            nnx.merge(graphdef, *jax.tree.map(lambda v, i=i: v[i], (params, rest)), shared,
                      copy=True)
            for i in range(self.length)
        ]


def _shapes(*states: nnx.State) -> list[tuple[Any, ...]]:
    return [
        (path, type(var), jnp.shape(var[...]), var[...].dtype)
        for state in states
        for path, var in nnx.to_flat_state(state)
    ]


def _flat_layers(model: nnx.Sequential) -> list[Any]:
    """The layers of ``model`` in the unrolled layout: each Stack's blocks in its place."""
    flat: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, Stack):
            for block in layer.unstack():
                flat += list(block.layers) if isinstance(block, nnx.Sequential) else [block]
        else:
            flat.append(layer)
    return flat


def unroll(model: nnx.Sequential) -> nnx.Sequential:
    """A copy of ``model`` with every :class:`Stack` replaced by its blocks' layers.

    ``unroll(mlp(..., scan_layers=True))`` has the structure of ``mlp(...)`` and, built
    from the same ``rngs``, the same values. Gradients and optimizer states are not
    models; to read one of them per layer, ``nnx.update`` a clone of the model with it
    and unroll that.
    """
    if not isinstance(model, nnx.Sequential):
        raise ValueError(f"model must be an nnx.Sequential, got {type(model).__name__}")
    return nnx.Sequential(*_flat_layers(nnx.clone(model)))


def copy_layers(source: nnx.Sequential, target: nnx.Sequential) -> None:
    """Copies every variable of ``source`` into ``target``, in place, across layouts.

    The two are the same network, each unrolled or with stacks (:class:`Stack`, e.g.
    ``mlp(..., scan_layers=True)``): layer ``k`` of the unrolled layout of ``source``
    goes to layer ``k`` of that of ``target``, stacked where ``target`` stacks. Raises
    ``ValueError`` naming the first layer whose variables (paths, kinds, shapes,
    dtypes) differ. Example, training unrolled weights in the scanned layout::

        >>> from flax import nnx
        >>> from stablejax.nn import copy_layers, mlp
        >>> unrolled = mlp([8, 8, 8], input_shape=(4,), rngs=nnx.Rngs(0))
        >>> scanned = mlp([8, 8, 8], input_shape=(4,), scan_layers=True, rngs=nnx.Rngs(1))
        >>> copy_layers(unrolled, scanned)
        >>> bool((scanned.layers[2].blocks.layers[0].kernel[1]
        ...       == unrolled.layers[3].kernel[...]).all())
        True
    """
    for name, model in (("source", source), ("target", target)):
        if not isinstance(model, nnx.Sequential):
            raise ValueError(f"{name} must be an nnx.Sequential, got {type(model).__name__}")
    flat = _flat_layers(source)
    pos = 0
    updates: list[tuple[Any, nnx.State]] = []
    for k, layer in enumerate(target.layers):
        if isinstance(layer, Stack):
            sequential = isinstance(layer.blocks, nnx.Sequential)
            per_block = len(layer.blocks.layers) if sequential else 1
            count = layer.length * per_block
            taken = flat[pos:pos + count]
            if len(taken) < count:
                raise ValueError(f"source has fewer layers than target (at target layer {k})")
            blocks = [
                nnx.Sequential(*taken[i:i + per_block]) if sequential else taken[i]
                for i in range(0, count, per_block)
            ]
            try:
                src: nnx.Module = Stack(blocks)
            except ValueError as err:
                raise ValueError(f"source layers for target layer {k} differ: {err}") from None
            pos += count
        else:
            if pos >= len(flat):
                raise ValueError(f"source has fewer layers than target (at target layer {k})")
            src = flat[pos]
            pos += 1
        state = nnx.state(src)
        if _shapes(state) != _shapes(nnx.state(layer)):
            raise ValueError(f"target layer {k} ({type(layer).__name__}) differs from its "
                             "source layer in its variables")
        updates.append((layer, state))
    if pos != len(flat):
        raise ValueError(f"source has {len(flat)} layers unrolled, target {pos}")
    for layer, state in updates:
        nnx.update(layer, state)
