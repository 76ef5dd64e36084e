"""The non-finite guard against an unguarded run of the same transform and optax.apply_if_finite."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stablejax import guard, transforms


def test_skip_nonfinite_skips_and_counts():
    inner = optax.chain(transforms.scale_by_adam(), optax.scale(-0.1))
    tx = jax.jit(guard.skip_nonfinite(inner).update)
    reference = inner
    w = jnp.array([1.0, -2.0])
    state, ref_state = guard.skip_nonfinite(inner).init(w), reference.init(w)
    finite, bad = jnp.array([0.5, 1.0]), jnp.array([0.5, jnp.nan])
    sequence = [finite, bad, bad, finite, jnp.array([jnp.inf, 0.0]), finite]
    expected_counts = [(0, 0), (1, 1), (2, 2), (2, 0), (3, 1), (3, 0)]
    for g, (skipped, consecutive) in zip(sequence, expected_counts, strict=True):
        updates, state = tx(g, state)
        if bool(jnp.all(jnp.isfinite(g))):
            ref_updates, ref_state = reference.update(g, ref_state)
            np.testing.assert_allclose(updates, ref_updates, rtol=1e-6)
        else:
            np.testing.assert_array_equal(updates, jnp.zeros(2))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                     state.inner_state, ref_state)
        assert (int(state.skipped), int(state.consecutive)) == (skipped, consecutive)


def test_skip_nonfinite_never_gives_up_unlike_apply_if_finite():
    inner = optax.sgd(0.1)
    w = jnp.ones(2)
    bad = jnp.array([jnp.nan, 1.0])
    ours, theirs = guard.skip_nonfinite(inner), optax.apply_if_finite(inner, 2)
    ours_state, theirs_state = ours.init(w), theirs.init(w)
    for _ in range(4):
        ours_updates, ours_state = ours.update(bad, ours_state)
        theirs_updates, theirs_state = theirs.update(bad, theirs_state)
    np.testing.assert_array_equal(ours_updates, jnp.zeros(2))
    assert bool(jnp.isnan(theirs_updates[0]))


@pytest.mark.parametrize(
    "tree, expected",
    [
        ({"a": jnp.ones(3), "b": [jnp.zeros((2, 2))]}, True),
        ({"a": jnp.ones(3), "b": [jnp.asarray([[0.0, jnp.nan]])]}, False),
        ({"a": jnp.asarray([-jnp.inf]), "b": None}, False),
        ({}, True),
    ],
)
def test_all_finite(tree, expected):
    assert bool(guard.all_finite(tree)) is expected
