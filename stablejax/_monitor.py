"""The improvement test shared by plateau scheduling, early stopping and the callbacks.

Keras's ``ReduceLROnPlateau``, ``EarlyStopping`` and ``ModelCheckpoint`` watch a logged
value in a mode: ``"min"`` (lower is better), ``"max"``, or ``"auto"`` (``"max"`` for a
monitor whose name contains ``"acc"``, ``"min"`` otherwise).
"""

from __future__ import annotations

from typing import Any

MODES = {"min": 1.0, "max": -1.0}


def check_mode(mode: Any, auto: bool = True) -> None:
    """Raises ``ValueError`` unless ``mode`` is ``"min"``, ``"max"`` (or ``"auto"``)."""
    accepted = ("auto", *MODES) if auto else tuple(MODES)
    if mode not in accepted:
        raise ValueError(f"mode={mode!r} must be one of {', '.join(map(repr, accepted))}")


def resolve(monitor: str, mode: str) -> str:
    """``mode``, with ``"auto"`` resolved from the monitor's name as Keras does."""
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


def sign_of(mode: str) -> float:
    """``+1`` for ``"min"``, ``-1`` for ``"max"``: ``sign * value`` is to be lowered."""
    check_mode(mode, auto=False)
    return MODES[mode]


def improves(sign: Any, value: Any, min_delta: Any, reference: Any) -> Any:
    """Whether ``value`` improves on ``reference`` by more than ``min_delta``.

    Keras tests ``value + min_delta < best`` ("min") and ``value - min_delta > best``
    ("max"); with ``sign = -1`` the second is the first negated, which is exact in
    floating point, so both modes share one comparison. Works on numbers and arrays.
    """
    return sign * value + min_delta < sign * reference
