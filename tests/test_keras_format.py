"""Keras 3 ``.keras`` files: both directions of a continued run, structure, bad files.

The fixtures in tests/data were made by Keras 3.15.1 (JAX backend) with
tests/data/make_keras_fixtures.py; Keras itself is needed only by the live tests.

The bound. Each comparison with recorded numbers starts from a state recorded in a file
(Keras's epoch 2 in ``keras_<case>.keras``, ours in ``stablejax_<case>.keras``) and runs
one epoch, 8 updates, here; every weight and optimizer variable is then within
``RTOL = 1e-5`` of what Keras computed from the same file, relative to the largest
magnitude of its array. Measured: at most 4.5e-7 on the machine that recorded the
fixtures, at most 6.3e-7 on an AMD EPYC (Zen 4, AVX-512), e.g. 1.5e-7 absolute on weights
of order 0.1; the bound leaves a factor 15 for other CPUs. 8 updates is the shortest
stretch the fixtures record (they hold no single update's numbers).

Longer stretches are not compared across machines. float32 training rounds slightly
differently on different CPUs (their vector code sums in different orders), and under
Adam and Nadam the noisy bias below turns rounding into full-size steps: the 16 updates
from the initial values recorded under ``stablejax/init``, which wrote
``stablejax_<case>.keras`` on the recording machine, differ from that file by up to
6.3e-4 relative (the moving mean of the batch norm that follows the bias) on the AMD
EPYC. So the run from those initial values is checked for its file's structure only.

One array per model is measured against its layer's kernel instead: the bias of the Dense
layer that feeds a BatchNormalization, and its optimizer slots. Batch norm subtracts the
batch mean, so that bias's gradient is zero up to float32 rounding. Under SGD the bias
stays at the size of that rounding (~1e-8, momentum ~1e-9) and the two libraries' values,
both rounding noise, differ by as much as they are (up to 30% of the bias, 7e-8 of the
kernel); under Adam and Nadam the noise is normalised into full-size steps, which over
one epoch from a shared state happen to agree (1e-6).
"""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from pathlib import Path

import h5py
import jax
import numpy as np
import optax
import pytest
from flax import nnx

import stablejax as sj
from stablejax import keras_format as kf

DATA = Path(__file__).parent / "data"
CASES = ("adam", "nadam", "sgd")
RTOL = 1e-5
# Keras's optimizer variables: how many come before the slots, and slots per weight.
LAYOUT = {"adam": (2, 2), "nadam": (2, 2), "sgd": (1, 1)}
NOISY_WEIGHT = "1/1"  # layer 1 (Dense, followed by BatchNormalization), weight 1 (bias)
NOISY_TRAINABLE = 1  # its index among the trainable weights, right after its kernel


@pytest.fixture(scope="module")
def data():
    d = np.load(DATA / "keras_digits.npz")
    return d["pixels"].astype(np.float32) / 16, d["labels"].astype(np.int32)


def weights(model: nnx.Sequential) -> dict[str, np.ndarray]:
    """``{"<layer>/<k>": array}`` in Keras's order of each layer's weights."""
    names = {sj.nn.Dense: ("kernel", "bias"), sj.nn.BatchNorm: ("scale", "bias", "mean", "var"),
             sj.nn.PReLU: ("alpha",)}
    return {
        f"{i}/{k}": np.asarray(getattr(layer, name)[...])
        for i, layer in enumerate(model.layers)
        for k, name in enumerate(names.get(type(layer), ()))
    }


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive, h5py.File(
            io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
        out: dict[str, np.ndarray] = {}
        h5.visititems(lambda name, obj: out.__setitem__(name, np.asarray(obj))
                      if isinstance(obj, h5py.Dataset) else None)
    return out


def optimizer_variables(path: Path) -> list[np.ndarray]:
    arrays = h5_arrays(path)
    return [arrays[f"optimizer/vars/{k}"] for k in range(len(arrays))
            if f"optimizer/vars/{k}" in arrays]


def noisy_variable(case: str, k: int) -> bool:
    """Whether Keras's optimizer variable ``k`` is a slot of the noisy bias."""
    head, per = LAYOUT[case]
    return k >= head and (k - head) // per == NOISY_TRAINABLE


def assert_close(actual, expected, what: str, scale=None):
    """``max|actual - expected| <= RTOL * max|scale|`` (``scale`` default ``expected``)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = np.max(np.abs(expected if scale is None else scale), initial=0.0)
    error = np.max(np.abs(actual - expected), initial=0.0)
    assert error <= RTOL * scale, (what, error, scale)


def assert_matches_keras(model, saved: Path, reference, prefix: str, case: str):
    """Weights of ``model`` and optimizer variables in ``saved`` against Keras's record."""
    for key, value in weights(model).items():
        kernel = reference[f"{prefix}/1/0"] if key == NOISY_WEIGHT else None
        assert_close(value, reference[f"{prefix}/{key}"], f"{case} weight {key}", kernel)
    variables = optimizer_variables(saved)
    expected = [k for k in reference.files if k.startswith(f"{prefix}/optimizer/")]
    assert len(variables) == len(expected)
    per = LAYOUT[case][1]
    for k, value in enumerate(variables):
        kernel = reference[f"{prefix}/optimizer/{k - per}"] if noisy_variable(case, k) else None
        assert_close(value, reference[f"{prefix}/optimizer/{k}"], f"{case} optimizer var {k}",
                     kernel)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_keras_run_continues_here_as_in_keras(case, data, tmp_path):
    model, tx, state = kf.load(DATA / f"keras_{case}.keras")
    assert int(state.step) == 16 and int(state.epoch) == 0  # 2 epochs of 8 updates
    history = sj.fit(model, tx, data, epochs=1, batch_size=32, shuffle=False, verbose=0,
                     state=state)
    kf.save(tmp_path / "epoch3.keras", model, history.state, tx, input_shape=(8, 8))
    reference = np.load(DATA / f"keras_{case}.npz")
    assert_matches_keras(model, tmp_path / "epoch3.keras", reference, "keras/epoch3", case)


def _twin(case: str) -> tuple[nnx.Sequential, object]:
    """The stablejax model of the case at the initial values the fixture recorded."""
    model, tx, _ = kf.load(DATA / f"stablejax_{case}.keras")  # the architecture
    reference = np.load(DATA / f"keras_{case}.npz")
    for i, layer in enumerate(model.layers):
        state = nnx.state(layer)
        for path, variable in nnx.to_flat_state(state):
            variable[...] = reference[f"stablejax/init/{i}/{sj.nn.path_name(path)}"]
        nnx.update(layer, state)
    return model, tx


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_run_saved_here_continues_in_keras_as_here(case, data, tmp_path):
    committed = DATA / f"stablejax_{case}.keras"  # our epoch 2, which Keras continued
    # A run of ours from the recorded initial values writes a file of the same structure
    # (its numbers depend on the CPU: see the module docstring).
    model, tx = _twin(case)
    history = sj.fit(model, tx, data, epochs=2, batch_size=32, shuffle=False, verbose=0)
    kf.save(tmp_path / "epoch2.keras", model, history.state, tx, input_shape=(8, 8))
    written, recorded = h5_arrays(tmp_path / "epoch2.keras"), h5_arrays(committed)
    assert {k: (v.shape, v.dtype) for k, v in written.items()} == {
        k: (v.shape, v.dtype) for k, v in recorded.items()}
    assert kf.config(tmp_path / "epoch2.keras") == kf.config(committed)
    # The committed file is what save writes for the state it holds, bit for bit.
    model, tx, state = kf.load(committed)
    kf.save(tmp_path / "again.keras", model, state, tx, input_shape=(8, 8))
    again = h5_arrays(tmp_path / "again.keras")
    assert again.keys() == recorded.keys()
    assert all(np.array_equal(again[key], recorded[key]) for key in recorded)
    assert kf.config(tmp_path / "again.keras") == kf.config(committed)
    # Our third epoch from that file equals Keras's third epoch from it.
    history = sj.fit(model, tx, data, epochs=1, batch_size=32, shuffle=False, verbose=0,
                     state=state)
    kf.save(tmp_path / "epoch3.keras", model, history.state, tx, input_shape=(8, 8))
    reference = np.load(DATA / f"keras_{case}.npz")
    assert_matches_keras(model, tmp_path / "epoch3.keras", reference, "stablejax/epoch3", case)


def test_load_gives_the_keras_structure_and_state():
    model, tx, state = kf.load(DATA / "keras_nadam.keras")
    assert [type(layer).__name__ for layer in model.layers] == [
        "Flatten", "Dense", "BatchNorm", "PReLU", "Dense"]
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    stats = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
    assert (params, stats) == (64 * 16 + 16 + 2 * 16 + 16 + 16 * 10 + 10, 2 * 16)  # Keras's
    assert model.layers[1].activation.fn is sj.activations.selu
    assert model.layers[2].momentum == 0.99 and model.layers[2].epsilon == 1e-3
    nadam = kf.optimizer_state.states(state.opt_state)[sj.ScaleByNadamState]
    assert int(nadam.count) == 16 and 0 < float(nadam.mu_product) < 1
    assert float(sj.current_learning_rate(state.opt_state)) == np.float32(0.005)
    assert kf.config(DATA / "keras_nadam.keras")["compile_config"]["loss"] == (
        "sparse_categorical_crossentropy")
    # The loaded weights are the file's.
    assert np.array_equal(model.layers[4].kernel[...],
                          h5_arrays(DATA / "keras_nadam.keras")["layers/dense_1/vars/0"])


def test_load_maps_the_schedule_and_the_activation_layers():
    model, tx, state = kf.load(DATA / "keras_sgd.keras")
    leaky = model.layers[3].fn
    assert leaky.func is sj.activations.leaky_relu and leaky.keywords == {"negative_slope": 0.1}
    schedule = sj.exponential_decay(0.05, 8, 0.8)
    # After 16 updates the injected rate is the one the 16th used, schedule(15).
    assert float(sj.current_learning_rate(state.opt_state)) == float(schedule(15))
    states = kf.optimizer_state.states(state.opt_state)
    inject = states[__import__("optax").InjectStatefulHyperparamsState]
    assert int(inject.hyperparams_states["learning_rate"].count) == 16


def test_a_functional_chain_loads_and_a_branching_model_does_not():
    model, tx, state = kf.load(DATA / "keras_functional.keras")
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten", "Dense", "Dense"]
    assert model.layers[1].activation.fn is sj.activations.elu
    assert int(state.step) == 8
    momentum = kf.optimizer_state.states(state.opt_state)[sj.ScaleByMomentumState].velocity
    arrays = h5_arrays(DATA / "keras_functional.keras")
    # RMSprop's variables: iterations, rate, 4 mean squares, then 4 momentums (sign flipped:
    # Keras keeps +lr * g / sqrt(s) in it, stablejax the update's sign).
    assert np.array_equal(momentum["layers"][2]["kernel"][...], -arrays["optimizer/vars/8"])
    with pytest.raises(ValueError, match="not fed by the layer before it"):
        kf.load(DATA / "keras_branch.keras")


def _rewrite(src: Path, dst: Path, config=None, weights=None, drop=()):
    """A copy of the archive ``src`` with its config and weights file changed."""
    with zipfile.ZipFile(src) as archive:
        files = {name: archive.read(name) for name in archive.namelist() if name not in drop}
    if config is not None:
        cfg = json.loads(files["config.json"])
        config(cfg)
        files["config.json"] = json.dumps(cfg).encode()
    if weights is not None:
        buffer = io.BytesIO(files["model.weights.h5"])
        with h5py.File(buffer, "r+") as h5:
            weights(h5)
        files["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(dst, "w") as archive:
        for name, blob in files.items():
            archive.writestr(name, blob)
    return dst


def _layer(cfg, index):
    return cfg["config"]["layers"][index]


def test_unsupported_layers_are_named(tmp_path):
    def edit(cfg):
        _layer(cfg, 3)["class_name"] = "GaussianNoise"
        _layer(cfg, 2)["config"]["activation"] = "gelu"
        cfg["config"]["layers"].insert(2, {"class_name": "Dropout", "config": {
            "name": "dropout", "rate": 0.5}})

    path = _rewrite(DATA / "keras_adam.keras", tmp_path / "m.keras", config=edit)
    with pytest.raises(ValueError, match="GaussianNoise") as err:
        kf.load(path)
    assert "'gelu'" in str(err.value) and "rate=0.5" in str(err.value)
    assert str(path) in str(err.value)


def test_dropout_of_rate_zero_loads_as_identity(tmp_path):
    def edit(cfg):
        cfg["config"]["layers"].insert(2, {"class_name": "Dropout", "config": {
            "name": "dropout", "rate": 0.0}})

    model, _, _ = kf.load(_rewrite(DATA / "keras_adam.keras", tmp_path / "m.keras", config=edit))
    assert type(model.layers[1]).__name__ == "Activation"
    assert model.layers[1].fn is sj.activations.linear


def test_unsupported_optimizers_and_options_are_refused(tmp_path):
    def lion(cfg):
        cfg["compile_config"]["optimizer"]["class_name"] = "Lion"

    def decay(cfg):
        cfg["compile_config"]["optimizer"]["config"]["weight_decay"] = 0.004

    for edit, name in ((lion, "Lion"), (decay, "weight_decay")):
        path = _rewrite(DATA / "keras_adam.keras", tmp_path / "m.keras", config=edit)
        with pytest.raises(ValueError, match=f"m.keras: cannot load the optimizer: .*{name}"):
            kf.load(path)
    with pytest.raises(ValueError, match="CosineDecay"):
        kf.optimizer("SGD", learning_rate={"class_name": "CosineDecay", "config": {}})
    with pytest.raises(ValueError, match="no argument"):
        kf.optimizer("Adam", beta1=0.9)


def _file(folder: Path, blob: bytes) -> Path:
    (folder / "run.keras").write_bytes(blob)
    return folder / "run.keras"


def _folder(folder: Path) -> Path:
    (folder / "run.keras").mkdir()
    return folder / "run.keras"


def _zip(folder: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(folder / "run.keras", "w") as archive:
        for name, blob in files.items():
            archive.writestr(name, blob)
    return folder / "run.keras"


ADAM = (DATA / "keras_adam.keras").read_bytes()
# keras_adam.keras with one byte of its weights' compressed data flipped.
DAMAGED = bytearray(ADAM)
DAMAGED[ADAM.index(b"model.weights.h5") + 40] ^= 0xFF
UNREADABLE = r"run.keras: not a readable .keras file \(a zip archive\)"
# (what the path is, how to make it in a folder, the error, what its message says)
BAD_PATHS = [
    ("directory", _folder, ValueError, "run.keras: is a directory; expected a .keras file"),
    ("missing", lambda d: d / "run.keras", FileNotFoundError,
     "run.keras: no such file; expected a .keras file"),
    ("text", lambda d: _file(d, b"not a zip"), ValueError, UNREADABLE + ": File is not a zip"),
    ("empty", lambda d: _file(d, b""), ValueError, UNREADABLE),
    ("first half", lambda d: _file(d, ADAM[:20000]), ValueError, UNREADABLE),
    ("second half", lambda d: _file(d, ADAM[20000:]), ValueError, UNREADABLE),
    ("damaged member", lambda d: _file(d, bytes(DAMAGED)), ValueError,
     UNREADABLE + ": Bad CRC-32"),
    ("zip without config.json", lambda d: _zip(d, {"model.weights.h5": b"x"}), ValueError,
     "run.keras: not a Keras 3 .keras file: it has no config.json"),
    ("zip without weights", lambda d: _rewrite(DATA / "keras_adam.keras", d / "run.keras",
                                               drop=("model.weights.h5",)),
     ValueError, "run.keras: not a Keras 3 .keras file: it has no model.weights.h5"),
    ("config not JSON", lambda d: _zip(d, {"config.json": b"{'layers': [",
                                           "model.weights.h5": b"x"}),
     ValueError, "run.keras: config.json is not valid JSON"),
    ("config not text", lambda d: _zip(d, {"config.json": b'{"a": "\xff"}',
                                           "model.weights.h5": b"x"}),
     ValueError, "run.keras: config.json is not valid JSON"),
    ("config a list", lambda d: _zip(d, {"config.json": b"[]", "model.weights.h5": b"x"}),
     ValueError, "run.keras: config.json does not describe a model"),
    ("None", lambda d: None, TypeError, "path must be a str or path-like .*got None"),
    ("a number", lambda d: 3, TypeError, "path must be a str or path-like .*got 3"),
]


@pytest.mark.parametrize("what, make, error, message", BAD_PATHS,
                         ids=[case[0] for case in BAD_PATHS])
def test_a_bad_path_is_a_one_line_error_naming_it(what, make, error, message, tmp_path):
    path = make(tmp_path)
    for read in (kf.load, kf.config):
        with pytest.raises(error, match=message) as caught:
            read(path)
        assert "\n" not in str(caught.value)
        if isinstance(path, Path):
            assert str(caught.value).startswith(str(path))


def test_corrupt_archives_give_errors_naming_the_file(tmp_path):
    def wrong_shape(h5):
        del h5["layers/dense/vars/0"]
        h5["layers/dense/vars/0"] = np.zeros((64, 5), np.float32)

    path = _rewrite(DATA / "keras_adam.keras", tmp_path / "shape.keras", weights=wrong_shape)
    with pytest.raises(ValueError, match=r"layer 'dense.*weight 0 \(kernel\).*\(64, 5\)"):
        kf.load(path)

    def missing(h5):
        del h5["layers/batch_normalization"]

    path = _rewrite(DATA / "keras_adam.keras", tmp_path / "missing.keras", weights=missing)
    with pytest.raises(ValueError, match="batch_normalization"):
        kf.load(path)

    def one_less(h5):
        del h5["optimizer/vars/13"]

    path = _rewrite(DATA / "keras_adam.keras", tmp_path / "opt.keras", weights=one_less)
    with pytest.raises(ValueError, match="13 variables"):
        kf.load(path)

    path = _rewrite(DATA / "keras_adam.keras", tmp_path / "json.keras",
                    config=lambda cfg: cfg.update(class_name="Bidirectional"))
    with pytest.raises(ValueError, match="Bidirectional"):
        kf.load(path)


def test_save_then_load_gives_back_the_model_and_state(tmp_path):
    model = sj.nn.unroll(sj.nn.mlp([8, 8, 8], input_shape=(4,), activation="prelu",
                                   batch_norm="after", scan_layers=True, rngs=nnx.Rngs(0)))
    model.layers.append(sj.nn.Activation(functools.partial(sj.activations.elu, alpha=0.5)))
    tx = kf.optimizer("RMSprop", learning_rate=0.01, momentum=0.5, centered=True)
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = np.arange(16) % 10
    history = sj.fit(model, tx, (x, y), epochs=1, batch_size=8, verbose=0)
    kf.save(tmp_path / "m.keras", model, history.state, tx, input_shape=(4,))
    loaded, tx2, state = kf.load(tmp_path / "m.keras")
    # PReLU activations come back as separate layers; values and state are the same.
    before = jax.tree.leaves(nnx.state(model))
    after = jax.tree.leaves(nnx.state(loaded))
    assert sorted(x.size for x in before) == sorted(x.size for x in after)
    assert np.allclose(loaded(x), model(x), atol=1e-6)
    assert int(state.step) == 2
    # Written again, it is the same file.
    kf.save(tmp_path / "again.keras", loaded, state, tx2, input_shape=(4,))
    first, second = h5_arrays(tmp_path / "m.keras"), h5_arrays(tmp_path / "again.keras")
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[key], second[key]) for key in first)
    assert kf.config(tmp_path / "m.keras") == kf.config(tmp_path / "again.keras")
    # 4 batch norms x 4, 4 Dense x 2, 3 PReLU; iterations, rate and 3 slots x 19 trainable
    assert len(first) == 16 + 8 + 3 + 2 + 3 * 19


def test_save_refuses_what_keras_cannot_hold(tmp_path):
    scanned = sj.nn.mlp([8, 8, 8], input_shape=(4,), scan_layers=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unroll"):
        kf.save(tmp_path / "m.keras", scanned)
    rrelu = sj.nn.mlp([8], input_shape=(4,), activation="rrelu", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no Keras equivalent"):
        kf.save(tmp_path / "m.keras", rrelu, input_shape=(4,))
    model = sj.nn.mlp([8], input_shape=(4,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_shape"):
        kf.save(tmp_path / "m.keras", model)  # starts with Flatten
    with pytest.raises(ValueError, match="is a directory; save writes a .keras file"):
        kf.save(tmp_path, model, input_shape=(4,))
    with pytest.raises(TypeError, match="path must be a str or path-like .*got None"):
        kf.save(None, model, input_shape=(4,))


def test_optimizer_takes_keras_names_and_defaults():
    tx = kf.optimizer("adam")
    assert sj.optimizers.describe(tx).arguments["epsilon"] == 1e-7
    schedule = {"class_name": "InverseTimeDecay", "config": {
        "initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5}}
    tx = kf.optimizer("SGD", learning_rate=schedule, clipnorm=0)  # 0: no clipping
    state = tx.init(np.zeros(1, np.float32))
    for _ in range(21):
        _, state = tx.update(np.ones(1, np.float32), state)
    assert np.isclose(float(sj.current_learning_rate(state)), 0.1 / (1 + 0.5 * 20 / 10))
    with pytest.raises(ValueError, match="use_ema"):
        kf.optimizer("Adam", use_ema=True)



# The Keras schedules of the aliases' cases below, as Keras writes them.
INVERSE = {"class_name": "InverseTimeDecay", "config": {
    "initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5, "staircase": True}}
PIECES = {"class_name": "PiecewiseConstantDecay", "config": {
    "boundaries": [1, 4], "values": [0.01, 0.005, 0.001]}}
EXPONENTIAL = {"class_name": "ExponentialDecay", "config": {
    "initial_learning_rate": 0.01, "decay_steps": 2, "decay_rate": 0.5, "staircase": False}}
# (id, the alias as a user calls it, the same optimizer in Keras's class name and config)
ALIASES = [
    ("sgd", lambda: sj.sgd(0.1), "SGD", {"learning_rate": 0.1}),
    ("sgd-nesterov-clipvalue", lambda: sj.sgd(0.05, 0.9, True, clipvalue=0.5), "SGD",
     {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "clipvalue": 0.5}),
    ("sgd-inverse-time", lambda: sj.sgd(sj.power_decay(0.1, 10, rate=0.5, staircase=True),
                                        momentum=0.8),
     "SGD", {"learning_rate": INVERSE, "momentum": 0.8}),
    ("adagrad-global_clipnorm",
     lambda: sj.adagrad(0.05, initial_accumulator_value=0.2, epsilon=1e-6, global_clipnorm=1.0),
     "Adagrad", {"learning_rate": 0.05, "initial_accumulator_value": 0.2, "epsilon": 1e-6,
                 "global_clipnorm": 1.0}),
    ("rmsprop-centered-clipnorm",
     lambda: sj.rmsprop(0.01, rho=0.8, momentum=0.5, centered=True, clipnorm=1.0),
     "RMSprop", {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.5, "centered": True,
                 "clipnorm": 1.0}),
    ("rmsprop-piecewise", lambda: sj.rmsprop(sj.piecewise_constant([1, 4], [0.01, 0.005, 0.001])),
     "RMSprop", {"learning_rate": PIECES}),
    ("adam-amsgrad-clipnorm", lambda: sj.adam(0.02, beta_1=0.8, amsgrad=True, clipnorm=1.0),
     "Adam", {"learning_rate": 0.02, "beta_1": 0.8, "amsgrad": True, "clipnorm": 1.0}),
    ("adam-exponential", lambda: sj.adam(sj.exponential_decay(0.01, 2, 0.5)), "Adam",
     {"learning_rate": EXPONENTIAL}),
    ("nadam-global_clipnorm",
     lambda: sj.nadam(0.005, beta_2=0.99, epsilon=1e-6, global_clipnorm=2.0),
     "Nadam", {"learning_rate": 0.005, "beta_2": 0.99, "epsilon": 1e-6, "global_clipnorm": 2.0}),
]


def _three_updates(tx, params, opt_state):
    """Three updates of fixed made-up gradients: their updates, the params and the state."""
    updates = []
    for k in range(3):
        grads = jax.tree.map(lambda p, k=k: jax.numpy.sin(3 * p + k), params)
        update, opt_state = tx.update(grads, opt_state, params)
        params = jax.tree.map(jax.numpy.add, params, update)
        updates.append(update)
    return updates, params, opt_state


def _saved_after_three_updates(tx, path):
    """A small model trained three updates by ``tx``, saved to ``path``; its params and
    optimizer state."""
    model = sj.nn.mlp([5], input_shape=(3,), rngs=nnx.Rngs(0))
    state = sj.train.init_state(model, tx)
    _, params, opt_state = _three_updates(tx, state.params, state.opt_state)
    kf.save(path, model, state._replace(params=params, opt_state=opt_state), tx,
            input_shape=(3,))
    return params, opt_state


@pytest.mark.parametrize("case, make, class_name, keras", ALIASES, ids=[a[0] for a in ALIASES])
def test_an_alias_is_written_as_its_keras_optimizer(case, make, class_name, keras, tmp_path):
    tx = make()
    params, opt_state = _saved_after_three_updates(tx, tmp_path / "alias.keras")
    written = kf.config(tmp_path / "alias.keras")["compile_config"]["optimizer"]
    assert written["class_name"] == class_name
    for key, value in keras.items():  # the arguments as Keras names them
        if isinstance(value, dict):
            assert written["config"][key]["class_name"] == value["class_name"]
            assert written["config"][key]["config"] == {**value["config"],
                                                        "name": value["class_name"]}
        elif key != "learning_rate":  # written: the current rate (float32)
            assert written["config"][key] == value, key
    # The same file as from keras_format.optimizer with Keras's arguments.
    _saved_after_three_updates(kf.optimizer(class_name, **keras), tmp_path / "keras.keras")
    assert kf.config(tmp_path / "alias.keras") == kf.config(tmp_path / "keras.keras")
    ours, theirs = h5_arrays(tmp_path / "alias.keras"), h5_arrays(tmp_path / "keras.keras")
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[key], theirs[key]) for key in ours)
    # Loaded back, the optimizer continues as the original does.
    _, loaded_tx, loaded = kf.load(tmp_path / "alias.keras")
    expected, _, _ = _three_updates(tx, params, opt_state)
    got, _, _ = _three_updates(loaded_tx, loaded.params, loaded.opt_state)
    for step, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert jax.tree.structure(a) == jax.tree.structure(b)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y, err_msg=f"{case}, update {step + 4}")


# Keras's own files and the alias call of the optimizer each was compiled with.
KERAS_WRITTEN = [
    ("keras_adam", lambda: sj.adam(0.01, clipnorm=1.0)),
    ("keras_nadam", lambda: sj.nadam(0.005)),
    ("keras_sgd", lambda: sj.sgd(sj.exponential_decay(0.05, 8, 0.8), momentum=0.9,
                                 nesterov=True, global_clipnorm=2.0)),
    ("keras_functional", lambda: sj.rmsprop(0.01, momentum=0.5)),
    ("keras_weighted", lambda: sj.adam(0.01)),
]


@pytest.mark.parametrize("fixture, make", KERAS_WRITTEN, ids=[k[0] for k in KERAS_WRITTEN])
def test_an_alias_is_written_as_keras_writes_its_optimizer(fixture, make, tmp_path):
    model, _, _ = kf.load(DATA / f"{fixture}.keras")
    kf.save(tmp_path / "m.keras", model, None, make(), input_shape=(8, 8))
    ours = kf.config(tmp_path / "m.keras")["compile_config"]["optimizer"]
    assert ours == kf.config(DATA / f"{fixture}.keras")["compile_config"]["optimizer"]


# (id, an optimizer Keras cannot hold, what the error names)
REFUSED = [
    ("decay", lambda: sj.sgd(0.1, decay=1e-3), "decay=0.001"),
    ("plateau", lambda: sj.adam(1e-3, plateau=sj.reduce_on_plateau()), "plateau="),
    ("momentum_decay", lambda: sj.nadam(1e-3, momentum_decay=0.004), "momentum_decay=0.004"),
    ("one_cycle", lambda: sj.adam(sj.one_cycle(0.1, 100)), "learning_rate: schedules.one_cycle"),
    ("warmup", lambda: sj.adam(sj.warmup(0.1, 10)), "learning_rate: schedules.warmup"),
    ("per_epoch", lambda: sj.sgd(sj.per_epoch(lambda epoch: 0.1, 10)),
     "learning_rate: schedules.per_epoch"),
    ("function", lambda: sj.adam(lambda step: 1e-3), "learning_rate=<function"),
    ("optax schedule", lambda: sj.adam(optax.exponential_decay(0.1, 10, 0.5)),
     "learning_rate=<function"),
    ("power_decay c", lambda: sj.adam(sj.power_decay(0.1, 10, c=2.0)),
     "power_decay with c=2.0"),
    ("piecewise left", lambda: sj.sgd(sj.piecewise_constant([2], [0.1, 0.01], inclusive="left")),
     "piecewise_constant with inclusive='left'"),
    ("all at once", lambda: sj.rmsprop(sj.one_cycle(0.1, 100), decay=0.5,
                                       plateau=sj.reduce_on_plateau()),
     "decay=0.5 .*; plateau= .*; learning_rate: schedules.one_cycle"),
    ("optax.adam", lambda: optax.adam(1e-3), "tx has no Keras description"),
    ("a chain", lambda: optax.chain(sj.clip_by_norm(1.0), sj.adam(1e-3)),
     "tx has no Keras description"),
]


@pytest.mark.parametrize("case, make, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_what_keras_cannot_hold_is_refused_naming_it(case, make, message, tmp_path):
    model = sj.nn.mlp([5], input_shape=(3,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=message):
        kf.save(tmp_path / "m.keras", model, None, make(), input_shape=(3,))
    assert not (tmp_path / "m.keras").exists()


def _live_cases():
    elu = sj.nn.Activation(functools.partial(sj.activations.elu, alpha=0.5))
    prelu = sj.nn.mlp([8, 8], input_shape=(4,), activation="prelu", rngs=nnx.Rngs(0))
    # Without the batch norm on the inputs, whose beta would be a noisy array (it feeds a
    # Dense and then a batch norm).
    before = sj.nn.mlp([8, 8], input_shape=(4,), activation="selu", batch_norm="before",
                       rngs=nnx.Rngs(1))
    before = nnx.Sequential(before.layers[0], *before.layers[2:])
    relu = sj.nn.mlp([8], input_shape=(4,), activation="relu", batch_norm="before",
                     output_activation=None, rngs=nnx.Rngs(2))
    relu = nnx.Sequential(relu.layers[0], *relu.layers[2:], elu, sj.nn.Activation("softmax"))
    inverse = {"class_name": "InverseTimeDecay", "config": {
        "initial_learning_rate": 0.05, "decay_steps": 3, "decay_rate": 0.5, "staircase": True}}
    pieces = {"class_name": "PiecewiseConstantDecay", "config": {
        "boundaries": [3, 6], "values": [0.01, 0.005, 0.001]}}
    return {
        "rmsprop": (prelu, kf.optimizer("RMSprop", learning_rate=0.01, momentum=0.5,
                                        centered=True)),
        "adagrad": (before, kf.optimizer("Adagrad", learning_rate=0.05, clipvalue=0.5)),
        "adam": (relu, kf.optimizer("Adam", learning_rate=pieces, amsgrad=True)),
        "sgd": (sj.nn.mlp([8], input_shape=(4,), rngs=nnx.Rngs(3)),
                kf.optimizer("SGD", learning_rate=inverse, momentum=0.9)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", ["rmsprop", "adagrad", "adam", "sgd"])
def test_live_keras_continues_our_runs(case, tmp_path):
    """Only where Keras is installed: the other optimizers and layers, without fixtures.

    No Dense here feeds a batch norm with a bias, nor a batch norm a Dense and a batch
    norm, so no gradient is rounding noise and every array is held to ``RTOL``.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    model, tx = _live_cases()[case]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 10, 64)
    history = sj.fit(model, tx, (x, y), epochs=1, batch_size=16, shuffle=False, verbose=0)
    kf.save(tmp_path / "epoch1.keras", model, history.state, tx, input_shape=(4,))
    theirs = keras.models.load_model(tmp_path / "epoch1.keras")
    theirs.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    theirs.save(tmp_path / "keras.keras")
    history = sj.fit(model, tx, (x, y), epochs=2, batch_size=16, shuffle=False, verbose=0,
                     state=history.state)
    kf.save(tmp_path / "ours.keras", model, history.state, tx, input_shape=(4,))
    ours, keras_arrays = h5_arrays(tmp_path / "ours.keras"), h5_arrays(tmp_path / "keras.keras")
    assert ours.keys() == keras_arrays.keys()
    for key in ours:
        assert_close(ours[key], keras_arrays[key], f"{case} {key}")


@pytest.mark.slow
def test_live_round_trip_with_keras(data, tmp_path):
    """Only where Keras is installed: Keras reads what we write and we read what it writes."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    x, y = data
    model, tx, state = kf.load(DATA / "keras_adam.keras")
    kf.save(tmp_path / "ours.keras", model, state, tx, input_shape=(8, 8))
    theirs = keras.models.load_model(tmp_path / "ours.keras")
    theirs.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    history = sj.fit(model, tx, (x, y), epochs=1, batch_size=32, shuffle=False, verbose=0,
                     state=state)
    del history
    for i, layer in enumerate(theirs.layers):
        for k, weight in enumerate(layer.weights):
            kernel = layer.weights[0].numpy() if f"{i}/{k}" == NOISY_WEIGHT else None
            assert_close(weights(model)[f"{i}/{k}"], weight.numpy(), f"{i}/{k}", kernel)
    theirs.save(tmp_path / "theirs.keras")
    again, _, again_state = kf.load(tmp_path / "theirs.keras")
    assert int(again_state.step) == 24
