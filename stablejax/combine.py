"""Combining optimizers: run one, then another, chosen by step count inside ``jit``.

Optax keeps its combinators (``chain``, ``multi_transform``, ``masked``) in
``optax.transforms``; this module holds the one stablejax adds.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from stablejax._checks import index

__all__ = ["SwitchState", "switch"]


class SwitchState(NamedTuple):
    """State of :func:`switch`: the step count, the boundary and both inner states."""

    count: jax.Array  # type: ignore[assignment]  # int32, updates done
    boundary: jax.Array  # int32, updates run by `first`
    first: optax.OptState
    then: optax.OptState


def switch(
    first: optax.GradientTransformation,
    then: optax.GradientTransformation,
    boundary: int,
) -> optax.GradientTransformationExtraArgs:
    """Runs ``first`` for the first ``boundary`` updates, ``then`` afterwards::

        update t (0-based) = first.update(...)  if t < boundary  else  then.update(...)

    The phase is chosen by the step count inside the compiled update (``lax.cond``), so
    nothing is recompiled at the switch. ``then``'s state starts fresh at the switch
    (it is initialised at the start and untouched until then), as a Keras recompile
    does; ``first``'s state is kept in the optimizer state but no longer used.
    Extra keyword arguments of ``update`` (say ``value=`` for a
    :func:`stablejax.plateau.reduce_on_plateau` inside a phase) are passed on to the
    running phase, as ``optax.chain`` passes them.
    :func:`stablejax.optimizers.current_learning_rate` reads the rate of the phase of the
    last update, :func:`stablejax.optimizers.set_learning_rate` sets that of the next one.

    Args:
      first: the transformation of updates ``0 .. boundary - 1``.
      then: the transformation of the updates after those.
      boundary: how many updates ``first`` runs, an integer >= 0 (a Python or NumPy
        integer). Required.

    Warning:
      ``optax.transforms.conditionally_transform`` runs or skips one transformation by
      step count (a skipped update passes the gradients through) and
      ``optax.multi_transform`` chooses by parameter: neither chooses between two.
      Keras and PyTorch switch by building a second optimizer, outside the compiled step.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> tx = switch(optax.sgd(1.0), optax.sgd(0.1), boundary=1)
      >>> params = jnp.array([2.0])
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     updates, state = tx.update(params, state)
      ...     print(updates)
      [-2.]
      [-0.2]
      [-0.2]
    """
    boundary = index("boundary", boundary, 0)
    first = optax.with_extra_args_support(first)
    then = optax.with_extra_args_support(then)

    def init_fn(params):
        return SwitchState(
            jnp.zeros((), jnp.int32),
            jnp.asarray(boundary, jnp.int32),
            first.init(params),
            then.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        def run_first(_):
            new, inner = first.update(updates, state.first, params, **extra_args)
            return new, inner, state.then

        def run_then(_):
            new, inner = then.update(updates, state.then, params, **extra_args)
            return new, state.first, inner

        new, first_state, then_state = jax.lax.cond(
            state.count < boundary, run_first, run_then, None
        )
        count = optax.safe_increment(state.count)
        return new, SwitchState(count, state.boundary, first_state, then_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
