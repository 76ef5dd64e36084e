"""Argument checks shared by the layers of ``stablejax.nn``: sizes, flags, rngs, widths."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

ActivationLike = str | Callable[[jax.Array], jax.Array]


def as_size(name: str, value: Any) -> int:
    """``value`` as an int after checking it is an integer >= 1 (NumPy ints too, not bools).

    ``_checks.index`` takes bools as 0 and 1; a bool given as a layer size is a mistake.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (a layer size), got {value!r}")
    return int(value)


def as_flag(name: str, value: Any) -> bool:
    """``value`` as a bool, after checking that it is one (a truthy string is a mistake)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_rngs(rngs: Any) -> None:
    """Raises ``TypeError`` unless ``rngs`` is an ``nnx.Rngs``."""
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be a flax.nnx.Rngs, e.g. rngs=nnx.Rngs(0), got {rngs!r}")


def check_initializer(name: str, init: Any) -> None:
    """Raises ``TypeError`` naming ``name`` unless ``init`` is None or callable."""
    if init is not None and not callable(init):
        raise TypeError(f"{name} must be None or an initializer init(key, shape, dtype), e.g. "
                        f"stablejax.initializers.he_normal(), got {init!r}")


def check_width(layer: str, axis_name: str, expected: int, x: jax.Array, axis: int) -> None:
    """Raises ``ValueError`` unless ``x`` has ``expected`` features on ``axis``.

    ``layer`` and ``axis_name`` (the constructor argument that set the width) name the
    layer in the message.
    """
    # Static shapes: checked while tracing, before anything compiles.
    if x.ndim == 0 or x.shape[axis] != expected:
        raise ValueError(
            f"{layer} expects inputs with {expected} features on axis {axis} "
            f"({axis_name}={expected}), got an input of shape {tuple(x.shape)}"
        )
