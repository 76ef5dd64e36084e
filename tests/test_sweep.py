"""sj.sweep.run: members of a vmap-ed sweep equal the same runs trained alone by fit."""

import jax
import numpy as np
import pytest
from flax import nnx

import stablejax as sj

# max|sweep - fit| / max|fit| per array; measured at most 4e-7 (see sweep.run's docstring).
TOLERANCE = 1e-5
SEEDS = [0, 1, 2]
DATA = sj.data.synthetic_classification(200, num_features=6, num_classes=3, noise=0.5)
VALID = sj.data.synthetic_classification(50, num_features=6, num_classes=3, noise=0.5, seed=1)


def make(seed):
    return sj.nn.mlp([16, 8], input_shape=(6,), output_size=3, batch_norm="after",
                     rngs=nnx.Rngs(seed))


def scaled_difference(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_same_run(member, solo):
    assert set(member.history) == set(solo.history)
    for key, values in solo.history.items():
        assert len(member.history[key]) == len(values)
        assert scaled_difference(member.history[key], values) <= TOLERANCE, key
    assert int(member.state.step) == int(solo.state.step)
    assert int(member.state.epoch) == int(solo.state.epoch)
    for part in ("params", "rest", "opt_state"):
        diffs = jax.tree.map(scaled_difference, getattr(member.state, part),
                             getattr(solo.state, part))
        assert max(jax.tree.leaves(diffs), default=0.0) <= TOLERANCE, part


def solo_fit(seed, tx):
    return sj.fit(make(seed), tx, DATA, epochs=2, batch_size=32, validation_data=VALID,
                  seed=3, verbose=0, steps_per_call=None)


def test_members_equal_solo_fits():
    runs = sj.sweep.run(make, sj.adam(1e-2), DATA, seeds=SEEDS, epochs=2, batch_size=32,
                        validation_data=VALID, data_seed=3)
    assert len(runs) == len(SEEDS)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "skipped"} <= set(
        runs[0].history)
    for seed, member in zip(SEEDS, runs, strict=True):
        assert_same_run(member, solo_fit(seed, sj.adam(1e-2)))
    # the members differ: each has its own initial parameters
    assert runs[0].history["loss"] != runs[1].history["loss"]


def test_learning_rates_match_solo_fits_with_that_rate():
    rates = [1e-3, 3e-2]
    runs = sj.sweep.run(make, sj.adam(1e-2), DATA, seeds=[0, 0], epochs=2, batch_size=32,
                        validation_data=VALID, data_seed=3, learning_rates=rates)
    for rate, member in zip(rates, runs, strict=True):
        assert member.history["lr"] == pytest.approx([rate, rate])
        assert_same_run(member, solo_fit(0, sj.adam(rate)))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="seeds"):
        sj.sweep.run(make, sj.adam(1e-2), DATA, seeds=[], epochs=1)
    with pytest.raises(ValueError, match="learning_rates"):
        sj.sweep.run(make, sj.adam(1e-2), DATA, seeds=[0, 1], epochs=1,
                     learning_rates=[1e-3])

    def varying(seed):
        return sj.nn.mlp([8 + seed], input_shape=(6,), output_size=3, rngs=nnx.Rngs(seed))

    with pytest.raises(ValueError, match="make_model"):
        sj.sweep.run(varying, sj.adam(1e-2), DATA, seeds=[0, 1], epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        sj.sweep.run(make, sj.adam(1e-2), DATA, seeds=[0], epochs=0)
    with pytest.raises(ValueError, match="learning_rates"):
        sj.sweep.run(make, sj.adam(sj.exponential_decay(1e-2, 10, 0.5)), DATA, seeds=[0],
                     epochs=1, learning_rates=[1e-3])
