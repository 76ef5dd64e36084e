"""The scale_by_* transforms against Optax where the formula is the same, and closed forms."""

import math

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings

from stablejax import transforms

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def gradient_sequences(draw, steps=3):
    """A tree (dict with a nested list), random values and `steps` float64 gradients."""
    # A few layouts only: eager JAX compiles each primitive once per shape.
    shapes = draw(st.sampled_from([[(3,)], [(2, 3), (), (4,)], [(1,), (3, 1)]]))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def tree():
        leaves = [np.asarray(rng.normal(size=s) * scale) for s in shapes]
        return {"first": leaves[0], "rest": leaves[1:]}

    return tree(), [tree() for _ in range(steps)]


def run(tx, params, grads):
    """Feeds the gradients in turn; returns every update (eager: no per-example compile)."""
    state = tx.init(params)
    outputs = []
    for g in grads:
        updates, state = tx.update(g, state, params)
        outputs.append(updates)
    return outputs, state


def assert_trees_close(actual, expected, rtol):
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=0), actual, expected)


@SETTINGS
@given(data=gradient_sequences(), rate=st.floats(1e-3, 1.0),
       momentum=st.floats(0.01, 0.99), nesterov=st.booleans())
def test_momentum_with_a_constant_rate_is_optax_sgd(data, rate, momentum, nesterov):
    # lr inside the velocity (Keras) equals lr outside (Optax) while the rate is constant.
    params, grads = data
    with jax.enable_x64(True):
        ours = optax.chain(
            optax.scale_by_learning_rate(rate), transforms.scale_by_momentum(momentum, nesterov)
        )
        theirs = optax.sgd(rate, momentum=momentum, nesterov=nesterov)
        assert_trees_close(run(ours, params, grads)[0], run(theirs, params, grads)[0], 1e-10)


@SETTINGS
@given(data=gradient_sequences(), acc0=st.floats(0.0, 1.0), eps=st.floats(1e-8, 1e-1))
def test_adagrad_is_optax_adagrad(data, acc0, eps):
    params, grads = data
    with jax.enable_x64(True):
        ours = optax.chain(transforms.scale_by_adagrad(acc0, eps), optax.scale(-0.1))
        theirs = optax.adagrad(0.1, initial_accumulator_value=acc0, eps=eps)
        assert_trees_close(run(ours, params, grads)[0], run(theirs, params, grads)[0], 1e-12)


@SETTINGS
@given(data=gradient_sequences(), rho=st.floats(0.0, 0.999), eps=st.floats(1e-8, 1e-1),
       centered=st.booleans())
def test_rmsprop_is_optax_scale_by_rms_or_stddev(data, rho, eps, centered):
    params, grads = data
    with jax.enable_x64(True):
        ours = transforms.scale_by_rmsprop(rho, eps, centered)
        theirs = (
            optax.scale_by_stddev(decay=rho, eps=eps)
            if centered
            else optax.scale_by_rms(decay=rho, eps=eps, eps_in_sqrt=True)
        )
        assert_trees_close(run(ours, params, grads)[0], run(theirs, params, grads)[0], 1e-9)


@SETTINGS
@given(data=gradient_sequences(), b1=st.floats(0.0, 0.99), b2=st.floats(0.5, 0.9999),
       eps=st.floats(1e-8, 1e-1))
def test_adam_is_optax_adam_with_the_epsilon_hat_mapping(data, b1, b2, eps):
    # Keras's eps equals Optax's step-dependent eps / sqrt(1 - b2**t) (docs/parity.md §5.4).
    params, grads = data
    with jax.enable_x64(True):
        ours = transforms.scale_by_adam(b1, b2, eps)
        theirs = optax.inject_hyperparams(optax.scale_by_adam)(
            b1=b1, b2=b2, eps=lambda count: eps / jnp.sqrt(1 - b2 ** (count + 1.0))
        )
        assert_trees_close(run(ours, params, grads)[0], run(theirs, params, grads)[0], 1e-9)


@SETTINGS
@given(data=gradient_sequences(), b1=st.floats(0.0, 0.99), eps=st.floats(1e-8, 1e-1))
def test_nadam_without_schedule_is_optax_nadam(data, b1, eps):
    params, grads = data
    with jax.enable_x64(True):
        ours = transforms.scale_by_nadam(b1, 0.999, eps, momentum_decay=math.inf)
        theirs = optax.scale_by_adam(b1, 0.999, eps, nesterov=True)
        assert_trees_close(run(ours, params, grads)[0], run(theirs, params, grads)[0], 1e-9)


def test_adam_first_step_closed_form():
    # m1 = (1-b1) g, v1 = (1-b2) g**2: update = g / (|g| + eps / sqrt(1 - b2)).
    g = jnp.array([1e-6, -0.5, 3.0])
    with jax.enable_x64(True):
        g = g.astype(jnp.float64)
        (update,), _ = run(transforms.scale_by_adam(0.9, 0.99, epsilon=1e-3), g, [g])
        np.testing.assert_allclose(update, g / (jnp.abs(g) + 1e-3 / math.sqrt(0.01)), rtol=1e-12)


def test_amsgrad_uses_the_largest_second_moment():
    b1, b2, eps = 0.9, 0.5, 1e-7
    grads = [np.array([10.0, -1.0]), np.array([0.1, -1.0]), np.array([0.1, 2.0])]
    m, v, v_max, expected = 0.0, 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        m = m + (g - m) * (1 - b1)
        v = v + (g**2 - v) * (1 - b2)
        v_max = np.maximum(v_max, v)
        expected.append(math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v_max) + eps))
    with jax.enable_x64(True):
        actual, state = run(transforms.scale_by_adam(b1, b2, amsgrad=True), grads[0], grads)
        plain, _ = run(transforms.scale_by_adam(b1, b2), grads[0], grads)
    assert_trees_close(actual, expected, 1e-12)
    assert np.abs(actual[2][0]) < 0.6 * np.abs(plain[2][0])
    np.testing.assert_allclose(state.nu_max, v_max, rtol=1e-12)


@pytest.mark.parametrize("psi, product", [(1.0, 0.0314615235), (0.004, 0.0184980376)])
def test_nadam_momentum_product_matches_the_schedule(psi, product):
    # docs/parity.md §5.5: the product of mu_1..mu_5 for beta_1 = 0.9, given to 10 decimals.
    with jax.enable_x64(True):
        g = jnp.ones(2, jnp.float64)
        _, state = run(transforms.scale_by_nadam(momentum_decay=psi), g, [g] * 5)
        assert state.mu_product.dtype == jnp.float64
        np.testing.assert_allclose(state.mu_product, product, rtol=0, atol=5e-11)
        assert int(state.count) == 5


def test_momentum_keeps_each_rate_inside_the_velocity():
    # Feeding u_t = -lr_t g_t: v_t = sum_k m**(t-k) u_k, the rate of each step kept.
    g = np.array([1.0, -2.0])
    rates = [0.1, 0.05, 0.02]
    inputs = [jnp.asarray(-r * g, jnp.float32) for r in rates]
    outputs, _ = run(transforms.scale_by_momentum(0.9), jnp.asarray(g), inputs)
    expected = -(0.81 * 0.1 + 0.9 * 0.05 + 0.02) * g
    np.testing.assert_allclose(outputs[-1], expected, rtol=1e-6)


ALL = [
    transforms.scale_by_momentum(0.9),
    transforms.scale_by_adagrad(),
    transforms.scale_by_rmsprop(centered=True),
    transforms.scale_by_adam(amsgrad=True),
    transforms.scale_by_nadam(),
]
NAMES = ["momentum", "adagrad", "rmsprop", "adam", "nadam"]


@pytest.mark.parametrize("tx", ALL, ids=NAMES)
def test_state_is_float32_for_half_parameters_and_counts_are_int32(tx):
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.ones(3, jnp.float32)}
    state = tx.init(params)
    updates, new_state = tx.update(params, state, params)
    assert jax.tree.map(lambda x: x.dtype, updates) == jax.tree.map(lambda x: x.dtype, params)
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state), strict=True):
        assert old.dtype == new.dtype and old.shape == new.shape
    if "count" in state._fields:
        assert state.count.dtype == jnp.int32
    if "mu" in state._fields:
        assert state.mu["w"].dtype == jnp.float32 and state.mu["b"].dtype == jnp.float32
    for moment in jax.tree.leaves(state):
        assert moment.dtype in (jnp.int32, jnp.float32)


@pytest.mark.parametrize("tx", ALL, ids=NAMES)
def test_a_state_for_another_tree_is_rejected_with_the_path(tx):
    state = tx.init({"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}})
    other = {"dense": {"kernel": jnp.ones(2), "scale": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"\['dense'\]\['scale'\]"):
        tx.update(other, state)
