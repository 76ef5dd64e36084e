"""Early stopping against Keras 3's ``EarlyStopping`` callback.

Reference: a plain-Python re-statement of Keras's callback loop (below).
"""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablejax.stopping import EarlyStoppingState, early_stopping

FEW = settings(max_examples=25, deadline=None)
eighths = st.integers(-24, 24).map(lambda k: k / 8)


def keras_early_stopping(values, patience, min_delta, mode, baseline, start_from_epoch):
    """Keras 3 ``EarlyStopping.on_epoch_end``; returns (improved, stop, best, wait) per epoch."""

    def improves(value, reference):
        if reference is None:
            return True
        if mode == "min":
            return value + min_delta < reference
        return value - min_delta > reference

    best, wait, history = None, 0, []
    for epoch, current in enumerate(values):
        if epoch < start_from_epoch:
            history.append((False, False, best, wait))
            continue
        wait += 1
        if improves(current, best):
            best = current
            if baseline is None or improves(current, baseline):
                wait = 0
            history.append((True, False, best, wait))
            continue
        history.append((False, wait >= patience and epoch > 0, best, wait))
    return history


early_config = st.fixed_dictionaries(
    {
        "patience": st.integers(0, 4),
        "min_delta": st.sampled_from([0.0, 0.125, 0.5]),
        "mode": st.sampled_from(["min", "max"]),
        "baseline": st.sampled_from([None, -1.0, 0.0, 1.5]),
        "start_from_epoch": st.integers(0, 3),
    }
)


@FEW
@given(values=st.lists(eighths, min_size=1, max_size=20), config=early_config)
def test_early_stopping_matches_keras_callback_loop(values, config):
    es = early_stopping(**config)
    state = es.init()
    expected = keras_early_stopping(values, **config)
    for value, (improved, stop, best, wait) in zip(values, expected, strict=True):
        state, got_improved, got_stop = es.update(state, value)
        assert bool(got_improved) == improved
        assert bool(got_stop) == stop
        assert int(state.wait) == wait
        if best is not None:
            assert float(state.best) == best


def test_early_stopping_restore_best_with_improved():
    # The loop keeps the parameters of the last improving epoch (Keras's
    # restore_best_weights): here epoch 2, then it stops at epoch 5 (patience 3).
    es = early_stopping(patience=3, min_delta=0.01)
    state = es.init()
    best_epoch, stopped_at = None, None
    for epoch, value in enumerate([1.0, 0.8, 0.7, 0.695, 0.75, 0.71, 0.5]):
        state, improved, stop = es.update(state, value)
        if improved:
            best_epoch = epoch
        if stop:
            stopped_at = epoch
            break
    assert (best_epoch, stopped_at, int(state.best_epoch)) == (2, 5, 2)
    assert isinstance(state, EarlyStoppingState)


INVALID = [
    (early_stopping, {"patience": -2}, "patience=-2"),
    (early_stopping, {"min_delta": -1.0}, "min_delta=-1.0"),
    (early_stopping, {"start_from_epoch": -1}, "start_from_epoch=-1"),
    (early_stopping, {"mode": "auto"}, "mode='auto'"),
    (early_stopping, {"baseline": float("nan")}, "baseline=nan"),
]


@pytest.mark.parametrize(("kwargs", "expected"), [(k, e) for _, k, e in INVALID])
def test_invalid_hyperparameters_raise(kwargs, expected):
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        early_stopping(**kwargs)
    assert re.search(r"range|must", str(info.value))
