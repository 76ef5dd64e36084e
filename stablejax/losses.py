"""Losses and metrics with Keras's conventions, as pure functions ``(outputs, targets) -> scalar``.

Every loss returns the mean over the batch. The ``*_from_probabilities`` forms take a
model that ends in ``softmax`` or ``sigmoid`` (as the notes' models do) and clip the
probabilities to ``[1e-7, 1 - 1e-7]`` like Keras; the ``*_from_logits`` forms are the
numerically safer choice for a model without an output activation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# Keras's backend epsilon, used to clip probabilities away from 0 and 1.
EPSILON = 1e-7


def sparse_categorical_crossentropy(probabilities: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean of ``-log p[label]`` for integer labels; ``p`` renormalised and clipped.

    Keras's ``sparse_categorical_crossentropy(from_logits=False)``: ``p = p / sum(p)``,
    clipped to ``[1e-7, 1 - 1e-7]``.
    """
    p = probabilities / jnp.sum(probabilities, axis=-1, keepdims=True)
    p = jnp.clip(p, EPSILON, 1.0 - EPSILON)
    picked = jnp.take_along_axis(p, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return -jnp.mean(jnp.log(picked))


def sparse_categorical_crossentropy_from_logits(
    logits: jax.Array, labels: jax.Array
) -> jax.Array:
    """Mean of ``logsumexp(z) - z[label]`` for integer labels (no clipping needed)."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))
    picked = jnp.take_along_axis(log_p, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return -jnp.mean(picked)


def binary_crossentropy(probabilities: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean of ``-(y log p + (1 - y) log(1 - p))``, ``p`` clipped to ``[1e-7, 1 - 1e-7]``.

    Keras's ``binary_crossentropy(from_logits=False)``, for a sigmoid output. ``targets``
    of shape ``(n,)`` match outputs of shape ``(n, 1)``.
    """
    p = jnp.clip(probabilities.reshape(targets.shape), EPSILON, 1.0 - EPSILON)
    y = targets.astype(p.dtype)
    return -jnp.mean(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))


def binary_crossentropy_from_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean of ``softplus(z) - y z``, the stable form of binary cross-entropy on logits."""
    z = logits.reshape(targets.shape)
    return jnp.mean(jax.nn.softplus(z) - targets.astype(z.dtype) * z)


def mean_squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean of ``(outputs - targets) ** 2`` over every element."""
    return jnp.mean(jnp.square(outputs - targets.reshape(outputs.shape)))


def sparse_categorical_accuracy(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of samples whose arg-max output equals the integer label."""
    return jnp.mean((jnp.argmax(outputs, axis=-1) == labels).astype(jnp.float32))


def binary_accuracy(outputs: jax.Array, targets: jax.Array, threshold: float = 0.5) -> jax.Array:
    """Fraction of samples with ``(output > threshold) == target`` (Keras's threshold 0.5).

    For a logits model use ``threshold=0.0``.
    """
    predicted = outputs.reshape(targets.shape) > threshold
    return jnp.mean((predicted == (targets > 0.5)).astype(jnp.float32))


LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "sparse_categorical_crossentropy_from_logits": sparse_categorical_crossentropy_from_logits,
    "binary_crossentropy": binary_crossentropy,
    "binary_crossentropy_from_logits": binary_crossentropy_from_logits,
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
}

# The metric reported beside each named loss, as Keras's metrics=["accuracy"] resolves it.
ACCURACY_FOR: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "sparse_categorical_crossentropy": sparse_categorical_accuracy,
    "sparse_categorical_crossentropy_from_logits": sparse_categorical_accuracy,
    "binary_crossentropy": binary_accuracy,
    "binary_crossentropy_from_logits": lambda z, y: binary_accuracy(z, y, threshold=0.0),
}


def get(name_or_fn: str | Callable) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Returns the loss for a name in :data:`LOSSES`, a callable unchanged.

    Raises:
      ValueError: for an unknown name; the message lists the known ones.
    """
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn in LOSSES:
        return LOSSES[name_or_fn]
    raise ValueError(f"loss must be a callable or one of {tuple(LOSSES)}, got {name_or_fn!r}")
