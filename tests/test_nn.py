"""Flax layers: batch norm against Keras's measured vector, counts, PReLU/RReLU, Dense init."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stablejax import losses, nn

X = jnp.asarray([[1, 2], [3, 6], [5, 10], [7, 2]], jnp.float32)
# docs/parity.md section 3, Keras 3 BatchNormalization with defaults, one training call.
KERAS_TRAIN_Y = [
    [-1.3415067, -0.90449297],
    [-0.44716883, 0.30149758],
    [0.44716883, 1.5074883],
    [1.3415067, -0.90449297],
]
KERAS_MOVING_MEAN = [0.04, 0.05]
KERAS_MOVING_VAR = [1.04, 1.1]
KERAS_INFER_Y = [
    [0.94090521, 1.8584075],
    [2.9011242, 5.6705256],
    [4.8613434, 9.4826431],
    [6.8215623, 1.8584075],
]


def test_batch_norm_layer_matches_keras_training_then_inference():
    bn = nn.BatchNorm(2, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(bn(X), KERAS_TRAIN_Y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn.mean[...], KERAS_MOVING_MEAN, rtol=1e-6)
    np.testing.assert_allclose(bn.var[...], KERAS_MOVING_VAR, rtol=1e-6)
    bn.eval()
    np.testing.assert_allclose(bn(X), KERAS_INFER_Y, rtol=1e-6, atol=1e-6)
    # inference leaves the moving statistics alone
    np.testing.assert_allclose(bn.mean[...], KERAS_MOVING_MEAN, rtol=1e-6)


def _split_call(bn):
    """``bn`` as a pure function ``(state, x) -> (y, new_state)``, for jit and vmap."""
    graphdef, state = nnx.split(bn)

    def call(state, x):
        layer = nnx.merge(graphdef, state, copy=True)
        return layer(x), nnx.state(layer)

    return call, state


def test_batch_norm_compiled_matches_keras_training_then_inference():
    bn = nn.BatchNorm(2, rngs=nnx.Rngs(0))
    call = nnx.jit(lambda layer, x: layer(x))
    np.testing.assert_allclose(call(bn, X), KERAS_TRAIN_Y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn.var[...], KERAS_MOVING_VAR, rtol=1e-6)
    moving = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
    bn.eval()
    np.testing.assert_allclose(call(bn, X), KERAS_INFER_Y, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(bn.mean[...], moving[0])
    np.testing.assert_array_equal(bn.var[...], moving[1])


def test_batch_norm_closed_form_with_gamma_beta_and_conv_axis():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 5, 3)).astype(np.float32)
    gamma, beta = rng.normal(size=3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = gamma * (x - mean) / np.sqrt(var + 1e-3) + beta
    bn = nn.BatchNorm(3, momentum=0.9, rngs=nnx.Rngs(0))
    bn.scale[...], bn.bias[...] = jnp.asarray(gamma), jnp.asarray(beta)
    y = bn(jnp.asarray(x))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.mean[...], 0.1 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * var, rtol=1e-5)


def test_batch_norm_axis_name_gives_global_batch_statistics():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 4)), jnp.float32)
    whole_bn = nn.BatchNorm(4, rngs=nnx.Rngs(0))
    whole = whole_bn(x)
    call, state = _split_call(nn.BatchNorm(4, axis_name="devices", rngs=nnx.Rngs(0)))
    parts, part_state = jax.vmap(call, in_axes=(None, 0), axis_name="devices")(
        state, x.reshape(4, 2, 4)
    )
    np.testing.assert_allclose(parts.reshape(8, 4), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(part_state["var"][...][0], whole_bn.var[...], rtol=1e-6)


def test_batch_norm_mask_keeps_statistics_to_the_masked_rows():
    padded = jnp.concatenate([X, jnp.full((2, 2), 100.0)])
    mask = jnp.asarray([True] * 4 + [False] * 2)[:, None]
    bn = nn.BatchNorm(2, rngs=nnx.Rngs(0))
    y = bn(padded, mask=mask)
    np.testing.assert_allclose(y[:4], KERAS_TRAIN_Y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn.mean[...], KERAS_MOVING_MEAN, rtol=1e-6)
    np.testing.assert_allclose(bn.var[...], KERAS_MOVING_VAR, rtol=1e-6)


def test_frozen_batch_norm_uses_and_keeps_moving_statistics():
    bn = nn.BatchNorm(2, rngs=nnx.Rngs(0))
    bn(X)  # one training call: moving stats now Keras's
    bn.trainable = False
    before = (np.asarray(bn.mean[...]), np.asarray(bn.var[...]))
    y = bn(X)  # still in training mode, but frozen
    np.testing.assert_allclose(y, KERAS_INFER_Y, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(bn.mean[...], before[0])
    np.testing.assert_array_equal(bn.var[...], before[1])


def test_batch_norm_keeps_low_precision_dtype():
    bn = nn.BatchNorm(2, rngs=nnx.Rngs(0))
    y = bn(X.astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    assert bn.mean[...].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y, np.float32), KERAS_TRAIN_Y, rtol=2e-2, atol=2e-2)


def _counts(model):
    trainable = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    other = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
    return trainable, other


@pytest.mark.parametrize(
    "batch_norm, total, trainable",
    [
        # Keras model.summary() of the notes' two models: Total / Trainable params.
        ("after", 271_346, 268_978),
        ("before", 270_946, 268_578),
        (None, 266_610, 266_610),
    ],
)
def test_mlp_parameter_counts_equal_keras(batch_norm, total, trainable):
    model = nn.mlp([300, 100], activation="elu", batch_norm=batch_norm, rngs=nnx.Rngs(0))
    t, o = _counts(model)
    assert (t, t + o) == (trainable, total)
    y = model(jnp.ones((3, 28, 28)))
    assert y.shape == (3, 10)
    np.testing.assert_allclose(jnp.sum(y, axis=-1), 1.0, rtol=1e-5)  # softmax output


def test_mlp_before_places_bias_free_dense_bn_activation():
    model = nn.mlp([300, 100], batch_norm="before", rngs=nnx.Rngs(0))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Flatten", "BatchNorm",
        "Dense", "BatchNorm", "Activation",
        "Dense", "BatchNorm", "Activation",
        "Dense",
    ]  # fmt: skip
    assert model.layers[2].bias is None


def test_variables_lists_trainable_flags_like_keras():
    model = nn.mlp([300, 100], batch_norm="after", rngs=nnx.Rngs(0))
    assert sorted(nn.variables(model.layers[1])) == [
        ("bias", True),
        ("mean", False),
        ("scale", True),
        ("var", False),
    ]


@pytest.mark.parametrize(
    "activation, variance",
    [
        ("selu", lambda fi, fo: 1 / fi),
        ("elu", lambda fi, fo: 2 / fi),
        ("relu", lambda fi, fo: 2 / fi),
        ("tanh", lambda fi, fo: 2 / (fi + fo)),
        (None, lambda fi, fo: 2 / (fi + fo)),
    ],
)
def test_dense_initialiser_follows_activation(activation, variance):
    layer = nn.Dense(400, 300, activation=activation, rngs=nnx.Rngs(0))
    w = np.asarray(layer.kernel[...])
    target = variance(400, 300)
    assert abs(w.var() - target) < 5 * target * math.sqrt(2.0 / w.size)


def test_dense_applies_activation():
    layer = nn.Dense(3, 2, activation="relu", rngs=nnx.Rngs(0))
    x = jnp.asarray([[1.0, -2.0, 0.5]])
    expected = np.maximum(np.asarray(x @ layer.kernel[...] + layer.bias[...]), 0)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)


def test_prelu_learns_alpha_per_element():
    layer = nn.PReLU((4, 3))
    assert layer.alpha[...].shape == (4, 3)
    x = -jnp.ones((2, 4, 3))
    np.testing.assert_array_equal(layer(x), jnp.zeros_like(x))  # alpha_init 0: ReLU

    def loss(m):
        return jnp.sum(m(x))

    grads = nnx.grad(loss)(layer)
    np.testing.assert_allclose(grads.alpha[...], -2.0 * np.ones((4, 3)))


def test_rrelu_layer_random_in_training_mean_in_inference():
    layer = nn.RReLU(rngs=nnx.Rngs(0))
    x = -jnp.ones((1000,))
    a, b = layer(x), layer(x)
    assert not np.array_equal(a, b)  # a fresh draw each call
    assert np.all((-np.asarray(a) >= 1 / 8) & (-np.asarray(a) <= 1 / 3))
    layer.eval()
    np.testing.assert_allclose(layer(x), -11 / 48 * np.ones(1000), rtol=1e-7)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: nn.BatchNorm(2, momentum=1.0, rngs=nnx.Rngs(0)), "momentum"),
        (lambda: nn.BatchNorm(2, momentum=-0.1, rngs=nnx.Rngs(0)), "momentum"),
        (lambda: nn.BatchNorm(2, epsilon=0.0, rngs=nnx.Rngs(0)), "epsilon"),
        (lambda: nn.BatchNorm(0, rngs=nnx.Rngs(0)), "num_features"),
        (lambda: nn.RReLU(0.5, 0.1), "lower"),
        (lambda: nn.Dense(3, 0, rngs=nnx.Rngs(0)), "out_features"),
        (lambda: nn.Dense(3, 2, activation="swish", rngs=nnx.Rngs(0)), "activation"),
        (lambda: nn.mlp([10], batch_norm="middle", rngs=nnx.Rngs(0)), "batch_norm"),
        (lambda: nn.mlp([0], rngs=nnx.Rngs(0)), "hidden"),
        (lambda: nn.mlp([10], scan_layers=1, rngs=nnx.Rngs(0)), "scan_layers"),
        (lambda: nn.mlp([10], scan_layers="yes", rngs=nnx.Rngs(0)), "scan_layers"),
        (lambda: nn.Activation("nope"), "activation"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_callable_activation_without_a_known_name_falls_back_to_glorot_everywhere():
    act = lambda x: jnp.maximum(x, 0.1 * x)  # noqa: E731 - an anonymous activation
    for batch_norm in (None, "before"):
        model = nn.mlp([300], input_shape=(400,), activation=act, batch_norm=batch_norm,
                       rngs=nnx.Rngs(0))
        dense = next(layer for layer in model.layers if isinstance(layer, nn.Dense))
        w = np.asarray(dense.kernel[...])
        assert abs(w.var() - 2 / 700) < 5 * (2 / 700) * math.sqrt(2.0 / w.size)
        assert np.abs(w).max() <= math.sqrt(6 / 700)  # uniform


def test_freeze_for_runs_frozen_then_trains_inside_jit():
    bn = nn.BatchNorm(2, rngs=nnx.Rngs(0))
    bn(X)  # moving statistics now Keras's (see KERAS_MOVING_*)
    bn.freeze_for(2)
    graphdef, state = nnx.split(bn)

    @jax.jit
    def call(state):
        layer = nnx.merge(graphdef, state, copy=True)
        return layer(X), nnx.state(layer)

    outputs = []
    for _ in range(3):
        y, state = call(state)
        outputs.append((np.asarray(y), np.asarray(state["mean"][...])))
    for y, mean in outputs[:2]:  # frozen: inference output, statistics kept
        np.testing.assert_allclose(y, KERAS_INFER_Y, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(mean, KERAS_MOVING_MEAN, rtol=1e-6)
    y, mean = outputs[2]  # then training mode again: batch statistics, updated averages
    np.testing.assert_allclose(y, KERAS_TRAIN_Y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mean, 0.99 * np.asarray(KERAS_MOVING_MEAN) + 0.01 * np.array([4, 5]),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="calls"):
        bn.freeze_for(-1)


# --- mlp(scan_layers=True): repeated hidden blocks stacked and run as a scan -------------

SCAN_HIDDEN = (16, 12, 12, 12, 12)  # first hidden and one 16->12 block unrolled, 3 stacked


def _scan_pair(batch_norm, activation, hidden=SCAN_HIDDEN):
    """An unrolled mlp with random parameters, and the scanned one holding its values."""
    kw = dict(input_shape=(3, 4), activation=activation, batch_norm=batch_norm, output_size=5)
    unrolled = nn.mlp(hidden, rngs=nnx.Rngs(0), **kw)
    params = nnx.state(unrolled, nnx.Param)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    noisy = [v + 0.1 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys, strict=True)]
    nnx.update(unrolled, jax.tree.unflatten(tree, noisy))  # PReLU slopes, gammas away from 0, 1
    scanned = nn.mlp(hidden, scan_layers=True, rngs=nnx.Rngs(1), **kw)
    nn.copy_layers(unrolled, scanned)
    return unrolled, scanned


def _train_call(model, x, y):
    """One compiled forward and backward as stablejax.steps runs it: (loss, y, rest, grads)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def call(params, rest):
        def objective(params):
            m = nnx.merge(graphdef, params, rest, copy=True)
            outputs = m(x)
            return losses.sparse_categorical_crossentropy(outputs, y), (
                outputs, nnx.split(m, nnx.Param, ...)[2])

        (loss, (outputs, rest)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return loss, outputs, rest, grads

    return call(params, rest)


def _flat_values(model):
    """``[(path, array)]`` of every variable; RNG keys as their raw data."""
    out = []
    for path, var in nnx.to_flat_state(nnx.state(model)):
        value = var[...]
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = jax.random.key_data(value)
        out.append((path, np.asarray(value)))
    return out


def _assert_same_values(a, b, maxulp):
    a, b = _flat_values(a), _flat_values(b)
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b, strict=True):
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_array_max_ulp(x, y, maxulp=maxulp, dtype=np.float32)
        else:
            np.testing.assert_array_equal(x, y, err_msg=str(path))


@pytest.mark.parametrize("batch_norm", [None, "after", "before"])
@pytest.mark.parametrize("activation", ["selu", "prelu", "rrelu"])
def test_scanned_mlp_computes_the_unrolled_numbers(batch_norm, activation):
    # Measured on CPU over 54 configurations (seeds x placements x activations, 6 stacked
    # blocks): outputs, loss, gradients and inference outputs are bitwise equal; the
    # batch-norm moving variance differs by at most 1 ulp, as XLA compiles the scan's
    # body apart from its neighbours and rounds the moving-average update differently.
    unrolled, scanned = _scan_pair(batch_norm, activation)
    assert any(isinstance(layer, nn.Stack) for layer in scanned.layers)
    x = jax.random.normal(jax.random.key(1), (8, 3, 4))
    y = jnp.arange(8) % 5
    loss_u, out_u, rest_u, grads_u = _train_call(unrolled, x, y)
    loss_s, out_s, rest_s, grads_s = _train_call(scanned, x, y)
    np.testing.assert_array_max_ulp(out_u, out_s, maxulp=1)  # RReLU: same random slopes
    np.testing.assert_array_max_ulp(loss_u, loss_s, maxulp=1)
    grads = nnx.clone(scanned)
    nnx.update(grads, grads_s)
    grads_su = nnx.state(nn.unroll(grads), nnx.Param)
    for gu, gs in zip(jax.tree.leaves(grads_u), jax.tree.leaves(grads_su), strict=True):
        np.testing.assert_array_max_ulp(gu, gs, maxulp=1)
    # Moving statistics (and RReLU's RNG counts) after the training-mode call.
    nnx.update(unrolled, rest_u)
    nnx.update(scanned, rest_s)
    _assert_same_values(unrolled, nn.unroll(scanned), maxulp=1)
    # Inference mode, from the same variables (copied back the other way).
    nn.copy_layers(scanned, unrolled)
    unrolled.eval()
    scanned.eval()
    infer = nnx.jit(lambda model, x: model(x))
    np.testing.assert_array_max_ulp(infer(unrolled, x), infer(scanned, x), maxulp=1)


@pytest.mark.parametrize("batch_norm", [None, "after", "before"])
def test_scanned_mlp_starts_from_the_unrolled_initial_values(batch_norm):
    kw = dict(input_shape=(6,), activation="rrelu", batch_norm=batch_norm)
    unrolled = nn.mlp([8, 8, 8, 8], rngs=nnx.Rngs(0), **kw)
    scanned = nn.mlp([8, 8, 8, 8], scan_layers=True, rngs=nnx.Rngs(0), **kw)
    back = nn.unroll(scanned)
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in unrolled.layers]
    _assert_same_values(unrolled, back, maxulp=0)


def test_scan_layers_stacks_each_run_of_identical_blocks():
    def kinds(hidden):
        model = nn.mlp(hidden, input_shape=(4,), scan_layers=True, rngs=nnx.Rngs(0))
        return [layer.length if isinstance(layer, nn.Stack) else type(layer).__name__
                for layer in model.layers]

    # the first hidden layer follows the input; a run needs two blocks of one shape
    assert kinds([4, 4, 4]) == ["Flatten", "Dense", 2, "Dense"]
    assert kinds([8, 8, 8, 8, 3, 3]) == ["Flatten", "Dense", 3, "Dense", "Dense", "Dense"]
    assert kinds([8, 8, 8, 3, 3, 3]) == ["Flatten", "Dense", 2, "Dense", 2, "Dense"]
    # fewer than two identical blocks: nothing to scan, the unrolled model
    assert kinds([8, 8]) == ["Flatten", "Dense", "Dense", "Dense"]
    assert kinds([300, 100]) == ["Flatten", "Dense", "Dense", "Dense"]
    assert kinds([]) == ["Flatten", "Dense"]


@pytest.mark.parametrize(
    "hidden, batch_norm, total, trainable",
    [
        ([300, 100], "after", 271_346, 268_978),  # the notes' models: nothing to stack
        ([300, 100], "before", 270_946, 268_578),
        ([300, 100, 100, 100], "after", None, None),
        ([64] * 60, "before", None, None),
        ([64] * 60, None, None, None),
    ],
)
def test_scanned_mlp_parameter_counts_equal_the_unrolled(hidden, batch_norm, total, trainable):
    kw = dict(activation="elu", batch_norm=batch_norm, rngs=nnx.Rngs(0))
    t, o = _counts(nn.mlp(hidden, scan_layers=True, **kw))
    assert (t, o) == _counts(nn.mlp(hidden, **kw))
    if total is not None:
        assert (t, t + o) == (trainable, total)


def test_variables_lists_every_layer_of_a_stack():
    hidden = [16] * 7
    for batch_norm in (None, "after", "before"):
        kw = dict(input_shape=(4,), activation="prelu", batch_norm=batch_norm, rngs=nnx.Rngs(0))
        unrolled, scanned = nn.mlp(hidden, **kw), nn.mlp(hidden, scan_layers=True, **kw)
        listed = nn.variables(scanned)
        kernels = [name for name, _ in listed if name.endswith("/kernel")]
        assert len(kernels) == len(hidden) + 1  # one per Dense layer
        assert len(listed) == len(nn.variables(unrolled))
        assert sorted(t for _, t in listed) == sorted(t for _, t in nn.variables(unrolled))
    stack = 3 if batch_norm is None else 5  # layers/<stack>/blocks[i]/...
    assert kernels[1:7] == [f"layers/{stack}/blocks[{i}]/layers/0/kernel" for i in range(6)]
    names = [name for name, _ in listed if f"blocks[{2}]" in name]
    assert names == [
        f"layers/{stack}/blocks[2]/layers/0/kernel",
        f"layers/{stack}/blocks[2]/layers/1/bias",
        f"layers/{stack}/blocks[2]/layers/1/mean",
        f"layers/{stack}/blocks[2]/layers/1/scale",
        f"layers/{stack}/blocks[2]/layers/1/var",
        f"layers/{stack}/blocks[2]/layers/2/alpha",
    ]


def _dots(hidden):
    model = nn.mlp(hidden, input_shape=(8,), batch_norm="after", scan_layers=True,
                   rngs=nnx.Rngs(0))
    x, y = jnp.ones((4, 8)), jnp.zeros((4,), jnp.int32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    text = jax.jit(lambda p, r: _train_call(nnx.merge(graphdef, p, r), x, y)).lower(
        params, rest).as_text()
    return text.count("dot_general")


def test_scanned_program_does_not_grow_with_depth():
    assert _dots([8] * 4) == _dots([8] * 40)


def test_copy_layers_names_the_layer_that_differs():
    source = nn.mlp([8, 8, 8], input_shape=(4,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="target layer 2"):
        nn.copy_layers(source, nn.mlp([8, 6, 6], input_shape=(4,), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="layers"):
        nn.copy_layers(source, nn.mlp([8, 8, 8, 8], input_shape=(4,), scan_layers=True,
                                      rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="differs in structure"):
        nn.Stack([nn.Dense(4, 4, rngs=nnx.Rngs(0)), nn.Dense(4, 3, rngs=nnx.Rngs(0))])
    with pytest.raises(ValueError, match="at least one"):
        nn.Stack([])


# --- bad arguments: refused at construction, naming the argument and the value ----------

NAN, INF = float("nan"), float("inf")
R = nnx.Rngs(0)

# (id, build, exception, message pattern)
BAD_LAYER_ARGUMENTS = [
    ("RReLU-lower-string", lambda: nn.RReLU(lower="0.1"), ValueError, r"lower .*'0.1'"),
    ("RReLU-upper-none", lambda: nn.RReLU(upper=None), ValueError, r"upper .*None"),
    ("RReLU-lower-nan", lambda: nn.RReLU(lower=NAN), ValueError, r"lower=nan .*\[0, inf\)"),
    ("RReLU-upper-inf", lambda: nn.RReLU(upper=INF), ValueError, r"upper=inf .*\[0, inf\)"),
    ("RReLU-lower-bool", lambda: nn.RReLU(lower=True), ValueError, r"lower .*True"),
    ("RReLU-lower-negative-np", lambda: nn.RReLU(lower=np.float32(-0.1)), ValueError,
     r"lower=.*-0.1"),
    ("RReLU-deterministic-string", lambda: nn.RReLU(deterministic="yes"), ValueError,
     r"deterministic .*'yes'"),
    ("RReLU-rngs-int", lambda: nn.RReLU(rngs=0), TypeError, r"rngs .*got 0"),
    ("PReLU-alpha_init-string", lambda: nn.PReLU(3, alpha_init="0.1"), ValueError,
     r"alpha_init .*'0.1'"),
    ("PReLU-alpha_init-none", lambda: nn.PReLU(3, alpha_init=None), ValueError,
     r"alpha_init .*None"),
    ("PReLU-alpha_init-inf", lambda: nn.PReLU(3, alpha_init=INF), ValueError, r"alpha_init=inf"),
    ("PReLU-int-param_dtype", lambda: nn.PReLU(3, alpha_init=0.25, param_dtype=jnp.int32),
     ValueError, r"param_dtype .*int32"),
    ("BatchNorm-axis-string", lambda: nn.BatchNorm(3, axis="1", rngs=R), ValueError,
     r"axis .*'1'"),
    ("BatchNorm-axis-outside-input", lambda: nn.BatchNorm(3, axis=5, rngs=R)(jnp.ones((2, 3))),
     ValueError, r"axis=5 .*\(2, 3\)"),
    ("BatchNorm-use_scale-string", lambda: nn.BatchNorm(3, use_scale="no", rngs=R), ValueError,
     r"use_scale .*'no'"),
    ("BatchNorm-rngs-int", lambda: nn.BatchNorm(3, rngs=0), TypeError, r"rngs .*got 0"),
    ("Dense-softmax-one-unit", lambda: nn.Dense(3, 1, activation="softmax", rngs=R), ValueError,
     r"activation='softmax' with out_features=1 .*constant 1.*'sigmoid'"),
    ("Dense-kernel_init-string", lambda: nn.Dense(3, 2, kernel_init="he_normal", rngs=R),
     TypeError, r"kernel_init .*'he_normal'"),
    ("Dense-use_bias-string", lambda: nn.Dense(3, 2, use_bias="no", rngs=R), ValueError,
     r"use_bias .*'no'"),
    ("Dense-rngs-int", lambda: nn.Dense(3, 2, rngs=0), TypeError, r"rngs .*got 0"),
    ("Flatten-scalar", lambda: nn.Flatten()(jnp.array(1.0)), ValueError, r"batch axis"),
    ("mlp-softmax-one-unit", lambda: nn.mlp([4], output_size=1, output_activation="softmax",
                                            rngs=R), ValueError,
     r"output_activation='softmax' with output_size=1 .*constant 1.*'sigmoid'"),
    ("mlp-softmax-fn-one-unit", lambda: nn.mlp([4], output_size=1,
                                               output_activation=jax.nn.softmax, rngs=R),
     ValueError, r"output_activation='softmax' with output_size=1"),
    ("mlp-output_size-0", lambda: nn.mlp([4], output_size=0, rngs=R), ValueError,
     r"output_size .*got 0"),
    ("mlp-output_size-bool", lambda: nn.mlp([4], output_size=True, rngs=R), ValueError,
     r"output_size .*True"),
    ("mlp-hidden-negative", lambda: nn.mlp([4, -1], rngs=R), ValueError, r"hidden .*-1"),
    ("mlp-hidden-zero", lambda: nn.mlp([0], rngs=R), ValueError, r"hidden .*got 0"),
    ("mlp-hidden-float", lambda: nn.mlp([4.5], rngs=R), ValueError, r"hidden .*4.5"),
    ("mlp-input_shape-int", lambda: nn.mlp([4], input_shape=64, rngs=R), TypeError,
     r"input_shape .*got 64"),
    ("mlp-input_shape-zero", lambda: nn.mlp([4], input_shape=(0,), rngs=R), ValueError,
     r"input_shape .*got 0"),
    ("mlp-output_activation-typo", lambda: nn.mlp([4], output_activation="sofmax", rngs=R),
     ValueError, r"output_activation: .*'sofmax'"),
    ("mlp-kernel_init-string", lambda: nn.mlp([4], kernel_init="he_normal", rngs=R), TypeError,
     r"kernel_init .*'he_normal'"),
    ("mlp-rngs-int", lambda: nn.mlp([4], rngs=0), TypeError, r"rngs .*got 0"),
    ("mlp-epsilon-string", lambda: nn.mlp([4], epsilon="1e-3", rngs=R), ValueError,
     r"epsilon .*'1e-3'"),
]


@pytest.mark.parametrize("build, error, pattern", [c[1:] for c in BAD_LAYER_ARGUMENTS],
                         ids=[c[0] for c in BAD_LAYER_ARGUMENTS])
def test_bad_layer_arguments_are_refused_naming_them(build, error, pattern):
    with pytest.raises(error, match=pattern):
        build()


@pytest.mark.parametrize("form", [float, np.float32, jnp.asarray], ids=["python", "np", "0-d"])
def test_rrelu_and_prelu_take_numbers_in_every_form(form):
    x = jnp.array([-4.0, -1.0, 0.0, 2.0])
    rrelu = nn.RReLU(form(0.125), form(0.375), deterministic=True)
    assert isinstance(rrelu.lower, float) and isinstance(rrelu.upper, float)
    np.testing.assert_array_equal(rrelu(x), [-1.0, -0.25, 0.0, 2.0])  # slope 1/4, exact
    np.testing.assert_array_equal(nn.PReLU(4, alpha_init=form(0.5))(x), [-2.0, -0.5, 0.0, 2.0])


def test_mlp_with_one_output_unit_defaults_to_a_sigmoid():
    # softmax over one unit was the constant 1; Keras's binary head is Dense(1, "sigmoid").
    model = nn.mlp([4], input_shape=(3,), output_size=1, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    head = model.layers[-1]
    hidden = np.asarray(model.layers[1](x), np.float64)
    logits = hidden @ np.asarray(head.kernel[...], np.float64) + np.asarray(head.bias[...])
    np.testing.assert_allclose(model(x), 1 / (1 + np.exp(-logits)), rtol=1e-6)
    assert np.ptp(np.asarray(model(x))) > 0  # not a constant
    logits_model = nn.mlp([4], input_shape=(3,), output_size=1, output_activation=None,
                          rngs=nnx.Rngs(0))
    np.testing.assert_allclose(logits_model(x), logits, rtol=1e-5, atol=1e-6)


def test_mlp_default_output_is_still_softmax_for_several_units():
    model = nn.mlp([4], input_shape=(3,), output_size=2, rngs=nnx.Rngs(0))
    logits_model = nn.mlp([4], input_shape=(3,), output_size=2, output_activation=None,
                          rngs=nnx.Rngs(0))
    x = jnp.ones((2, 3))
    z = np.asarray(logits_model(x), np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(model(x), e / e.sum(-1, keepdims=True), rtol=1e-6)
