"""Losses and metrics with Keras's conventions, as pure functions ``(outputs, targets) -> scalar``.

Every loss returns the mean over the batch. The ``*_from_logits`` forms are
``optax.losses`` (which returns one loss per example) averaged; they are the
numerically safer choice for a model without an output activation. The other forms
take a model that ends in ``softmax`` or ``sigmoid`` (as the models of docs/guide.md do) and clip
the probabilities to ``[1e-7, 1 - 1e-7]`` like Keras; Optax has no probability-input
cross-entropy.

What is checked: shapes always, before any work (also while ``jit`` or ``grad`` traces,
as shapes are static); label and target *values* only when they are concrete (a NumPy
or JAX array outside a traced function). Inside ``jit``, ``vmap`` (as in
:func:`sample_weighted`) or ``grad`` of the targets they are tracers with no value
yet and are not checked: a label outside the classes then gives NaN or a wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from stablejax._checks import check_range, is_traced

# Keras's backend epsilon, used to clip probabilities away from 0 and 1.
EPSILON = 1e-7


def _first_bad(name: str, x: jax.Array, ok: Callable[[np.ndarray], np.ndarray],
               accepted: str) -> None:
    """Raises ``ValueError`` naming the first element of ``x`` that fails ``ok``.

    The one value check of every loss and metric: a traced ``x`` (inside ``jit``, ``vmap``
    or ``grad``) has no value yet and is not checked.
    """
    if is_traced(x):
        return
    values = np.asarray(x)
    failed = ~ok(values.astype(np.float64))
    if failed.any():
        where = tuple(int(i) for i in np.unravel_index(np.argmax(failed), failed.shape))
        at = f"{name}[{', '.join(map(str, where))}]" if where else name
        raise ValueError(f"{at}={values[where].item()!r} is not {accepted}")


def _check_shapes(outputs_name: str, outputs: jax.Array, targets: jax.Array) -> None:
    """Raises unless ``targets`` has ``outputs``' shape, or ``(n,)`` against ``(n, 1)``.

    The caller then reshapes ``targets`` to ``outputs``' shape. Any other difference is a
    ``ValueError`` naming both shapes (a reshape of another shape of the same size, a
    transposed target say, would pair the wrong elements).
    """
    o, t = outputs.shape, targets.shape
    column = {len(o), len(t)} == {1, 2} and o[0] == t[0] and max(o, t, key=len)[1] == 1
    if o != t and not column:
        raise ValueError(
            f"targets of shape {t} do not match {outputs_name} of shape {o}: the "
            "shapes must be equal (or (n,) against (n, 1))"
        )


def _class_labels(outputs_name: str, outputs: jax.Array, labels: ArrayLike) -> jax.Array:
    """``labels`` as int32 of shape ``outputs.shape[:-1]``, checked against the classes.

    Labels of shape ``outputs.shape[:-1] + (1,)`` are squeezed, as Keras does. Concrete
    labels must be integers in ``[0, classes)``; traced ones are not checked.
    """
    labels = jnp.asarray(labels)
    if outputs.ndim == 0:
        raise ValueError(f"{outputs_name} must have a class axis (shape (..., classes)), "
                         "got a scalar")
    batch, classes = outputs.shape[:-1], outputs.shape[-1]
    if labels.shape not in (batch, (*batch, 1)):
        raise ValueError(
            f"labels of shape {labels.shape} do not match {outputs_name} of shape "
            f"{outputs.shape}: one class index per sample needs labels of shape {batch}"
        )
    _first_bad("labels", labels, lambda v: (v == np.floor(v)) & (v >= 0) & (v < classes),
               f"a class index in [0, {classes}) ({outputs_name} has {classes} classes)")
    return labels.reshape(batch).astype(jnp.int32)


def _binary_targets(outputs_name: str, outputs: jax.Array, targets: ArrayLike) -> jax.Array:
    """``targets`` in ``outputs``' shape (see :func:`_check_shapes`), concrete ones in [0, 1].

    Values are checked before the reshape, so a message indexes the caller's array.
    """
    targets = jnp.asarray(targets)
    _check_shapes(outputs_name, outputs, targets)
    _first_bad("targets", targets, lambda v: (v >= 0) & (v <= 1), "a target in [0, 1]")
    return targets.reshape(outputs.shape)


def sparse_categorical_crossentropy(probabilities: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Cross-entropy of class probabilities against integer labels, mean over the batch.

    .. math::
        L = -\frac{1}{n} \sum_i \log \operatorname{clip}\Big(
            \frac{p_{i, y_i}}{\sum_k p_{i,k}}, \epsilon, 1 - \epsilon\Big),
        \qquad \epsilon = 10^{-7}

    Args:
      probabilities: ``(..., classes)`` probabilities, e.g. a softmax output.
      labels: ``(...)`` integer class indices (or ``(..., 1)``, as Keras takes them).

    Returns:
      The scalar mean loss.

    Raises:
      ValueError: labels of another shape; a concrete label that is not an integer in
        ``[0, classes)`` (the message names the first one, its index and the number of
        classes). Traced labels (inside ``jit``, ``vmap`` or ``grad``) have no value yet:
        their shapes are checked, their values are not.

    Example:
      >>> p = jnp.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
      >>> sparse_categorical_crossentropy(p, jnp.array([0, 0]))
      Array(8.2374, dtype=float32)

    Warning:
      The numbers of Keras's ``sparse_categorical_crossentropy(from_logits=False)``:
      the probabilities are renormalised to sum to 1, then clipped, so a probability
      of 0 for the label costs :math:`-\log 10^{-7} \approx 16.1`, not infinity.
      PyTorch has no probability-input form (``NLLLoss`` takes log-probabilities)
      and Optax has none.
    """
    p = jnp.asarray(probabilities)
    labels = _class_labels("probabilities", p, labels)
    p = p / jnp.sum(p, axis=-1, keepdims=True)
    p = jnp.clip(p, EPSILON, 1.0 - EPSILON)
    picked = jnp.take_along_axis(p, labels[..., None], axis=-1)
    return -jnp.mean(jnp.log(picked[..., 0]))


def sparse_categorical_crossentropy_from_logits(
    logits: ArrayLike, labels: ArrayLike
) -> jax.Array:
    r"""Cross-entropy of logits against integer labels, mean over the batch.

    .. math::
        L = \frac{1}{n} \sum_i \Big(\log \sum_k e^{z_{i,k}} - z_{i, y_i}\Big)

    ``optax.losses.softmax_cross_entropy_with_integer_labels`` averaged, with the
    logits computed in at least float32 and the labels cast to integers. Nothing is
    clipped.

    Args:
      logits: ``(..., classes)`` unnormalised scores.
      labels: ``(...)`` class indices (integers, or floats holding integers; or shape
        ``(..., 1)``, as Keras takes them).

    Returns:
      The scalar mean loss.

    Raises:
      ValueError: as :func:`sparse_categorical_crossentropy` (shapes always, concrete
        labels outside ``[0, classes)`` by value; traced labels are not checked).

    Example:
      >>> z = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
      >>> sparse_categorical_crossentropy_from_logits(z, jnp.array([0, 2]))
      Array(0.66908, dtype=float32)
    """
    logits = jnp.asarray(logits)
    labels = _class_labels("logits", logits, labels)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))


def binary_crossentropy(probabilities: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Binary cross-entropy of probabilities, mean over every element.

    .. math::
        L = -\operatorname{mean}\big(y \log p + (1 - y) \log(1 - p)\big),\qquad
        p = \operatorname{clip}(p, \epsilon, 1 - \epsilon),\ \epsilon = 10^{-7}

    Args:
      probabilities: sigmoid outputs, of ``targets``' shape (``(n, 1)`` also matches
        ``targets`` of shape ``(n,)``, and the reverse).
      targets: 0/1 targets (or soft targets in [0, 1]).

    Returns:
      The scalar mean loss.

    Raises:
      ValueError: shapes that differ otherwise (named in the message); a concrete target
        outside [0, 1] (the first one and its index). Traced targets (inside ``jit``,
        ``vmap`` or ``grad``) are checked for shape only.

    Example:
      >>> binary_crossentropy(jnp.array([[0.9], [0.2], [1.0]]), jnp.array([1, 0, 0]))
      Array(5.4236, dtype=float32)

    Warning:
      The numbers of Keras's ``binary_crossentropy(from_logits=False)``: clipping
      makes a confident wrong answer cost about 16 (:math:`-\log 10^{-7}`, less
      a little in float32, where ``1 - 1e-7`` rounds to ``1 - 1.19e-7``), not
      infinity.
      PyTorch's ``BCELoss`` instead clamps each log term at -100; Optax has no
      probability-input form.
    """
    p = jnp.asarray(probabilities)
    y = _binary_targets("probabilities", p, targets).astype(p.dtype)
    p = jnp.clip(p, EPSILON, 1.0 - EPSILON)
    return -jnp.mean(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))


def binary_crossentropy_from_logits(logits: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Binary cross-entropy of logits, mean over every element.

    .. math::
        L = \operatorname{mean}\big(-y \log \sigma(z) - (1 - y) \log \sigma(-z)\big)

    ``optax.losses.sigmoid_binary_cross_entropy`` averaged; stable for any logit.

    Args:
      logits: unnormalised scores, of ``targets``' shape (``(n, 1)`` also matches
        ``targets`` of shape ``(n,)``, and the reverse).
      targets: 0/1 targets (or soft targets in [0, 1]).

    Returns:
      The scalar mean loss.

    Raises:
      ValueError: as :func:`binary_crossentropy` (shapes always, concrete targets
        outside [0, 1] by value; traced targets are not checked).

    Example:
      >>> binary_crossentropy_from_logits(jnp.array([[0.0], [2.0]]), jnp.array([1, 0]))
      Array(1.41004, dtype=float32)
    """
    z = jnp.asarray(logits)
    y = _binary_targets("logits", z, targets)
    return jnp.mean(optax.losses.sigmoid_binary_cross_entropy(z, y.astype(z.dtype)))


def mean_squared_error(outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
    """Mean of ``(outputs - targets) ** 2`` over every element.

    ``targets`` must have the outputs' shape; ``(n,)`` against ``(n, 1)`` (and the
    reverse) is the one difference taken, by a reshape. Any other shape raises
    ``ValueError`` naming both, also when traced; the values are not checked.

    Example:
      >>> mean_squared_error(jnp.array([[1.0], [2.0]]), jnp.array([0.0, 4.0]))
      Array(2.5, dtype=float32)
    """
    outputs = jnp.asarray(outputs)
    targets = jnp.asarray(targets)
    _check_shapes("outputs", outputs, targets)
    return jnp.mean(jnp.square(outputs - targets.reshape(outputs.shape)))


def sparse_categorical_accuracy(outputs: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Fraction of samples whose arg-max output equals the integer label.

    ``labels`` are checked as in :func:`sparse_categorical_crossentropy`: shape
    ``outputs.shape[:-1]`` (or ``(..., 1)``), concrete values in ``[0, classes)``;
    traced labels for shape only.

    Example:
      >>> sparse_categorical_accuracy(jnp.array([[0.1, 0.9], [0.8, 0.2]]), jnp.array([1, 1]))
      Array(0.5, dtype=float32)
    """
    outputs = jnp.asarray(outputs)
    labels = _class_labels("outputs", outputs, labels)
    return jnp.mean((jnp.argmax(outputs, axis=-1) == labels).astype(jnp.float32))


def binary_accuracy(outputs: ArrayLike, targets: ArrayLike, threshold: float = 0.5) -> jax.Array:
    """Fraction of samples with ``(output > threshold) == target`` (Keras's threshold 0.5).

    For a logits model use ``threshold=0.0``. ``threshold`` must be a finite number (a
    traced one is not checked). ``targets`` are checked as in
    :func:`binary_crossentropy`: the outputs' shape (or ``(n,)`` against ``(n, 1)``),
    concrete values in [0, 1]; traced targets for shape only.

    Example:
      >>> binary_accuracy(jnp.array([[0.2], [0.7], [0.5]]), jnp.array([0, 1, 1]))
      Array(0.6666667, dtype=float32)
    """
    check_range("threshold", threshold, -math.inf, math.inf, low_open=True, high_open=True)
    outputs = jnp.asarray(outputs)
    targets = _binary_targets("outputs", outputs, targets)
    predicted = outputs > threshold
    return jnp.mean((predicted == (targets > 0.5)).astype(jnp.float32))


LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "sparse_categorical_crossentropy_from_logits": sparse_categorical_crossentropy_from_logits,
    "binary_crossentropy": binary_crossentropy,
    "binary_crossentropy_from_logits": binary_crossentropy_from_logits,
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
}


def sample_weighted(
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    outputs: ArrayLike,
    targets: ArrayLike,
    sample_weight: ArrayLike,
) -> jax.Array:
    r"""A batch loss with one weight per sample, as Keras's ``sample_weight`` weighs it.

    .. math::

        L = \frac{1}{n} \sum_{i=1}^{n} w_i \, \ell(o_i, t_i)

    where :math:`\ell(o_i, t_i)` is ``loss_fn`` on the one-sample batch ``i`` (the mean
    over the batch of one sample is that sample's loss) and :math:`n` the batch size: the
    sum is divided by the number of samples, not by the sum of the weights (Keras 3's
    ``"sum_over_batch_size"`` reduction). All weights 1 give the batch mean. ``loss_fn``
    must return the mean over its batch (as every loss here does); ``sample_weight`` must
    have shape ``(n,)`` and ``targets`` ``n`` rows. ``loss_fn`` sees each sample under
    ``vmap``, traced: shapes are checked, label and target values are not.

    Example:
      >>> import jax.numpy as jnp
      >>> float(sample_weighted(mean_squared_error, jnp.array([[1.0], [3.0]]),
      ...                       jnp.zeros((2, 1)), jnp.array([1.0, 0.5])))
      2.75
    """
    outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
    weights = jnp.asarray(sample_weight)
    if weights.shape != outputs.shape[:1]:
        raise ValueError(f"sample_weight must have shape {outputs.shape[:1]}, one weight per "
                         f"sample, got shape {weights.shape}")
    if targets.shape[:1] != outputs.shape[:1]:
        raise ValueError(f"targets of shape {targets.shape} do not match outputs of shape "
                         f"{outputs.shape}: one row of targets per sample")
    per_sample = jax.vmap(lambda o, t: loss_fn(o[None], t[None]))(outputs, targets)
    weights = weights.astype(per_sample.dtype)
    return jnp.sum(per_sample * weights) / per_sample.shape[0]


# The metric reported beside each named loss, as Keras's metrics=["accuracy"] resolves it.
ACCURACY_FOR: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "sparse_categorical_crossentropy": sparse_categorical_accuracy,
    "sparse_categorical_crossentropy_from_logits": sparse_categorical_accuracy,
    "binary_crossentropy": binary_accuracy,
    "binary_crossentropy_from_logits": lambda z, y: binary_accuracy(z, y, threshold=0.0),
}


def get(
    name_or_fn: str | Callable[[jax.Array, jax.Array], jax.Array],
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Returns the loss for a name in :data:`LOSSES`, a callable unchanged.

    Example:
      >>> get("mse") is mean_squared_error
      True

    Raises:
      ValueError: for an unknown name; the message lists the known ones.
    """
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn in LOSSES:
        return LOSSES[name_or_fn]
    raise ValueError(f"loss must be a callable or one of {tuple(LOSSES)}, got {name_or_fn!r}")
