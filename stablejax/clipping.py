"""Gradient clipping as Keras computes it.

Clipping goes first in a chain, on the raw gradients, as Keras clips them before the
optimizer's update. Norms are computed in float32 (float64 for float64 leaves) and the
clipped gradients keep their dtype.

A norm is computed as ``m * sqrt(sum((g / m)**2))`` with ``m = max|g|`` (0 when every
element is 0), so that it cannot overflow for finite gradients: the plain sum of
squares exceeds float32's range (3.4e38) once an element reaches about 1.8e19, which
made a clipped update NaN (``global_clipnorm``) or 0 (``clipnorm``). For ordinary
gradients the two forms agree to float32 rounding. The three rules are those of Pascanu, Mikolov and
Bengio, "On the difficulty of training recurrent neural networks", ICML 2013.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from stablejax._checks import positive

__all__ = ["clip_by_global_norm", "clip_by_norm", "clip_by_value"]


def _check_threshold(name: str, value: float) -> None:
    positive(name, value)


def _norm(leaves: list[jax.Array]) -> jax.Array:
    """The L2 norm of all the elements of ``leaves``, in float32 (float64 if one is).

    ``m * sqrt(sum((g / m)**2))`` with ``m = max|g|``: every ratio is at most 1, so the
    sum cannot overflow; an infinite ``m`` gives an infinite norm and a NaN a NaN, as the
    plain sum of squares does.
    """
    dtype = functools.reduce(jnp.promote_types, [x.dtype for x in leaves], jnp.float32)
    leaves = [x.astype(dtype) for x in leaves]
    if not leaves:
        return jnp.zeros([], dtype)
    m = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x), initial=0) for x in leaves])
    divisor = jnp.where((m > 0) & jnp.isfinite(m), m, 1)
    total = sum(jnp.sum(jnp.square(x / divisor)) for x in leaves)
    return jnp.where(jnp.isinf(m), m, divisor * jnp.sqrt(total))


def clip_by_value(clipvalue: float) -> optax.GradientTransformation:
    """Clips every gradient element to ``[-clipvalue, clipvalue]``: ``g <- clip(g, -c, c)``.

    Keras's ``clipvalue=c``. It changes the direction of the gradient, not only its size.

    Args:
      clipvalue: the bound ``c``, > 0. Required.

    Warning:
      This is ``optax.clip(c)`` with its argument checked, and PyTorch's
      ``clip_grad_value_``. Keras ignores a ``clipvalue`` <= 0; here it is an error.

    Example:
      >>> import jax.numpy as jnp
      >>> clipped, _ = clip_by_value(3.5).update(jnp.array([3.0, 4.0, -12.0]), None)
      >>> print(clipped)  # element by element: the direction changes
      [ 3.   3.5 -3.5]
    """
    _check_threshold("clipvalue", clipvalue)
    return optax.clip(clipvalue)


def clip_by_norm(clipnorm: float) -> optax.GradientTransformation:
    """Clips each gradient tensor by its own L2 norm, Keras's ``clipnorm=c``::

        g <- g * (c / max(||g||_2, c))       (per tensor; a zero gradient stays zero)

    The norm is computed without overflow for any finite gradient (see the module
    docstring), so a huge finite gradient is clipped to norm ``c``.

    Args:
      clipnorm: the largest L2 norm ``c`` of each tensor, > 0. Required.

    Warning:
      Keras's ``clipnorm`` is per tensor, not over the whole tree (that is
      :func:`clip_by_global_norm`). Optax has no per-tensor L2 clipping
      (``optax.clip_by_block_rms`` uses the RMS, not the L2 norm) and PyTorch has none
      built in.

    Example:
      >>> import jax.numpy as jnp
      >>> grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([-12.0])}
      >>> clipped, _ = clip_by_norm(1.0).update(grads, None)
      >>> print(clipped["a"], clipped["b"])
      [0.6 0.8] [-1.]
    """
    _check_threshold("clipnorm", clipnorm)

    def clip(g):
        norm = _norm([g])
        # The ratio is at most 1: `g * clipnorm` first could overflow.
        return (g * (clipnorm / jnp.maximum(norm, clipnorm))).astype(g.dtype)

    return optax.stateless(lambda updates, params: jax.tree.map(clip, updates))


def clip_by_global_norm(global_clipnorm: float) -> optax.GradientTransformation:
    """Rescales the whole tree so its global L2 norm is at most ``c``, as Keras computes it::

        n = sqrt(sum_i ||g_i||_2**2)
        g_i <- g_i * c * min(1/n, 1/c)

    There is no epsilon: a zero norm leaves the gradients unchanged, a non-finite norm
    (from an infinite or NaN gradient) makes every gradient NaN (as in Keras). The norm
    is computed without overflow for finite gradients (see the module docstring), so a
    huge finite gradient is clipped to norm ``c``.

    Args:
      global_clipnorm: the largest global norm ``c``, > 0. Required.

    Warning:
      ``optax.clip_by_global_norm`` computes ``g`` if ``n < c`` else ``g * c / n``, equal
      up to rounding; PyTorch's ``clip_grad_norm_`` uses ``c / (n + 1e-6)`` clamped to at
      most 1, which shrinks the gradient slightly even below the threshold.

    Example:
      >>> import jax.numpy as jnp
      >>> grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([-12.0])}  # norm 13
      >>> clipped, _ = clip_by_global_norm(1.0).update(grads, None)
      >>> print(clipped["a"].round(4), clipped["b"].round(4))
      [0.2308 0.3077] [-0.9231]
    """
    _check_threshold("global_clipnorm", global_clipnorm)

    def clip(updates, params):
        del params
        norm = _norm(jax.tree.leaves(updates))
        # `norm - norm` is NaN when the norm is not finite: Keras's way to poison the step.
        scale = global_clipnorm * jnp.minimum(1 / norm, 1 / global_clipnorm) + (norm - norm)
        return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)

    return optax.stateless(clip)
