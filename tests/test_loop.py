"""fit and evaluate: accuracy, determinism, resumption, non-finite steps, arguments."""

import logging
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import small_mlp, tree_equal
from flax import nnx

import stablejax as sj
from stablejax import train


@pytest.mark.slow
def test_notes_model_with_batch_norm_and_nadam_reaches_95_percent(digits):
    # The notes' first model (BN after each layer, ELU, He init, softmax) on 8x8 digits.
    model = sj.nn.mlp([300, 100], input_shape=(8, 8), activation="elu", batch_norm="after",
                      rngs=nnx.Rngs(0))
    history = sj.fit(model, sj.nadam(1e-3), digits.train, epochs=20, batch_size=32,
                     validation_data=digits.valid, verbose=0)
    assert max(history.history["val_accuracy"]) >= 0.95
    assert history.history["loss"][-1] < history.history["loss"][0]
    test = train.evaluate(model, history.state, digits.test)
    assert test["accuracy"] >= 0.93


@pytest.mark.slow
def test_same_seed_gives_bitwise_same_history(digits):
    runs = []
    for _ in range(2):
        model = small_mlp(activation="rrelu")
        h = sj.fit(model, sj.adam(1e-3), digits.train, epochs=2, batch_size=64,
                   validation_data=digits.valid, verbose=0, seed=3)
        runs.append((h.history, nnx.state(model, nnx.Param)))
    assert runs[0][0] == runs[1][0]
    assert tree_equal(runs[0][1], runs[1][1])
    model = small_mlp(activation="rrelu")
    other = sj.fit(model, sj.adam(1e-3), digits.train, epochs=2, batch_size=64, verbose=0,
                   seed=4)
    assert other.history["loss"] != runs[0][0]["loss"]


def _resumable_run(digits, tmp_path, epochs, directory):
    model = small_mlp(activation="rrelu")
    steps = sj.data.num_batches(len(digits.train.x), 64)
    tx = sj.sgd(
        sj.exponential_decay(0.05, 3 * steps),
        momentum=0.9,
        plateau=sj.reduce_on_plateau(factor=0.5, patience=1, min_delta=0.05),
    )
    callbacks = [train.ReduceLROnPlateau("val_loss"),
                 train.EarlyStopping("val_loss", patience=50, restore_best=False)]
    return sj.fit(model, tx, digits.train, epochs=epochs, batch_size=64,
                  validation_data=digits.valid, callbacks=callbacks, verbose=0,
                  checkpoint_dir=None if directory is None else tmp_path / directory,
                  steps_per_call=4)


@pytest.mark.slow
def test_resume_is_bitwise_the_same_as_never_stopping(digits, tmp_path):
    straight = _resumable_run(digits, tmp_path, 8, None)
    _resumable_run(digits, tmp_path, 4, "run")
    resumed = _resumable_run(digits, tmp_path, 8, "run")
    assert resumed.history == straight.history
    assert len(resumed.history["loss"]) == 8
    # the plateau scheduling really acted, so its state was part of what resumed
    assert min(resumed.history["lr"]) < 0.05 * 0.1 ** (8 / 3)
    for field in ("params", "rest", "opt_state", "step", "epoch"):
        assert tree_equal(getattr(resumed.state, field), getattr(straight.state, field)), field


@pytest.mark.slow
def test_fit_stops_with_a_clear_error_after_consecutive_non_finite_steps(digits):
    model = small_mlp()
    before = nnx.state(model, nnx.Param)
    before = jax.tree.map(np.array, before)
    x = np.full_like(digits.train.x[:256], np.nan)
    with pytest.raises(train.NonFiniteError, match="consecutive"):
        sj.fit(model, sj.adam(1e-3), (x, digits.train.y[:256]), epochs=3, batch_size=16,
               verbose=0, max_consecutive_skips=5, steps_per_call=1)
    assert tree_equal(nnx.state(model, nnx.Param), before)  # the last finite state


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1, "batch_size": 0}, "batch_size"),
        ({"epochs": 1, "verbose": 2}, "verbose"),
        ({"epochs": 1, "loss": "hinge"}, "loss"),
    ],
)
def test_fit_rejects_bad_arguments(digits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sj.fit(small_mlp(), sj.sgd(0.01), digits.train, **kwargs)


@pytest.mark.slow
def test_binary_head_and_optax_transform_work(digits):
    model = small_mlp(output="sigmoid")
    model.layers[-1] = sj.nn.Dense(32, 1, activation="sigmoid", rngs=nnx.Rngs(2))
    y = (digits.train.y >= 5).astype(np.float32)
    history = sj.fit(model, optax.adam(1e-2), (digits.train.x, y), epochs=3, batch_size=64,
                     loss="binary_crossentropy", verbose=0)
    assert history.history["accuracy"][-1] > 0.8
    assert "lr" not in history.history  # a plain optax optimizer exposes no rate
    assert jnp.isfinite(history.history["loss"][-1])


@pytest.mark.slow
def test_progress_bar_shows_epochs_and_metrics(digits, capsys):
    model = small_mlp()
    sj.fit(model, sj.sgd(0.01), digits.train, epochs=2, batch_size=256, verbose=1,
           validation_data=digits.valid)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err
    assert "val_accuracy" in err and "loss" in err


def test_one_train_and_one_eval_compile_per_fit(caplog):
    # 100 samples in batches of 16, 4 steps per call: calls of 4 steps, 2 steps and one
    # partial batch share one compiled program; evaluation is one program too. Callbacks
    # rewrite the optimizer state between epochs without compiling anything again.
    data = sj.data.synthetic_classification(100, num_features=4, num_classes=3)
    model = sj.nn.mlp([8], input_shape=(4,), output_size=3, batch_norm="after",
                      rngs=nnx.Rngs(0))
    tx = sj.adam(1e-2, plateau=sj.reduce_on_plateau())
    callbacks = [train.LearningRateScheduler(lambda epoch: 0.01 * 0.5**epoch),
                 train.ReduceLROnPlateau(), train.EarlyStopping(patience=5, restore_best=True)]
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            sj.fit(model, tx, data, epochs=3, batch_size=16, steps_per_call=4,
                   validation_data=(data.x[:50], data.y[:50]), callbacks=callbacks, verbose=0)
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage().split(" with")[0] for r in caplog.records]
    assert compiled.count("Compiling jit(run)") == 1
    assert compiled.count("Compiling jit(evaluate_set)") == 1


@pytest.mark.parametrize("n, batch_size, steps_per_call", [(100, 16, 4), (40, 64, 3), (96, 16, 2)])
def test_padded_calls_equal_one_step_at_a_time(n, batch_size, steps_per_call):
    # The reference: the public one-step function called once per batch, on batches of
    # the true (unpadded) sizes, and the eval step once per validation batch.
    data = sj.data.synthetic_classification(n + 30, num_features=4, num_classes=3, seed=2)
    (x, y), (vx, vy) = (data.x[:n], data.y[:n]), (data.x[n:], data.y[n:])

    def build():
        return sj.nn.mlp([8, 8], input_shape=(4,), output_size=3, batch_norm="after",
                         rngs=nnx.Rngs(0))

    model, tx = build(), sj.adam(1e-2)
    state = train.init_state(model, tx)
    step, evaluate = train.make_train_step(model, tx), train.make_eval_step(model)
    losses, val_losses = [], []
    for epoch in range(2):
        order = sj.data.epoch_order(n, shuffle=True, seed=3, epoch=epoch)
        epoch_losses = []
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            state, out = step(state, (x[idx], y[idx]))
            epoch_losses.append(float(out["loss"]) * len(idx))
        losses.append(sum(epoch_losses) / n)
        val = [float(evaluate(state, (vx[i : i + 1024], vy[i : i + 1024]))["loss"])
               for i in range(0, len(vx), 1024)]
        val_losses.append(val[0])

    history = sj.fit(build(), sj.adam(1e-2), (x, y), epochs=2, batch_size=batch_size,
                     steps_per_call=steps_per_call, validation_data=(vx, vy), seed=3,
                     verbose=0)
    assert tree_equal((history.state.params, history.state.rest, history.state.opt_state),
                      (state.params, state.rest, state.opt_state))
    assert history.history["val_loss"] == val_losses
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-15)


def test_logs_do_not_depend_on_steps_per_call():
    data = sj.data.synthetic_classification(90, num_features=4, num_classes=3)
    runs = [
        sj.fit(sj.nn.mlp([8], input_shape=(4,), output_size=3, rngs=nnx.Rngs(0)), sj.sgd(0.1),
               data, epochs=2, batch_size=8, steps_per_call=spc, verbose=0)
        for spc in (1, 5, None)
    ]
    for other in runs[1:]:
        assert other.history == runs[0].history
        assert tree_equal(other.state.params, runs[0].state.params)


def test_call_plan_sizes_calls_from_the_previous_call_time():
    plan = sj.loop._CallPlan(None, verbose=1)
    assert plan.count(100) == sj.loop.FIRST_CALL_STEPS  # the first call compiles
    plan.observe(2.0, 8)
    assert plan.count(100) == sj.loop.FIRST_CALL_STEPS
    plan.observe(0.004, 8)  # 0.5 ms per step: 0.1 s is 200 steps, capped by what is left
    assert plan.count(100) == 100
    plan.observe(0.5, 100)  # 5 ms per step: 20 steps per 0.1 s
    assert plan.count(100) == 20
    plan.observe(1.0, 1)  # slower than CALL_SECONDS per step: still one step
    assert plan.count(100) == 1
    assert plan.count(0) == 0
    assert sj.loop._CallPlan(None, verbose=0).count(1234) == 1234  # no bar: whole epoch
    assert sj.loop._CallPlan(7, verbose=1).count(5) == 5
    assert sj.loop._CallPlan(7, verbose=0).count(50) == 7


def test_nonfinite_error_stops_at_the_failing_step(digits):
    # Batches 4..15 are NaN: the device loop stops right after the 10th consecutive skip,
    # inside one call of the whole epoch, with the state of the last finite step.
    x = np.array(digits.train.x[: 40 * 16])
    y = digits.train.y[: 40 * 16]
    x[4 * 16 : 16 * 16] = np.nan
    reference = small_mlp()
    tx = sj.adam(1e-3)
    state = train.init_state(reference, tx)
    step = train.make_train_step(reference, tx)
    for i in range(4):
        state, _ = step(state, (x[i * 16 : (i + 1) * 16], y[i * 16 : (i + 1) * 16]))
    model = small_mlp()
    with pytest.raises(train.NonFiniteError, match="10 consecutive.*step 14") as error:
        sj.fit(model, sj.adam(1e-3), (x, y), epochs=1, batch_size=16, shuffle=False,
               verbose=0, max_consecutive_skips=10)
    assert int(error.value.state.step) == 14
    assert tree_equal(error.value.state.params, state.params)
    assert tree_equal(nnx.state(model, nnx.Param), state.params)


class _GradNorm(train.Callback):
    def step_stats(self, grads, params):
        return {"grad_norm": optax.tree.norm(grads)}


def test_callback_step_stats_reach_the_history_and_change_nothing():
    data = sj.data.synthetic_classification(48, num_features=4, num_classes=3)

    def build():
        return sj.nn.mlp([8], input_shape=(4,), output_size=3, batch_norm="after",
                         rngs=nnx.Rngs(0))

    # One batch per epoch: the first epoch's statistic is that of the initial parameters.
    reference = build()
    grads = nnx.grad(lambda m: sj.losses.sparse_categorical_crossentropy(m(data.x), data.y))(
        reference)
    plain = sj.fit(build(), sj.adam(1e-2), data, epochs=2, batch_size=48, verbose=0)
    watched = sj.fit(build(), sj.adam(1e-2), data, epochs=2, batch_size=48, verbose=0,
                     callbacks=[_GradNorm()])
    assert tree_equal(watched.state.params, plain.state.params)
    assert tree_equal(watched.state.opt_state, plain.state.opt_state)
    assert watched.history["loss"] == plain.history["loss"]
    np.testing.assert_allclose(watched.history["grad_norm"][0],
                               float(optax.tree.norm(grads)), rtol=1e-6)


def _mean_confidence(outputs, labels):
    return outputs.max(axis=-1).mean()


def _top_label(outputs, labels):
    return outputs.argmax(axis=-1).astype(jnp.float32).mean()


@pytest.mark.parametrize("metrics, names", [
    (None, ["accuracy"]),
    (["accuracy"], ["accuracy"]),
    ([_top_label, "accuracy", _mean_confidence], ["_top_label", "accuracy", "_mean_confidence"]),
    ({"zeta": _mean_confidence, "alpha": "accuracy"}, ["zeta", "alpha"]),
    ([_mean_confidence, _top_label], ["_mean_confidence", "_top_label"]),
])
def test_evaluate_returns_the_loss_then_the_metrics_in_the_order_given(metrics, names):
    # Keras: evaluate(return_dict=False) is [loss, *metrics] in compile's metrics order,
    # whatever the names (here some sort before "loss", some after).
    data = sj.data.synthetic_classification(50, num_features=4, num_classes=3, seed=2)
    model = sj.nn.mlp([8], input_shape=(4,), output_size=3, rngs=nnx.Rngs(0))
    outputs = sj.train.predict(model, data.x).astype(np.float64)
    reference = {
        "loss": -np.mean(np.log(np.clip(outputs[np.arange(50), data.y], 1e-7, 1))),
        "accuracy": np.mean(outputs.argmax(1) == data.y),
        "_mean_confidence": outputs.max(1).mean(),
        "_top_label": outputs.argmax(1).mean(),
    }
    reference.update(zeta=reference["_mean_confidence"], alpha=reference["accuracy"])
    listed = train.evaluate(model, data.x, data.y, metrics=metrics, return_dict=False,
                            batch_size=16)
    np.testing.assert_allclose(listed, [reference[k] for k in ["loss", *names]], rtol=1e-5)
    as_dict = train.evaluate(model, data.x, data.y, metrics=metrics, batch_size=16)
    assert list(as_dict) == ["loss", *names]
    assert list(as_dict.values()) == listed


PROBABILITY_CASES = [
    # (output_size, output activation, loss, warns)
    (3, None, "sparse_categorical_crossentropy", True),  # logits into a probability loss
    (3, "relu", "sparse_categorical_crossentropy", True),  # >= 0 but rows do not sum to 1
    (3, "sigmoid", "sparse_categorical_crossentropy", True),  # in [0, 1], sums off 1
    (3, "softmax", "sparse_categorical_crossentropy", False),
    (3, None, "sparse_categorical_crossentropy_from_logits", False),
    (1, None, "binary_crossentropy", True),
    (1, "sigmoid", "binary_crossentropy", False),
    (1, None, "binary_crossentropy_from_logits", False),
]


@pytest.mark.parametrize("width, activation, loss, warns", PROBABILITY_CASES)
def test_outputs_that_are_not_probabilities_are_warned_of(width, activation, loss, warns):
    data = sj.data.synthetic_classification(40, num_features=4, num_classes=max(width, 2))
    model = sj.nn.mlp([8], input_shape=(4,), output_size=width,
                      output_activation=activation, rngs=nnx.Rngs(0))
    if width == 1:
        data = (data.x, data.y.astype(np.float32)[:, None])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = sj.fit(model, sj.sgd(0.01), data, epochs=2, batch_size=8, loss=loss,
                         verbose=0)
    said = [str(w.message) for w in caught if "takes probabilities" in str(w.message)]
    assert len(said) == (1 if warns else 0)  # once per fit, at its first step
    if warns:
        assert f"loss {loss!r}" in said[0] and f"loss='{loss}_from_logits'" in said[0]
    assert "not_probabilities" not in history.history
