"""Gradient clipping as Keras computes it.

Clipping goes first in a chain, on the raw gradients, as Keras clips them before the
optimizer's update. Norms are computed in float32 (float64 for float64 leaves) and the
clipped gradients keep their dtype.

The three rules are those of Pascanu, Mikolov and Bengio, "On the difficulty of training
recurrent neural networks", ICML 2013.

A norm is computed in units of ``s``, the power of two just above ``max|g|``, as
``||g|| = s * r`` with ``r = sqrt(sum((g / s)**2))``, and a clipped gradient
``g * c / ||g||`` as ``(g / s) * (c / r)``: neither the sum of squares, nor the norm, nor
the factor (which can be below float32's smallest normal number) is formed, so nothing
overflows or underflows for finite gradients. The plain sum of squares exceeds float32's
range (3.4e38) once an element reaches about 1.8e19, which made a clipped update NaN
(``global_clipnorm``) or 0 (``clipnorm``). Dividing by a power of two is exact, so for
ordinary gradients ``r`` is the plain sum's square root scaled, to float32 rounding.

Gradients must be floating point: an integer leaf raises ``ValueError`` naming its path
and dtype when the update is traced (clipped integers would be truncated, most to 0).
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


def _check_floating(updates: optax.Updates) -> None:
    """Raises ``ValueError`` naming the first gradient leaf that is not floating point."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(updates):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"updates{jax.tree_util.keystr(path)} has dtype {jnp.result_type(leaf)}: "
                "clipping needs floating-point gradients (integers would be truncated)"
            )


def _clip(c: float, leaves: list[jax.Array]) -> tuple[list[jax.Array], jax.Array]:
    """``(clipped, r)``: ``leaves`` scaled by ``min(1, c / n)`` for their joint L2 norm ``n``.

    With ``s = 2**e`` for ``max|g| = f * 2**e``, ``0.5 <= f < 1`` (``s = 1`` when the
    maximum is 0 or not finite) and ``r = sqrt(sum((g / s)**2))``, ``n = s * r`` and a
    clipped leaf is ``(g / s) * (c / r)``: every ``|g / s| < 1``, so nothing overflows.
    ``e`` is clamped so that ``s`` and ``1 / s`` are normal numbers (XLA divides by a
    scalar by multiplying with its reciprocal, which would flush to zero). A zero tree
    is returned unchanged; an infinite or NaN element gives an infinite or NaN ``r``,
    returned for the caller to act on. Computed in float32 (float64 if a leaf is); each
    clipped leaf keeps its dtype.
    """
    dtype = functools.reduce(jnp.promote_types, [x.dtype for x in leaves], jnp.float32)
    wide = [x.astype(dtype) for x in leaves]
    m = functools.reduce(
        jnp.maximum, [jnp.max(jnp.abs(x), initial=0) for x in wide], jnp.zeros([], dtype)
    )
    _, e = jnp.frexp(jnp.where((m > 0) & jnp.isfinite(m), m, 1))
    info = jnp.finfo(dtype)
    s = jnp.ldexp(jnp.ones([], dtype), jnp.clip(e, info.minexp + 2, info.maxexp - 2))
    r = jnp.sqrt(sum((jnp.sum(jnp.square(x / s)) for x in wide), jnp.zeros([], dtype)))
    # n <= c, written so that a NaN r clips (to NaN), as Keras's max(n, c) does.
    keep = c / s >= r
    clipped = [
        jnp.where(keep, x, (x / s) * (c / r)).astype(g.dtype)
        for g, x in zip(leaves, wide, strict=True)
    ]
    return clipped, r


def clip_by_value(clipvalue: float) -> optax.GradientTransformation:
    """Clips every gradient element to ``[-clipvalue, clipvalue]``: ``g <- clip(g, -c, c)``.

    Keras's ``clipvalue=c``. It changes the direction of the gradient, not only its size.

    A NaN element stays NaN; each clipped leaf keeps its dtype.

    Args:
      clipvalue: the bound ``c``, > 0. Required.

    Warning:
      This is ``optax.clip(c)`` with its argument and the gradients' dtypes checked, and
      PyTorch's ``clip_grad_value_``. Keras ignores a ``clipvalue`` <= 0; here it is an
      error.

    Example:
      >>> import jax.numpy as jnp
      >>> clipped, _ = clip_by_value(3.5).update(jnp.array([3.0, 4.0, -12.0]), None)
      >>> print(clipped)  # element by element: the direction changes
      [ 3.   3.5 -3.5]
    """
    _check_threshold("clipvalue", clipvalue)

    def clip(updates, params):
        del params
        _check_floating(updates)
        return jax.tree.map(lambda g: jnp.clip(g, -clipvalue, clipvalue).astype(g.dtype), updates)

    return optax.stateless(clip)


def clip_by_norm(clipnorm: float) -> optax.GradientTransformation:
    """Clips each gradient tensor by its own L2 norm, Keras's ``clipnorm=c``::

        g <- g * min(1, c / ||g||_2)          (per tensor; a zero gradient stays zero)

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

    def clip_one(g):
        [clipped], _ = _clip(clipnorm, [g])
        return clipped

    def clip(updates, params):
        del params
        _check_floating(updates)
        return jax.tree.map(clip_one, updates)

    return optax.stateless(clip)


def clip_by_global_norm(global_clipnorm: float) -> optax.GradientTransformation:
    """Rescales the whole tree so its global L2 norm is at most ``c``, as Keras computes it::

        n = sqrt(sum_i ||g_i||_2**2)
        g_i <- g_i * min(1, c / n)

    There is no epsilon: a zero norm leaves the gradients unchanged, a non-finite norm
    (from an infinite or NaN gradient) makes every gradient NaN (as in Keras). The norm
    is computed without overflow for finite gradients (see the module docstring), so a
    huge finite gradient is clipped to norm ``c``.

    Args:
      global_clipnorm: the largest global norm ``c``, > 0. Required.

    Warning:
      Keras computes ``g * c * min(1/n, 1/c)`` and ``optax.clip_by_global_norm`` ``g`` if
      ``n < c`` else ``g * c / n``, equal up to rounding (but both overflow to a NaN
      update once the sum of squares leaves float32's range); PyTorch's
      ``clip_grad_norm_`` uses ``c / (n + 1e-6)`` clamped to at most 1, which shrinks the
      gradient slightly even below the threshold.

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
        _check_floating(updates)
        leaves, treedef = jax.tree.flatten(updates)
        clipped, r = _clip(global_clipnorm, leaves)
        # `r - r` is NaN when the norm is not finite: Keras's way to poison the step.
        return jax.tree.unflatten(treedef, [(g + (r - r)).astype(g.dtype) for g in clipped])

    return optax.stateless(clip)
