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
