"""Initialisers: variance against scale / fan, truncation, fans, the classic table."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stablejax import initializers as I

SHAPE = (400, 300)  # fan_in 400, fan_out 300, fan_avg 350
FANS = {"fan_in": 400.0, "fan_out": 300.0, "fan_avg": 350.0}


@pytest.mark.parametrize("mode", I.MODES)
@pytest.mark.parametrize("distribution", I.DISTRIBUTIONS)
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_variance_matches_scale_over_fan(mode, distribution, scale):
    w = np.asarray(I.variance_scaling(scale, mode, distribution)(jax.random.key(1), SHAPE))
    target = scale / FANS[mode]
    n = w.size
    # Sampling error of the variance estimate: sd(s^2) = v * sqrt((kurtosis - 1) / n);
    # kurtosis <= 3 for all three distributions. Allow 5 standard errors.
    assert abs(w.mean()) < 5 * math.sqrt(target / n)
    assert abs(w.var() - target) < 5 * target * math.sqrt(2.0 / n)


def test_truncated_normal_is_cut_at_two_sigma():
    v = 2.0 / 400
    w = np.asarray(I.he_normal()(jax.random.key(0), SHAPE))
    sigma = math.sqrt(v) / 0.87962566103423978
    assert np.abs(w).max() <= 2 * sigma * (1 + 1e-6)
    # docs/parity.md 1.1: max|w| / sqrt(v) = 2.274 for a draw of this size.
    assert np.abs(w).max() / math.sqrt(v) == pytest.approx(2.2737, abs=2e-3)


def test_normal_is_untruncated():
    v = 1.0 / 400
    w = np.asarray(I.variance_scaling(1.0, "fan_in", "normal")(jax.random.key(0), SHAPE))
    # 120,000 draws of N(0, v): the maximum exceeds the truncated bound 2.27 sqrt(v) by far.
    assert np.abs(w).max() / math.sqrt(v) > 3.5


@pytest.mark.parametrize(
    "init, limit",
    [
        (I.glorot_uniform(), math.sqrt(6 / 700)),
        (I.he_uniform(), math.sqrt(6 / 400)),
        (I.lecun_uniform(), math.sqrt(3 / 400)),
        (I.variance_scaling(2.0, "fan_avg", "uniform"), math.sqrt(6 / 350)),  # he_avg_init
    ],
)
def test_uniform_limits(init, limit):
    w = np.asarray(init(jax.random.key(3), SHAPE))
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit


@pytest.mark.parametrize(
    "init, std",
    [
        (I.glorot_normal(), 0.05345),
        (I.glorot_uniform(), 0.05345),
        (I.he_normal(), 0.07071),
        (I.he_uniform(), 0.07071),
        (I.lecun_normal(), 0.05000),
    ],
)
def test_named_initialisers_match_keras_table(init, std):
    # docs/parity.md 1.1 targets for shape (400, 300); sampling sd of the std ~ std/sqrt(2n).
    w = np.asarray(init(jax.random.key(1), SHAPE))
    assert w.std() == pytest.approx(std, rel=5 / math.sqrt(2 * w.size))


@pytest.mark.parametrize(
    "shape, fans",
    [
        ((), (1, 1)),
        ((7,), (7, 7)),
        ((784, 300), (784, 300)),
        ((3, 3, 16, 32), (144, 288)),  # conv kernel: receptive field 9
        ((5, 8, 4), (40, 20)),  # 1-d conv
    ],
)
def test_compute_fans(shape, fans):
    assert I.compute_fans(shape) == fans


def test_compute_fans_batch_axis():
    # 10 stacked dense kernels (10, 784, 300): the stack axis is not a receptive field.
    assert I.compute_fans((10, 784, 300), batch_axis=0) == (784, 300)


NAMED = ["glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "lecun_normal",
         "lecun_uniform"]


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("shape", [SHAPE, (3, 3, 16, 32)])
def test_named_initialisers_equal_jax_bitwise(name, shape):
    ours = getattr(I, name)()(jax.random.key(2), shape)
    theirs = getattr(jax.nn.initializers, name)()(jax.random.key(2), shape)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("shape, n", [((), 1), ((1000,), 1000)])
def test_rank_zero_and_one_use_keras_fans(shape, n):
    # Keras: fans (1, 1) for a scalar, (n, n) for a vector; JAX refuses both.
    for mode in I.MODES:
        w = np.asarray(I.variance_scaling(1.0, mode, "uniform")(jax.random.key(4), shape))
        assert w.shape == shape
        assert np.abs(w).max() <= math.sqrt(3 / n)
    if n > 1:
        assert np.abs(w).max() > 0.99 * math.sqrt(3 / n)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_is_drawn_in_float32_then_cast(dtype):
    low = I.he_normal()(jax.random.key(0), SHAPE, dtype)
    np.testing.assert_array_equal(low, I.he_normal()(jax.random.key(0), SHAPE).astype(dtype))


def test_fan_is_clamped_to_one():
    w = I.variance_scaling(1.0, "fan_in", "uniform")(jax.random.key(0), (0, 5))
    assert w.shape == (0, 5)


@pytest.mark.parametrize(
    "name, scale, fan",
    [
        (None, 1.0, "fan_avg"),
        ("tanh", 1.0, "fan_avg"),
        ("sigmoid", 1.0, "fan_avg"),
        ("logistic", 1.0, "fan_avg"),
        ("softmax", 1.0, "fan_avg"),
        ("relu", 2.0, "fan_in"),
        ("leaky_relu", 2.0, "fan_in"),
        ("rrelu", 2.0, "fan_in"),
        ("prelu", 2.0, "fan_in"),
        ("elu", 2.0, "fan_in"),
        ("selu", 1.0, "fan_in"),
    ],
)
def test_for_activation_table(name, scale, fan):
    w = np.asarray(I.for_activation(name)(jax.random.key(5), SHAPE))
    target = scale / FANS[fan]
    assert abs(w.var() - target) < 5 * target * math.sqrt(2.0 / w.size)
    entry = I.table_entry(name)
    assert (entry.scale, entry.mode) == (scale, fan)
    assert entry.variance(SHAPE) == pytest.approx(target)


def test_table_entry_names_the_initialiser_and_rejects_unknown_names():
    assert [I.table_entry(n).initializer for n in ("tanh", "relu", "selu")] == [
        "glorot_uniform", "he_normal", "lecun_normal"]
    with pytest.raises(ValueError, match="activation must be None or one of"):
        I.table_entry("gelu")


def test_signature_and_dtype_drop_into_flax():
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        w = I.he_normal()(jax.random.key(0), (3, 4), dtype)
        assert w.dtype == dtype
    layer = nnx.Linear(784, 300, kernel_init=I.he_normal(), rngs=nnx.Rngs(0))
    assert float(jnp.var(layer.kernel[...])) == pytest.approx(2 / 784, rel=0.02)


def test_deterministic_for_a_key():
    a = I.glorot_normal()(jax.random.key(7), (20, 30))
    b = I.glorot_normal()(jax.random.key(7), (20, 30))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": 0.0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"mode": "fan_sum"}, "mode"),
        ({"distribution": "cauchy"}, "distribution"),
    ],
)
def test_variance_scaling_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        I.variance_scaling(**kwargs)


def test_for_activation_rejects_unknown_name_and_lists_known():
    with pytest.raises(ValueError, match="selu"):
        I.for_activation("swishy")


def test_compute_fans_rejects_same_axes():
    with pytest.raises(ValueError, match="in_axis"):
        I.compute_fans((3, 4), in_axis=0, out_axis=0)


def test_numpy_scale_and_float64_draws():
    init = I.variance_scaling(np.float32(2.0), "fan_in", "normal")
    with jax.enable_x64(True):
        w = init(jax.random.key(0), SHAPE, jnp.float64)
        assert w.dtype == jnp.float64
        w = np.asarray(w)
    # drawn in float64: values are not float32-representable in general
    assert np.any(w != w.astype(np.float32))
    assert abs(w.var() - 2 / 400) < 5 * (2 / 400) * math.sqrt(2.0 / w.size)


KEY = jax.random.key(0)

# Axes outside the shape's rank, found when the initialiser is called (the shape is known
# only then): in_axis=2 raised IndexError from JAX, and compute_fans wrapped it silently
# (in_axis=2 of a rank-2 shape was axis 0). (id, call, message pattern)
BAD_AXES = [
    ("init-in_axis-2", lambda: I.variance_scaling(in_axis=2)(KEY, (3, 4)),
     r"in_axis=2 is not an axis of the rank-2 shape \(3, 4\): use an integer in \[-2, 2\)"),
    ("init-in_axis--3", lambda: I.variance_scaling(in_axis=-3)(KEY, (3, 4)),
     r"in_axis=-3 is not an axis of the rank-2 shape \(3, 4\)"),
    ("init-out_axis-5", lambda: I.variance_scaling(out_axis=5)(KEY, (3, 4, 5)),
     r"out_axis=5 is not an axis of the rank-3 shape \(3, 4, 5\)"),
    ("init-batch_axis-7", lambda: I.variance_scaling(batch_axis=7)(KEY, (3, 4, 5)),
     r"batch_axis=7 is not an axis of the rank-3 shape \(3, 4, 5\)"),
    ("init-batch_axis-list", lambda: I.variance_scaling(batch_axis=[0, 9])(KEY, (3, 4, 5)),
     r"batch_axis\[1\]=9 is not an axis"),
    ("fans-in_axis-2", lambda: I.compute_fans((3, 4), in_axis=2), r"in_axis=2 is not an axis"),
    ("fans-same-axes-named-as-given", lambda: I.compute_fans((3, 4, 5), in_axis=-1),
     r"in_axis=-1, out_axis=-1 .*\(3, 4, 5\)"),
    ("fans-batch-is-in", lambda: I.compute_fans((3, 4, 5), batch_axis=-2),
     r"in_axis=-2, out_axis=-1 and batch_axis=-2"),
]


@pytest.mark.parametrize("call, pattern", [c[1:] for c in BAD_AXES], ids=[c[0] for c in BAD_AXES])
def test_axes_outside_the_shape_are_refused_naming_them(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# Arguments of the wrong kind, refused when the initialiser is built or, for the shape,
# when it is called. (id, call, exception, message pattern)
BAD_KINDS = [
    ("in_axis-string", lambda: I.variance_scaling(in_axis="0"), ValueError,
     r"in_axis must be an integer axis, got '0'"),
    ("in_axis-float", lambda: I.variance_scaling(in_axis=0.0), ValueError, r"in_axis .*0.0"),
    ("out_axis-bool", lambda: I.variance_scaling(out_axis=True), ValueError, r"out_axis .*True"),
    ("batch_axis-none", lambda: I.variance_scaling(batch_axis=None), ValueError,
     r"batch_axis .*None"),
    ("batch_axis-string", lambda: I.variance_scaling(batch_axis="0"), ValueError,
     r"batch_axis .*'0'"),
    ("scale-inf", lambda: I.variance_scaling(float("inf")), ValueError, r"scale=inf"),
    ("scale-none", lambda: I.variance_scaling(None), ValueError, r"scale .*None"),
    ("scale-bool", lambda: I.variance_scaling(True), ValueError, r"scale .*True"),
    ("mode-upper-case", lambda: I.variance_scaling(mode="FAN_IN"), ValueError,
     r"mode .*'FAN_IN'"),
    ("distribution-none", lambda: I.variance_scaling(distribution=None), ValueError,
     r"distribution .*None"),
    ("shape-int", lambda: I.he_normal()(KEY, 5), TypeError, r"shape .*got 5"),
    ("shape-none", lambda: I.he_normal()(KEY, None), TypeError, r"shape .*got None"),
    ("shape-negative", lambda: I.he_normal()(KEY, (3, -1)), ValueError, r"shape\[1\] .*-1"),
    ("fans-shape-string", lambda: I.compute_fans("34"), TypeError, r"shape .*'34'"),
]


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in BAD_KINDS],
                         ids=[c[0] for c in BAD_KINDS])
def test_arguments_of_the_wrong_kind_are_refused_naming_them(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize(
    "shape, kwargs, fans",
    [((5, 4, 3), {"in_axis": 0, "out_axis": 1}, (15.0, 12.0)),
     ((5, 4, 3), {"in_axis": -3, "out_axis": -2}, (15.0, 12.0)),
     ((10, 4, 3), {"batch_axis": np.int64(0)}, (4.0, 3.0)),
     ((10, 4, 3), {"batch_axis": [-3]}, (4.0, 3.0)),
     ((7,), {"in_axis": 5}, (7.0, 7.0))],  # rank 1: Keras's fans, the axes unused
    ids=["positive", "negative", "np-batch", "list-batch", "rank-1"],
)
def test_valid_axes_give_the_closed_form_fans(shape, kwargs, fans):
    assert I.compute_fans(shape, **kwargs) == fans


def test_an_initialiser_with_valid_custom_axes_draws_scale_over_its_fan():
    # (300, 40, 50) with in_axis=0, out_axis=1: fan_in = 300 * 50, variance 2 / 15000.
    w = np.asarray(I.variance_scaling(2.0, "fan_in", "uniform", in_axis=-3, out_axis=1)(
        KEY, (300, 40, 50)))
    target = 2.0 / 15000
    assert abs(w.var() - target) < 5 * target * math.sqrt(2.0 / w.size)
    assert np.abs(w).max() <= math.sqrt(3 * target)
