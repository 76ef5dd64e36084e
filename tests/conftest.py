"""Shared fixtures and helpers of the training tests."""

import os

# Tests compile from scratch: no compiled program is read from or written to the user's
# persistent cache (tests/test_compilation_cache.py turns it on in its own processes).
os.environ["STABLEJAX_CACHE_DIR"] = "off"

import jax
import numpy as np
import pytest
from flax import nnx

import stablejax as sj


@pytest.fixture(scope="session")
def digits():
    """The bundled digits splits (seed 0)."""
    return sj.data.digits(seed=0)


def small_mlp(seed=0, activation="elu", batch_norm="after", hidden=(32,), output="softmax"):
    """A small MLP on 8x8 digits: batch norm after each hidden layer by default, softmax
    outputs for the default loss (``output=None``: logits, for the ``_from_logits`` ones)."""
    return sj.nn.mlp(
        list(hidden),
        input_shape=(8, 8),
        activation=activation,
        batch_norm=batch_norm,
        output_activation=output,
        rngs=nnx.Rngs(seed),
    )


def _numpy(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def tree_equal(a, b) -> bool:
    """True when both pytrees have bitwise-equal leaves (PRNG keys by their data)."""
    la = [_numpy(x) for x in jax.tree.leaves(a)]
    lb = [_numpy(x) for x in jax.tree.leaves(b)]
    return len(la) == len(lb) and all(
        np.array_equal(x, y) for x, y in zip(la, lb, strict=True)
    )
