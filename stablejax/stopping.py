"""Early stopping as a pure state machine (Keras 3's ``EarlyStopping``, step for step).

:func:`early_stopping` returns ``init``/``update`` functions; ``update`` is called once
per epoch with the monitored value and reports whether the epoch improved and whether
to stop. Its state is a few scalar arrays, so it is jit-able, saved with the run and
resumes exactly. The training loop's callback is ``stablejax.callbacks.EarlyStopping``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from stablejax._checks import require, require_int
from stablejax._monitor import improves, sign_of

__all__ = ["EarlyStoppingState", "EarlyStoppingFns", "early_stopping"]


class EarlyStoppingState(NamedTuple):
    """State of :func:`early_stopping`; every field is a scalar array."""

    best: jax.Array  # float32 best value seen, +inf ("min") / -inf ("max") before any
    best_epoch: jax.Array  # int32 epoch of `best`, -1 before any
    wait: jax.Array  # int32
    epoch: jax.Array  # int32, number of values observed (index of the next epoch)


class EarlyStoppingFns(NamedTuple):
    """The pair of pure functions returned by :func:`early_stopping`."""

    init: Callable[[], EarlyStoppingState]
    update: Callable[
        [EarlyStoppingState, jax.typing.ArrayLike],
        tuple[EarlyStoppingState, jax.Array, jax.Array],
    ]


def early_stopping(
    patience: int = 0,
    min_delta: float = 0.0,
    mode: str = "min",
    baseline: float | None = None,
    start_from_epoch: int = 0,
) -> EarlyStoppingFns:
    r"""Early stopping as a pure state machine (Keras 3's ``EarlyStopping``).

    ``update(state, value)`` is called once per epoch with the monitored value
    and returns ``(state, improved, stop)``. For epochs ``>= start_from_epoch``
    ("min" mode shown, "max" flips the test):

    .. code-block:: text

        wait += 1
        if first monitored value or v + min_delta < best:
            best = v; improved = True
            if baseline is None or v + min_delta < baseline: wait = 0
        else:
            stop = wait >= patience and epoch > 0

    Earlier epochs change nothing and return ``improved = stop = False``.

    Keras's ``restore_best_weights`` belongs to the training loop: keep a copy of
    the parameters whenever ``improved`` is True and put it back when training ends.

    Args:
      patience: epochs without improvement before stopping, an integer in [0, inf).
        Default 0 (stop at the first epoch that does not improve).
      min_delta: smallest change that counts as an improvement (absolute), in
        [0, inf). Default 0.0.
      mode: ``"min"`` or ``"max"``. Default ``"min"``.
      baseline: if given, ``wait`` is only reset by values that also beat it, so
        training stops after ``patience`` epochs unless the baseline is beaten.
        Default None.
      start_from_epoch: epochs ignored at the start (warm-up), an integer in
        [0, inf). Default 0.

    Returns:
      An :class:`EarlyStoppingFns` with ``init() -> EarlyStoppingState`` and
      ``update(state, value) -> (state, improved, stop)``, both jit-able;
      ``improved`` and ``stop`` are boolean scalar arrays.

    Warning:
      Keras's ``mode="auto"`` is not offered. Keras takes ``abs(min_delta)``; here a
      negative ``min_delta`` is rejected.

    References:
      Prechelt, "Early Stopping - But When?", 1998; Keras
      ``keras.callbacks.EarlyStopping``.
    """
    require_int("patience", patience, 0)
    require("min_delta", min_delta, lambda v: v >= 0, "[0, inf)")
    require_int("start_from_epoch", start_from_epoch, 0)
    if baseline is not None:
        require("baseline", baseline, lambda v: v == v, "any number but NaN")
    sign = sign_of(mode)

    def init() -> EarlyStoppingState:
        return EarlyStoppingState(
            best=jnp.asarray(sign * jnp.inf, jnp.float32),
            best_epoch=jnp.asarray(-1, jnp.int32),
            wait=jnp.asarray(0, jnp.int32),
            epoch=jnp.asarray(0, jnp.int32),
        )

    def update(state: EarlyStoppingState, value):
        value = jnp.asarray(value, jnp.float32)
        epoch = state.epoch
        monitored = epoch >= start_from_epoch
        # Keras starts from best = None: the first monitored value always improves.
        first = state.best_epoch < 0
        improved = monitored & (first | improves(sign, value, min_delta, state.best))
        beats_baseline = (True if baseline is None
                          else improves(sign, value, min_delta, baseline))
        wait = jnp.where(monitored, state.wait + 1, state.wait)
        wait = jnp.where(improved & beats_baseline, 0, wait)
        stop = monitored & ~improved & (wait >= patience) & (epoch > 0)
        new_state = EarlyStoppingState(
            best=jnp.where(improved, value, state.best),
            best_epoch=jnp.where(improved, epoch, state.best_epoch).astype(jnp.int32),
            wait=wait.astype(jnp.int32),
            epoch=optax.safe_increment(epoch),
        )
        return new_state, improved, stop

    return EarlyStoppingFns(init, update)
