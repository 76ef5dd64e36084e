"""Performance scheduling: reduce the learning rate when a monitored value plateaus.

:func:`reduce_on_plateau` is an Optax transform whose state (a
:class:`ReduceOnPlateauState`) lives in the optimizer state and multiplies the updates
by ``scale``. It is a pure state machine over arrays, advanced once per epoch with the
monitored value (typically the validation loss), so it runs inside ``jax.jit``, is saved
with the run and resumes exactly. A training loop advances it with :func:`observe` after
each epoch and reads the current multiplier with :func:`plateau_scale`. It follows Keras
3's ``ReduceLROnPlateau`` callback step for step; :mod:`stablejax.stopping` holds its
sibling, early stopping, which shares the improvement test.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from stablejax._checks import check_range, non_negative, positive, require_int
from stablejax._monitor import improves, sign_of

# The update function of each transformation `reduce_on_plateau` returned (weak: it goes
# with the transformation).
_UPDATES: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


class ReduceOnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`; every field is a scalar array."""

    scale: jax.Array  # float32 multiplier on the learning rate, starts at 1
    best: jax.Array  # float32, +inf ("min") or -inf ("max") before the first value
    wait: jax.Array  # int32, epochs without improvement
    cooldown_counter: jax.Array  # int32, epochs of cooldown left
    count: jax.Array  # type: ignore[assignment] # int32, number of values observed
    factor: jax.Array  # float32
    patience: jax.Array  # int32
    min_delta: jax.Array  # float32
    cooldown: jax.Array  # int32
    min_lr: jax.Array  # float32
    learning_rate: jax.Array  # float32, the rate that `scale` multiplies
    sign: jax.Array  # float32, +1 for "min", -1 for "max"


def _hyperparameters(factor, patience, min_delta, cooldown, min_lr, learning_rate, sign):
    return {
        "factor": jnp.asarray(factor, jnp.float32),
        "patience": jnp.asarray(patience, jnp.int32),
        "min_delta": jnp.asarray(min_delta, jnp.float32),
        "cooldown": jnp.asarray(cooldown, jnp.int32),
        "min_lr": jnp.asarray(min_lr, jnp.float32),
        "learning_rate": jnp.asarray(learning_rate, jnp.float32),
        "sign": jnp.asarray(sign, jnp.float32),
    }


def _advance(state: ReduceOnPlateauState, value) -> ReduceOnPlateauState:
    """One epoch of Keras's ``ReduceLROnPlateau.on_epoch_end``."""
    value = jnp.asarray(value, jnp.float32)
    # Keras decrements the cooldown *before* testing the wait, so a cooldown of c
    # silences only c - 1 epochs of counting.
    in_cooldown = state.cooldown_counter > 0
    cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
    wait = jnp.where(in_cooldown, 0, state.wait)

    # Keras starts from best = None: the first value always improves.
    improved = (state.count == 0) | improves(state.sign, value, state.min_delta,
                                                      state.best)
    best = jnp.where(improved, value, state.best)
    counting = ~improved & (cooldown_counter == 0)
    wait = jnp.where(improved, 0, jnp.where(counting, wait + 1, wait))

    # Keras compares the rate itself with min_lr; dividing once by the base rate
    # makes the clamped scale equal min_scale exactly, so that at the floor nothing
    # happens (and, as in Keras, wait is not reset).
    min_scale = state.min_lr / state.learning_rate
    # Keras multiplies its float32 rate by a float64 factor, here both are float32: the
    # products can differ by an ulp per reduction, so a scale within a few ulps of the
    # floor counts as at the floor (else lr0=1, factor=0.1, min_lr=0.01 would reduce a
    # third time, from 0.010000001 to 0.01, where Keras stops).
    above_floor = state.scale > min_scale * (1 + 4 * jnp.finfo(jnp.float32).eps)
    reduce = counting & (wait >= state.patience) & above_floor
    scale = jnp.where(reduce, jnp.maximum(state.scale * state.factor, min_scale), state.scale)
    return state._replace(
        scale=scale,
        best=best,
        wait=jnp.where(reduce, 0, wait).astype(jnp.int32),
        cooldown_counter=jnp.where(reduce, state.cooldown, cooldown_counter).astype(jnp.int32),
        count=optax.safe_increment(state.count),
    )


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    min_delta: float = 1e-4,
    cooldown: int = 0,
    min_lr: float = 0.0,
    mode: str = "min",
    learning_rate: float = 1.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Performance scheduling: multiply the updates by ``scale``, cut on a plateau.

    Once per epoch the monitored value :math:`v` advances the state (Keras 3's
    ``ReduceLROnPlateau.on_epoch_end``; "min" mode shown, "max" flips the test):

    .. code-block:: text

        if cooldown_counter > 0: cooldown_counter -= 1; wait = 0
        if first value or v + min_delta < best: best = v; wait = 0
        elif cooldown_counter == 0:
            wait += 1
            if wait >= patience and lr > min_lr:
                lr = max(lr * factor, min_lr); cooldown_counter = cooldown; wait = 0

    with :math:`lr = \text{learning\_rate} \cdot \text{scale}`. The transform
    returns :math:`\text{scale} \cdot u` for the incoming updates :math:`u`, so
    placed right after the learning-rate scaling it multiplies the rate.

    The state advances when ``update`` receives ``value=`` (then the new scale
    already applies to that update), or when the training loop calls
    :func:`observe` on the optimizer state between epochs (then, as with Keras, it
    applies from the next update). Pass ``value`` once per epoch only: each value
    counts as one epoch.

    Args:
      factor: multiplier of the rate at each reduction, in (0, 1). Default 0.1.
      patience: epochs without improvement before a reduction, an integer in
        [0, inf). Default 10.
      min_delta: smallest change that counts as an improvement (absolute), a finite
        number >= 0. Default 1e-4.
      cooldown: after a reduction, ``cooldown - 1`` epochs are not counted, an
        integer in [0, inf). Default 0.
      min_lr: floor of ``learning_rate * scale``, a finite number >= 0. Default 0.0.
      mode: ``"min"`` (a lower value is better, e.g. a loss) or ``"max"`` (e.g. an
        accuracy). Default ``"min"``.
      learning_rate: the rate that ``scale`` multiplies, used only to compare with
        ``min_lr``, a finite number > 0. With the default 1.0, ``min_lr`` is a minimum scale.
        Given to a ``stablejax`` alias as ``plateau=``, the alias passes its current
        rate to every update (``update(..., learning_rate=)``), so ``min_lr`` is a
        floor on the real rate, as in Keras, and this argument is not needed.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`ReduceOnPlateauState`.

    Warning:
      Keras's ``mode="auto"`` (inferred from the metric's name) is not offered.
      Keras's ``cooldown=c`` silences ``c - 1`` epochs, because the counter is
      decremented before the wait test; when the rate is already at ``min_lr``
      nothing happens and ``wait`` keeps growing. PyTorch's ``ReduceLROnPlateau``
      reduces when the bad-epoch count *exceeds* ``patience`` and uses a relative
      threshold by default: Keras(p, c, d) equals PyTorch(patience=p - 1,
      cooldown=max(c - 1, 0), threshold=d, threshold_mode="abs"). Optax's
      ``contrib.reduce_on_plateau`` equals Keras(p, c, d) with ``patience=p,
      cooldown=max(c - 1, 0), atol=d, rtol=0, min_scale=min_lr / learning_rate``
      for ``d > 0``; its default relative tolerance misbehaves for negative or zero
      values, which the absolute test here handles.

    References:
      Géron, *Hands-On Machine Learning*, ch. 11 (performance scheduling);
      Keras ``keras.callbacks.ReduceLROnPlateau``.
    """
    check_range("factor", factor, 0, 1, low_open=True, high_open=True)
    require_int("patience", patience, 0)
    non_negative("min_delta", min_delta)
    require_int("cooldown", cooldown, 0)
    non_negative("min_lr", min_lr)
    positive("learning_rate", learning_rate)
    sign = sign_of(mode)

    def hyperparameters():
        return _hyperparameters(factor, patience, min_delta, cooldown, min_lr, learning_rate, sign)

    def init_fn(params):
        del params
        return ReduceOnPlateauState(
            scale=jnp.asarray(1.0, jnp.float32),
            best=jnp.asarray(sign * jnp.inf, jnp.float32),
            wait=jnp.asarray(0, jnp.int32),
            cooldown_counter=jnp.asarray(0, jnp.int32),
            count=jnp.asarray(0, jnp.int32),
            **hyperparameters(),
        )

    def update_fn(updates, state, params=None, *, value=None, learning_rate=None, **extra_args):
        del params, extra_args
        # Refreshing the stored hyperparameters lets `optax.inject_hyperparams`
        # change them during training while `observe` still needs only the state.
        state = state._replace(**hyperparameters())
        if learning_rate is not None:  # the rate of the optimizer this transform sits in
            state = state._replace(learning_rate=jnp.asarray(learning_rate, jnp.float32))
        if value is not None:
            state = _advance(state, value)
        updates = jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates)
        return updates, state

    _UPDATES.add(update_fn)
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def is_reduce_on_plateau(tx: Any) -> bool:
    """True when ``tx`` is a transformation that :func:`reduce_on_plateau` returned.

    Example:
      >>> is_reduce_on_plateau(reduce_on_plateau()), is_reduce_on_plateau(optax.identity())
      (True, False)
    """
    return getattr(tx, "update", None) in _UPDATES


def _is_plateau_state(node: Any) -> bool:
    return isinstance(node, ReduceOnPlateauState)


def states(opt_state: optax.OptState) -> list[ReduceOnPlateauState]:
    """Every :class:`ReduceOnPlateauState` inside ``opt_state``, in tree order."""
    nodes = jax.tree.leaves(opt_state, is_leaf=_is_plateau_state)
    return [node for node in nodes if _is_plateau_state(node)]


def observe(opt_state: optax.OptState, value: jax.typing.ArrayLike) -> optax.OptState:
    """Advances every :class:`ReduceOnPlateauState` inside ``opt_state`` by one epoch.

    Call it once per epoch with the monitored value (e.g. the validation loss);
    the next update uses the new scale, as Keras's callback changes the rate at the
    end of the epoch. Pure and jit-able; the optimizer state may be nested in any
    way (``optax.chain``, ``inject_hyperparams``, ``multi_transform``, ...).

    Args:
      opt_state: an optimizer state (any pytree).
      value: the monitored scalar.

    Returns:
      ``opt_state`` with each plateau state advanced; everything else untouched.
    """

    def visit(node):
        return _advance(node, value) if _is_plateau_state(node) else node

    return jax.tree.map(visit, opt_state, is_leaf=_is_plateau_state)


def plateau_scale(opt_state: optax.OptState) -> jax.Array:
    """Product of the ``scale`` of every :class:`ReduceOnPlateauState` in ``opt_state``.

    Returns 1.0 (float32) when there is none.
    """
    scales = [node.scale for node in states(opt_state)]
    return functools.reduce(jnp.multiply, scales, jnp.asarray(1.0, jnp.float32))
