"""Callbacks in fit: Keras's LearningRateScheduler, EarlyStopping, ReduceLROnPlateau."""

import numpy as np
import pytest
from conftest import small_mlp

import stablejax as sj
from stablejax import train


@pytest.mark.slow
def test_learning_rate_scheduler_runs_the_notes_epoch_function(digits):
    def exponential_decay_fn(epoch):  # the notes' function, unchanged
        return 0.01 * 0.1 ** (epoch / 20)

    model = small_mlp()
    history = sj.fit(model, sj.sgd(0.01), digits.train, epochs=3, batch_size=128, verbose=0,
                     callbacks=[train.LearningRateScheduler(exponential_decay_fn)])
    np.testing.assert_allclose(history.history["lr"], [exponential_decay_fn(e) for e in range(3)],
                               rtol=1e-6)


@pytest.mark.slow
def test_early_stopping_restores_best(digits):
    model = small_mlp()
    # a learning rate this large makes validation loss worsen quickly
    history = sj.fit(model, sj.sgd(5.0), digits.train, epochs=10, batch_size=32, verbose=0,
                     validation_data=digits.valid,
                     callbacks=[train.EarlyStopping("val_loss", patience=1, restore_best=True)])
    val = history.history["val_loss"]
    assert len(val) < 10
    best = int(np.nanargmin(val))
    restored = train.evaluate(model, history.state, digits.valid)
    assert restored["loss"] == pytest.approx(val[best], rel=1e-5)


def test_reduce_lr_on_plateau_callback_conflicting_with_the_transform(digits):
    tx = sj.sgd(0.01, plateau=sj.reduce_on_plateau(patience=5))
    with pytest.raises(ValueError, match="patience"):
        sj.fit(small_mlp(), tx, digits.train, epochs=1, verbose=0,
               callbacks=[train.ReduceLROnPlateau(patience=3)])


@pytest.mark.slow
def test_restore_best_survives_donation_and_checkpoints(digits, tmp_path):
    # The best weights are kept before any epoch improves (start_from_epoch=1), while the
    # state's buffers are donated to the train step and saved every epoch.
    model = small_mlp()
    history = sj.fit(model, sj.sgd(0.05), digits.train, epochs=3, batch_size=128, verbose=0,
                     validation_data=digits.valid, checkpoint_dir=tmp_path / "run",
                     callbacks=[train.EarlyStopping("val_loss", patience=5,
                                                    start_from_epoch=1, restore_best=True)])
    val = history.history["val_loss"]
    best = 1 + int(np.argmin(val[1:]))
    restored = train.evaluate(model, history.state, digits.valid)
    assert restored["loss"] == pytest.approx(val[best], rel=1e-5)


def test_learning_rate_scheduler_rejects_a_scheduled_optimizer(digits):
    tx = sj.sgd(sj.exponential_decay(0.01, 100))
    with pytest.raises(ValueError, match="schedule"):
        sj.fit(small_mlp(), tx, digits.train, epochs=1, verbose=0,
               callbacks=[train.LearningRateScheduler(lambda epoch: 0.01)])


def test_reduce_lr_on_plateau_checks_the_mode_against_the_monitor(digits):
    tx = sj.sgd(0.01, plateau=sj.reduce_on_plateau())  # mode "min"
    with pytest.raises(ValueError, match="mode='max'"):
        sj.fit(small_mlp(), tx, digits.train, epochs=1, verbose=0,
               callbacks=[train.ReduceLROnPlateau("val_accuracy")])


@pytest.mark.slow
def test_resuming_a_run_that_stopped_early_stays_stopped(digits, tmp_path):
    def run(epochs):
        return sj.fit(small_mlp(), sj.sgd(5.0), digits.train, epochs=epochs, batch_size=32,
                      verbose=0, validation_data=digits.valid, checkpoint_dir=tmp_path / "r",
                      callbacks=[train.EarlyStopping("val_loss", patience=1)])

    first = run(10)
    assert len(first.history["loss"]) < 10  # stopped early
    again = run(10)
    assert again.history == first.history
