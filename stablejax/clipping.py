"""Gradient clipping as Keras computes it, and a guard that skips non-finite steps.

Clipping goes first in a chain, on the raw gradients, as Keras clips them before the
optimizer's update. Norms are summed in float32 (float64 for float64 leaves) and the
clipped gradients keep their dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from stablejax._checks import check_range

__all__ = [
    "SkipNonfiniteState",
    "all_finite",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "skip_nonfinite",
]


def _check_threshold(name, value):
    check_range(name, value, 0, math.inf, low_open=True, high_open=True)


def _sum_of_squares(x):
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return jnp.sum(jnp.square(x))


def clip_by_value(clipvalue) -> optax.GradientTransformation:
    """Clips every gradient element to ``[-clipvalue, clipvalue]``: ``g <- clip(g, -c, c)``.

    Keras's ``clipvalue=c``. It changes the direction of the gradient, not only its size.

    Args:
      clipvalue: the bound ``c``, > 0. Required.

    Warning:
      Same as ``optax.clip(c)`` and PyTorch's ``clip_grad_value_``. Keras ignores a
      ``clipvalue`` <= 0; here it is an error.

    References:
      Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent neural
      networks", ICML 2013.
    """
    _check_threshold("clipvalue", clipvalue)

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: jnp.clip(g, -clipvalue, clipvalue), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def clip_by_norm(clipnorm) -> optax.GradientTransformation:
    """Clips each gradient tensor by its own L2 norm, Keras's ``clipnorm=c``::

        g <- g * c / max(||g||_2, c)         (per tensor; a zero gradient stays zero)

    Args:
      clipnorm: the largest L2 norm ``c`` of each tensor, > 0. Required.

    Warning:
      Keras's ``clipnorm`` is per tensor, not over the whole tree (that is
      :func:`clip_by_global_norm`). Optax has no per-tensor L2 clipping
      (``optax.clip_by_block_rms`` uses the RMS, not the L2 norm) and PyTorch has none
      built in.

    References:
      Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent neural
      networks", ICML 2013.
    """
    _check_threshold("clipnorm", clipnorm)

    def clip(g):
        norm = jnp.sqrt(_sum_of_squares(g))
        return (g * clipnorm / jnp.maximum(norm, clipnorm)).astype(g.dtype)

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def clip_by_global_norm(global_clipnorm) -> optax.GradientTransformation:
    """Rescales the whole tree so its global L2 norm is at most ``c``, as Keras computes it::

        n = sqrt(sum_i ||g_i||_2**2)
        g_i <- g_i * c * min(1/n, 1/c)

    There is no epsilon: a zero norm leaves the gradients unchanged, a non-finite norm
    makes every gradient NaN (as in Keras).

    Args:
      global_clipnorm: the largest global norm ``c``, > 0. Required.

    Warning:
      ``optax.clip_by_global_norm`` computes ``g`` if ``n < c`` else ``g * c / n``, equal
      up to rounding; PyTorch's ``clip_grad_norm_`` uses ``c / (n + 1e-6)`` clamped to at
      most 1, which shrinks the gradient slightly even below the threshold.

    References:
      Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent neural
      networks", ICML 2013.
    """
    _check_threshold("global_clipnorm", global_clipnorm)

    def update_fn(updates, state, params=None):
        del params
        norm = jnp.sqrt(sum(_sum_of_squares(g) for g in jax.tree.leaves(updates)))
        # `norm - norm` is NaN when the norm is not finite: Keras's way to poison the step.
        scale = global_clipnorm * jnp.minimum(1 / norm, 1 / global_clipnorm) + (norm - norm)
        return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def all_finite(tree) -> jax.Array:
    """True (a boolean scalar array) when no leaf of ``tree`` holds a NaN or an infinity."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


class SkipNonfiniteState(NamedTuple):
    """State of :func:`skip_nonfinite`."""

    inner_state: optax.OptState
    skipped: jax.Array  # int32: steps skipped so far
    consecutive: jax.Array  # int32: steps skipped in a row up to now


def skip_nonfinite(inner) -> optax.GradientTransformationExtraArgs:
    """Skips every step whose gradients hold a NaN or an infinity.

    On such a step the updates are zeros and ``inner``'s state is left untouched, so the
    step has no effect at all (its step count does not advance either); the skip is
    counted in ``skipped`` (total) and ``consecutive`` (reset by the next finite step)::

        finite = all(isfinite(g) for every leaf g)
        updates, inner_state = inner.update(g, inner_state) if finite else (0, inner_state)

    Args:
      inner: the transformation to guard, e.g. ``stablejax.optimizers.adam()``.

    Warning:
      ``optax.apply_if_finite(inner, max_consecutive_errors)`` does the same until
      ``max_consecutive_errors`` bad steps come in a row, then applies the non-finite
      update, which usually turns the parameters into NaN; this transform never does.
      Watch ``consecutive`` instead to stop a diverged run. Neither library's Keras
      optimizer skips such steps.
    """
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
