"""Keras 3's optimizers as Optax chains: same argument names, defaults and numbers.

Each alias is a visible ``optax.chain``::

    clipping  ->  scaling  ->  learning rate  ->  plateau  ->  momentum

wrapped in ``optax.inject_hyperparams`` over the learning rate, so the rate each update
used is in the state (``state.hyperparams["learning_rate"]``, or
:func:`current_learning_rate`). ``learning_rate`` is a float or a schedule
``step -> rate`` called with the 0-based update index, as Keras calls its schedules: the
first update uses ``schedule(0)``.

What is checked when an alias is called (``ValueError`` naming the argument and value):
every number is in its range; a float ``learning_rate`` is finite and >= 0; a schedule is
called once with step 0 (an int32 array) and ``learning_rate(0)`` must be finite and >= 0
(each element, if it returns an array). What cannot be checked: the schedule's later
values (one that turns negative or NaN at step 1000 is not caught), and ``schedule(0)``
when it cannot be computed outside the compiled update (it raises, e.g. it needs a named
axis, or its value is traced because the alias is built inside ``jit``); that schedule is
then first run by the first update.

Keyword-only options shared by every alias:

- ``clipvalue``, ``clipnorm``, ``global_clipnorm``: Keras's gradient clipping (at most one),
  applied first, to the raw gradients (:mod:`stablejax.clipping`).
- ``decay``: Keras 2's legacy inverse-time decay, ``lr_t = lr(step) / (1 + decay * step)``
  with the same 0-based ``step``. Keras 3 accepts ``decay=`` and silently ignores it; here
  it is honoured (docs/parity.md, V6).
- ``plateau``: a :func:`stablejax.plateau.reduce_on_plateau` transformation (anything
  else is a ``TypeError``), placed right after the learning rate so that, as with Keras's
  ``ReduceLROnPlateau``, a reduced rate enters the momentum of the following updates only.
  Feed it once per epoch with :func:`stablejax.plateau.observe`.

Each alias records what built the optimizer it returns: :func:`describe` gives the alias's
name and its arguments (:mod:`stablejax.keras_format` writes them as Keras's optimizer).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import tree_utils

from stablejax import clipping, transforms
from stablejax._checks import check_range, is_traced, non_negative
from stablejax.combine import SwitchState
from stablejax.plateau import is_reduce_on_plateau, plateau_scale
from stablejax.schedules import Description

__all__ = [
    "adagrad",
    "adam",
    "current_learning_rate",
    "describe",
    "nadam",
    "rmsprop",
    "set_learning_rate",
    "sgd",
]

Clip: TypeAlias = float | None  # a clipping threshold, or none
Plateau: TypeAlias = optax.GradientTransformationExtraArgs  # a `reduce_on_plateau`
# `chain(clip, rate, plateau)`: an alias's chain around the three transforms it shares.
Chain = Callable[
    [optax.GradientTransformation, optax.GradientTransformation, optax.GradientTransformation],
    optax.GradientTransformation,
]

Arguments = ParamSpec("Arguments")

# The description of each optimizer an alias returned, keyed by its update function (an
# Optax transformation is a tuple of closures and says nothing of its hyperparameters);
# weak, so it goes with the optimizer.
_DESCRIPTIONS: weakref.WeakKeyDictionary[Callable[..., Any], Description] = (
    weakref.WeakKeyDictionary()
)


def describe(tx: Any) -> Description | None:
    """The alias and arguments that built ``tx``, or None for a transformation that no
    alias of this module returned (``optax.adam(...)``, an ``optax.chain`` of an alias).

    ``arguments`` holds every argument by name, defaults included, as given (a schedule
    stays a function: :func:`stablejax.schedules.describe` says what built it).

    Example:
      >>> name, arguments = describe(adam(1e-3, clipnorm=1.0))
      >>> name, arguments["learning_rate"], arguments["clipnorm"], arguments["amsgrad"]
      ('adam', 0.001, 1.0, False)
    """
    update = getattr(tx, "update", None)
    try:
        return _DESCRIPTIONS.get(update)  # type: ignore[arg-type]
    except TypeError:  # not weakly referable: no alias returned it
        return None


def _described(
    alias: Callable[Arguments, optax.GradientTransformationExtraArgs],
) -> Callable[Arguments, optax.GradientTransformationExtraArgs]:
    """``alias`` recording the :class:`~stablejax.schedules.Description` of each optimizer
    it returns."""
    signature = inspect.signature(alias)

    @functools.wraps(alias)
    def build(
        *args: Arguments.args, **kwargs: Arguments.kwargs
    ) -> optax.GradientTransformationExtraArgs:
        tx = alias(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        _DESCRIPTIONS[tx.update] = Description(alias.__name__, dict(bound.arguments))
        return tx

    return build


_CLIPPING = {
    "clipvalue": clipping.clip_by_value,
    "clipnorm": clipping.clip_by_norm,
    "global_clipnorm": clipping.clip_by_global_norm,
}


def _clip(clipvalue: Clip, clipnorm: Clip, global_clipnorm: Clip) -> optax.GradientTransformation:
    values = zip(_CLIPPING, (clipvalue, clipnorm, global_clipnorm), strict=True)
    given = {name: value for name, value in values if value is not None}
    if len(given) > 1:
        raise ValueError(
            f"at most one of clipvalue, clipnorm, global_clipnorm may be set, got {given}"
        )
    if not given:
        return optax.identity()
    [(name, value)] = given.items()
    return _CLIPPING[name](value)


def _scale_by_learning_rate(learning_rate: jax.Array) -> optax.GradientTransformation:
    """``u -> -learning_rate * u`` in each update's own dtype.

    ``optax.scale_by_learning_rate`` would promote bfloat16 updates to the float32 of the
    injected rate when the parameters mix the two dtypes.
    """
    return optax.stateless(
        lambda updates, params: jax.tree.map(
            lambda u: (-learning_rate * u).astype(u.dtype), updates
        )
    )


def _is_zero(value: Any) -> bool:
    """True only for a Python or NumPy scalar zero; an array may change later
    (``inject_hyperparams``). ``value`` must have been checked to be a number."""
    return not isinstance(value, jax.Array | np.ndarray) and float(value) == 0


def _momentum(momentum: float, nesterov: bool = False) -> optax.GradientTransformation:
    """Keras's momentum buffer, or nothing for a momentum that is the number 0.

    An array momentum comes from an outer ``optax.inject_hyperparams``: the transform is
    kept (momentum 0 computes the same as none) so that the state's structure cannot
    depend on its value.
    """
    check_range("momentum", momentum, 0, 1)
    if _is_zero(momentum) and not nesterov:
        return optax.identity()
    return transforms.scale_by_momentum(momentum, nesterov)


def _check_learning_rate(learning_rate: optax.ScalarOrSchedule) -> None:
    """A number, or a schedule's rate for the first update, must be finite and >= 0."""
    if not callable(learning_rate):
        non_negative("learning_rate", learning_rate)
        return
    try:
        first = learning_rate(jnp.zeros((), jnp.int32))
    except Exception:  # it runs only when traced (a named axis, ...): the first update runs it
        return
    if is_traced(first):  # built inside `jit` or `vmap` from traced values
        return
    for value in np.ravel(np.asarray(first)):
        non_negative("learning_rate(0)", value)


def _keras(
    chain: Chain,
    learning_rate: optax.ScalarOrSchedule,
    clipvalue: Clip,
    clipnorm: Clip,
    global_clipnorm: Clip,
    decay: float,
    plateau: Plateau | None,
) -> optax.GradientTransformationExtraArgs:
    """``chain(clip, rate, plateau)`` under ``optax.inject_hyperparams`` over the rate.

    The options every alias shares, in one place: the clipping (``optax.identity()`` when
    none), the checks of ``plateau``, ``learning_rate`` (a schedule's first value) and
    ``decay``, the legacy decay folded into the rate, the rate itself
    (``u -> -lr_t * u``) and the plateau transform bound to that rate
    (``optax.identity()`` when none).
    """
    if plateau is not None and not is_reduce_on_plateau(plateau):
        raise TypeError("plateau must be None or what stablejax.reduce_on_plateau(...) "
                        f"returns, got {plateau!r}")
    clip = _clip(clipvalue, clipnorm, global_clipnorm)
    _check_learning_rate(learning_rate)
    non_negative("decay", decay)
    rate = learning_rate
    # An array rate or decay comes from an outer `optax.inject_hyperparams`, which calls the
    # alias again with new values at every update; stored as a number, the rate would keep
    # its first value in the inner state, while a schedule is re-read at every update.
    if not _is_zero(decay) or isinstance(learning_rate, jax.Array):
        schedule = learning_rate if callable(learning_rate) else (lambda step: learning_rate)
        rate = lambda step: schedule(step) / (1 + decay * step)  # Keras 2's `_decayed_lr`

    def with_rate(learning_rate):
        if plateau is None:
            bound: optax.GradientTransformation = optax.identity()
        else:
            # The plateau compares `learning_rate * scale` with its min_lr, as Keras
            # compares the optimizer's rate: hand it the rate this update uses.
            bound = optax.GradientTransformationExtraArgs(
                plateau.init, functools.partial(plateau.update, learning_rate=learning_rate)
            )
        return chain(clip, _scale_by_learning_rate(learning_rate), bound)

    return optax.inject_hyperparams(with_rate)(learning_rate=rate)


class _Hidden:
    """A phase of a :class:`~stablejax.combine.SwitchState` that is not the active one.

    Not a pytree node: tree functions see it as one leaf and never look inside.
    """

    def __init__(self, state: optax.OptState):
        self.state = state


def _hide_inactive(opt_state: optax.OptState, upcoming: bool) -> optax.OptState:
    """``opt_state`` with the inactive phase of each ``SwitchState`` wrapped in ``_Hidden``.

    The active phase is the branch of the next update (``upcoming=True``: the one a rate
    set now applies to) or of the last update (after ``init``, of the first update: the
    one whose rate is reported). Reads concrete counts: outside ``jit``.
    """
    is_switch = lambda x: isinstance(x, SwitchState)

    def resolve(node):
        if not is_switch(node):
            return node
        step = int(node.count) if upcoming else max(int(node.count) - 1, 0)
        if step < int(node.boundary):
            return node._replace(
                first=_hide_inactive(node.first, upcoming), then=_Hidden(node.then)
            )
        return node._replace(
            first=_Hidden(node.first), then=_hide_inactive(node.then, upcoming)
        )

    return jax.tree.map(resolve, opt_state, is_leaf=is_switch)


def _unhide(opt_state: optax.OptState) -> optax.OptState:
    is_hidden = lambda x: isinstance(x, _Hidden)
    return jax.tree.map(lambda x: x.state if is_hidden(x) else x, opt_state, is_leaf=is_hidden)


def _outermost(field: str) -> Callable[[tuple, Any], bool]:
    """A ``tree_utils`` filtering: the ``learning_rate`` key of ``field`` (``"hyperparams"``
    or ``"hyperparams_states"``) of an injected state that no other injected state holds.

    An alias under an outer ``optax.inject_hyperparams`` follows the outer rate: that one
    is the rate to read and to set.
    """
    name = optax.InjectStatefulHyperparamsState.__name__

    def filtering(path, value):
        del value
        injected = [
            key for key in path
            if isinstance(key, tree_utils.NamedTupleKey) and key.tuple_name == name
        ]
        return injected == [tree_utils.NamedTupleKey(name, field)] and path[-2] == injected[0]

    return filtering


def _injected_rate(opt_state: optax.OptState) -> jax.Array:
    """The one injected learning rate in ``opt_state`` (the value, not a schedule)."""
    found = tree_utils.tree_get_all_with_path(
        opt_state, "learning_rate", _outermost("hyperparams")
    )
    if len(found) != 1:
        paths = [jax.tree_util.keystr(path) for path, _ in found]
        raise ValueError(
            f"expected one injected learning_rate in the optimizer state, found {len(found)}"
            f" (at {paths}); pass the sub-state of one optimizer"
        )
    return found[0][1]


def set_learning_rate(
    opt_state: optax.OptState, learning_rate: jax.typing.ArrayLike
) -> optax.OptState:
    """Returns ``opt_state`` with its constant injected learning rate replaced.

    What Keras's ``optimizer.learning_rate = value`` does, for the state of an alias
    built with a float ``learning_rate`` (or any ``optax.inject_hyperparams`` optimizer
    with a constant one). The next updates use the new rate, in the dtype of the old one.
    Inside a :func:`stablejax.combine.switch` only the phase that runs the next update is
    changed (the other keeps its own rate): at the boundary that is the second phase,
    while :func:`current_learning_rate` still reports the first (the last update's).

    Args:
      opt_state: the state of the optimizer.
      learning_rate: the new rate, a finite number >= 0 (a traced value, inside ``jit``,
        is not checked).

    Raises:
      ValueError: when ``learning_rate`` is negative, infinite or NaN, or ``opt_state``
        holds no injected learning rate, several, or one that follows a schedule (or
        ``decay``), which would overwrite it at every update.

    Warning:
      ``optax.tree_utils.tree_set(state, learning_rate=...)`` replaces every
      ``learning_rate`` key it finds (a schedule's state, a plateau's, an inner alias's);
      this sets the one rate the next updates use, or refuses.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = sgd(0.1)
      >>> state = set_learning_rate(tx.init(jnp.zeros(2)), 0.5)
      >>> updates, state = tx.update(jnp.array([1.0, 2.0]), state)
      >>> print(updates, current_learning_rate(state))
      [-0.5 -1. ] 0.5
    """
    non_negative("learning_rate", learning_rate)
    active = _hide_inactive(opt_state, upcoming=True)
    old = _injected_rate(active)
    if tree_utils.tree_get_all_with_path(
        active, "learning_rate", _outermost("hyperparams_states")
    ):
        raise ValueError(
            "the learning rate follows a schedule (or decay) and cannot be set; build the "
            "optimizer with a float learning_rate"
        )
    new = tree_utils.tree_set(
        active, _outermost("hyperparams"), learning_rate=jnp.asarray(learning_rate, old.dtype)
    )
    return _unhide(new)


def current_learning_rate(opt_state: optax.OptState) -> jax.Array:
    """The learning rate of the alias whose state is (or is inside) ``opt_state``.

    ``hyperparams["learning_rate"] * plateau_scale(opt_state)``: the scheduled (and
    decayed) rate, times the reduction of any :func:`stablejax.plateau.reduce_on_plateau`.
    After ``init`` it is the rate of the first update; after an update, the rate that update
    used, with the plateau reductions observed since. Inside a
    :func:`stablejax.combine.switch` only the phase of the last update counts. Reads
    concrete values: call it outside ``jit``.

    Raises:
      ValueError: when ``opt_state`` holds no injected learning rate, or several (say two
        aliases under ``optax.multi_transform``): pass the one sub-state then.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = sgd(lambda step: 0.1 / (1 + step))
      >>> state = tx.init(jnp.zeros(2))
      >>> print(current_learning_rate(state))
      0.1
      >>> _, state = tx.update(jnp.ones(2), state)
      >>> _, state = tx.update(jnp.ones(2), state)
      >>> print(current_learning_rate(state))
      0.05
    """
    active = _hide_inactive(opt_state, upcoming=False)
    return _injected_rate(active) * plateau_scale(active)


@_described
def sgd(
    learning_rate: optax.ScalarOrSchedule = 0.01, momentum: float = 0.0, nesterov: bool = False,
    *, clipvalue: Clip = None, clipnorm: Clip = None, global_clipnorm: Clip = None,
    decay: float = 0.0, plateau: Plateau | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Keras's SGD, with momentum and Nesterov momentum (lr inside the velocity)::

        momentum == 0: w <- w - lr_t * g
        otherwise:     v <- momentum * v - lr_t * g
                       w <- w + v                                (nesterov=False)
                       w <- w + momentum * v - lr_t * g          (nesterov=True)

    Args:
      learning_rate: float >= 0 or schedule ``step -> rate``. Default 0.01.
      momentum: in [0, 1]. Default 0.0 (plain SGD).
      nesterov: Nesterov momentum; needs momentum > 0. Default False.
      clipvalue, clipnorm, global_clipnorm, decay, plateau: see the module docstring.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = sgd(0.1, momentum=0.9)
      >>> state = tx.init(jnp.zeros(1))
      >>> for _ in range(3):  # a constant gradient: the velocity builds up
      ...     updates, state = tx.update(jnp.ones(1), state)
      ...     print(updates)
      [-0.1]
      [-0.19]
      [-0.271]

    Warning:
      Keras keeps the learning rate inside the velocity; ``optax.sgd`` and PyTorch's SGD
      scale the whole buffer by the current rate. The trajectories agree with a constant
      rate (V2, V3) and differ under a schedule or ``decay`` (V5: -0.2179 here and in Keras,
      0.2624 in Optax and PyTorch). PyTorch's default rate is 1e-3 and it has dampening,
      which Keras has not; Optax requires the rate.

    References:
      Polyak, 1964; Sutskever et al., "On the importance of initialization and momentum in
      deep learning", ICML 2013.
    """
    velocity = _momentum(momentum, nesterov)
    chain = lambda clip, rate, plateau: optax.chain(clip, rate, plateau, velocity)
    return _keras(chain, learning_rate, clipvalue, clipnorm, global_clipnorm, decay, plateau)


@_described
def adagrad(
    learning_rate: optax.ScalarOrSchedule = 0.001, initial_accumulator_value: float = 0.1,
    epsilon: float = 1e-7,
    *, clipvalue: Clip = None, clipnorm: Clip = None, global_clipnorm: Clip = None,
    decay: float = 0.0, plateau: Plateau | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Keras's Adagrad::

        a <- a + g**2                      (a_0 = initial_accumulator_value)
        w <- w - lr_t * g / sqrt(a + epsilon)

    Args:
      learning_rate: float >= 0 or schedule. Default 0.001.
      initial_accumulator_value: >= 0. Default 0.1.
      epsilon: > 0, inside the square root. Default 1e-7.
      clipvalue, clipnorm, global_clipnorm, decay, plateau: see the module docstring.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adagrad(0.1)
      >>> updates, _ = tx.update(jnp.array([1.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> print(updates.round(4))  # -0.1 * g / sqrt(0.1 + g**2 + 1e-7)
      [-0.0953  0.0994]

    Warning:
      ``optax.adagrad`` computes the same (V7). PyTorch defaults to lr 1e-2, accumulator 0,
      eps 1e-10 outside the square root, and Keras 2 also put epsilon outside; PyTorch's
      ``lr_decay`` is the ``decay`` here.

    References:
      Duchi, Hazan and Singer, JMLR 12, 2011.
    """
    scale = transforms.scale_by_adagrad(initial_accumulator_value, epsilon)
    chain = lambda clip, rate, plateau: optax.chain(clip, scale, rate, plateau)
    return _keras(chain, learning_rate, clipvalue, clipnorm, global_clipnorm, decay, plateau)


@_described
def rmsprop(
    learning_rate: optax.ScalarOrSchedule = 0.001, rho: float = 0.9, momentum: float = 0.0,
    epsilon: float = 1e-7, centered: bool = False,
    *, clipvalue: Clip = None, clipnorm: Clip = None, global_clipnorm: Clip = None,
    decay: float = 0.0, plateau: Plateau | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Keras's RMSprop (epsilon inside the square root, lr inside the momentum buffer)::

        s <- rho * s + (1 - rho) * g**2
        centered: m <- rho * m + (1 - rho) * g;   d = s - m**2 + epsilon
        else:     d = s + epsilon
        step = lr_t * g / sqrt(d)
        momentum > 0: b <- momentum * b + step;   w <- w - b
        else:         w <- w - step

    Args:
      learning_rate: float >= 0 or schedule. Default 0.001.
      rho: in [0, 1]. Default 0.9.
      momentum: in [0, 1]. Default 0.0.
      epsilon: > 0. Default 1e-7.
      centered: normalise by the variance rather than the mean square. Default False.
      clipvalue, clipnorm, global_clipnorm, decay, plateau: see the module docstring.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = rmsprop(0.01, centered=True)
      >>> state = tx.init(jnp.zeros(1))
      >>> for g in (1.0, 1.0, -1.0):  # divided by the running standard deviation of g
      ...     updates, state = tx.update(jnp.array([g]), state)
      ...     print(updates.round(4))
      [-0.0333]
      [-0.0255]
      [0.0194]

    Warning:
      ``optax.rmsprop(eps=1e-7, ...)`` computes the same, also with centering, momentum
      and schedules (V9, V11, V12); its default eps is 1e-8. PyTorch uses
      ``alpha=0.99, eps=1e-8``, puts epsilon outside the square root (V10) and the learning
      rate outside the momentum buffer (V12); Keras 2 put epsilon outside without momentum.

    References:
      Tieleman and Hinton, Lecture 6.5, 2012; Graves, arXiv:1308.0850, 2013 (centered).
    """
    scale, velocity = transforms.scale_by_rmsprop(rho, epsilon, centered), _momentum(momentum)
    chain = lambda clip, rate, plateau: optax.chain(clip, scale, rate, plateau, velocity)
    return _keras(chain, learning_rate, clipvalue, clipnorm, global_clipnorm, decay, plateau)


@_described
def adam(
    learning_rate: optax.ScalarOrSchedule = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
    epsilon: float = 1e-7, amsgrad: bool = False,
    *, clipvalue: Clip = None, clipnorm: Clip = None, global_clipnorm: Clip = None,
    decay: float = 0.0, plateau: Plateau | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Keras's Adam, with its "epsilon hat"::

        m <- m + (g - m) * (1 - beta_1);   v <- v + (g**2 - v) * (1 - beta_2)
        amsgrad: v_max <- max(v_max, v) replaces v below
        w <- w - lr_t * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon)

    Args:
      learning_rate: float >= 0 or schedule. Default 0.001.
      beta_1: in [0, 1). Default 0.9.
      beta_2: in [0, 1). Default 0.999.
      epsilon: > 0. Default 1e-7.
      amsgrad: AMSGrad's running maximum of v. Default False.
      clipvalue, clipnorm, global_clipnorm, decay, plateau: see the module docstring.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adam(0.1)
      >>> updates, _ = tx.update(jnp.array([1e-5, -5.0]), tx.init(jnp.zeros(2)))
      >>> [round(float(u), 4) for u in updates]  # -0.1 * sign(g), unless |g| nears epsilon
      [-0.076, 0.1]

    Warning:
      Keras adds epsilon before the bias correction; ``optax.adam`` and PyTorch add it to
      ``sqrt(v_hat)`` with eps 1e-8. No constant maps one onto the other: with the defaults
      they differ by ~1e-6 relative (V13), with a large epsilon by much more (V14).

    References:
      Kingma and Ba, ICLR 2015, arXiv:1412.6980; Reddi, Kale and Kumar, ICLR 2018.
    """
    scale = transforms.scale_by_adam(beta_1, beta_2, epsilon, amsgrad)
    chain = lambda clip, rate, plateau: optax.chain(clip, scale, rate, plateau)
    return _keras(chain, learning_rate, clipvalue, clipnorm, global_clipnorm, decay, plateau)


@_described
def nadam(
    learning_rate: optax.ScalarOrSchedule = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
    epsilon: float = 1e-7, momentum_decay: float = 1.0,
    *, clipvalue: Clip = None, clipnorm: Clip = None, global_clipnorm: Clip = None,
    decay: float = 0.0, plateau: Plateau | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Keras's Nadam, with Dozat's momentum schedule ``mu_t = beta_1 (1 - 0.5 * 0.96**(psi t))``::

        m <- beta_1 m + (1 - beta_1) g;   v <- beta_2 v + (1 - beta_2) g**2
        m_hat = mu_{t+1} m / (1 - mu_1...mu_{t+1}) + (1 - mu_t) g / (1 - mu_1...mu_t)
        w <- w - lr_t * m_hat / (sqrt(v / (1 - beta_2**t)) + epsilon)

    Args:
      learning_rate: float >= 0 or schedule. Default 0.001.
      beta_1: in [0, 1). Default 0.9.
      beta_2: in [0, 1). Default 0.999.
      epsilon: > 0. Default 1e-7.
      momentum_decay: ``psi``, in [0, inf]. Default 1.0 (Keras 3). 0.004 is Keras 2's
        legacy Nadam, PyTorch's ``NAdam`` and Dozat's paper; ``math.inf`` is
        ``optax.nadam`` (no schedule).
      clipvalue, clipnorm, global_clipnorm, decay, plateau: see the module docstring.

    Example:
      >>> import jax.numpy as jnp
      >>> for psi in (1.0, 0.004):  # Keras 3; Keras 2's legacy Nadam and PyTorch
      ...     tx = nadam(0.1, momentum_decay=psi)
      ...     print(tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))[0].round(4))
      [-0.1063  0.1063]
      [-0.1056  0.1056]

    Warning:
      Keras 3 uses ``0.96**t``; Keras 2 and PyTorch ``0.96**(0.004 t)`` (V15 vs V15b/V16);
      ``optax.nadam`` keeps ``mu_t = beta_1`` (V15, optax column). PyTorch's defaults are
      lr 2e-3 and eps 1e-8. Keras 2's legacy Nadam took ``schedule_decay`` (= psi), which
      it passed on as ``decay`` without ever decaying the learning rate: pass it as
      ``momentum_decay`` here, not as ``decay``.

    References:
      Dozat, "Incorporating Nesterov momentum into Adam", ICLR 2016 workshop.
    """
    scale = transforms.scale_by_nadam(beta_1, beta_2, epsilon, momentum_decay)
    chain = lambda clip, rate, plateau: optax.chain(clip, scale, rate, plateau)
    return _keras(chain, learning_rate, clipvalue, clipnorm, global_clipnorm, decay, plateau)
