"""Guarding training against non-finite gradients: test a tree, skip a bad step."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["SkipNonfiniteState", "all_finite", "skip_nonfinite"]


def all_finite(tree: optax.Updates) -> jax.Array:
    """True (a boolean scalar array) when no leaf of ``tree`` holds a NaN or an infinity::

        all(isfinite(x).all() for every leaf x)        (True for a tree without leaves)

    Args:
      tree: any pytree of arrays (gradients, parameters, a loss).

    Warning:
      Optax computes the same test inside ``optax.apply_if_finite`` but has no public
      function for it.

    Example:
      >>> import jax.numpy as jnp
      >>> print(all_finite({"w": jnp.array([1.0, 2.0]), "b": jnp.zeros(1)}))
      True
      >>> print(all_finite({"w": jnp.array([1.0, jnp.nan])}))
      False
    """
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


class SkipNonfiniteState(NamedTuple):
    """State of :func:`skip_nonfinite`."""

    inner_state: optax.OptState
    skipped: jax.Array  # int32: steps skipped so far
    consecutive: jax.Array  # int32: steps skipped in a row up to now


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Skips every step whose gradients hold a NaN or an infinity.

    On such a step the updates are zeros and ``inner``'s state is left untouched, so the
    step has no effect at all (its step count does not advance either); the skip is
    counted in ``skipped`` (total) and ``consecutive`` (reset by the next finite step)::

        finite = all(isfinite(g) for every leaf g)
        updates, inner_state = inner.update(g, inner_state) if finite else (0, inner_state)

    Args:
      inner: the transformation to guard, e.g. ``stablejax.optimizers.adam()``, an
        ``optax.GradientTransformation``; anything else raises ``TypeError``. Required.

    Warning:
      ``optax.apply_if_finite(inner, max_consecutive_errors)`` does the same until
      ``max_consecutive_errors`` bad steps come in a row, then applies the non-finite
      update, which usually turns the parameters into NaN; this transform never does.
      Watch ``consecutive`` instead to stop a diverged run. Neither library's Keras
      optimizer skips such steps.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> tx = skip_nonfinite(optax.sgd(0.5))
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([1.0, jnp.inf]), state)
      >>> print(updates, int(state.skipped), int(state.consecutive))
      [0. 0.] 1 1
      >>> updates, state = tx.update(jnp.array([1.0, 2.0]), state)
      >>> print(updates, int(state.skipped), int(state.consecutive))
      [-0.5 -1. ] 1 0
    """
    if not isinstance(inner, optax.GradientTransformation):
        raise TypeError(f"inner must be an optax.GradientTransformation, got {inner!r}")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        zero = jnp.zeros([], jnp.int32)
        return SkipNonfiniteState(inner.init(params), skipped=zero, consecutive=zero)

    def update_fn(updates, state, params=None, **extra_args):
        finite = all_finite(updates)
        new_updates, inner_state = jax.lax.cond(
            finite,
            lambda: inner.update(updates, state.inner_state, params, **extra_args),
            lambda: (jax.tree.map(jnp.zeros_like, updates), state.inner_state),
        )
        skipped = jnp.where(finite, state.skipped, optax.safe_increment(state.skipped))
        consecutive = jnp.where(finite, 0, optax.safe_increment(state.consecutive))
        return new_updates, SkipNonfiniteState(inner_state, skipped, consecutive)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
