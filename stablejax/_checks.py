"""Argument validation shared by every factory: one message format, tracers skipped.

Only Python and numpy scalars are checked: ``optax.inject_hyperparams`` calls a factory
again with JAX arrays (tracers under ``jit``), which cannot be compared in Python.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable
from typing import Any


def require(name: str, value: Any, ok: Callable[[Any], bool], accepted: str) -> None:
    """Raises ``ValueError`` naming ``name``, ``value`` and ``accepted`` unless ``ok(value)``."""
    if isinstance(value, numbers.Real) and not ok(value):
        raise ValueError(f"{name}={value!r} is outside its accepted range {accepted}")


def require_int(name: str, value: Any, low: int) -> None:
    """Raises ``ValueError`` unless ``value`` is an integer >= ``low``."""
    if isinstance(value, numbers.Real) and not (float(value).is_integer() and float(value) >= low):
        raise ValueError(f"{name}={value!r} must be an integer in [{low}, inf)")


def check_range(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises ``ValueError`` unless ``value`` lies in the interval from ``low`` to ``high``."""
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    require(
        name,
        value,
        lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high),
        interval,
    )


def index(name: str, value: Any, low: int) -> int:
    """Returns ``value`` as an int after checking that it is an integer >= ``low``.

    Unlike the checks above it rejects arrays too: it is for counts and sizes that are
    never traced (epochs, batch sizes, seeds).
    """
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}") from None
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value
