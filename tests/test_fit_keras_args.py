"""fit's Keras arguments (sample_weight, class_weight, validation_split), the state-free
evaluate and predict, checked against closed forms on tiny linear models.

The references are NumPy in float64: the weighted loss ``sum(w_i * loss_i) / batch_size``
(Keras 3's ``sum_over_batch_size``), its gradient, and SGD's update, written out by hand.
"""

import logging
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import stablejax as sj
from stablejax import train

RTOL = 2e-6  # float32 forward and backward against float64 NumPy, on values of order 1


def _linear(inputs=3, outputs=2, seed=0):
    return nnx.Linear(inputs, outputs, rngs=nnx.Rngs(seed))


def _params(model):
    return np.asarray(model.kernel[...], np.float64), np.asarray(model.bias[...], np.float64)


def _mse_step(kernel, bias, x, y, w, lr):
    """Weighted MSE of one batch and the SGD update, by hand: per-sample loss is the mean
    over outputs, the batch loss their w-weighted sum over the batch size."""
    n, k = y.shape
    r = x @ kernel + bias - y
    loss = np.sum(w * np.mean(r**2, axis=1)) / n
    grad_kernel = 2.0 / (n * k) * x.T @ (w[:, None] * r)
    grad_bias = 2.0 / (n * k) * np.sum(w[:, None] * r, axis=0)
    return loss, kernel - lr * grad_kernel, bias - lr * grad_bias


def _softmax_ce(kernel, bias, x, y, w):
    """Weighted sparse cross-entropy from logits and its gradients, by hand."""
    logits = x @ kernel + bias
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(y)
    loss = np.sum(w * -np.log(p[np.arange(n), y])) / n
    d = (p - np.eye(kernel.shape[1])[y]) * w[:, None] / n
    return loss, x.T @ d, d.sum(axis=0), logits


def _regression(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)).astype(np.float32),
            rng.normal(size=(n, 2)).astype(np.float32))


def _fit(model, data, **kwargs):
    kwargs = {"epochs": 1, "verbose": 0, "shuffle": False, "compilation_cache": False,
              **kwargs}
    return sj.fit(model, sj.sgd(0.1), data, **kwargs)


def test_sample_weight_loss_and_update_equal_the_closed_form():
    x, y = _regression()
    w = np.array([0.0, 1.0, 2.0, 0.5, 3.0, 1.0, 0.25, 4.0], np.float32)
    model = _linear()
    kernel, bias = _params(model)
    history = _fit(model, (x, y), loss="mse", batch_size=4, sample_weight=w)
    # Two batches of 4, each divided by its size (4), not by its weights' sum.
    first, kernel, bias = _mse_step(kernel, bias, x[:4], y[:4], w[:4], 0.1)
    second, kernel, bias = _mse_step(kernel, bias, x[4:], y[4:], w[4:], 0.1)
    np.testing.assert_allclose(history.history["loss"][0], (first + second) / 2, rtol=RTOL)
    np.testing.assert_allclose(_params(model)[0], kernel, rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(_params(model)[1], bias, rtol=RTOL, atol=1e-7)


def test_weights_of_one_train_as_no_weights():
    x, y = _regression()
    weighted, plain, column = _linear(), _linear(), _linear()
    a = _fit(weighted, (x, y), loss="mse", batch_size=3, sample_weight=np.ones(8))
    b = _fit(plain, (x, y), loss="mse", batch_size=3)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(_params(weighted)[0], _params(plain)[0], rtol=1e-6)
    # Keras's (samples, 1) weights are the same weights.
    c = _fit(column, (x, y), loss="mse", batch_size=3, sample_weight=np.ones((8, 1)))
    assert c.history == a.history


def test_sample_weighted_takes_one_weight_per_sample():
    outputs, targets = np.array([[1.0], [3.0]]), np.zeros((2, 1))
    assert float(sj.losses.sample_weighted(sj.losses.mean_squared_error, outputs, targets,
                                           np.array([1.0, 0.5]))) == 2.75  # (1 + 4.5) / 2
    for weights in (np.array([[1.0], [0.5]]), np.array([2.0])):
        with pytest.raises(ValueError, match=r"sample_weight must have shape \(2,\)"):
            sj.losses.sample_weighted(sj.losses.mean_squared_error, outputs, targets, weights)


def test_class_weight_weighs_the_loss_not_the_metric():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 2, 0, 1], np.int32)
    model = _linear(4, 3)
    kernel, bias = _params(model)
    history = _fit(model, (x, y), loss="sparse_categorical_crossentropy_from_logits",
                   batch_size=6, class_weight={0: 2.0, 2: 0.5})  # class 1 missing: 1
    w = np.array([2.0, 1.0, 0.5, 0.5, 2.0, 1.0])
    loss, grad_kernel, grad_bias, logits = _softmax_ce(kernel, bias, x, y, w)
    np.testing.assert_allclose(history.history["loss"][0], loss, rtol=RTOL)
    np.testing.assert_allclose(_params(model)[0], kernel - 0.1 * grad_kernel, rtol=RTOL)
    np.testing.assert_allclose(_params(model)[1], bias - 0.1 * grad_bias, rtol=RTOL,
                               atol=1e-7)
    # The accuracy counts each sample once, whatever its weight.
    assert history.history["accuracy"][0] == pytest.approx(np.mean(logits.argmax(1) == y))


def test_class_weight_of_binary_and_one_hot_targets():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    binary = np.array([[0.0], [1.0], [1.0], [0.0], [1.0], [0.0]], np.float32)
    weights = sj.feeding.class_weights({1: 3.0}, binary, 2)
    np.testing.assert_array_equal(weights, [1, 3, 3, 1, 3, 1])
    one_hot = np.eye(3, dtype=np.float32)[[2, 0, 1]]
    np.testing.assert_array_equal(sj.feeding.class_weights({2: 0.5, 0: 4.0}, one_hot, 3),
                                  [0.5, 4.0, 1.0])
    # Trained: the binary cross-entropy's loss is weighted by the targets' classes.
    model = _linear(3, 1)
    kernel, bias = _params(model)
    history = _fit(model, (x, binary), loss="binary_crossentropy_from_logits", batch_size=6,
                   class_weight={1: 3.0})
    z = (x @ kernel + bias)[:, 0]
    t = binary[:, 0]
    per_sample = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    expected = np.sum(np.where(t == 1, 3.0, 1.0) * per_sample) / 6
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=RTOL)


def test_validation_split_holds_out_the_last_fraction_before_shuffling():
    x, y = _regression(n=10)
    w = np.linspace(0.5, 2.0, 10).astype(np.float32)
    # Keras's rule: floor(10 * (1 - 0.25)) = 7 samples train, the last 3 validate.
    split = _linear()
    history = _fit(split, (x, y), loss="mse", batch_size=4, epochs=2, shuffle=True,
                   validation_split=0.25, sample_weight=w)
    given = _linear()
    reference = _fit(given, (x[:7], y[:7]), loss="mse", batch_size=4, epochs=2, shuffle=True,
                     sample_weight=w[:7], validation_data=(x[7:], y[7:], w[7:]))
    assert history.history == reference.history
    np.testing.assert_array_equal(_params(split)[0], _params(given)[0])
    # val_loss: the held-out samples' weighted loss under the final parameters.
    kernel, bias = _params(split)
    expected, _, _ = _mse_step(kernel, bias, x[7:], y[7:], w[7:], 0.0)
    np.testing.assert_allclose(history.history["val_loss"][-1], expected, rtol=RTOL)


def test_validation_split_is_ignored_with_validation_data_and_class_weight_stays_on_train():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=12).astype(np.int32)
    loss = "sparse_categorical_crossentropy_from_logits"
    valid = (x[:5], y[:5])
    model = _linear(4, 3)
    history = _fit(model, (x, y), loss=loss, batch_size=12, validation_split=0.5,
                   validation_data=valid, class_weight={0: 5.0})
    assert history.history == _fit(_linear(4, 3), (x, y), loss=loss, batch_size=12,
                                    validation_data=valid, class_weight={0: 5.0}).history
    kernel, bias = _params(model)
    expected = _softmax_ce(kernel, bias, x[:5], y[:5], np.ones(5))[0]  # unweighted
    np.testing.assert_allclose(history.history["val_loss"][0], expected, rtol=RTOL)


@pytest.mark.parametrize("n, split, train_size", [(10, 0.1, 9), (10, 0.3, 7), (3, 0.5, 1),
                                                  (7, 0.99, 0)])
def test_validation_split_sizes_follow_floor(n, split, train_size):
    x, y = _regression(n=n)
    if train_size == 0:
        with pytest.raises(ValueError, match="validation_split=0.99 leaves no training"):
            _fit(_linear(), (x, y), loss="mse", validation_split=split)
        return
    (tx, _, _), (vx, _, _) = sj.feeding.validation_split(x, y, None, split)
    assert (len(tx), len(vx)) == (train_size, n - train_size)
    np.testing.assert_array_equal(vx, x[train_size:])


def test_evaluate_without_a_state_and_with_sample_weight():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(11, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=11).astype(np.int32)
    w = rng.uniform(0, 2, size=11).astype(np.float32)
    model = _linear(4, 3)
    kernel, bias = _params(model)
    loss = "sparse_categorical_crossentropy_from_logits"
    got = train.evaluate(model, x, y, loss=loss, batch_size=4, sample_weight=w)
    expected, _, _, logits = _softmax_ce(kernel, bias, x, y, w.astype(np.float64))
    np.testing.assert_allclose(got["loss"], expected, rtol=RTOL)
    assert got["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
    # The state form gives the same numbers, the weights inside the split.
    state = train.init_state(model, sj.sgd(0.1))
    assert train.evaluate(model, state, (x, y, w), loss=loss, batch_size=4) == got


def test_evaluate_uses_the_moving_statistics():
    from conftest import small_mlp

    digits = sj.data.digits(seed=0)
    model = small_mlp()
    sj.fit(model, sj.adam(1e-2), digits.train, epochs=1, batch_size=64, verbose=0,
           loss="sparse_categorical_crossentropy_from_logits", compilation_cache=False)
    x, y = digits.valid
    inference = nnx.merge(*nnx.split(model))
    inference.eval()
    logits = np.asarray(inference(x), np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    nll = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1)))
    got = train.evaluate(model, x, y, loss="sparse_categorical_crossentropy_from_logits")
    np.testing.assert_allclose(got["loss"], nll.mean(), rtol=1e-5)


def test_predict_equals_the_forward_pass_and_compiles_once(caplog):
    x = np.random.default_rng(5).normal(size=(70, 3)).astype(np.float32)
    model = _linear()
    kernel, bias = _params(model)
    caplog.set_level(logging.WARNING, logger="jax")
    jax.config.update("jax_log_compiles", True)
    try:
        first = train.predict(model, x)  # 2 batches of 32 and one of 6
        other = _linear(seed=1)  # same structure, other weights: the same program
        second = train.predict(other, x)
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Compiling jit(_predict)") for m in compiled) == 1
    assert isinstance(first, np.ndarray) and first.shape == (70, 2)
    np.testing.assert_allclose(first, x @ kernel + bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second, x @ _params(other)[0] + _params(other)[1], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(train.predict(model, x, batch_size=7), first, rtol=1e-6)


def test_predict_runs_batch_norm_in_inference_mode():
    from conftest import small_mlp

    model = small_mlp()
    x = sj.data.digits(seed=0).valid.x[:50]
    inference = nnx.merge(*nnx.split(model))
    inference.eval()
    np.testing.assert_allclose(train.predict(model, x, batch_size=16), inference(x),
                               rtol=1e-5, atol=1e-6)
    # The model itself is left as it was: still in training mode.
    assert not any(getattr(m, "use_running_average", False)
                   for _, m in nnx.iter_modules(model))


BAD = [
    ("sample_weight", {"sample_weight": np.ones(7)}, r"sample_weight must have shape \(8,\)"),
    ("sample_weight", {"sample_weight": np.ones((8, 2))}, r"got shape \(8, 2\)"),
    ("sample_weight", {"sample_weight": -np.ones(8)},
     "finite and >= 0 in float32: weight -1.0 at index 0"),
    ("sample_weight", {"sample_weight": np.r_[np.ones(5), 1e39, 1, 1]},
     "in float32: weight 1e.39 at index 5"),
    ("sample_weight", {"sample_weight": np.r_[np.ones(7), np.nan]}, "at index 7"),
    ("sample_weight", {"sample_weight": np.array(["a"] * 8)}, "real numbers"),
    ("class_weight", {"class_weight": [1.0, 2.0]}, "class_weight must be a dict"),
    ("class_weight", {"class_weight": {"0": 1.0}}, "class indices"),
    ("class_weight", {"class_weight": {0: -1.0}}, r"class_weight\[0\]=-1.0"),
    ("class_weight", {"class_weight": {0: 1.0}, "sample_weight": np.ones(8)},
     "cannot both be given"),
    ("validation_split", {"validation_split": 1.0}, r"validation_split=1.0 .*\[0, 1\)"),
    ("validation_split", {"validation_split": -0.1}, "validation_split"),
    ("validation_split", {"validation_split": "0.1"}, "validation_split must be a real"),
    ("validation_data", {"validation_data": (np.ones((2, 3)), np.ones((2, 2)), np.ones(3))},
     r"validation_data's sample weights must have shape \(2,\)"),
    ("validation_data", {"validation_data": (1, 2, 3, 4)}, "pair"),
]


@pytest.mark.parametrize("name, kwargs, message", BAD, ids=[f"{b[0]}-{i}" for i, b in
                                                            enumerate(BAD)])
def test_bad_keras_arguments_name_themselves(name, kwargs, message):
    x, y = _regression()
    with pytest.raises((ValueError, TypeError), match=message):
        _fit(_linear(), (x, y), loss="mse", **kwargs)


def test_predict_and_evaluate_compile_once_for_fresh_and_trained_models(caplog):
    x = np.random.default_rng(6).normal(size=(40, 3)).astype(np.float32)
    y = np.random.default_rng(7).normal(size=(40, 2)).astype(np.float32)
    model = _linear()
    caplog.set_level(logging.WARNING, logger="jax")
    train.predict(model, x)  # a fresh model's arrays are not committed to a device
    train.evaluate(model, x, y, loss="mse")
    _fit(model, (x, y), loss="mse", batch_size=8)  # fit leaves them committed
    jax.config.update("jax_log_compiles", True)
    try:
        train.predict(model, x)
        train.evaluate(model, x, y, loss="mse")
        train.evaluate(model, x, y, loss="mse")
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("Compiling jit(")]
    assert not [m for m in compiled if "_predict" in m or "evaluate_set" in m], compiled


def test_bad_predict_and_evaluate_arguments():
    model = _linear()
    with pytest.raises(ValueError, match=r"one array of samples.*not a pair \(x, y\)"):
        train.predict(model, (np.ones((4, 3)), np.ones(4)))
    # A list of two samples is two samples, not a pair (x, y).
    two = train.predict(model, [np.ones(3), np.zeros(3)])
    np.testing.assert_allclose(two, train.predict(model, np.stack([np.ones(3), np.zeros(3)])))
    history = _fit(_linear(), _regression(), loss="mse")
    with pytest.raises(TypeError, match="pass history.state"):
        train.evaluate(model, history, _regression(), loss="mse")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        train.predict(model, np.ones((4, 3)), batch_size=0)
    with pytest.raises(ValueError, match=r"x: the model does not accept samples of shape"):
        train.predict(model, np.ones((4, 5)))
    with pytest.raises(ValueError, match="x is empty"):
        train.predict(model, np.ones((0, 3)))
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        train.evaluate(model, np.ones((4, 3)), np.ones((4, 2)), loss="mse",
                       sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="given twice"):
        train.evaluate(model, train.init_state(model, sj.sgd(0.1)),
                       (np.ones((4, 3)), np.ones((4, 2)), np.ones(4)), loss="mse",
                       sample_weight=np.ones(4))



KERAS = np.load(Path(__file__).parent / "data" / "keras_weighted.npz")
# Relative to each array's largest magnitude. Each comparison starts from the recorded
# file (Keras's untrained model) and runs the 10 updates Keras ran; measured at most 2.4e-7
# on the machine that recorded the fixture and 2.2e-7 on an AMD EPYC (Zen 4, AVX-512). The
# model has no batch norm, so no gradient is rounding noise that Adam would scale up to
# full steps: the CPUs' different summation orders stay at float32 rounding.
KERAS_RTOL = 1e-6


def _keras_inputs():
    from test_keras_format import DATA

    d = np.load(DATA / "keras_digits.npz")
    return d["pixels"].astype(np.float32) / 16, d["labels"].astype(np.int32)


def _from_keras_file(train_data, **kwargs):
    from test_keras_format import DATA

    model, tx, state = sj.keras_format.load(DATA / "keras_weighted.keras")
    history = sj.fit(model, tx, train_data, epochs=2, batch_size=40, shuffle=False,
                     verbose=0, state=state, compilation_cache=False, **kwargs)
    return model, history


def _assert_matches_keras(case, model, history):
    from test_keras_format import weights

    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(history.history[key], KERAS[f"{case}/history/{key}"],
                                   rtol=KERAS_RTOL, err_msg=key)
    for key, value in weights(model).items():
        expected = KERAS[f"{case}/{key}"]
        error = np.max(np.abs(value - expected))
        assert error <= KERAS_RTOL * np.max(np.abs(expected)), (key, error)


def test_sample_weight_and_validation_split_equal_keras_fit():
    """Keras 3.15.1's fit(sample_weight=, validation_split=0.25), 2 epochs from the same
    file (tests/data/make_keras_fixtures.py); then its evaluate and predict."""
    x, y = _keras_inputs()
    w = np.linspace(0.2, 2.0, 256).astype(np.float32)
    model, history = _from_keras_file((x, y), sample_weight=w, validation_split=0.25)
    _assert_matches_keras("sample", model, history)
    scores = train.evaluate(model, x[192:], y[192:], sample_weight=w[192:])
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(scores[key], KERAS[f"sample/evaluate/{key}"],
                                   rtol=KERAS_RTOL)
    predicted = train.predict(model, x[:40], batch_size=16)
    expected = KERAS["sample/predict"]
    assert np.max(np.abs(predicted - expected)) <= KERAS_RTOL * np.max(np.abs(expected))


def test_class_weight_and_weighted_validation_data_equal_keras_fit():
    x, y = _keras_inputs()
    w = np.linspace(0.2, 2.0, 256).astype(np.float32)
    model, history = _from_keras_file((x[:192], y[:192]), class_weight={0: 3.0, 3: 0.2, 9: 2.0},
                                      validation_data=(x[192:], y[192:], w[192:]))
    _assert_matches_keras("class", model, history)


def test_keras_metric_names_in_a_list_or_a_dict():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=12).astype(np.int32)
    model = _linear(4, 3)
    kernel, bias = _params(model)
    history = _fit(model, (x, y), loss="sparse_categorical_crossentropy_from_logits",
                   batch_size=12, metrics=["sparse_categorical_accuracy"])
    logits = x @ kernel + bias
    assert history.history["sparse_categorical_accuracy"][0] == pytest.approx(
        np.mean(logits.argmax(1) == y))
    xr, yr = _regression()
    model = _linear()
    kernel, bias = _params(model)
    history = _fit(model, (xr, yr), loss="mse", batch_size=8, metrics={"err": "mse"})
    np.testing.assert_allclose(history.history["err"][0],
                               np.mean((xr @ kernel + bias - yr) ** 2), rtol=RTOL)
    with pytest.raises(ValueError, match=r"metrics\['f'\]='f1' is unknown"):
        _fit(_linear(), (xr, yr), loss="mse", metrics={"f": "f1"})
