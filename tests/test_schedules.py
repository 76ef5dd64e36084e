"""Schedules against the measured Keras 3 sequences (docs/parity.md §6), Optax and closed forms."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablejax.schedules import (
    describe,
    exponential_decay,
    one_cycle,
    per_epoch,
    piecewise_constant,
    power_decay,
    warmup,
)

FEW = settings(max_examples=25, deadline=None)
STEPS = jnp.arange(8)


def values(schedule, steps=STEPS):
    return np.asarray(schedule(steps))


# Measured Keras 3 sequences, steps 0..7 (docs/parity.md §6).
KERAS_EXPONENTIAL = [1, 0.31622776, 0.1, 0.031622776, 0.01, 0.0031622776, 0.001, 0.00031622776]
KERAS_EXPONENTIAL_STAIRCASE = [1, 1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
KERAS_INVERSE_TIME = [1, 0.8, 0.66666669, 0.5714286, 0.5, 0.44444445, 0.4, 0.36363637]
# Measured as [1, 1, 0.6667, 0.6667, 0.5, 0.5, 0.4, 0.4]: 1 / (1 + 0.5 * floor(t / 2)).
KERAS_INVERSE_TIME_STAIRCASE = [1, 1, 2 / 3, 2 / 3, 0.5, 0.5, 0.4, 0.4]
KERAS_PIECEWISE = [1, 1, 1, 0.5, 0.5, 0.5, 0.1, 0.1]
OPTAX_PIECEWISE = [1, 1, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1]
TORCH_MULTISTEP = [1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


def test_exponential_decay_matches_keras_exponential_decay():
    np.testing.assert_allclose(values(exponential_decay(1.0, 2, 0.1)), KERAS_EXPONENTIAL, rtol=1e-6)
    np.testing.assert_allclose(
        values(exponential_decay(1.0, 2, 0.1, staircase=True)),
        KERAS_EXPONENTIAL_STAIRCASE,
        rtol=1e-6,
    )


def test_power_decay_matches_keras_inverse_time_decay():
    # InverseTimeDecay(1, decay_steps=2, decay_rate=0.5)
    np.testing.assert_allclose(values(power_decay(1.0, s=4)), KERAS_INVERSE_TIME, rtol=1e-6)
    np.testing.assert_allclose(
        values(power_decay(1.0, s=2, rate=0.5)), KERAS_INVERSE_TIME, rtol=1e-6
    )
    np.testing.assert_allclose(
        values(power_decay(1.0, s=2, rate=0.5, staircase=True)),
        KERAS_INVERSE_TIME_STAIRCASE,
        rtol=1e-6,
    )


def test_power_decay_notes_sequence():
    # The notes: lr0, lr0/2, lr0/3, ... every s steps.
    got = values(power_decay(0.01, s=10, staircase=True), jnp.arange(0, 50, 10))
    np.testing.assert_allclose(got, [0.01 / k for k in range(1, 6)], rtol=1e-6)


@FEW
@given(
    lr0=st.floats(1e-4, 10.0),
    s=st.floats(0.5, 1000.0),
    c=st.floats(0.1, 4.0),
    rate=st.floats(0.1, 10.0),
    staircase=st.booleans(),
    steps=st.lists(st.integers(0, 100_000), min_size=8, max_size=8),
)
def test_power_decay_closed_form(lr0, s, c, rate, staircase, steps):
    t = np.asarray(steps, np.float64)
    got = values(power_decay(lr0, s, c, staircase=staircase, rate=rate), jnp.asarray(steps))
    if not staircase:
        np.testing.assert_allclose(got, lr0 / (1.0 + rate * t / s) ** c, rtol=1e-5)
        return
    # step / s is computed in float32 (as Keras does): where the exact quotient lies
    # within float32 rounding of an integer, either side of the step is correct.
    q = t / s
    near = np.abs(q - np.round(q)) <= 1e-6 * np.maximum(q, 1.0)
    for p in (np.floor(q), np.where(near, np.round(q) - 1, np.floor(q)),
              np.where(near, np.round(q), np.floor(q))):
        if np.allclose(got, lr0 / (1.0 + rate * p) ** c, rtol=1e-5, atol=0):
            return
    np.testing.assert_allclose(got, lr0 / (1.0 + rate * np.floor(q)) ** c, rtol=1e-5)


@FEW
@given(
    lr0=st.floats(1e-4, 10.0),
    s=st.integers(1, 1000),
    rate=st.floats(0.01, 2.0),
    staircase=st.booleans(),
    steps=st.lists(st.integers(0, 5000), min_size=8, max_size=8),
)
def test_exponential_decay_matches_optax(lr0, s, rate, staircase, steps):
    steps = jnp.asarray(steps, jnp.int32)
    expected = optax.exponential_decay(lr0, s, rate, staircase=staircase)(steps)
    got = exponential_decay(lr0, s, rate, staircase=staircase)(steps)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_piecewise_constant_conventions():
    np.testing.assert_allclose(values(piecewise_constant([2, 5], [1, 0.5, 0.1])), KERAS_PIECEWISE)
    left = piecewise_constant([2, 5], [1, 0.5, 0.1], inclusive="left")
    np.testing.assert_allclose(values(left), OPTAX_PIECEWISE)
    optax_schedule = optax.piecewise_constant_schedule(1.0, {2: 0.5, 5: 0.2})
    np.testing.assert_allclose(values(left), [optax_schedule(t) for t in range(8)], rtol=1e-6)
    torch = piecewise_constant([2, 5], [1, 0.5, 0.25], inclusive="left")
    np.testing.assert_allclose(values(torch), TORCH_MULTISTEP)


def keras_piecewise(boundaries, vals, step):
    for b, v in zip(boundaries, vals, strict=False):
        if step <= b:
            return v
    return vals[-1]


@FEW
@given(
    gaps=st.lists(st.integers(1, 20), min_size=0, max_size=5),
    data=st.data(),
)
def test_piecewise_constant_against_references(gaps, data):
    boundaries = list(np.cumsum(gaps).tolist())
    vals = data.draw(
        st.lists(
            st.floats(0.0625, 1.0, width=32), min_size=len(gaps) + 1, max_size=len(gaps) + 1
        )
    )
    steps = np.arange(110)  # one shape for every example: no recompilation
    got_right = values(piecewise_constant(boundaries, vals), jnp.asarray(steps))
    np.testing.assert_array_equal(
        got_right, np.float32([keras_piecewise(boundaries, vals, t) for t in steps])
    )
    scales = {b: vals[i + 1] / vals[i] for i, b in enumerate(boundaries)}
    optax_schedule = optax.piecewise_constant_schedule(vals[0], scales)
    got_left = values(piecewise_constant(boundaries, vals, inclusive="left"), jnp.asarray(steps))
    np.testing.assert_allclose(got_left, jax.vmap(optax_schedule)(steps), rtol=1e-5)


# The notes' epoch functions, verbatim in spirit: Python `**` on the epoch and
# Python `if` branches, which cannot be traced.
def exponential_decay_notes(lr0, s):
    def exponential_decay_fn(epoch):
        return lr0 * 0.1 ** (epoch / s)

    return exponential_decay_fn


def piecewise_constant_fn(epoch):
    if epoch < 5:
        return 0.01
    elif epoch < 15:
        return 0.005
    else:
        return 0.001


def test_per_epoch_tabulates_the_notes_functions():
    fn = exponential_decay_notes(lr0=0.01, s=20)
    schedule = per_epoch(fn, steps_per_epoch=3, num_epochs=10)
    steps = np.arange(40)
    expected = [fn(min(t // 3, 9)) for t in steps]
    np.testing.assert_allclose(values(schedule, jnp.asarray(steps)), expected, rtol=1e-6)

    schedule = per_epoch(piecewise_constant_fn, steps_per_epoch=4, num_epochs=20)
    steps = jnp.arange(90)
    by_step = piecewise_constant([20, 60], [0.01, 0.005, 0.001], inclusive="left")
    np.testing.assert_allclose(values(schedule, steps), values(by_step, steps))


def test_per_epoch_traces_arithmetic_functions_without_num_epochs():
    fn = exponential_decay_notes(lr0=0.01, s=20)
    schedule = per_epoch(fn, steps_per_epoch=3)
    steps = np.arange(200)
    expected = [fn(t // 3) for t in steps]  # no clamp: epochs up to 66
    np.testing.assert_allclose(values(schedule, jnp.asarray(steps)), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="num_epochs"):
        per_epoch(piecewise_constant_fn, steps_per_epoch=4)  # branches in Python


def test_per_epoch_under_jit_in_inject_hyperparams():
    fn = exponential_decay_notes(lr0=0.5, s=2)
    steps_per_epoch, num_steps = 3, 14
    tx = optax.inject_hyperparams(optax.sgd)(
        learning_rate=per_epoch(fn, steps_per_epoch=steps_per_epoch, num_epochs=10)
    )
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([1.0, 2.0])}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    lrs = []
    for _ in range(num_steps):
        params, state = step(params, state)
        lrs.append(float(state.hyperparams["learning_rate"]))
    expected = np.float32([fn(t // steps_per_epoch) for t in range(num_steps)])
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    np.testing.assert_allclose(
        params["w"], np.array([1.0, -2.0]) - expected.sum() * np.array([1.0, 2.0]), rtol=1e-5
    )
    assert step._cache_size() == 1


@FEW
@given(
    total_steps=st.integers(2, 300),
    max_lr=st.floats(1e-3, 10.0),
    pct_start=st.floats(0.05, 0.95),
    div_factor=st.floats(1.0, 100.0),
    final_div_factor=st.floats(1.0, 1e4),
)
def test_one_cycle_matches_optax(total_steps, max_lr, pct_start, div_factor, final_div_factor):
    steps = jnp.arange(310)
    got = one_cycle(max_lr, total_steps, pct_start, "cos", div_factor, final_div_factor)(steps)
    cosine = optax.cosine_onecycle_schedule(
        total_steps, max_lr, pct_start, div_factor, final_div_factor
    )
    np.testing.assert_allclose(got, jax.vmap(cosine)(steps), rtol=1e-5, atol=1e-6 * max_lr)

    got = one_cycle(max_lr, total_steps, pct_start, "linear", div_factor, final_div_factor)(steps)
    rise = int(pct_start * total_steps)
    linear = optax.piecewise_interpolate_schedule(
        "linear",
        max_lr / div_factor,
        {rise: div_factor, total_steps: 1.0 / (div_factor * final_div_factor)},
    )
    np.testing.assert_allclose(got, jax.vmap(linear)(steps), rtol=1e-5, atol=1e-6 * max_lr)


def test_one_cycle_endpoints():
    schedule = one_cycle(1.0, total_steps=100, pct_start=0.25, div_factor=10, final_div_factor=100)
    np.testing.assert_allclose(schedule(0), 0.1, rtol=1e-6)
    np.testing.assert_allclose(schedule(25), 1.0, rtol=1e-6)
    np.testing.assert_allclose(schedule(100), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(schedule(500), 1e-3, rtol=1e-6)
    # Half way down the cosine: the mean of peak and final value.
    np.testing.assert_allclose(schedule(25 + 75 / 2), (1.0 + 1e-3) / 2, rtol=1e-6)


@FEW
@given(
    init_value=st.floats(0.0, 0.01),
    peak=st.floats(0.02, 1.0),
    warmup_steps=st.integers(1, 50),
    decay_steps=st.integers(1, 200),
)
def test_warmup_matches_optax(init_value, peak, warmup_steps, decay_steps):
    steps = jnp.arange(260)
    got = warmup(optax.cosine_decay_schedule(peak, decay_steps), warmup_steps, init_value)(steps)
    expected = optax.warmup_cosine_decay_schedule(
        init_value, peak, warmup_steps, warmup_steps + decay_steps
    )(steps)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)

    got = warmup(peak, warmup_steps, init_value)(steps)
    expected = optax.warmup_constant_schedule(init_value, peak, warmup_steps)(steps)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_warmup_without_shift():
    inner = exponential_decay(1.0, 10)
    schedule = warmup(inner, warmup_steps=4, init_value=0.0, shift=False)
    steps = jnp.arange(20)
    target = 0.1 ** (4 / 10)
    expected = [target * t / 4 if t < 4 else 0.1 ** (t / 10) for t in range(20)]
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-6)
    assert float(warmup(inner, warmup_steps=0)(3)) == pytest.approx(0.1**0.3, rel=1e-6)


SCHEDULES = [
    power_decay(0.1, 7.0, c=0.5),
    exponential_decay(0.1, 7.0),
    piecewise_constant([3, 9], [0.1, 0.01, 0.001]),
    per_epoch(piecewise_constant_fn, 2, 20),
    one_cycle(0.1, 30),
    warmup(exponential_decay(0.1, 7.0), 5),
]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_jit_shapes_and_dtype(schedule):
    # Compared with the same values computed eagerly on a flat vector: a scalar
    # step may go through XLA's scalar pow/cos, which differ from the vectorised
    # ones by a few float32 ulps.
    steps = jnp.arange(40, dtype=jnp.int32)
    eager = np.asarray(schedule(steps)).reshape(5, 8)
    jitted = jax.jit(schedule)(steps.reshape(5, 8))
    assert jitted.dtype == jnp.float32 and jitted.shape == (5, 8)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    scalar = jax.jit(schedule)(jnp.int32(3))
    assert scalar.shape == () and scalar.dtype == jnp.float32


def test_traced_hyperparameters_skip_validation():
    got = jax.jit(lambda lr0, s: power_decay(lr0, s)(6))(jnp.float32(0.3), jnp.float32(2.0))
    np.testing.assert_allclose(got, 0.3 / 4, rtol=1e-6)
    got = jax.jit(lambda r: exponential_decay(1.0, 2.0, r)(4))(jnp.float32(0.5))
    np.testing.assert_allclose(got, 0.25, rtol=1e-6)


INVALID = [
    (power_decay, (0.0, 1.0), {}, "lr0=0.0"),
    (power_decay, (0.1, 0.0), {}, "s=0.0"),
    (power_decay, (0.1, 1.0), {"c": 0.0}, "c=0.0"),
    (power_decay, (0.1, 1.0), {"rate": -1.0}, "rate=-1.0"),
    (exponential_decay, (-0.1, 1.0), {}, "lr0=-0.1"),
    (exponential_decay, (0.1, -5), {}, "s=-5"),
    (exponential_decay, (0.1, 1.0), {"rate": 0.0}, "rate=0.0"),
    (piecewise_constant, ([2, 2], [1, 1, 1]), {}, "boundaries=[2, 2]"),
    (piecewise_constant, ([3, 2], [1, 1, 1]), {}, "boundaries=[3, 2]"),
    (piecewise_constant, ([2], [1]), {}, "values=[1]"),
    (piecewise_constant, ([2], [1, 2]), {"inclusive": "both"}, "inclusive='both'"),
    (per_epoch, (piecewise_constant_fn, 0, 5), {}, "steps_per_epoch=0"),
    (per_epoch, (piecewise_constant_fn, 1.5, 5), {}, "steps_per_epoch=1.5"),
    (per_epoch, (piecewise_constant_fn, 2, 0), {}, "num_epochs=0"),
    (one_cycle, (0.0, 10), {}, "max_lr=0.0"),
    (one_cycle, (0.1, 0), {}, "total_steps=0"),
    (one_cycle, (0.1, 10), {"pct_start": 1.0}, "pct_start=1.0"),
    (one_cycle, (0.1, 10), {"anneal_strategy": "exp"}, "anneal_strategy='exp'"),
    (one_cycle, (0.1, 10), {"div_factor": 0.0}, "div_factor=0.0"),
    (one_cycle, (0.1, 10), {"final_div_factor": -1.0}, "final_div_factor=-1.0"),
    (warmup, (0.1, -1), {}, "warmup_steps=-1"),
    (warmup, (0.1, 5), {"init_value": -0.1}, "init_value=-0.1"),
    (warmup, (-0.1, 5), {}, "schedule_or_value=-0.1"),
]


@pytest.mark.parametrize(("factory", "args", "kwargs", "expected"), INVALID)
def test_invalid_hyperparameters_raise(factory, args, kwargs, expected):
    # The message names the argument, its value and what is accepted.
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        factory(*args, **kwargs)
    assert re.search(r"range|must", str(info.value))


def _epoch_rate(epoch):
    return 0.1 * 0.5**epoch


# (a schedule built by a factory, its description: the factory and every argument)
DESCRIBED = [
    (lambda: exponential_decay(0.1, 100), ("exponential_decay", {
        "lr0": 0.1, "s": 100, "rate": 0.1, "staircase": False})),
    (lambda: power_decay(0.1, s=10, staircase=True, rate=0.5), ("power_decay", {
        "lr0": 0.1, "s": 10, "c": 1.0, "staircase": True, "rate": 0.5})),
    (lambda: piecewise_constant([2, 5], [1.0, 0.5, 0.1]), ("piecewise_constant", {
        "boundaries": [2, 5], "values": [1.0, 0.5, 0.1], "inclusive": "right"})),
    (lambda: per_epoch(_epoch_rate, 4, num_epochs=3), ("per_epoch", {
        "schedule": _epoch_rate, "steps_per_epoch": 4, "num_epochs": 3})),
    (lambda: one_cycle(1.0, 10), ("one_cycle", {
        "max_lr": 1.0, "total_steps": 10, "pct_start": 0.3, "anneal_strategy": "cos",
        "div_factor": 25.0, "final_div_factor": 1e4})),
    (lambda: warmup(0.1, 4), ("warmup", {
        "schedule_or_value": 0.1, "warmup_steps": 4, "init_value": 0.0, "shift": True})),
]


@pytest.mark.parametrize("make, expected", DESCRIBED, ids=[d[1][0] for d in DESCRIBED])
def test_describe_gives_the_factory_and_every_argument(make, expected):
    assert describe(make()) == expected


@pytest.mark.parametrize("other", [lambda step: 0.1, optax.constant_schedule(0.1), max, None, 3],
                         ids=["lambda", "optax", "builtin", "None", "number"])
def test_describe_gives_none_for_what_no_factory_returned(other):
    assert describe(other) is None
