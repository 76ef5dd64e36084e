"""Clipping against docs/parity.md section 4, Optax and closed forms."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings

from stablejax import clipping

SETTINGS = settings(max_examples=25, deadline=None)

# docs/parity.md section 4: g1 = [3, 4], g2 = [12], global norm 13.
GRADS = {"g1": jnp.array([3.0, 4.0]), "g2": jnp.array([12.0])}


@pytest.mark.parametrize(
    "tx, g1, g2",
    [
        (clipping.clip_by_norm(1.0), [0.6, 0.8], [1.0]),
        (clipping.clip_by_global_norm(1.0), [0.23076925, 0.30769232], [0.92307699]),
        (clipping.clip_by_value(3.5), [3.0, 3.5], [3.5]),
        (clipping.clip_by_norm(20.0), [3.0, 4.0], [12.0]),
    ],
    ids=["clipnorm=1", "global_clipnorm=1", "clipvalue=3.5", "clipnorm=20"],
)
def test_keras_table(tx, g1, g2):
    clipped, _ = tx.update(GRADS, tx.init(GRADS))
    np.testing.assert_allclose(clipped["g1"], g1, rtol=1e-6)
    np.testing.assert_allclose(clipped["g2"], g2, rtol=1e-6)


@st.composite
def trees(draw):
    """A dict of arrays (a nested list included) with random values and scale."""
    shapes = draw(st.sampled_from([[(3,)], [(2, 3), (), (4,)], [(1,), (3, 1)]]))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    leaves = [np.asarray(rng.normal(size=s) * scale) for s in shapes]
    return {"first": leaves[0], "rest": leaves[1:]}


def global_norm(tree):
    return np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree)))


@SETTINGS
@given(tree=trees(), fraction=st.floats(0.01, 1.0))
def test_global_norm_is_optax_above_the_threshold(tree, fraction):
    c = fraction * global_norm(tree)
    with jax.enable_x64(True):
        ours, _ = clipping.clip_by_global_norm(c).update(tree, optax.EmptyState())
        theirs, _ = optax.clip_by_global_norm(c).update(tree, optax.EmptyState())
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), ours, theirs)
        assert global_norm(ours) == pytest.approx(c, rel=1e-12)


@SETTINGS
@given(tree=trees(), factor=st.floats(1.0, 100.0))
def test_global_norm_below_the_threshold_leaves_the_gradients(tree, factor):
    with jax.enable_x64(True):
        ours, _ = clipping.clip_by_global_norm(factor * global_norm(tree)).update(
            tree, optax.EmptyState()
        )
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-15), ours, tree)


@SETTINGS
@given(tree=trees(), c=st.floats(1e-4, 1e4))
def test_per_tensor_norm_closed_form(tree, c):
    # Each tensor keeps its direction and ends with norm min(||g||, c).
    with jax.enable_x64(True):
        ours, _ = clipping.clip_by_norm(c).update(tree, optax.EmptyState())
    for g, clipped in zip(jax.tree.leaves(tree), jax.tree.leaves(ours), strict=True):
        norm = np.linalg.norm(g)
        np.testing.assert_allclose(np.linalg.norm(clipped), min(norm, c), rtol=1e-12)
        np.testing.assert_allclose(clipped, g * (min(norm, c) / norm), rtol=1e-12)


@pytest.mark.parametrize("c", [0.5, 1.0, 3.5, 1e4])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_clip_by_value_closed_form(c, dtype):
    # Inside, outside and exactly on both bounds, zeros of both signs, infinities and NaN:
    # np.clip's numbers (NaN stays NaN), rounded to the gradient's dtype.
    g = np.array([0.0, -0.0, 0.25, -0.25, c, -c, 2 * c, -2 * c, 1e30, -np.inf, np.inf,
                  np.nan], np.float32)
    tx = clipping.clip_by_value(c)
    grads = {"a": jnp.asarray(g, dtype), "b": [jnp.asarray(g[::-1].reshape(3, 4), dtype)]}
    clipped, _ = jax.jit(tx.update)(grads, tx.init(grads))
    for got, x in ((clipped["a"], g), (clipped["b"][0], g[::-1].reshape(3, 4))):
        assert got.dtype == dtype
        x = np.asarray(jnp.asarray(x, dtype), np.float64)
        expected = np.asarray(jnp.asarray(np.clip(x, -c, c), dtype), np.float64)
        np.testing.assert_array_equal(np.asarray(got, np.float64), expected)


@pytest.mark.parametrize(
    "tx", [clipping.clip_by_value(1.0), clipping.clip_by_norm(1.0),
           clipping.clip_by_global_norm(1.0)],
    ids=["value", "norm", "global_norm"],
)
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.bool_])
def test_integer_gradients_are_refused_naming_the_leaf(tx, dtype):
    # Clipped integers would be truncated (most to 0) or change dtype: refused at trace time.
    grads = {"w": jnp.ones(2), "count": jnp.arange(3).astype(dtype)}
    with pytest.raises(ValueError, match=rf"updates\['count'\] has dtype {jnp.dtype(dtype)}"):
        jax.jit(tx.update)(grads, tx.init(grads))


def test_zero_gradients_stay_zero():
    zeros = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
    for tx in (clipping.clip_by_norm(1.0), clipping.clip_by_global_norm(1.0)):
        clipped, _ = tx.update(zeros, tx.init(zeros))
        jax.tree.map(np.testing.assert_array_equal, clipped, zeros)


def test_a_nonfinite_global_norm_poisons_every_gradient():
    # Keras: scale = c * min(1/n, 1/c) + (n - n), NaN when n is not finite.
    grads = {"a": jnp.array([1.0, jnp.inf]), "b": jnp.array([2.0])}
    clipped, _ = clipping.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    assert all(bool(jnp.all(jnp.isnan(x))) for x in jax.tree.leaves(clipped))


@pytest.mark.parametrize(
    "tx",
    [clipping.clip_by_value(0.1), clipping.clip_by_norm(0.1), clipping.clip_by_global_norm(0.1)],
    ids=["value", "norm", "global_norm"],
)
def test_bfloat16_gradients_stay_bfloat16(tx):
    grads = {"a": jnp.arange(4.0, dtype=jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
    clipped, _ = tx.update(grads, tx.init(grads))
    assert clipped["a"].dtype == jnp.bfloat16 and clipped["b"].dtype == jnp.float32


def reference_clip(tree, c, per_tensor):
    """float64 numpy: g * c / max(norm, c), per tensor or over the whole tree."""
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
    if per_tensor:
        return [g * (c / max(np.linalg.norm(g), c)) for g in leaves]
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in leaves))
    return [g * (c / max(norm, c)) for g in leaves]


# Finite float32 gradients whose sum of squares overflows float32 (> 3.4e38).
HUGE = [
    {"a": jnp.full(4, 2e19, jnp.float32), "b": jnp.array([1.0, -3e19], jnp.float32)},
    {"a": jnp.array([3e38, -3e38], jnp.float32), "b": jnp.zeros(3, jnp.float32)},
    {"a": jnp.array([2e19], jnp.float32), "b": jnp.array([1e-30, -1.0], jnp.float32)},
]


@pytest.mark.parametrize("per_tensor", [True, False], ids=["clipnorm", "global_clipnorm"])
@pytest.mark.parametrize("tree", HUGE, ids=["2e19", "max-float", "mixed-scales"])
def test_huge_finite_gradients_are_clipped_without_overflow(tree, per_tensor):
    tx = clipping.clip_by_norm(1.0) if per_tensor else clipping.clip_by_global_norm(1.0)
    clipped, _ = tx.update(tree, optax.EmptyState())
    for ours, expected in zip(jax.tree.leaves(clipped), reference_clip(tree, 1.0, per_tensor),
                              strict=True):
        assert ours.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(ours)))
        # float32 rounding of the ratio and of the product (atol: float32's smallest normal).
        np.testing.assert_allclose(ours, expected, rtol=5e-7, atol=1.2e-38)
    norms = [np.linalg.norm(np.asarray(x, np.float64)) for x in jax.tree.leaves(clipped)]
    if per_tensor:
        np.testing.assert_allclose([n for n in norms if n > 0], 1.0, rtol=5e-7)
    else:
        np.testing.assert_allclose(np.sqrt(np.sum(np.square(norms))), 1.0, rtol=5e-7)


@pytest.mark.parametrize("per_tensor", [True, False], ids=["clipnorm", "global_clipnorm"])
@pytest.mark.parametrize("seed", range(5))
def test_ordinary_float32_gradients_match_the_float64_reference(seed, per_tensor):
    rng = np.random.default_rng(seed)
    tree = {"a": rng.normal(size=(7, 5)) * 10.0, "b": rng.normal(size=3), "c": np.zeros(2)}
    tree32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
    tx = clipping.clip_by_norm(1.0) if per_tensor else clipping.clip_by_global_norm(1.0)
    clipped, _ = tx.update(tree32, optax.EmptyState())
    for ours, expected in zip(jax.tree.leaves(clipped), reference_clip(tree32, 1.0, per_tensor),
                              strict=True):
        np.testing.assert_allclose(ours, expected, rtol=5e-7)


def test_an_infinite_gradient_still_gives_nan_per_tensor_as_before():
    clipped, _ = clipping.clip_by_norm(1.0).update(jnp.array([1.0, jnp.inf]), optax.EmptyState())
    np.testing.assert_array_equal(clipped, [0.0, np.nan])
