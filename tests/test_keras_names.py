"""Keras's callback names: ReduceLROnPlateau without a transform, EarlyStopping's
arguments, ModelCheckpoint and CSVLogger."""

import csv

import numpy as np
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
