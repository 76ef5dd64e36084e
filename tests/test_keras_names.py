"""Keras's callback names: ReduceLROnPlateau without a transform, EarlyStopping's
arguments, ModelCheckpoint and CSVLogger."""

import csv

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from test_plateau import VAL_LOSS, keras_reduce_lr_on_plateau

import stablejax as sj
from stablejax import train


def _run_callback(cb, values, lr=1.0):
    tx = sj.sgd(lr)
    state = train.init_state(sj.nn.mlp([2], input_shape=(2,), output_size=2,
                                       rngs=nnx.Rngs(0)), tx)
    own = cb.init(state)
    rates = []
    for v in values:
        state, own, _ = cb.on_epoch_end(state, own, {"val_loss": v})
        state = state._replace(epoch=state.epoch + 1)
        rates.append(float(sj.optimizers.current_learning_rate(state.opt_state)))
    return rates


@pytest.mark.parametrize("config", [
    dict(factor=0.5, patience=2, min_delta=0.01, cooldown=1, min_lr=0.1),
    dict(factor=0.5, patience=2, min_delta=0.0, cooldown=0, min_lr=0.0),
])
def test_reduce_lr_without_transform_matches_keras(config):
    rates = _run_callback(train.ReduceLROnPlateau(**config), VAL_LOSS)
    expected = keras_reduce_lr_on_plateau(VAL_LOSS, mode="min", learning_rate=1.0, **config)
    np.testing.assert_array_equal(np.float32(rates), np.float32([h[0] for h in expected]))


def test_reduce_lr_rejects_bad_arguments():
    for kwargs, name in [({"factor": 1.0}, "factor"), ({"patience": -1}, "patience"),
                         ({"min_delta": -1.0}, "min_delta"), ({"mode": "up"}, "mode")]:
        with pytest.raises(ValueError, match=name):
            train.ReduceLROnPlateau(**kwargs)


def test_early_stopping_keras_names():
    cb = train.EarlyStopping(monitor="val_loss", min_delta=0, patience=0, verbose=0,
                             mode="auto", baseline=None, restore_best_weights=True,
                             start_from_epoch=0)
    assert cb.restore_best_weights and cb.restore_best
    assert train.EarlyStopping(restore_best=True).restore_best_weights
    with pytest.raises(ValueError, match="restore_best"):
        train.EarlyStopping(restore_best_weights=True, restore_best=False)


def test_csv_logger_and_model_checkpoint(digits, tmp_path):
    from conftest import small_mlp

    model = small_mlp()
    log = tmp_path / "log.csv"
    ckpt = train.ModelCheckpoint(str(tmp_path / "best"), monitor="val_loss",
                                 save_best_only=True, save_weights_only=True)
    history = sj.fit(model, sj.sgd(0.05), digits.train, epochs=2, batch_size=128, verbose=0,
                     validation_data=digits.valid, callbacks=[train.CSVLogger(log), ckpt])
    with open(log, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", *sorted(history.history)]
    assert [r[0] for r in rows[1:]] == ["0", "1"]
    assert float(rows[2][rows[0].index("val_loss")]) == history.history["val_loss"][1]
    best = int(np.argmin(history.history["val_loss"]))
    restored = sj.checkpoint.load_model(tmp_path / "best", small_mlp(seed=1))
    got = train.evaluate(restored, train.init_state(restored, sj.sgd(0.1)), digits.valid)
    assert got["loss"] == pytest.approx(history.history["val_loss"][best], rel=1e-5)
    with pytest.raises(ValueError, match="monitor"):
        sj.fit(small_mlp(), sj.sgd(0.05), digits.train, epochs=1, batch_size=128, verbose=0,
               callbacks=[train.ModelCheckpoint(str(tmp_path / "x"), save_best_only=True)])


def _flat(split, n=None):
    """``(x, y)`` with each 8x8 image as 64 features (a ``.keras`` model starting with
    ``Dense`` needs no ``input_shape``)."""
    x, y = split.x[:n], split.y[:n]
    return x.reshape(len(x), -1), y


def _dense_net(batch_norm=False, seed=0):
    rngs = nnx.Rngs(seed)
    hidden = [sj.nn.Dense(64, 16, activation="elu", rngs=rngs)]
    if batch_norm:
        hidden.append(sj.nn.BatchNorm(16, rngs=rngs))
    return nnx.Sequential(*hidden, sj.nn.Dense(16, 10, activation="softmax", rngs=rngs))


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return (jax.tree.structure(a) == jax.tree.structure(b)
            and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True)))


def test_model_checkpoint_keras_files_round_trip(digits, tmp_path):
    train_split, valid = _flat(digits.train, 256), _flat(digits.valid)
    tx = sj.keras_format.optimizer("Adam", learning_rate=0.01)
    ckpt = train.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}.keras"))
    history = sj.fit(_dense_net(batch_norm=True), tx, train_split, epochs=3, batch_size=64,
                     verbose=0, shuffle=False, validation_data=valid, callbacks=[ckpt])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m-01.keras", "m-02.keras", "m-03.keras"]
    for epoch in range(3):
        model, tx_loaded, state = sj.keras_format.load(tmp_path / f"m-{epoch + 1:02d}.keras")
        # Keras's iteration count: 4 batches of 64 per epoch.
        assert int(state.step) == 4 * (epoch + 1)
        got = train.evaluate(model, state, valid)
        assert got["loss"] == pytest.approx(history.history["val_loss"][epoch], rel=1e-6)
        assert got["accuracy"] == pytest.approx(history.history["val_accuracy"][epoch])
    # The last file holds the final run state: weights, moving statistics and every
    # optimizer variable (moments, counts) bitwise.
    assert _leaves_equal(state.params, history.state.params)
    assert _leaves_equal(state.rest, history.state.rest)
    assert _leaves_equal(state.opt_state, history.state.opt_state)
    # The second epoch's file continues into the third epoch of the run, bitwise.
    model, tx_loaded, state = sj.keras_format.load(tmp_path / "m-02.keras")
    resumed = sj.fit(model, tx_loaded, train_split, epochs=1, batch_size=64, verbose=0,
                     shuffle=False, validation_data=valid, state=state)
    assert _leaves_equal(resumed.state.params, history.state.params)
    assert resumed.history["val_loss"] == history.history["val_loss"][2:]


def _improving_epochs(values, mode, threshold=None):
    """The 1-based epochs at which ``values`` beat the best so far (Keras's rule: strict
    improvement in float32; the first value always improves unless a threshold is given)."""
    best, epochs = (None if threshold is None else np.float32(threshold)), []
    for epoch, value in enumerate(np.float32(values), start=1):
        if best is None or (value < best if mode == "min" else value > best):
            best = value
            epochs.append(epoch)
    return epochs


def _best_only_run(digits, tmp_path, **checkpoints):
    """A 5-epoch SGD run at a rate large enough that val_loss and val_accuracy do not
    improve every epoch; one ``save_best_only`` checkpoint per keyword (its file prefix)."""
    callbacks = [train.ModelCheckpoint(str(tmp_path / (prefix + "-{epoch}.keras")),
                                       save_best_only=True, save_weights_only=True, **kwargs)
                 for prefix, kwargs in checkpoints.items()]
    history = sj.fit(_dense_net(), sj.sgd(1.0), _flat(digits.train, 256), epochs=5,
                     batch_size=32, verbose=0, validation_data=_flat(digits.valid),
                     callbacks=callbacks)

    def written(prefix):
        return sorted(int(p.name[len(prefix) + 1:-len(".keras")])
                      for p in tmp_path.glob(prefix + "-*.keras"))

    return history.history, written


def test_model_checkpoint_save_best_only_skips_epochs_without_improvement(digits, tmp_path):
    history, written = _best_only_run(digits, tmp_path, loss={"monitor": "val_loss"})
    expected = _improving_epochs(history["val_loss"], "min")
    assert written("loss") == expected
    assert len(expected) < 5, "val_loss improved every epoch: nothing was skipped"
    # Each file holds the weights of its epoch: its val_loss is the one logged.
    valid = _flat(digits.valid)
    for epoch in expected:
        model, _, _ = sj.keras_format.load(tmp_path / f"loss-{epoch}.keras")
        got = train.evaluate(model, train.init_state(model, sj.sgd()), valid)
        assert got["loss"] == pytest.approx(history["val_loss"][epoch - 1], rel=1e-6)


def test_model_checkpoint_max_mode_and_initial_value_threshold(digits, tmp_path):
    history, written = _best_only_run(
        digits, tmp_path,
        acc={"monitor": "val_accuracy", "mode": "max"},
        auto={"monitor": "val_accuracy"},  # "auto" is "max" for an accuracy
        above={"monitor": "val_accuracy", "mode": "max", "initial_value_threshold": 1.01},
        half={"monitor": "val_accuracy", "mode": "max", "initial_value_threshold": 0.5},
    )
    accuracy = history["val_accuracy"]
    expected = _improving_epochs(accuracy, "max")
    assert written("acc") == written("auto") == expected
    assert len(expected) < 5, "val_accuracy improved every epoch: nothing was skipped"
    assert written("above") == []  # no epoch beats a threshold above every value
    assert written("half") == _improving_epochs(accuracy, "max", threshold=0.5)
    assert min(accuracy) < 0.5 < max(accuracy)  # the threshold skipped some epochs


def test_model_checkpoint_keras_file_of_an_mlp_with_logits(digits, tmp_path):
    """A model that starts with Flatten takes its input shape from fit's data, a
    from-logits loss is written as Keras's loss object with from_logits=True, and the
    optimizer of a plain alias call as Keras's."""
    from conftest import small_mlp

    tx = sj.nadam(0.01, clipnorm=1.0)
    model = small_mlp(batch_norm=None)
    path = tmp_path / "run.keras"
    sj.fit(model, tx, digits.train, epochs=1, batch_size=128, verbose=0,
           loss="sparse_categorical_crossentropy_from_logits",
           callbacks=[train.ModelCheckpoint(str(path))])
    compile_config = sj.keras_format.config(path)["compile_config"]
    optimizer = compile_config["optimizer"]
    assert optimizer["class_name"] == "Nadam" and optimizer["config"]["clipnorm"] == 1.0
    assert compile_config["loss"]["class_name"] == "SparseCategoricalCrossentropy"
    assert compile_config["loss"]["config"]["from_logits"] is True
    loaded, _, _ = sj.keras_format.load(path)
    x = digits.valid.x[:20]
    np.testing.assert_array_equal(train.predict(loaded, x), train.predict(model, x))


def test_model_checkpoint_refuses_an_unsaveable_run_before_training(digits, tmp_path):
    from conftest import small_mlp

    cases = [
        ({"tx": optax.adam(0.01)}, "tx has no Keras description"),  # not an alias
        ({"tx": sj.adam(0.01, decay=1e-3)}, "decay=0.001"),  # Keras 3 has no such decay
        ({"tx": sj.keras_format.optimizer("Adam"),
          "loss": lambda outputs, y: jax.numpy.mean(outputs)}, "custom loss"),
        ({"tx": sj.keras_format.optimizer("Adam"), "model": small_mlp(activation="rrelu")},
         "RReLU"),
    ]
    for kwargs, message in cases:
        model = kwargs.pop("model", None) or small_mlp(batch_norm=None)
        before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
        with pytest.raises(ValueError, match=message):
            sj.fit(model, kwargs.pop("tx"), digits.train, epochs=1, batch_size=128, verbose=0,
                   callbacks=[train.ModelCheckpoint(str(tmp_path / "run.keras"))], **kwargs)
        assert _leaves_equal(nnx.state(model, nnx.Param), before)  # nothing trained
        assert not list(tmp_path.iterdir())


def test_lambda_callback_calls_keras_style_functions(digits):
    from conftest import small_mlp

    calls = []
    log = train.LambdaCallback(
        on_train_begin=lambda logs: calls.append(("train_begin", dict(logs))),
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch)),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, logs)),
        on_train_end=lambda logs: calls.append(("train_end", logs)))
    first = sj.fit(small_mlp(), sj.sgd(0.05), digits.train, epochs=2, batch_size=128,
                   verbose=0, callbacks=[log])
    history = first.history
    assert [c[:2] for c in calls] == [("train_begin", {}), ("epoch_begin", 0),
                                      ("epoch_end", 0), ("epoch_begin", 1), ("epoch_end", 1),
                                      ("train_end", {k: v[-1] for k, v in history.items()})]
    assert calls[2][2] == {k: v[0] for k, v in history.items()}
    # A continued run counts epochs as Keras does: absolute.
    calls.clear()
    more = sj.fit(small_mlp(), sj.sgd(0.05), digits.train, epochs=4, batch_size=128,
                  verbose=0, callbacks=[log], state=first.state)
    assert [c[1] for c in calls if c[0] == "epoch_end"] == [2, 3]
    assert more.epoch == [2, 3] and first.epoch == [0, 1]
    with pytest.raises(ValueError, match="on_epoch_end must be a callable"):
        train.LambdaCallback(on_epoch_end=3)


def test_a_used_up_state_is_a_clear_error(digits):
    from conftest import small_mlp

    model, tx = small_mlp(), sj.sgd(0.05)
    state = train.init_state(model, tx)
    sj.fit(model, tx, digits.train, epochs=1, batch_size=128, verbose=0, state=state)
    with pytest.raises(ValueError, match="used up its buffers.*history.state"):
        sj.fit(model, tx, digits.train, epochs=2, batch_size=128, verbose=0, state=state)
    with pytest.raises(TypeError, match="state must be a stablejax TrainState"):
        sj.fit(model, tx, digits.train, epochs=1, verbose=0, state={"params": 1})


def test_history_epochs_after_a_checkpoint_resume_and_its_repr(digits, tmp_path):
    from conftest import small_mlp

    def run(epochs):
        return sj.fit(small_mlp(), sj.sgd(0.05), digits.train, epochs=epochs, batch_size=128,
                      verbose=0, checkpoint_dir=tmp_path)

    run(2)
    resumed = run(3)
    assert resumed.epoch == [0, 1, 2] and len(resumed.history["loss"]) == 3
    assert "TrainState" not in repr(resumed) and "epoch=[0, 1, 2]" in repr(resumed)


def test_model_checkpoint_prints_keras_lines_and_refuses_h5(digits, tmp_path, capsys):
    with pytest.raises(ValueError, match="HDF5 weight files are not written"):
        train.ModelCheckpoint(str(tmp_path / "w.weights.h5"), save_weights_only=True)
    best = train.ModelCheckpoint(str(tmp_path / "best"), monitor="val_loss", verbose=1,
                                 save_best_only=True, save_weights_only=True)
    every = train.ModelCheckpoint(str(tmp_path / "e{epoch}"), verbose=1,
                                  save_weights_only=True)
    model = _dense_net()
    history = sj.fit(model, sj.sgd(1.0), _flat(digits.train, 256), epochs=5, batch_size=32,
                     verbose=0, validation_data=_flat(digits.valid), callbacks=[best, every])
    out = capsys.readouterr().out
    values = np.float32(history.history["val_loss"])
    lines = []
    best_so_far = np.float32(np.inf)
    for epoch, value in enumerate(values, start=1):
        if value < best_so_far:
            lines.append(f"Epoch {epoch}: val_loss improved from {float(best_so_far):.5f} to "
                         f"{history.history['val_loss'][epoch - 1]:.5f}, saving model to "
                         f"{tmp_path / 'best'}")
            best_so_far = value
        else:
            lines.append(f"Epoch {epoch}: val_loss did not improve from "
                         f"{float(best_so_far):.5f}")
        lines.append(f"Epoch {epoch}: saving model to {tmp_path / f'e{epoch}'}")
    assert [line for line in out.splitlines() if line] == lines
    assert "improved from inf" in out and "did not improve" in out


def test_learning_rate_scheduler_verbose_and_bad_schedule(digits, capsys):
    from conftest import small_mlp

    sched = train.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1), verbose=1)
    sj.fit(small_mlp(), sj.sgd(0.05), digits.train, epochs=2, batch_size=128, verbose=0,
           callbacks=[sched])
    assert [line for line in capsys.readouterr().out.splitlines() if line] == [
        "Epoch 1: LearningRateScheduler setting learning rate to 0.1.",
        "Epoch 2: LearningRateScheduler setting learning rate to 0.05."]
    with pytest.raises(ValueError, match="schedule must be a callable"):
        train.LearningRateScheduler(0.1)
    with pytest.raises(ValueError, match="verbose must be 0 or 1"):
        train.LearningRateScheduler(lambda epoch: 0.1, verbose=2)


def test_a_missing_validation_monitor_says_how_to_get_it(digits):
    from conftest import small_mlp

    with pytest.raises(ValueError, match="'val_loss' is not among .*pass validation_data or "
                                         "validation_split"):
        sj.fit(small_mlp(), sj.sgd(0.05), digits.train, epochs=1, batch_size=128, verbose=0,
               callbacks=[train.EarlyStopping()])


def test_model_checkpoint_names_itself_when_the_run_cannot_be_a_keras_file(digits, tmp_path):
    from conftest import small_mlp

    with pytest.raises(ValueError, match=r"ModelCheckpoint\('.*run.keras'\) cannot write this "
                                         r"run as a .keras file: tx has no Keras description.*"
                                         "save_weights_only=True"):
        sj.fit(small_mlp(), optax.sgd(0.1), digits.train, epochs=1, batch_size=128, verbose=0,
               callbacks=[train.ModelCheckpoint(str(tmp_path / "run.keras"))])
    # The model alone needs no optimizer description.
    sj.fit(small_mlp(batch_norm=None), sj.sgd(0.1), digits.train, epochs=1, batch_size=128,
           verbose=0, callbacks=[train.ModelCheckpoint(str(tmp_path / "run.keras"),
                                                       save_weights_only=True)])
    assert (tmp_path / "run.keras").exists()
