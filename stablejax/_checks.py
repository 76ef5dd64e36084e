"""Argument validation shared by every factory: one message format, tracers skipped.

A hyperparameter is a *number* when it is a Python ``int`` or ``float``, a NumPy scalar
(``np.float32(0.1)``, ``np.int64(4)``) or a concrete 0-d NumPy or JAX array
(``jnp.array(1e-3)``): all of these are checked alike. Booleans, strings, ``None`` and
arrays with dimensions are not numbers and are refused with a ``ValueError`` naming the
argument. A traced value (a ``jax.core.Tracer``: an argument of a ``jit``-ed or
``vmap``-ed function, e.g. when ``optax.inject_hyperparams`` calls a factory again inside
the compiled update) has no value yet: it cannot be checked and is skipped.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(value: Any) -> bool:
    """True for a JAX tracer, whose value is unknown until the compiled code runs."""
    return isinstance(value, jax.core.Tracer)


def concrete(name: str, value: Any, accepted: str) -> float | None:
    """``value`` as a float, or ``None`` for a traced value.

    Raises ``ValueError`` naming ``name`` and ``accepted`` unless ``value`` is a number
    (see the module docstring): a bool, a string, ``None`` or an array with dimensions.
    """
    if is_traced(value):
        return None
    is_array = isinstance(value, np.ndarray | jax.Array)
    if isinstance(value, bool | np.bool_) or (is_array and value.dtype == bool):
        pass  # `True` is an int to Python, never a hyperparameter here
    elif isinstance(value, numbers.Real):
        return float(value)
    elif is_array and value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.number) and not (
        jnp.issubdtype(value.dtype, jnp.complexfloating)
    ):
        return float(value)
    raise ValueError(f"{name} must be a real number in {accepted}, got {value!r}")


def require(name: str, value: Any, ok: Callable[[float], bool], accepted: str) -> None:
    """Raises ``ValueError`` naming ``name``, ``value`` and ``accepted`` unless ``ok(value)``.

    ``value`` must be a number (see the module docstring); a traced one is not checked.
    """
    number = concrete(name, value, accepted)
    if number is not None and not ok(number):
        raise ValueError(f"{name}={value!r} is outside its accepted range {accepted}")


def require_int(name: str, value: Any, low: int) -> None:
    """Raises ``ValueError`` unless ``value`` is an integer >= ``low`` (``4.0`` counts).

    A traced value is not checked.
    """
    require(name, value, lambda v: v.is_integer() and v >= low, f"integers in [{low}, inf)")


def check_range(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises ``ValueError`` unless ``value`` lies in the interval from ``low`` to ``high``.

    NaN lies in no interval; infinity only in one closed at ``inf``. A traced value is not
    checked.
    """
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    require(
        name,
        value,
        lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high),
        interval,
    )


def positive(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is a finite number > 0."""
    check_range(name, value, 0, math.inf, low_open=True, high_open=True)


def non_negative(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is a finite number >= 0."""
    check_range(name, value, 0, math.inf, high_open=True)


def index(name: str, value: Any, low: int) -> int:
    """Returns ``value`` as an int after checking that it is an integer >= ``low``.

    Unlike the checks above it rejects traced arrays and floats too: it is for counts and
    sizes that are never traced (epochs, batch sizes, seeds). Python and NumPy integers
    and concrete 0-d integer arrays are accepted; bools are not.
    """
    try:
        if isinstance(value, bool | np.bool_):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}") from None
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def writable_directory(directory: str | os.PathLike, name: str) -> None:
    """Creates the directory ``name`` if needed; a ValueError before training if it cannot
    be written (a file, a path under a file, no permission), not after the first epoch."""
    path = os.fspath(directory)
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{name} {path!r} is, or is under, a file: give a "
                         "directory") from None
    except OSError as error:
        raise ValueError(f"{name} {path!r} cannot be created: {error.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path!r} is not writable")


def describe(value: Any) -> str:
    """``value`` for a message: an array by its shape, anything else by a short repr and
    its type."""
    if isinstance(value, (np.ndarray, jax.Array)):
        return f"an array of shape {tuple(value.shape)}"
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{text} ({type(value).__name__})"
