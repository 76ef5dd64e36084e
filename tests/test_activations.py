"""Activations: parity vectors, closed forms, finite gradients, dtypes, RReLU slopes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stablejax import activations as A

X = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 2.0], np.float32)


def test_selu_matches_keras_vector():
    expected = [-1.6705688, -1.1113307, -0.69175822, 0.0, 0.52535051, 2.101402]
    np.testing.assert_allclose(A.selu(X), expected, rtol=2e-7, atol=1e-7)


def test_selu_constants_full_precision():
    assert A.SELU_ALPHA == 1.6732632423543772848170429916717
    assert A.SELU_SCALE == 1.0507009873554804934193349852946
    with jax.enable_x64(True):
        x = jnp.asarray(X, jnp.float64)
        np.testing.assert_allclose(A.selu(x), jax.nn.selu(x), rtol=1e-15)


def test_elu_matches_keras_vector():
    expected = [-0.95021296, -0.63212055, -0.39346933, 0.0, 0.5, 2.0]
    np.testing.assert_allclose(A.elu(X), expected, rtol=2e-7)
    np.testing.assert_allclose(A.elu(X, 0.5), np.where(X > 0, X, 0.5 * np.expm1(X)), rtol=2e-7)


def test_rrelu_eval_matches_pytorch_vector():
    expected = [-0.6875, -0.22916667, -0.11458334, 0.0, 0.5, 2.0]
    np.testing.assert_allclose(A.rrelu(X), expected, rtol=1e-7)


@pytest.mark.parametrize("slope", [0.2, 0.01, 0.3])
def test_leaky_relu_closed_form(slope):
    np.testing.assert_allclose(A.leaky_relu(X, slope), np.where(X >= 0, X, slope * X), rtol=1e-7)
    np.testing.assert_allclose(A.leaky_relu(X), np.where(X >= 0, X, 0.2 * X), rtol=1e-7)


def test_relu_sigmoid_tanh_closed_forms():
    np.testing.assert_allclose(A.relu(X), np.maximum(X, 0))
    np.testing.assert_allclose(A.sigmoid(X), 1 / (1 + np.exp(-X.astype(np.float64))), rtol=1e-6)
    np.testing.assert_allclose(A.tanh(X), np.tanh(X), rtol=1e-6)


def test_prelu_broadcasts_per_element_and_per_channel():
    x = jnp.asarray(np.arange(-6, 6, dtype=np.float32).reshape(2, 2, 3))
    per_element = jnp.asarray(np.linspace(0.1, 0.6, 6, dtype=np.float32).reshape(2, 3))
    per_channel = jnp.asarray([0.1, 0.2, 0.3], jnp.float32)
    xn = np.asarray(x)
    np.testing.assert_allclose(
        A.prelu(x, per_element), np.where(xn > 0, xn, np.asarray(per_element) * xn)
    )
    np.testing.assert_allclose(
        A.prelu(x, per_channel), np.where(xn > 0, xn, np.asarray(per_channel) * xn)
    )


def test_rrelu_training_slopes_in_range_and_random():
    x = -jnp.ones((20000,), jnp.float32)
    y = A.rrelu(x, jax.random.key(0))
    slopes = -np.asarray(y)
    assert slopes.min() >= 1 / 8 and slopes.max() <= 1 / 3
    assert slopes.std() > 0.05  # U(1/8, 1/3) has sd 0.0601
    assert slopes.mean() == pytest.approx(11 / 48, abs=3 * 0.0601 / math.sqrt(x.size))
    y2 = A.rrelu(x, jax.random.key(1))
    assert not np.array_equal(y, y2)
    # positive inputs pass through in training too
    np.testing.assert_array_equal(A.rrelu(jnp.abs(x), jax.random.key(0)), jnp.abs(x))


def test_rrelu_inference_is_exactly_the_mean_slope():
    np.testing.assert_array_equal(A.rrelu(-jnp.ones(4), None, 0.1, 0.3), -jnp.full(4, 0.2))


FUNCS = {
    "sigmoid": A.sigmoid,
    "tanh": A.tanh,
    "relu": A.relu,
    "leaky_relu": A.leaky_relu,
    "elu": A.elu,
    "selu": A.selu,
    "rrelu": A.rrelu,
    "prelu": lambda x: A.prelu(x, jnp.asarray(0.25)),
}


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_gradients_finite_at_extremes_and_zero(name):
    f = FUNCS[name]
    x = jnp.asarray([-1e4, -100.0, -1e-30, 0.0, 1e-30, 100.0, 1e4], jnp.float32)
    g = jax.vmap(jax.grad(lambda v: f(v)))(x)
    assert np.all(np.isfinite(g)), g
    assert np.all(np.isfinite(f(x)))


def test_elu_selu_gradient_vanishes_at_large_negative():
    for f in (A.elu, A.selu):
        assert float(jax.grad(f)(jnp.float32(-1e4))) == 0.0


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtype_preserved_under_jit(name, dtype):
    x = jnp.asarray(X, dtype)
    assert jax.jit(FUNCS[name])(x).dtype == dtype


def test_rrelu_training_keeps_dtype():
    assert A.rrelu(jnp.asarray(X, jnp.bfloat16), jax.random.key(0)).dtype == jnp.bfloat16


def test_get_by_name_and_callable():
    assert A.get("elu") is A.elu
    assert A.get("SELU") is A.selu
    assert A.get("logistic") is A.sigmoid
    assert A.get(None)(X) is X
    assert A.get(jnp.sin) is jnp.sin
    with pytest.raises(ValueError, match="swish"):
        A.get("swish")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: A.rrelu(X, None, 0.5, 0.1), "lower"),
        (lambda: A.rrelu(X, None, -0.1, 0.1), "lower"),
        (lambda: A.leaky_relu(X, -0.2), "negative_slope"),
        (lambda: A.elu(X, float("inf")), "alpha"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


NAN, INF = float("nan"), float("inf")

# Hyperparameters of the functional forms: (id, call, exception, message pattern). Each
# message names the argument and the bad value.
BAD_HYPERPARAMETERS = [
    ("leaky_relu-string", lambda: A.leaky_relu(X, "0.1"), ValueError, r"negative_slope .*'0.1'"),
    ("leaky_relu-none", lambda: A.leaky_relu(X, None), ValueError, r"negative_slope .*None"),
    ("leaky_relu-bool", lambda: A.leaky_relu(X, True), ValueError, r"negative_slope .*True"),
    ("leaky_relu-inf", lambda: A.leaky_relu(X, INF), ValueError, r"negative_slope=inf"),
    ("elu-string", lambda: A.elu(X, "1"), ValueError, r"alpha .*'1'"),
    ("elu-nan", lambda: A.elu(X, NAN), ValueError, r"alpha=nan"),
    ("elu-negative-np", lambda: A.elu(X, np.float32(-1)), ValueError, r"alpha=.*-1"),
    ("rrelu-lower-string", lambda: A.rrelu(X, None, "0.1"), ValueError, r"lower .*'0.1'"),
    ("rrelu-upper-none", lambda: A.rrelu(X, None, 0.1, None), ValueError, r"upper .*None"),
    ("rrelu-upper-inf", lambda: A.rrelu(X, None, 0.1, INF), ValueError, r"upper=inf"),
    ("rrelu-key-int", lambda: A.rrelu(X, 0), TypeError, r"key .*got 0"),
    ("rrelu-key-string", lambda: A.rrelu(X, "key"), TypeError, r"key .*'key'"),
    ("prelu-string", lambda: A.prelu(X, "0.1"), ValueError, r"alpha .*'0.1'"),
    ("prelu-none", lambda: A.prelu(X, None), ValueError, r"alpha .*None"),
    ("prelu-bool", lambda: A.prelu(X, True), ValueError, r"alpha .*bool"),
    ("prelu-nan", lambda: A.prelu(X, NAN), ValueError, r"alpha .*finite.*nan"),
    ("prelu-inf-array", lambda: A.prelu(X, jnp.array([0.1, INF, 0.1, 0.1, 0.1, 0.1])),
     ValueError, r"alpha .*finite.*inf"),
    ("prelu-shape", lambda: A.prelu(X, jnp.ones(4)), ValueError,
     r"alpha of shape \(4,\) .*x's shape \(6,\)"),
    ("prelu-enlarges-x", lambda: A.prelu(X, jnp.ones((2, 1))), ValueError,
     r"alpha of shape \(2, 1\) .*x's shape \(6,\)"),
    ("softmax-axis-out", lambda: A.softmax(X, axis=1), ValueError, r"axis=1 .*\(6,\)"),
    ("softmax-axis-negative", lambda: A.softmax(X, axis=-2), ValueError, r"axis=-2 .*\(6,\)"),
    ("softmax-axis-string", lambda: A.softmax(X, axis="0"), ValueError, r"axis='0'"),
    ("softmax-axis-bool", lambda: A.softmax(X, axis=True), ValueError, r"axis=True"),
    ("get-prelu", lambda: A.get("prelu"), ValueError, r"'prelu' .*stablejax.nn.PReLU"),
]


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in BAD_HYPERPARAMETERS],
                         ids=[c[0] for c in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_are_refused_naming_them(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


# The same hyperparameter as a Python number, a NumPy scalar and a 0-d array gives the
# closed form's numbers.
@pytest.mark.parametrize("form", [float, np.float32, np.float64, jnp.asarray],
                         ids=["python", "np32", "np64", "0-d"])
def test_hyperparameters_in_every_numeric_form_give_the_closed_form(form):
    x = X.astype(np.float64)
    np.testing.assert_allclose(A.leaky_relu(X, form(0.1)), np.where(x >= 0, x, 0.1 * x),
                               rtol=1e-7)
    np.testing.assert_allclose(A.elu(X, form(0.5)), np.where(x > 0, x, 0.5 * np.expm1(x)),
                               rtol=2e-7)
    np.testing.assert_allclose(A.rrelu(X, None, form(0.1), form(0.3)),
                               np.where(x >= 0, x, 0.2 * x), rtol=1e-7)
    np.testing.assert_allclose(A.prelu(X, form(0.25)), np.where(x > 0, x, 0.25 * x),
                               rtol=1e-7)


def test_softmax_over_a_chosen_axis_is_the_closed_form():
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    for axis in (0, 1, -1, -2):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        np.testing.assert_allclose(A.softmax(x, axis=axis), e / e.sum(axis=axis, keepdims=True),
                                   rtol=1e-6)


def test_traced_prelu_slopes_are_checked_for_shape_only():
    # Inside jit the learned slopes have no value; a NaN slope gives NaN, a bad shape raises.
    y = np.asarray(jax.jit(A.prelu)(X, jnp.array(NAN)))
    assert np.isnan(y[X <= 0]).all()
    np.testing.assert_array_equal(y[X > 0], X[X > 0])
    with pytest.raises(ValueError, match=r"alpha of shape \(4,\)"):
        jax.jit(A.prelu)(X, jnp.ones(4))
