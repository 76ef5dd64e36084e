"""Reduce-on-plateau against Keras 3's callback.

References: the measured Keras sequences of docs/parity.md §6, plain-Python
re-statements of Keras's callback loops (below) and optax.contrib.reduce_on_plateau
through the exact mapping of §6.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablejax.plateau import (
    ReduceOnPlateauState,
    is_reduce_on_plateau,
    observe,
    plateau_scale,
    reduce_on_plateau,
)

FEW = settings(max_examples=25, deadline=None)

VAL_LOSS = [1.0, 0.9, 0.95, 0.895, 0.93, 0.94, 0.80, 0.85, 0.86, 0.87, 0.88, 0.89, 0.90, 0.91, 0.92]


def keras_reduce_lr_on_plateau(
    values, factor, patience, min_delta, cooldown, min_lr, mode, learning_rate
):
    """Keras 3 ``ReduceLROnPlateau.on_epoch_end`` over a sequence, in Python floats.

    The optimizer keeps its rate in a float32 variable, hence the float32 rounding.
    Returns (lr, best, wait, cooldown_counter) after each epoch.
    """
    lr = float(np.float32(learning_rate))
    best, wait, cooldown_counter, history = None, 0, 0, []
    for current in values:
        if cooldown_counter > 0:
            cooldown_counter -= 1
            wait = 0
        if mode == "min":
            improved = best is None or current + min_delta < best
        else:
            improved = best is None or current - min_delta > best
        if improved:
            best = current
            wait = 0
        elif cooldown_counter == 0:
            wait += 1
            if wait >= patience and lr > np.float32(min_lr):
                lr = float(np.float32(max(lr * factor, min_lr)))
                cooldown_counter = cooldown
                wait = 0
        history.append((lr, best, wait, cooldown_counter))
    return history


def run_plateau(values, **kwargs):
    state = reduce_on_plateau(**kwargs).init(None)
    history = []
    for value in values:
        state = _observe(state, value)
        history.append(state)
    return history


_observe = jax.jit(observe)


def test_keras_measured_sequence_with_cooldown_and_min_lr():
    history = run_plateau(
        VAL_LOSS, factor=0.5, patience=2, min_delta=0.01, cooldown=1, min_lr=0.1
    )
    expected = [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125, 0.1, 0.1, 0.1, 0.1, 0.1]
    np.testing.assert_allclose([s.scale for s in history], expected, rtol=1e-7)


def test_keras_measured_sequence_without_delta_and_cooldown():
    history = run_plateau(VAL_LOSS, factor=0.5, patience=2, min_delta=0.0, cooldown=0)
    expected = [1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.0625, 0.0625, 0.03125]
    np.testing.assert_allclose([s.scale for s in history], expected, rtol=1e-7)


# Values on a grid of eighths are exact in float32 and float64, so the comparisons
# (including ties, which the grid makes frequent) agree bit for bit.
eighths = st.integers(-24, 24).map(lambda k: k / 8)
plateau_config = st.fixed_dictionaries(
    {
        "factor": st.sampled_from([0.5, 0.1, 0.25, 0.7]),
        "patience": st.integers(0, 4),
        "min_delta": st.sampled_from([0.0, 0.125, 0.25, 0.5]),
        "cooldown": st.integers(0, 3),
        "min_lr_fraction": st.sampled_from([0.0, 0.01, 0.1, 0.3]),
        "mode": st.sampled_from(["min", "max"]),
        "learning_rate": st.sampled_from([1.0, 0.01]),
    }
)


@FEW
@given(values=st.lists(eighths, min_size=1, max_size=25), config=plateau_config)
def test_matches_keras_callback_loop(values, config):
    config = dict(config)
    config["min_lr"] = config.pop("min_lr_fraction") * config["learning_rate"]
    history = run_plateau(values, **config)
    expected = keras_reduce_lr_on_plateau(values, **config)
    for state, (lr, best, wait, cooldown_counter) in zip(history, expected, strict=True):
        np.testing.assert_allclose(state.scale * config["learning_rate"], lr, rtol=1e-6)
        assert float(state.best) == best
        assert int(state.wait) == wait
        assert int(state.cooldown_counter) == cooldown_counter


@FEW
@given(
    values=st.lists(st.integers(1, 40).map(lambda k: k / 8), min_size=1, max_size=25),
    factor=st.sampled_from([0.5, 0.1, 0.25]),
    patience=st.integers(1, 4),
    min_delta=st.sampled_from([0.125, 0.25, 0.5]),
    cooldown=st.integers(0, 3),
    min_lr=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_matches_optax_contrib_through_the_mapping(
    values, factor, patience, min_delta, cooldown, min_lr
):
    ours = reduce_on_plateau(factor, patience, min_delta, cooldown, min_lr)
    theirs = optax.contrib.reduce_on_plateau(
        factor=factor,
        patience=patience,
        cooldown=max(cooldown - 1, 0),
        atol=min_delta,
        rtol=0.0,
        min_scale=min_lr,
    )
    updates = {"w": jnp.ones(2)}
    ours_state, theirs_state = ours.init(updates), theirs.init(updates)
    # Op by op: Optax's lax.cond would otherwise compile anew for every example.
    with jax.disable_jit():
        for value in values:
            ours_updates, ours_state = ours.update(updates, ours_state, value=value)
            theirs_updates, theirs_state = theirs.update(updates, theirs_state, value=value)
            np.testing.assert_allclose(ours_state.scale, theirs_state.scale, rtol=1e-6)
            np.testing.assert_allclose(ours_updates["w"], theirs_updates["w"], rtol=1e-6)


def test_negative_and_zero_metrics():
    # Min mode on a loss that is negative (e.g. a log-likelihood bound) or zero.
    values = [-1.0, -2.0, -2.0, -2.0, -3.0, -3.0, -3.0, 0.0, 0.0]
    config = dict(factor=0.5, patience=2, min_delta=0.0, cooldown=0, min_lr=0.0, mode="min")
    history = run_plateau(values, **config)
    expected = keras_reduce_lr_on_plateau(values, **config, learning_rate=1.0)
    np.testing.assert_allclose([s.scale for s in history], [e[0] for e in expected], rtol=1e-7)
    # By hand: -2 improves on -1, two flat epochs reduce, -3 improves, two more reduce.
    np.testing.assert_allclose(
        [s.scale for s in history], [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125]
    )

    zeros = run_plateau([0.0] * 5, factor=0.5, patience=1, min_delta=0.0, mode="max")
    np.testing.assert_allclose([s.scale for s in zeros], [1, 0.5, 0.25, 0.125, 0.0625])


def test_first_value_is_always_the_best_even_if_infinite():
    # Keras starts from best = None, so a first +inf becomes the best and the
    # next finite value improves on it instead of counting as a bad epoch.
    values = [float("inf"), 5.0, 5.0]
    config = dict(factor=0.5, patience=1, min_delta=0.0, cooldown=0, min_lr=0.0, mode="min")
    history = run_plateau(values, **config)
    expected = keras_reduce_lr_on_plateau(values, **config, learning_rate=1.0)
    assert [float(s.scale) for s in history] == [e[0] for e in expected] == [1.0, 1.0, 0.5]
    assert [int(s.wait) for s in history] == [e[2] for e in expected]


def test_nothing_happens_at_min_lr_and_wait_keeps_growing():
    history = run_plateau([1.0] * 6, factor=0.5, patience=1, min_delta=0.0, min_lr=0.25)
    assert [float(s.scale) for s in history] == [1.0, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert [int(s.wait) for s in history] == [0, 0, 0, 1, 2, 3]


def test_value_path_in_chain_scales_the_updates():
    tx = optax.chain(optax.sgd(1.0), reduce_on_plateau(factor=0.5, patience=1, min_delta=0.0))
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 4.0])}
    state = tx.init(params)
    update = jax.jit(tx.update)
    scales = []
    for value in [3.0, 3.0, 2.0, 2.5, 2.5]:
        updates, state = update(grads, state, params, value=value)
        scale = float(plateau_scale(state))
        np.testing.assert_allclose(updates["w"], -scale * grads["w"], rtol=1e-7)
        scales.append(scale)
    assert scales == [1.0, 0.5, 0.5, 0.25, 0.125]
    # Without `value` the state stands still.
    updates, state = update(grads, state, params)
    np.testing.assert_allclose(updates["w"], -0.125 * grads["w"], rtol=1e-7)
    assert update._cache_size() == 2  # one trace with `value`, one without


def test_observe_reaches_nested_states_and_leaves_the_rest():
    inner = optax.chain(optax.scale_by_adam(), reduce_on_plateau(factor=0.5, patience=0))
    tx = optax.chain(
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
        optax.multi_transform(
            {"a": inner, "b": reduce_on_plateau(factor=0.1, patience=0, mode="max")},
            {"x": "a", "y": "b"},
        ),
    )
    params = {"x": jnp.ones(3), "y": jnp.zeros(2)}
    state = tx.init(params)
    assert float(plateau_scale(state)) == 1.0
    plateaus = [s for s in jax.tree.leaves(state, is_leaf=lambda n: isinstance(
        n, ReduceOnPlateauState)) if isinstance(s, ReduceOnPlateauState)]
    assert len(plateaus) == 2

    state = observe(state, 1.0)  # first value: an improvement for both
    state = observe(state, 1.0)  # no improvement for both, patience 0: both reduce
    np.testing.assert_allclose(plateau_scale(state), 0.5 * 0.1, rtol=1e-7)
    before = tx.init(params)
    others = lambda s: [  # noqa: E731
        leaf for leaf in jax.tree.leaves(s, is_leaf=lambda n: isinstance(n, ReduceOnPlateauState))
        if not isinstance(leaf, ReduceOnPlateauState)
    ]
    for a, b in zip(others(state), others(before), strict=True):
        np.testing.assert_array_equal(a, b)

    grads = {"x": jnp.ones(3), "y": jnp.ones(2)}
    updates, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["y"], -0.1 * 0.1 * grads["y"], rtol=1e-6)


def test_plateau_scale_without_plateau_is_one():
    state = optax.adam(1e-3).init({"w": jnp.ones(2)})
    assert float(plateau_scale(state)) == 1.0
    assert observe(state, 1.0) is not None


def test_jit_without_recompilation_and_checkpoint_round_trip():
    tx = optax.chain(optax.sgd(0.1), reduce_on_plateau(factor=0.5, patience=1, cooldown=2))
    params = {"w": jnp.array([1.0, 2.0])}
    traces = []

    @jax.jit
    def epoch(params, state, value):
        traces.append(None)
        state = observe(state, value)
        updates, state = tx.update({"w": params["w"]}, state, params)
        return optax.apply_updates(params, updates), state

    values = [5.0, 4.0, 4.0, 4.5, 4.2, 4.1, 4.0, 4.0, 3.0, 3.5]
    p, s = params, tx.init(params)
    straight = []
    for value in values:
        p, s = epoch(p, s, value)
        straight.append((p, s))

    # Interrupt after 4 epochs, go through host numpy arrays, continue.
    p, s = straight[3]
    p, s = jax.tree.map(np.asarray, (p, s))
    for i, value in enumerate(values[4:], start=4):
        p, s = epoch(p, s, value)
        for a, b in zip(jax.tree.leaves((p, s)), jax.tree.leaves(straight[i]), strict=True):
            np.testing.assert_array_equal(a, b)
    assert len(traces) == 1


def test_inject_hyperparams_changes_take_effect():
    tx = optax.inject_hyperparams(reduce_on_plateau)(factor=0.5, patience=1, min_delta=0.0)
    updates = {"w": jnp.ones(2)}
    state = tx.init(updates)
    _, state = tx.update(updates, state, updates, value=1.0)
    _, state = tx.update(updates, state, updates, value=1.0)
    assert float(plateau_scale(state)) == 0.5
    state.hyperparams["factor"] = jnp.asarray(0.1)
    _, state = tx.update(updates, state, updates, value=1.0)
    np.testing.assert_allclose(plateau_scale(state), 0.05, rtol=1e-6)


def test_update_keeps_the_updates_dtype():
    tx = reduce_on_plateau()
    updates = {"w": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
    out, _ = tx.update(updates, tx.init(updates), value=1.0)
    assert out["w"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32


INVALID = [
    (reduce_on_plateau, {"factor": 1.0}, "factor=1.0"),
    (reduce_on_plateau, {"factor": 0.0}, "factor=0.0"),
    (reduce_on_plateau, {"patience": -1}, "patience=-1"),
    (reduce_on_plateau, {"patience": 1.5}, "patience=1.5"),
    (reduce_on_plateau, {"min_delta": -0.1}, "min_delta=-0.1"),
    (reduce_on_plateau, {"cooldown": -1}, "cooldown=-1"),
    (reduce_on_plateau, {"min_lr": -1e-3}, "min_lr=-0.001"),
    (reduce_on_plateau, {"learning_rate": 0.0}, "learning_rate=0.0"),
    (reduce_on_plateau, {"mode": "auto"}, "mode='auto'"),
]


@pytest.mark.parametrize(("factory", "kwargs", "expected"), INVALID)
def test_invalid_hyperparameters_raise(factory, kwargs, expected):
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        factory(**kwargs)
    assert re.search(r"range|must", str(info.value))


def test_reaching_min_lr_by_round_factors_stops_like_keras():
    # 1 -> 0.1 -> 0.01 = min_lr: Keras's float64 products land on float32(0.01) and stop;
    # float32 products land one ulp above, which must count as the floor too.
    config = dict(factor=0.1, patience=0, min_delta=0.0, cooldown=0, min_lr=0.01, mode="min",
                  learning_rate=1.0)
    values = [0.0] * 6
    history = run_plateau(values, **config)
    expected = keras_reduce_lr_on_plateau(values, **config)
    assert [int(s.wait) for s in history] == [w for _, _, w, _ in expected]
    np.testing.assert_allclose([float(s.scale) for s in history], [e[0] for e in expected],
                               rtol=1e-6)


@pytest.mark.parametrize("other", [
    optax.identity(), optax.contrib.reduce_on_plateau(), reduce_on_plateau, None, "min",
], ids=["identity", "optax-plateau", "factory", "None", "string"])
def test_is_reduce_on_plateau_only_for_what_it_returned(other):
    assert is_reduce_on_plateau(reduce_on_plateau(factor=0.5))
    assert not is_reduce_on_plateau(other)
