"""Diagnostics: verdicts on deep nets, figures against plain JAX, gradient norms, the table."""

import functools
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tree_equal
from flax import nnx

import stablejax as sj
from stablejax import diagnostics, initializers, nn
from stablejax.diagnostics import recommend, record_gradient_stats, signal_propagation

DEPTH, WIDTH, CLASSES, SAMPLES = 20, 100, 10, 256
NORMAL = jax.nn.initializers.normal(1.0)  # N(0, 1), the historical choice
THREE_HE = initializers.variance_scaling(6.0, "fan_in", "truncated_normal")


@pytest.fixture(scope="module")
def batch():
    """Standardised random inputs (256 x 100) and labels of 10 classes."""
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (SAMPLES, WIDTH))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x, jax.random.randint(ky, (SAMPLES,), 0, CLASSES)


def deep(activation, kernel_init=None, output_activation="softmax", **kwargs):
    """20 hidden layers of width 100 (layers/1 ... layers/20), output layers/21."""
    return nn.mlp([WIDTH] * DEPTH, input_shape=(WIDTH,), activation=activation,
                  kernel_init=kernel_init, output_size=CLASSES,
                  output_activation=output_activation, rngs=nnx.Rngs(0), **kwargs)


def band(ratio):
    return 1 / diagnostics.ORDER_OF_MAGNITUDE <= ratio <= diagnostics.ORDER_OF_MAGNITUDE


# The issue's six nets (the notes' table, the historical N(0, 1), three times He's
# variance) and a ReLU net with LeCun's variance, half of He's: its activations shrink
# by sqrt(1/2) per layer while the gradient ratio stays near 1.
NETS = {
    "sigmoid-glorot": ("sigmoid", None),  # the notes' choice for the logistic, 20 deep
    "tanh-normal": ("tanh", NORMAL),
    "selu-lecun": ("selu", None),
    "relu-he": ("relu", None),
    "relu-3he": ("relu", THREE_HE),
    "sigmoid-normal": ("sigmoid", NORMAL),
    "relu-lecun": ("relu", initializers.lecun_normal()),
}


@functools.cache
def report_of(net):
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (SAMPLES, WIDTH))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = jax.random.randint(ky, (SAMPLES,), 0, CLASSES)
    return signal_propagation(deep(*NETS[net]), (x, y))


@pytest.mark.parametrize(
    "net, verdict, fix",
    [
        ("sigmoid-glorot", "vanishing", "non-saturating"),
        ("tanh-normal", "exploding", "use Glorot initialisation with tanh"),
        ("selu-lecun", "healthy", "nothing to fix"),
        ("relu-he", "healthy", "nothing to fix"),
        ("relu-3he", "exploding", "use He initialisation with relu"),
        ("sigmoid-normal", "vanishing", "saturated"),
        ("relu-lecun", "vanishing", "use He initialisation with relu"),
    ],
)
def test_verdicts_of_deep_nets(net, verdict, fix):
    report = report_of(net)
    assert report.verdict == verdict, report.reason
    assert fix in report.reason
    assert len(report.layers) == DEPTH + 1


def test_the_evidence_behind_each_failure():
    # sigmoid + N(0, 1): a modest gradient ratio, yet most units saturated.
    report = report_of("sigmoid-normal")
    assert band(report.grad_ratio) and report.saturated > diagnostics.MAJORITY
    # ReLU at three times He's variance: the activation std grows sqrt(3) per layer.
    per_layer = report_of("relu-3he").forward_ratio ** (1 / (DEPTH - 1))
    assert per_layer == pytest.approx(math.sqrt(3), rel=0.1)
    # ReLU at LeCun's variance: the forward signal dies, the gradient ratio does not show it.
    report = report_of("relu-lecun")
    assert band(report.grad_ratio)
    assert report.forward_ratio ** (1 / (DEPTH - 1)) == pytest.approx(math.sqrt(0.5), rel=0.1)
    assert "layers/1" in report.reason and "layers/20" in report.reason
    # The gradient ratios: vanishing and exploding by orders of magnitude.
    assert report_of("sigmoid-glorot").grad_ratio < 1e-9
    assert report_of("tanh-normal").grad_ratio > 1e5


def _plain_net(model, activation):
    """The model's kernels and biases, and its forward pass written in plain JAX."""
    dense = [layer for layer in model.layers if isinstance(layer, nn.Dense)]
    kernels = [d.kernel[...] for d in dense]
    biases = [d.bias[...] for d in dense]

    def forward(kernels, x):
        acts = []
        for w, b in zip(kernels[:-1], biases[:-1], strict=True):
            x = activation(x @ w + b)
            acts.append(x)
        return x @ kernels[-1] + biases[-1], acts

    return kernels, biases, forward


@pytest.mark.parametrize("activation, kernel_init", [("relu", None), ("tanh", NORMAL)])
def test_figures_match_plain_jax(batch, activation, kernel_init):
    x, y = batch
    model = deep(activation, kernel_init, output_activation=None)
    report = signal_propagation(model, batch, "sparse_categorical_crossentropy_from_logits")
    fn = {"relu": jax.nn.relu, "tanh": jnp.tanh}[activation]
    kernels, biases, forward = _plain_net(model, fn)

    def loss(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(lambda ks: loss(forward(ks, x)[0]))(kernels)
    assert report.grad_ratio == pytest.approx(
        float(jnp.std(grads[0]) / jnp.std(grads[-2])), rel=1e-3)
    _, acts = forward(kernels, x)
    for row, a, g in zip(report.layers, acts, grads, strict=False):
        assert row.act_std == pytest.approx(float(jnp.std(a)), rel=1e-4)
        assert row.kernel_grad_std == pytest.approx(float(jnp.std(g)), rel=1e-3)
    # The gradient w.r.t. hidden layer k's output: the rest of the net, differentiated.
    for k in (0, DEPTH // 2, DEPTH - 1):
        def rest(a, k=k):
            for w, b in zip(kernels[k + 1:-1], biases[k + 1:-1], strict=True):
                a = fn(a @ w + b)
            return loss(a @ kernels[-1] + biases[-1])

        expected = float(jnp.std(jax.grad(rest)(acts[k])))
        assert report.layers[k].grad_std == pytest.approx(expected, rel=1e-3)


def test_layer_rows_name_fans_and_table_std(batch):
    report = signal_propagation(deep("relu", NORMAL), batch)
    rows = report.layers
    assert [r.name for r in rows] == [f"layers/{i}" for i in range(1, DEPTH + 2)]
    assert [r.activation for r in rows] == ["relu"] * DEPTH + ["softmax"]
    assert all(r.fan_in == WIDTH for r in rows)
    assert rows[0].table_std == pytest.approx(math.sqrt(2 / WIDTH))  # He
    assert rows[-1].table_std == pytest.approx(math.sqrt(1 / ((WIDTH + CLASSES) / 2)))  # Glorot
    assert rows[0].kernel_std == pytest.approx(1.0, rel=0.02)
    x, _ = batch
    assert rows[0].pre_std == pytest.approx(float(jnp.std(x @ deep("relu", NORMAL)
                                                          .layers[1].kernel[...])), rel=1e-4)
    text = report.to_markdown()
    assert "| layers/1 | relu | 100 |" in text and report.reason in text


def test_saturated_fraction_of_hand_made_layers():
    x = jax.random.normal(jax.random.key(1), (64, 4))
    model = nnx.Sequential(nn.Dense(4, 6, activation="tanh", rngs=nnx.Rngs(0)),
                           nn.Dense(6, 6, activation="sigmoid", rngs=nnx.Rngs(1)),
                           nn.Dense(6, 3, rngs=nnx.Rngs(2)))
    first, second = model.layers[0], model.layers[1]
    first.kernel[...] = 2.0 * jax.random.normal(jax.random.key(2), (4, 6))
    second.kernel[...] = jnp.full((6, 6), 0.1)  # |t @ w| <= 0.6 for tanh outputs t
    second.bias[...] = jnp.full(6, 12.0)  # pre-activations all > 10
    report = signal_propagation(model, (x, jnp.zeros((64, 3))), "mse")
    z = x @ first.kernel[...] + first.bias[...]
    # tanh: saturated where tanh' = 1 - t^2 < 0.1, i.e. |z| > artanh(sqrt(0.9)).
    expected = float(jnp.mean(jnp.abs(z) > math.atanh(math.sqrt(0.9))))
    assert 0.1 < expected < 0.9
    assert report.layers[0].saturated == pytest.approx(expected)
    assert bool((jnp.tanh(z) @ second.kernel[...] + second.bias[...] > 10).all())
    assert report.layers[1].saturated == 1.0
    assert report.layers[2].saturated is None and report.layers[2].dead is None
    # The saturated sigmoid outputs are all about 1: the forward signal collapses there.
    assert report.verdict == "vanishing" and "layers/1" in report.reason


def test_dead_fraction_of_a_relu_layer_with_a_large_negative_bias():
    x = jax.random.normal(jax.random.key(1), (64, 5))
    model = nnx.Sequential(nn.Dense(5, 8, activation="relu", rngs=nnx.Rngs(0)),
                           nn.Dense(8, 3, rngs=nnx.Rngs(1)))
    model.layers[0].bias[...] = jnp.array([-100.0] * 3 + [0.0] * 5)
    report = signal_propagation(model, (x, jnp.arange(64) % 3),
                                "sparse_categorical_crossentropy_from_logits")
    z = x @ model.layers[0].kernel[...] + model.layers[0].bias[...]
    assert int(jnp.sum(jnp.all(z <= 0, axis=0))) == 3  # exactly the three biased units
    assert report.layers[0].dead == 3 / 8
    model.layers[0].bias[...] = jnp.full(8, -100.0)
    report = signal_propagation(model, (x, jnp.arange(64) % 3),
                                "sparse_categorical_crossentropy_from_logits")
    assert report.layers[0].dead == 1.0 and report.verdict == "vanishing"


def test_model_and_batch_statistics_are_untouched(batch):
    model = deep("elu", batch_norm="after")
    before = nnx.state(model)
    report = signal_propagation(model, batch)
    assert tree_equal(nnx.state(model), before)
    assert report.verdict == "healthy"
    # Batch norm rows are not reported: one Dense row per hidden layer, and the output.
    assert [r.name for r in report.layers][:2] == ["layers/2", "layers/4"]


def test_batch_norm_before_names_the_activation_each_dense_feeds(batch):
    model = nn.mlp([WIDTH] * 3, input_shape=(WIDTH,), activation="relu",
                   batch_norm="before", rngs=nnx.Rngs(0))
    report = signal_propagation(model, batch)
    # Flatten, BatchNorm, then [Dense, BatchNorm, Activation] x 3, then the output Dense.
    assert [(r.name, r.activation, r.fan_in) for r in report.layers[:2]] == [
        ("layers/2", "relu", WIDTH), ("layers/4", "relu", None)]
    assert report.layers[0].table_std == pytest.approx(math.sqrt(2 / WIDTH))
    assert report.layers[0].dead is None and report.layers[1].dead is not None
    assert report.verdict == "healthy"


def test_scanned_stacks_are_reported_per_block(batch):
    kwargs = dict(input_shape=(WIDTH,), activation="tanh")
    scanned = signal_propagation(
        nn.mlp([32] * 5, scan_layers=True, rngs=nnx.Rngs(0), **kwargs), batch)
    unrolled = signal_propagation(nn.mlp([32] * 5, rngs=nnx.Rngs(0), **kwargs), batch)
    assert [r.name for r in scanned.layers] == ["layers/1"] + [
        f"layers/2/blocks[{i}]/layers/0" for i in range(4)] + ["layers/3"]
    for a, b in zip(scanned.layers, unrolled.layers, strict=True):
        for field in ("act_std", "grad_std", "kernel_grad_std", "kernel_std"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-5)
    assert scanned.verdict == unrolled.verdict


def test_a_model_that_is_not_a_sequential(batch):
    class TwoLayers(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(WIDTH, 16, rngs=rngs)
            self.out = nnx.Linear(16, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    report = signal_propagation(TwoLayers(nnx.Rngs(0)), batch,
                                "sparse_categorical_crossentropy_from_logits")
    assert [(r.name, r.activation) for r in report.layers] == [("hidden", "linear"),
                                                               ("out", "linear")]
    assert report.grad_ratio == 1.0  # one hidden kernel layer: first = last hidden

    plain = nnx.Sequential(nnx.Linear(WIDTH, 32, rngs=nnx.Rngs(0)), jax.nn.relu,
                           nnx.Linear(32, CLASSES, rngs=nnx.Rngs(1)))
    report = signal_propagation(plain, batch, "sparse_categorical_crossentropy_from_logits")
    assert [(r.name, r.activation, r.fan_in) for r in report.layers] == [
        ("layers/0", "relu", WIDTH), ("layers/1", "relu", None), ("layers/2", "linear", 32)]
    x, _ = batch
    z = plain.layers[0](x)
    assert report.layers[1].pre_std == pytest.approx(float(jnp.std(z)), rel=1e-5)
    assert report.layers[1].act_std == pytest.approx(float(jnp.std(jax.nn.relu(z))), rel=1e-5)


@pytest.fixture(scope="module")
def small_report(batch):
    return signal_propagation(_small_model(), batch)


@pytest.mark.parametrize("path, error, match", [
    (None, TypeError, "path must be a str or os.PathLike, got NoneType"),
    (3, TypeError, "path must be a str or os.PathLike, got int"),  # a file descriptor
    ("signal.jpg", ValueError, r"path '.*signal.jpg' must be a file path ending in .png"),
    ("signal", ValueError, r"path '.*signal' must be a file path ending in .png"),
    ("", ValueError, r"path '.*' must be a file path ending in .png"),  # the directory
    ("file/signal.png", ValueError, r"path '.*file/signal.png': its directory '.*file' is, "
                                    "or is under, a file"),
])
def test_plot_refuses_a_path_it_cannot_write_before_drawing(small_report, tmp_path, path,
                                                            error, match):
    (tmp_path / "file").write_text("")
    target = str(tmp_path / path) if isinstance(path, str) else path
    with pytest.raises(error, match=match):
        small_report.plot(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_plot_creates_its_directory(small_report, tmp_path):
    small_report.plot(tmp_path / "new" / "signal.PNG")
    assert (tmp_path / "new" / "signal.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_writes_a_png_and_import_stays_light(tmp_path):
    report = report_of("relu-he")
    report.plot(tmp_path / "signal.png")
    assert (tmp_path / "signal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = "import sys, stablejax.diagnostics; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def _small_model():
    return nn.mlp([8], input_shape=(WIDTH,), batch_norm="after", rngs=nnx.Rngs(0))


# Bad values: a ValueError naming the argument and the value, before any work, with the
# model untouched. Each case maps (model, x, y) to signal_propagation's arguments.
BAD_VALUES = {
    "no sample": (lambda m, x, y: dict(model=m, batch=(x[:0], y[:0])),
                  r"batch x must hold at least one sample .* got shape \(0, 100\)"),
    "scalar x": (lambda m, x, y: dict(model=m, batch=(x[0, 0], y)),
                 r"batch x must hold at least one sample .* got shape \(\)"),
    "x with NaN": (lambda m, x, y: dict(model=m, batch=(x.at[3, 4].set(jnp.nan), y)),
                   "batch x holds NaN or infinite"),
    "y with inf": (lambda m, x, y: dict(model=m, batch=(x, jnp.full((256, 10), jnp.inf)),
                                        loss="mse"), "batch y holds NaN or infinite"),
    "fewer targets": (lambda m, x, y: dict(model=m, batch=(x, y[:10])),
                      "batch y has 10 samples and x has 256"),
    "wrong features": (lambda m, x, y: dict(model=m, batch=(x[:, :99], y)),
                       r"batch x of shape \(256, 99\) does not fit the model"),
    "1-d x": (lambda m, x, y: dict(model=m, batch=(x[:, 0], y)),
              r"batch x of shape \(256,\) does not fit the model"),
    "labels out of range": (lambda m, x, y: dict(model=m, batch=(x, y.at[7].set(10))),
                            r"the loss fails .*labels\[7\]=10 is not a class index in "
                            r"\[0, 10\)"),
    "fractional labels": (lambda m, x, y: dict(model=m, batch=(x, y.at[0].set(2) - 0.5)),
                          r"the loss fails .*labels\[0\]=1.5 is not a class index"),
    "not a pair": (lambda m, x, y: dict(model=m, batch=(x, y, y)),
                   r"batch must be a pair \(x, y\) .* got tuple of length 3"),
    "loss not scalar": (lambda m, x, y: dict(model=m, batch=(x, y),
                                             loss=lambda out, t: out.sum(axis=1)),
                        r"loss must return a scalar .* got shape \(256,\)"),
    "loss unknown": (lambda m, x, y: dict(model=m, batch=(x, y), loss="hinge"),
                     "loss must be a callable or one of .* got 'hinge'"),
    "no kernel": (lambda m, x, y: dict(model=nnx.Sequential(nn.Activation("relu")),
                                       batch=(x, y)), "model has no layer with a kernel"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_value_errors_before_any_work(batch, case):
    make, match = BAD_VALUES[case]
    model = _small_model()
    before = nnx.state(model)
    with pytest.raises(ValueError, match=match):
        signal_propagation(**make(model, *batch))
    assert tree_equal(nnx.state(model), before)


# Arguments of the wrong kind: a TypeError naming the argument and what it got (JAX's own
# errors said neither).
WRONG_KINDS = {
    "model None": (lambda x, y: (None, (x, y)), "model must be a flax.nnx Module, got NoneType"),
    "model class": (lambda x, y: (nn.Dense, (x, y)), "model must be a flax.nnx Module"),
    "x of strings": (lambda x, y: (_small_model(), (np.full((4, WIDTH), "a"), y[:4])),
                     "batch x must be an array of real numbers, got ndarray of dtype <U1"),
    "x None": (lambda x, y: (_small_model(), (None, y)),
               "batch x must be an array of real numbers, got NoneType"),
    "x complex": (lambda x, y: (_small_model(), (x * 1j, y)),
                  "batch x must be an array of real numbers, got .* complex64"),
    "y a dict": (lambda x, y: (_small_model(), (x, {"labels": y})),
                 "batch y must be an array of real numbers, got dict"),
}


@pytest.mark.parametrize("case", list(WRONG_KINDS))
def test_wrong_kinds_are_type_errors(batch, case):
    make, match = WRONG_KINDS[case]
    model, pair = make(*batch)
    with pytest.raises(TypeError, match=match):
        signal_propagation(model, pair)


def test_recommend_refuses_what_it_cannot_check_and_flags_non_finite_kernels():
    with pytest.raises(TypeError, match="model must be a flax.nnx Module, got NoneType"):
        recommend(None)
    with pytest.raises(ValueError, match="model has no layer with a kernel"):
        recommend(nnx.Sequential(nn.Activation("relu")))
    # gelu has no table entry: its layer is reported ok, unless its kernel is not finite.
    model = nnx.Sequential(nn.Dense(4, 8, activation=jax.nn.gelu, rngs=nnx.Rngs(0)),
                           nn.Dense(8, 3, activation="relu", rngs=nnx.Rngs(1)))
    assert [r.ok for r in recommend(model)] == [True, True]
    model.layers[0].kernel[...] = model.layers[0].kernel[...].at[0, 0].set(jnp.nan)
    model.layers[1].kernel[...] = model.layers[1].kernel[...].at[0, 0].set(jnp.inf)
    rows = recommend(model)
    assert [r.ok for r in rows] == [False, False]
    assert rows[0].suggestion == "layers/0: kernel holds NaN or infinite values; re-initialise it"
    assert rows[1].suggestion == ("layers/1: kernel holds NaN or infinite values; use "
                                  "kernel_init=stablejax.initializers.he_normal()")


def test_record_gradient_stats_passes_updates_and_keeps_norms():
    tree = {"w": jnp.arange(6.0).reshape(2, 3) - 2.5, "b": jnp.array([3.0, -4.0]),
            "s": jnp.array(-2.0)}
    tx = record_gradient_stats()
    state = tx.init(tree)
    assert float(state.global_norm) == 0.0
    assert all(float(v) == 0.0 for v in jax.tree.leaves(state.norms))
    update = jax.jit(tx.update)
    out, new_state = update(tree, state)
    assert tree_equal(out, tree)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert [v.dtype for v in jax.tree.leaves(new_state)] == [
        v.dtype for v in jax.tree.leaves(state)]
    # sqrt(sum of squares): w has 2.5^2 + 1.5^2 + 0.5^2 twice = 17.5, b 25, s 4.
    assert float(new_state.global_norm) == pytest.approx(math.sqrt(46.5), rel=1e-6)
    assert float(new_state.global_norm) == pytest.approx(float(optax.tree.norm(tree)),
                                                         rel=1e-6)
    for key in tree:
        assert float(new_state.norms[key]) == pytest.approx(
            float(jnp.linalg.norm(tree[key].ravel())), rel=1e-6)


def test_record_gradient_stats_in_a_chain_changes_nothing():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = jax.tree.map(lambda p: 0.1 * p + 0.5, params)
    plain, recorded = sj.adam(1e-3), optax.chain(record_gradient_stats(), sj.adam(1e-3))
    a, _ = plain.update(grads, plain.init(params), params)
    b, state = jax.jit(recorded.update)(grads, recorded.init(params), params)
    assert tree_equal(a, b)
    assert float(state[0].global_norm) == pytest.approx(float(optax.tree.norm(grads)))


def test_record_gradient_stats_refuses_updates_of_another_tree():
    tx = record_gradient_stats()
    state = tx.init({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"updates \[\['u'\], \['v'\]\], init \[\['w'\]\]"):
        tx.update({"u": jnp.ones(1), "v": jnp.ones(2)}, state)


def test_record_gradient_stats_of_complex_leaves_are_real_moduli():
    tx = record_gradient_stats()
    params = {"z": jnp.zeros(2, jnp.complex64)}
    state = tx.init(params)
    _, new_state = jax.jit(tx.update)({"z": jnp.array([3 + 4j, 0j], jnp.complex64)}, state)
    # |3 + 4i| = 5; the dtypes stay those of init, so a scanned step keeps its carry.
    assert float(new_state.norms["z"]) == 5.0 and float(new_state.global_norm) == 5.0
    assert [v.dtype for v in jax.tree.leaves(new_state)] == [
        v.dtype for v in jax.tree.leaves(state)] == [jnp.float32, jnp.float32]


def test_recommend_the_notes_models():
    rows = recommend(nn.mlp([300, 100], activation="elu", rngs=nnx.Rngs(0)))
    assert [(r.name, r.activation, r.fan_in) for r in rows] == [
        ("layers/1", "elu", 784), ("layers/2", "elu", 300), ("layers/3", "softmax", 100)]
    assert all(r.ok and r.suggestion == "" for r in rows)
    expected = [2 / 784, 2 / 300, 1 / ((100 + 10) / 2)]  # He, He, Glorot
    assert [r.expected for r in rows] == pytest.approx(expected)
    assert [r.variance for r in rows] == pytest.approx(expected, rel=0.05)

    rows = recommend(nn.mlp([300, 100], activation="elu", kernel_init=NORMAL,
                            rngs=nnx.Rngs(0)))
    assert [r.ok for r in rows] == [False, False, True]  # the output keeps its Glorot
    assert rows[0].variance == pytest.approx(1.0, rel=0.05)
    assert "he_normal" in rows[0].suggestion and "layers/1" in rows[0].suggestion

    rows = recommend(nn.mlp([64, 64, 64], input_shape=(8, 8), activation="selu",
                            batch_norm="before", scan_layers=True, rngs=nnx.Rngs(0)))
    assert [(r.name, r.activation) for r in rows] == [
        ("layers/2", "selu"), ("layers/5/blocks[0]/layers/0", "selu"),
        ("layers/5/blocks[1]/layers/0", "selu"), ("layers/6", "softmax")]
    assert all(r.ok for r in rows)


def test_package_exposes_diagnostics_lazily():
    assert sj.diagnostics is diagnostics
    assert "diagnostics" in sj.__all__ and "diagnostics" in dir(sj)


# ----------------------------------------------------------------------- GradientMonitor


def _fit(model, data, callbacks=(), epochs=2):
    return sj.fit(model, sj.sgd(0.05), data, epochs=epochs, batch_size=len(data.y), verbose=0,
                  loss="sparse_categorical_crossentropy_from_logits", callbacks=callbacks)


def _small(activation, depth=8, kernel_init=None):
    return nn.mlp([32] * depth, input_shape=(16,), activation=activation,
                  kernel_init=kernel_init, output_size=4, output_activation=None,
                  rngs=nnx.Rngs(1))


@pytest.fixture(scope="module")
def small_data():
    return sj.data.synthetic_classification(128, num_features=16, num_classes=4, seed=3)


def test_gradient_monitor_changes_no_number_and_reports_plain_jax_figures(small_data):
    # One batch per epoch: epoch 1's figures are those of the initial parameters.
    reference = _small("selu")
    loss = sj.losses.sparse_categorical_crossentropy_from_logits
    grads = nnx.grad(lambda m: loss(m(small_data.x), small_data.y))(reference)
    kernels = [g.kernel[...] for g in (grads.layers[1], grads.layers[8])]  # first, last hidden
    plain = _fit(_small("selu"), small_data)
    watched = _fit(_small("selu"), small_data, [diagnostics.GradientMonitor()])
    assert tree_equal(watched.state.params, plain.state.params)
    assert tree_equal(watched.state.opt_state, plain.state.opt_state)
    assert watched.history["loss"] == plain.history["loss"]
    assert watched.history["grad_norm"][0] == pytest.approx(float(optax.tree.norm(grads)),
                                                            rel=1e-5)
    assert watched.history["grad_ratio"][0] == pytest.approx(
        float(jnp.std(kernels[0]) / jnp.std(kernels[1])), rel=1e-5)


def test_gradient_monitor_warns_once_on_a_deep_sigmoid_net(small_data):
    with pytest.warns(UserWarning) as caught:
        history = _fit(_small("sigmoid", depth=12), small_data,
                       [diagnostics.GradientMonitor()], epochs=3)
    messages = [str(w.message) for w in caught if "gradients are" in str(w.message)]
    assert len(messages) == 1
    assert "vanishing" in messages[0] and "layers/1/kernel" in messages[0]
    assert "He with ReLU" in messages[0]
    assert history.history["grad_ratio"][0] < 1 / diagnostics.ORDER_OF_MAGNITUDE


def test_gradient_monitor_is_quiet_on_a_healthy_net(small_data, recwarn):
    history = _fit(_small("selu"), small_data, [diagnostics.GradientMonitor()])
    assert not [w for w in recwarn if "gradients are" in str(w.message)]
    assert band(history.history["grad_ratio"][0])


@pytest.mark.parametrize("threshold", [1.0, 0.5, math.inf, math.nan, True, "10"])
def test_gradient_monitor_threshold_is_checked(threshold):
    with pytest.raises(ValueError, match="threshold"):
        diagnostics.GradientMonitor(threshold)


class _Named(nnx.Module):
    """Sigmoid layers called in the order of ``names`` (16 -> 32 ... 32 -> 4 logits)."""

    def __init__(self, names, rngs):
        sizes = [16] + [32] * (len(names) - 1) + [4]
        self.names = tuple(names)
        for name, fan_in, fan_out in zip(names, sizes[:-1], sizes[1:], strict=True):
            setattr(self, name, nnx.Linear(fan_in, fan_out, rngs=rngs))

    def __call__(self, x):
        for name in self.names[:-1]:
            x = jax.nn.sigmoid(getattr(self, name)(x))
        return getattr(self, self.names[-1])(x)


def _hand_grad_ratio(model, data):
    """std of the first-called kernel's gradient over the last hidden one's, plain JAX."""
    layers = [getattr(model, name) for name in model.names]
    biases = [layer.bias[...] for layer in layers]

    def loss(kernels):
        x = data.x
        for w, b in zip(kernels[:-1], biases[:-1], strict=True):
            x = jax.nn.sigmoid(x @ w + b)
        logits = x @ kernels[-1] + biases[-1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, data.y).mean()

    grads = jax.grad(loss)([layer.kernel[...] for layer in layers])
    return float(jnp.std(grads[0]) / jnp.std(grads[-2]))


def test_gradient_monitor_orders_kernels_by_call_not_by_name(small_data):
    # Eight sigmoid layers with LeCun's variance: each passes back about a quarter of the
    # gradient, so the first kernel's gradient is orders of magnitude below the last's.
    backwards = [f"layer_{chr(ord('z') - i)}" for i in range(8)]  # z, y, ... in call order
    forwards = [f"layer_{chr(ord('a') + i)}" for i in range(8)]
    assert sorted(backwards) == backwards[::-1] and sorted(forwards) == forwards
    ratios = []
    for names in (backwards, forwards):
        expected = _hand_grad_ratio(_Named(names, nnx.Rngs(1)), small_data)
        assert expected < 1e-2
        with pytest.warns(UserWarning, match="gradients are vanishing") as caught:
            history = _fit(_Named(names, nnx.Rngs(1)), small_data,
                           [diagnostics.GradientMonitor()])
        ratio = history.history["grad_ratio"][0]  # epoch 1: the initial parameters
        assert ratio == pytest.approx(expected, rel=1e-5)
        message = next(str(w.message) for w in caught if "gradients are" in str(w.message))
        assert f"of {names[0]}/kernel is" in message and f"that of {names[-2]}/kernel" in message
        ratios.append(ratio)
    assert ratios[0] == pytest.approx(ratios[1], rel=1e-6)  # same weights, other names


def test_gradient_monitor_takes_a_stacks_blocks_in_call_order(small_data):
    model = nn.mlp([8] * 4, input_shape=(16,), activation="tanh", output_size=4,
                   output_activation=None, scan_layers=True, rngs=nnx.Rngs(0))
    monitor = diagnostics.GradientMonitor()
    monitor.set_model(model, None)
    monitor.set_params({"input_shape": (16,)})
    loss = sj.losses.sparse_categorical_crossentropy_from_logits
    grads = nnx.grad(lambda m: loss(m(small_data.x), small_data.y))(model)
    stacked = grads["layers"][2]["blocks"]["layers"][0]["kernel"][...]  # (3 blocks, 8, 8)
    first = grads["layers"][1]["kernel"][...]
    stats = monitor.step_stats(grads, None)
    assert float(stats["grad_ratio"]) == pytest.approx(
        float(jnp.std(first) / jnp.std(stacked[-1])), rel=1e-6)


def test_gradient_monitor_needs_its_model_and_says_when_it_cannot_order_kernels():
    with pytest.raises(ValueError, match="GradientMonitor has not seen its model"):
        diagnostics.GradientMonitor().step_stats({"w": jnp.ones(2)}, None)

    class Tokens(nnx.Module):  # takes integer token ids: float32 inputs cannot be traced
        def __init__(self, rngs):
            self.embed = nnx.Embed(10, 4, rngs=rngs)
            self.hidden = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(3)])

        def __call__(self, ids):
            x = self.embed(ids).mean(axis=1)
            for layer in self.hidden:
                x = layer(x)
            return x

    model = Tokens(nnx.Rngs(0))
    monitor = diagnostics.GradientMonitor()
    monitor.set_model(model, None)
    with pytest.warns(UserWarning, match=r"cannot trace the model on float32 inputs of shape "
                                         r"\(5,\) .*grad_ratio is not reported"):
        monitor.set_params({"input_shape": (5,)})
    grads = nnx.state(model, nnx.Param)
    assert set(monitor.step_stats(grads, None)) == {"grad_norm"}


def test_gradient_monitor_names_stacked_kernels_as_variables_does():
    model = nn.mlp([8] * 4, input_shape=(4,), output_size=2, scan_layers=True,
                   rngs=nnx.Rngs(0))
    names = [name for name, _ in diagnostics.monitor._kernel_grads(nnx.state(model, nnx.Param))]
    assert names == [name for name, _ in nn.variables(model) if name.endswith("kernel")]
