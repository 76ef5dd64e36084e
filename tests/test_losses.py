"""Losses and metrics against closed forms computed in float64 numpy."""

import re

import jax
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


# --- shapes and label values: checked before any work ---------------------------------

PROBS = _softmax(LOGITS).astype(np.float32)
SPARSE = [
    losses.sparse_categorical_crossentropy,
    losses.sparse_categorical_crossentropy_from_logits,
    losses.sparse_categorical_accuracy,
]
ELEMENTWISE = [
    losses.binary_crossentropy,
    losses.binary_crossentropy_from_logits,
    losses.binary_accuracy,
    losses.mean_squared_error,
]


def _sparse_reference(fn, outputs, labels):
    """float64 numpy: the mean cross-entropy (of probabilities or logits) or accuracy."""
    rows = np.arange(len(labels))
    if fn is losses.sparse_categorical_accuracy:
        return np.mean(np.argmax(outputs, -1) == labels)
    p = outputs if fn is losses.sparse_categorical_crossentropy else _softmax(outputs)
    return -np.mean(np.log(p[rows, labels]))


@pytest.mark.parametrize("fn", SPARSE, ids=lambda f: f.__name__)
def test_sparse_labels_as_a_column_give_the_reference_numbers(fn):
    # Keras's (n, 1) labels are squeezed; the accuracy compared them across the whole
    # batch before (an (n, n) comparison: 0.5 where every label was right).
    outputs = PROBS if fn is losses.sparse_categorical_crossentropy else LOGITS
    expected = _sparse_reference(fn, np.asarray(outputs, np.float64), LABELS)
    for labels in (LABELS, LABELS[:, None], LABELS.astype(np.float32)):
        assert float(fn(jnp.asarray(outputs), labels)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "outputs, targets",
    [((4, 1), (4,)), ((4,), (4, 1)), ((2, 3), (2, 3)), ((5,), (5,))],
    ids=["column-vector", "vector-column", "matrix", "vector"],
)
@pytest.mark.parametrize("fn", ELEMENTWISE, ids=lambda f: f.__name__)
def test_elementwise_losses_pair_the_right_elements(fn, outputs, targets):
    o = RNG.uniform(0.05, 0.95, size=outputs)
    y = (RNG.uniform(size=targets) > 0.5).astype(np.float64)
    paired = y.reshape(o.shape)
    reference = {
        losses.binary_crossentropy: lambda: -np.mean(
            paired * np.log(o) + (1 - paired) * np.log(1 - o)),
        losses.binary_crossentropy_from_logits: lambda: np.mean(
            np.log1p(np.exp(-o)) + (1 - paired) * o),
        losses.binary_accuracy: lambda: np.mean((o > 0.5) == (paired > 0.5)),
        losses.mean_squared_error: lambda: np.mean((o - paired) ** 2),
    }[fn]()
    got = fn(jnp.asarray(o, jnp.float32), jnp.asarray(y, jnp.float32))
    assert float(got) == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize(
    "outputs, targets",
    [((2, 3), (3, 2)), ((4, 1), (3,)), ((4, 2), (4,)), ((4,), (2, 2)), ((4, 1), (1, 4)),
     ((6,), (6, 1, 1))],
    ids=["transposed", "fewer", "two-columns", "same-size", "row", "extra-axis"],
)
@pytest.mark.parametrize("fn", ELEMENTWISE, ids=lambda f: f.__name__)
def test_elementwise_losses_refuse_other_shapes_naming_both(fn, outputs, targets):
    # A transposed target of the same size was reshaped and paired the wrong elements.
    o, y = jnp.full(outputs, 0.5), jnp.ones(targets)
    pattern = (f"targets of shape {re.escape(str(targets))} do not match .* of shape "
               f"{re.escape(str(outputs))}")
    with pytest.raises(ValueError, match=pattern):
        fn(o, y)
    with pytest.raises(ValueError, match=pattern):  # shapes are static: checked when traced
        jax.jit(fn)(o, y)


@pytest.mark.parametrize(
    "labels, shape",
    [(np.zeros(5, int), r"\(5,\)"), (np.zeros((6, 2), int), r"\(6, 2\)"),
     (np.zeros((1, 6), int), r"\(1, 6\)"), (np.array(0), r"\(\)")],
    ids=["fewer", "two-columns", "row", "scalar"],
)
@pytest.mark.parametrize("fn", SPARSE, ids=lambda f: f.__name__)
def test_sparse_losses_refuse_label_shapes_naming_both(fn, labels, shape):
    with pytest.raises(ValueError, match=rf"labels of shape {shape} do not match .*\(6, 4\)"):
        fn(jnp.asarray(PROBS), labels)


@pytest.mark.parametrize(
    "labels, text",
    [([0, 3, 4, 1, 2, 0], r"labels\[2\]=4 "), ([0, -1, 1, 1, 2, 0], r"labels\[1\]=-1 "),
     ([0.0, 3.0, 1.5, 1, 2, 0], r"labels\[2\]=1.5 "),
     ([0, 3, 1, 1, 2, np.nan], r"labels\[5\]=nan "),
     ([0, 3, 1, 1, 7, 9], r"labels\[4\]=7 ")],
    ids=["too-high", "negative", "fraction", "nan", "first-of-two"],
)
@pytest.mark.parametrize("fn", SPARSE, ids=lambda f: f.__name__)
def test_concrete_labels_outside_the_classes_are_refused(fn, labels, text):
    # They gave NaN (too high), a wrong number (negative: the last class) or truncation.
    with pytest.raises(ValueError, match=text + r"is not a class index in \[0, 4\).* 4 classes"):
        fn(jnp.asarray(PROBS), np.asarray(labels))


@pytest.mark.parametrize(
    "targets, text",
    [([0, 1, 2, 0], r"targets\[2\]=2.0 "), ([0, -1, 1, 0], r"targets\[1\]=-1.0 "),
     ([0, 1, 1, np.nan], r"targets\[3\]=nan ")],
    ids=["two", "minus-one", "nan"],
)
@pytest.mark.parametrize("fn", ELEMENTWISE[:3], ids=lambda f: f.__name__)
def test_concrete_binary_targets_outside_0_1_are_refused(fn, targets, text):
    with pytest.raises(ValueError, match=text + r"is not a target in \[0, 1\]"):
        fn(jnp.full((4, 1), 0.5), np.asarray(targets, np.float32))


def test_traced_labels_are_not_checked_for_values():
    # Inside jit the labels have no value: a label outside the classes gives NaN, as documented.
    bad = np.array([0, 3, 4, 1, 2, 0])
    got = jax.jit(losses.sparse_categorical_crossentropy_from_logits)(jnp.asarray(LOGITS), bad)
    assert np.isnan(float(got))


def test_grad_through_the_outputs_checks_the_concrete_labels():
    loss = jax.grad(losses.sparse_categorical_crossentropy_from_logits)
    expected = (_softmax(LOGITS) - np.eye(4)[LABELS]) / len(LABELS)
    np.testing.assert_allclose(loss(jnp.asarray(LOGITS), LABELS), expected, rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match=r"labels\[0\]=4"):
        loss(jnp.asarray(LOGITS), np.array([4, 0, 0, 0, 0, 0]))


@pytest.mark.parametrize(
    "fn, outputs, targets",
    [(losses.sparse_categorical_crossentropy, PROBS, LABELS),
     (losses.sparse_categorical_crossentropy_from_logits, LOGITS, LABELS[:, None]),
     (losses.binary_crossentropy, PROBS[:, :1], (LABELS > 1).astype(np.float32)),
     (losses.mean_squared_error, LOGITS, LOGITS[::-1])],
    ids=["sparse", "sparse-logits-column", "binary", "mse"],
)
def test_sample_weighted_matches_the_weighted_mean_of_per_sample_losses(fn, outputs, targets):
    weights = np.linspace(0.0, 2.0, len(outputs))
    per_sample = [float(fn(jnp.asarray(o[None]), t[None])) for o, t in zip(outputs, targets,
                                                                           strict=True)]
    expected = np.sum(weights * np.array(per_sample)) / len(outputs)
    got = losses.sample_weighted(fn, jnp.asarray(outputs), targets, weights)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    got = jax.jit(losses.sample_weighted, static_argnums=0)(fn, jnp.asarray(outputs), targets,
                                                            weights)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_sample_weighted_refuses_targets_of_another_batch_size():
    with pytest.raises(ValueError, match=r"targets of shape \(5,\) do not match outputs of "
                                         r"shape \(6, 4\)"):
        losses.sample_weighted(losses.sparse_categorical_crossentropy, jnp.asarray(PROBS),
                               LABELS[:5], np.ones(6))


def test_one_sample_without_a_batch_axis_is_checked_too():
    p = jnp.array([0.2, 0.8])
    assert float(losses.sparse_categorical_crossentropy(p, 1)) == pytest.approx(-np.log(0.8),
                                                                                rel=1e-6)
    with pytest.raises(ValueError, match=r"^labels=2 is not a class index in \[0, 2\)"):
        losses.sparse_categorical_crossentropy(p, 2)
    with pytest.raises(ValueError, match=r"^targets=3.0 is not a target in \[0, 1\]"):
        losses.binary_crossentropy(jnp.array(0.5), 3.0)
