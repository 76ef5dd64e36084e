"""Training: step against a hand-written reference, fit, determinism, resumption, NaNs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import stablejax as sj
from stablejax import train


@pytest.fixture(scope="module")
def digits():
    return sj.data.digits(seed=0)


def _small(seed=0, activation="elu", batch_norm="after", hidden=(32,), output=None):
    return sj.nn.mlp(
        list(hidden),
        input_shape=(8, 8),
        activation=activation,
        batch_norm=batch_norm,
        output_activation=output,
        rngs=nnx.Rngs(seed),
    )


def _numpy(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def _tree_equal(a, b) -> bool:
    la = [_numpy(x) for x in jax.tree.leaves(a)]
    lb = [_numpy(x) for x in jax.tree.leaves(b)]
    return len(la) == len(lb) and all(
        np.array_equal(x, y) for x, y in zip(la, lb, strict=True)
    )


def test_train_step_matches_hand_written_nnx_optax_step(digits):
    x, y = digits.train.x[:32], digits.train.y[:32]
    ours = _small()
    reference = _small()
    tx = sj.adam(1e-2)
    state = train.init_state(ours, tx)
    step = train.make_train_step(ours, tx, "sparse_categorical_crossentropy_from_logits")

    optimizer = nnx.Optimizer(reference, sj.adam(1e-2), wrt=nnx.Param)

    def loss_fn(model):
        return sj.losses.sparse_categorical_crossentropy_from_logits(model(x), y)

    for _ in range(3):
        state, metrics = step(state, (x, y))
        loss, grads = nnx.value_and_grad(loss_fn)(reference)
        optimizer.update(reference, grads)
        assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-6)
    _, ref_params, ref_rest = nnx.split(reference, nnx.Param, ...)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(state.rest), jax.tree.leaves(ref_rest), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # batch statistics


def test_train_step_compiles_once(digits):
    model = _small()
    tx = sj.sgd(0.01, momentum=0.9)
    state = train.init_state(model, tx)
    step = train.make_train_step(model, tx)
    batch = (digits.train.x[:16], digits.train.y[:16])
    for _ in range(3):
        state, _ = step(state, batch)
    assert step._cache_size() == 1


def test_eval_step_uses_moving_statistics(digits):
    model = _small(output="softmax")
    tx = sj.sgd(0.1)
    state = train.init_state(model, tx)
    step = train.make_train_step(model, tx)
    batch = (digits.train.x[:64], digits.train.y[:64])
    state, _ = step(state, batch)
    metrics = train.make_eval_step(model)(state, batch)
    train.update_model(model, state)
    model.eval()
    expected = sj.losses.sparse_categorical_crossentropy(model(batch[0]), batch[1])
    assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-6)
    model.train()
    assert float(sj.losses.sparse_categorical_crossentropy(model(batch[0]), batch[1])) != (
        pytest.approx(float(expected), rel=1e-3)
    )


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


def test_same_seed_gives_bitwise_same_history(digits):
    runs = []
    for _ in range(2):
        model = _small(activation="rrelu")
        h = sj.fit(model, sj.adam(1e-3), digits.train, epochs=2, batch_size=64,
                   validation_data=digits.valid, verbose=0, seed=3)
        runs.append((h.history, nnx.state(model, nnx.Param)))
    assert runs[0][0] == runs[1][0]
    assert _tree_equal(runs[0][1], runs[1][1])
    model = _small(activation="rrelu")
    other = sj.fit(model, sj.adam(1e-3), digits.train, epochs=2, batch_size=64, verbose=0,
                   seed=4)
    assert other.history["loss"] != runs[0][0]["loss"]


def _resumable_run(digits, tmp_path, epochs, directory):
    model = _small(activation="rrelu")
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


def test_resume_is_bitwise_the_same_as_never_stopping(digits, tmp_path):
    straight = _resumable_run(digits, tmp_path, 8, None)
    _resumable_run(digits, tmp_path, 4, "run")
    resumed = _resumable_run(digits, tmp_path, 8, "run")
    assert resumed.history == straight.history
    assert len(resumed.history["loss"]) == 8
    # the plateau scheduling really acted, so its state was part of what resumed
    assert min(resumed.history["lr"]) < 0.05 * 0.1 ** (8 / 3)
    for field in ("params", "rest", "opt_state", "step", "epoch"):
        assert _tree_equal(getattr(resumed.state, field), getattr(straight.state, field)), field


def test_non_finite_batch_is_skipped_and_counted(digits):
    model = _small()
    tx = sj.adam(1e-3)
    state = train.init_state(model, tx)
    step = train.make_train_step(model, tx, donate=False)
    x = np.array(digits.train.x[:16])
    x[3, 2, 2] = np.nan
    new, metrics = step(state, (x, digits.train.y[:16]))
    assert int(metrics["skipped"]) == 1
    assert int(new.skips) == 1 and int(new.step) == 1
    for field in ("params", "rest", "opt_state"):
        assert _tree_equal(getattr(new, field), getattr(state, field)), field
    good, metrics = step(new, (digits.train.x[:16], digits.train.y[:16]))
    assert int(metrics["skipped"]) == 0 and int(good.skips) == 0


def test_fit_stops_with_a_clear_error_after_consecutive_non_finite_steps(digits):
    model = _small()
    before = nnx.state(model, nnx.Param)
    before = jax.tree.map(np.array, before)
    x = np.full_like(digits.train.x[:256], np.nan)
    with pytest.raises(train.NonFiniteError, match="consecutive"):
        sj.fit(model, sj.adam(1e-3), (x, digits.train.y[:256]), epochs=3, batch_size=16,
               verbose=0, max_consecutive_skips=5, steps_per_call=1)
    assert _tree_equal(nnx.state(model, nnx.Param), before)  # the last finite state


def test_learning_rate_scheduler_runs_the_notes_epoch_function(digits):
    def exponential_decay_fn(epoch):  # the notes' function, unchanged
        return 0.01 * 0.1 ** (epoch / 20)

    model = _small()
    history = sj.fit(model, sj.sgd(0.01), digits.train, epochs=3, batch_size=128, verbose=0,
                     callbacks=[train.LearningRateScheduler(exponential_decay_fn)])
    np.testing.assert_allclose(history.history["lr"], [exponential_decay_fn(e) for e in range(3)],
                               rtol=1e-6)


def test_early_stopping_restores_best(digits):
    model = _small()
    # a learning rate this large makes validation loss worsen quickly
    history = sj.fit(model, sj.sgd(5.0), digits.train, epochs=10, batch_size=32, verbose=0,
                     validation_data=digits.valid,
                     callbacks=[train.EarlyStopping("val_loss", patience=1, restore_best=True)])
    val = history.history["val_loss"]
    assert len(val) < 10
    best = int(np.nanargmin(val))
    restored = train.evaluate(model, history.state, digits.valid)
    assert restored["loss"] == pytest.approx(val[best], rel=1e-5)


def test_reduce_lr_on_plateau_callback_needs_the_transform(digits):
    with pytest.raises(ValueError, match="reduce_on_plateau"):
        sj.fit(_small(), sj.sgd(0.01), digits.train, epochs=1, verbose=0,
               callbacks=[train.ReduceLROnPlateau()])


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
        sj.fit(_small(), sj.sgd(0.01), digits.train, **kwargs)


def test_binary_head_and_optax_transform_work(digits):
    model = _small(output="sigmoid")
    model.layers[-1] = sj.nn.Dense(32, 1, activation="sigmoid", rngs=nnx.Rngs(2))
    y = (digits.train.y >= 5).astype(np.float32)
    history = sj.fit(model, optax.adam(1e-2), (digits.train.x, y), epochs=3, batch_size=64,
                     loss="binary_crossentropy", verbose=0)
    assert history.history["accuracy"][-1] > 0.8
    assert "lr" not in history.history  # a plain optax optimizer exposes no rate
    assert jnp.isfinite(history.history["loss"][-1])


def test_progress_bar_shows_epochs_and_metrics(digits, capsys):
    model = _small()
    sj.fit(model, sj.sgd(0.01), digits.train, epochs=2, batch_size=256, verbose=1,
           validation_data=digits.valid)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err
    assert "val_accuracy" in err and "loss" in err


def test_restore_best_survives_donation_and_checkpoints(digits, tmp_path):
    # The best weights are kept before any epoch improves (start_from_epoch=1), while the
    # state's buffers are donated to the train step and saved every epoch.
    model = _small()
    history = sj.fit(model, sj.sgd(0.05), digits.train, epochs=3, batch_size=128, verbose=0,
                     validation_data=digits.valid, checkpoint_dir=tmp_path / "run",
                     callbacks=[train.EarlyStopping("val_loss", patience=5,
                                                    start_from_epoch=1, restore_best=True)])
    val = history.history["val_loss"]
    best = 1 + int(np.argmin(val[1:]))
    restored = train.evaluate(model, history.state, digits.valid)
    assert restored["loss"] == pytest.approx(val[best], rel=1e-5)


def test_consecutive_skips_inside_one_compiled_call_are_caught(digits):
    # 12 non-finite batches in a row, then finite ones, all inside one 32-step call.
    x = np.array(digits.train.x[: 40 * 16])
    y = digits.train.y[: 40 * 16]
    x[4 * 16 : 16 * 16] = np.nan
    with pytest.raises(train.NonFiniteError, match="12 consecutive"):
        sj.fit(_small(), sj.adam(1e-3), (x, y), epochs=1, batch_size=16, shuffle=False,
               verbose=0, max_consecutive_skips=10, steps_per_call=32)


def test_learning_rate_scheduler_rejects_a_scheduled_optimizer(digits):
    tx = sj.sgd(sj.exponential_decay(0.01, 100))
    with pytest.raises(ValueError, match="schedule"):
        sj.fit(_small(), tx, digits.train, epochs=1, verbose=0,
               callbacks=[train.LearningRateScheduler(lambda epoch: 0.01)])


def test_reduce_lr_on_plateau_checks_the_mode_against_the_monitor(digits):
    tx = sj.sgd(0.01, plateau=sj.reduce_on_plateau())  # mode "min"
    with pytest.raises(ValueError, match="mode='max'"):
        sj.fit(_small(), tx, digits.train, epochs=1, verbose=0,
               callbacks=[train.ReduceLROnPlateau("val_accuracy")])


def test_resuming_a_run_that_stopped_early_stays_stopped(digits, tmp_path):
    def run(epochs):
        return sj.fit(_small(), sj.sgd(5.0), digits.train, epochs=epochs, batch_size=32,
                      verbose=0, validation_data=digits.valid, checkpoint_dir=tmp_path / "r",
                      callbacks=[train.EarlyStopping("val_loss", patience=1)])

    first = run(10)
    assert len(first.history["loss"]) < 10  # stopped early
    again = run(10)
    assert again.history == first.history
