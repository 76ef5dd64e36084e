"""Losses and metrics against closed forms computed in float64 numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from stablejax import losses

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(6, 4))
LABELS = np.array([0, 3, 1, 1, 2, 0])


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_sparse_crossentropy_from_logits():
    expected = -np.mean(np.log(_softmax(LOGITS))[np.arange(6), LABELS])
    got = losses.sparse_categorical_crossentropy_from_logits(jnp.asarray(LOGITS), LABELS)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_sparse_crossentropy_from_probabilities_clips_like_keras():
    p = _softmax(LOGITS)
    expected = -np.mean(np.log(p[np.arange(6), LABELS]))
    got = losses.sparse_categorical_crossentropy(jnp.asarray(p, jnp.float32), LABELS)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # a zero probability for the label is clipped to 1e-7, not -log(0) = inf
    one_hot = jnp.asarray(np.eye(4)[[1, 0]], jnp.float32)
    got = losses.sparse_categorical_crossentropy(one_hot, np.array([0, 0]))
    assert float(got) == pytest.approx(-(np.log(1e-7) + np.log(1 - 1e-7)) / 2, rel=1e-4)


def test_binary_crossentropy_both_forms():
    z = RNG.normal(size=(8, 1))
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1], np.float32)
    p = 1 / (1 + np.exp(-z[:, 0]))
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert float(losses.binary_crossentropy(jnp.asarray(p[:, None], jnp.float32), y)) == (
        pytest.approx(expected, rel=1e-5)
    )
    assert float(losses.binary_crossentropy_from_logits(jnp.asarray(z), y)) == pytest.approx(
        expected, rel=1e-6
    )


def test_mse_and_accuracies():
    a, b = RNG.normal(size=(5, 3)), RNG.normal(size=(5, 3))
    assert float(losses.mean_squared_error(jnp.asarray(a), b)) == pytest.approx(
        np.mean((a - b) ** 2), rel=1e-6
    )
    acc = np.mean(np.argmax(LOGITS, -1) == LABELS)
    got = float(losses.sparse_categorical_accuracy(jnp.asarray(LOGITS), LABELS))
    assert got == pytest.approx(acc, rel=1e-6)
    p = jnp.asarray([[0.2], [0.7], [0.5], [0.9]])
    assert float(losses.binary_accuracy(p, jnp.asarray([0, 1, 1, 0]))) == 0.5


def test_get():
    assert losses.get("mse") is losses.mean_squared_error
    assert losses.get(jnp.sum) is jnp.sum
    with pytest.raises(ValueError, match="hinge"):
        losses.get("hinge")


def test_from_logits_accepts_float_labels_and_low_precision_logits():
    # Labels stored as floats and bfloat16 logits worked before the losses wrapped
    # optax.losses (which requires integer labels); they still do, in float32.
    z = jnp.asarray(LOGITS, jnp.bfloat16)
    got = losses.sparse_categorical_crossentropy_from_logits(z, LABELS.astype(np.float32))
    expected = -np.mean(np.log(_softmax(np.asarray(z, np.float64)))[np.arange(6), LABELS])
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(expected, rel=1e-6)
