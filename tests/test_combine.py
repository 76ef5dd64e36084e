"""switch against closed forms: plain and momentum SGD on a constant gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stablejax import combine


def updates_of(tx, steps, gradient=1.0):
    state = tx.init(jnp.zeros(1))
    out = []
    for _ in range(steps):
        updates, state = tx.update(jnp.full(1, gradient), state)
        out.append(float(updates[0]))
    return out, state


def test_first_then_a_fresh_then():
    # SGD(1) for two updates, then momentum SGD(0.1, 0.9) from an empty velocity:
    # -0.1, -0.1 - 0.09, -0.1 - 0.09 - 0.081 (the velocity of a constant gradient).
    tx = combine.switch(optax.sgd(1.0), optax.sgd(0.1, momentum=0.9), boundary=2)
    updates, state = updates_of(tx, 5)
    np.testing.assert_allclose(updates, [-1.0, -1.0, -0.1, -0.19, -0.271], rtol=1e-6)
    assert int(state.count) == 5 and int(state.boundary) == 2


def test_first_state_is_kept_but_frozen_after_the_switch():
    tx = combine.switch(optax.sgd(0.5, momentum=0.5), optax.sgd(0.1), boundary=1)
    _, state = updates_of(tx, 3, gradient=2.0)
    np.testing.assert_allclose(state.first[0].trace, [2.0])  # one update: trace = g


def test_boundary_zero_runs_then_from_the_start():
    updates, _ = updates_of(combine.switch(optax.sgd(1.0), optax.sgd(0.25), 0), 2)
    assert updates == [-0.25, -0.25]


def test_one_program_for_both_phases():
    tx = combine.switch(optax.sgd(1.0), optax.adam(0.1), boundary=2)
    traces = []

    @jax.jit
    def step(g, state):
        traces.append(1)
        return tx.update(g, state)

    state = tx.init(jnp.zeros(3))
    for _ in range(4):
        _, state = step(jnp.ones(3), state)
    assert len(traces) == 1


@pytest.mark.parametrize("boundary", [-1, 2.0, None])
def test_boundary_must_be_a_nonnegative_integer(boundary):
    with pytest.raises(ValueError, match=r"boundary must be an integer >= 0"):
        combine.switch(optax.identity(), optax.identity(), boundary)


def test_extra_arguments_reach_a_plateau_inside_the_running_phase():
    # patience 0: the first value improves, the second (worse) halves the rate at once,
    # and passed to `update` the new scale already applies to that update.
    from stablejax import optimizers
    from stablejax.plateau import reduce_on_plateau

    first = optimizers.sgd(1.0, plateau=reduce_on_plateau(factor=0.5, patience=0))
    tx = combine.switch(first, optax.sgd(0.1), boundary=3)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    state = tx.init(jnp.zeros(1))
    out = []
    for value in (1.0, 2.0, 3.0, 4.0):
        updates, state = tx.update(jnp.ones(1), state, value=value)
        out.append(float(updates[0]))
    # The fourth update is `then`'s, a plain Optax transform that takes no extra argument.
    np.testing.assert_allclose(out, [-1.0, -0.5, -0.25, -0.1], rtol=1e-7)


def test_extra_arguments_pass_through_jit():
    from stablejax import optimizers
    from stablejax.plateau import reduce_on_plateau

    tx = combine.switch(optax.sgd(1.0), optimizers.sgd(
        0.1, plateau=reduce_on_plateau(factor=0.1, patience=0)), boundary=0)
    state = tx.init(jnp.zeros(2))
    update = jax.jit(lambda g, s, v: tx.update(g, s, value=v))
    first, state = update(jnp.ones(2), state, 1.0)
    second, state = update(jnp.ones(2), state, 2.0)
    np.testing.assert_allclose([first[0], second[0]], [-0.1, -0.01], rtol=1e-7)
