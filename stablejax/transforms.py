"""Keras-exact optimizer updates as Optax gradient transformations.

Each ``scale_by_*`` here rescales the raw gradient the way Keras 3's optimizer of the
same name does, without the learning rate: chain it with a learning-rate scaling such as
``optax.scale_by_learning_rate`` (the aliases in :mod:`stablejax.optimizers` chain their
own, which keeps each update's dtype). The one exception is :func:`scale_by_momentum`,
which Keras applies *after* the learning rate, so it goes after the rate in a chain.

Moments are kept, and each update computed, in the parameter's dtype for float32 and
float64 parameters, and in float32 for float16 and bfloat16 ones: in half precision the
default epsilon 1e-7 and the squares of small gradients underflow (Adam's first update
of a float16 parameter was -0.265 instead of -1) and squares above 256 overflow. The
update is cast back to the parameter's dtype. Counts are int32 and saturate. The per-step
scalars (``beta ** t`` and the like) are computed in float32, or float64 when a leaf is
float64, as Keras computes them in the variable's dtype: float32 results then match
Keras's float32 numbers to its own rounding.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from stablejax._checks import check_range, concrete, positive

__all__ = [
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByMomentumState",
    "ScaleByNadamState",
    "ScaleByRmspropState",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_momentum",
    "scale_by_nadam",
    "scale_by_rmsprop",
]


def _check_epsilon(value):
    positive("epsilon", value)


def _check_same_tree(updates, state_tree, where):
    """Raises ``ValueError`` naming the differing paths when the two trees differ.

    Runs at trace time and compares structures only, so it costs nothing per step.
    """
    if jax.tree.structure(updates) == jax.tree.structure(state_tree):  # type: ignore[operator]
        return
    paths = [
        {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(t)}
        for t in (updates, state_tree)
    ]
    only_updates, only_state = sorted(paths[0] - paths[1]), sorted(paths[1] - paths[0])
    raise ValueError(
        f"{where}: the updates and the optimizer state have different trees (was the state "
        f"initialised with other parameters?). Paths only in the updates: {only_updates[:5]}; "
        f"only in the state: {only_state[:5]}; updates: {jax.tree.structure(updates)}; "
        f"state: {jax.tree.structure(state_tree)}"
    )


def _scalar_dtype(tree):
    """float32, or float64 when a leaf is float64: the dtype of the per-step scalars."""
    return jnp.result_type(jnp.float32, *jax.tree.leaves(tree))


def _state_dtype(x):
    """float32 for float16 and bfloat16 leaves, else the leaf's dtype: moments' dtype."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _zeros_like(tree):
    return jax.tree.map(lambda x: jnp.zeros_like(x, _state_dtype(x)), tree)


class ScaleByMomentumState(NamedTuple):
    """State of :func:`scale_by_momentum`: the velocity, in each parameter's dtype."""

    velocity: optax.Updates


def scale_by_momentum(
    momentum: jax.typing.ArrayLike, nesterov: bool = False
) -> optax.GradientTransformation:
    """Keras's (heavy-ball or Nesterov) momentum, with the learning rate inside the velocity.

    This transform comes *after* the learning-rate scaling: it receives
    ``u_t = -lr_t * g_t`` (the output of ``optax.scale_by_learning_rate``) and returns the
    update to add to the parameters::

        v_t = momentum * v_{t-1} + u_t                  (v_0 = 0)
        update_t = v_t                                  (nesterov=False)
        update_t = momentum * v_t + u_t                 (nesterov=True)

    which is Keras's ``v = momentum * v - lr * g; w = w + v`` (Nesterov:
    ``w = w + momentum * v - lr * g``). The transform is linear, so it works with either
    sign convention of ``u``. The velocity is kept in each parameter's dtype (float32 for
    float16 and bfloat16 parameters).

    Args:
      momentum: the decay ``momentum`` of the velocity, in [0, 1]. Required.
      nesterov: use Nesterov's look-ahead step. Default False; True needs momentum > 0.

    Warning:
      Optax (``optax.sgd(momentum=...)``, ``optax.trace``) and PyTorch keep the learning
      rate *outside* the buffer (``w -= lr_t * buf``): with a constant rate the three agree,
      but under a schedule each past gradient here keeps the rate of its own step, while
      Optax and PyTorch rescale the whole buffer by the current rate (docs/parity.md, V5).

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
      Sutskever et al., "On the importance of initialization and momentum in deep
      learning", ICML 2013.
    """
    check_range("momentum", momentum, 0, 1)
    if nesterov and concrete("momentum", momentum, "[0, 1]") == 0:
        raise ValueError(f"nesterov=True needs momentum in (0, 1], got momentum={momentum!r}")

    def init_fn(params):
        return ScaleByMomentumState(velocity=_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        _check_same_tree(updates, state.velocity, "scale_by_momentum")
        velocity = jax.tree.map(
            lambda u, v: (momentum * v + u.astype(v.dtype)).astype(v.dtype),
            updates, state.velocity,
        )
        if nesterov:
            updates = jax.tree.map(
                lambda u, v: (momentum * v + u.astype(v.dtype)).astype(u.dtype),
                updates, velocity,
            )
        else:
            updates = jax.tree.map(lambda u, v: v.astype(u.dtype), updates, velocity)
        return updates, ScaleByMomentumState(velocity=velocity)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAdagradState(NamedTuple):
    """State of :func:`scale_by_adagrad`: the running sum of squared gradients."""

    accumulator: optax.Updates


def scale_by_adagrad(
    initial_accumulator_value: jax.typing.ArrayLike = 0.1, epsilon: jax.typing.ArrayLike = 1e-7
) -> optax.GradientTransformation:
    """Keras's Adagrad scaling, epsilon inside the square root::

        a_t = a_{t-1} + g_t**2                     (a_0 = initial_accumulator_value)
        update_t = g_t / sqrt(a_t + epsilon)

    The accumulator is kept in each parameter's dtype (float32 for float16 and bfloat16).

    Args:
      initial_accumulator_value: starting value of ``a``, >= 0. Default 0.1.
      epsilon: added inside the square root, > 0. Default 1e-7.

    Warning:
      Keras 3 and ``optax.adagrad`` (same defaults) compute this. PyTorch
      (``initial_accumulator_value=0``, ``eps=1e-10``) and Keras 2 put epsilon outside the
      square root, ``g / (sqrt(a) + eps)``, and PyTorch's default learning rate is 1e-2, not
      1e-3 (docs/parity.md, V7).

    References:
      Duchi, Hazan and Singer, "Adaptive subgradient methods for online learning and
      stochastic optimization", JMLR 12, 2011.
    """
    check_range("initial_accumulator_value", initial_accumulator_value, 0, math.inf,
                 high_open=True)
    _check_epsilon(epsilon)

    def init_fn(params):
        return ScaleByAdagradState(
            accumulator=jax.tree.map(
                lambda p: jnp.full_like(p, initial_accumulator_value, _state_dtype(p)), params
            )
        )

    def update_fn(updates, state, params=None):
        del params
        _check_same_tree(updates, state.accumulator, "scale_by_adagrad")
        accumulator = jax.tree.map(
            lambda g, a: (a + jnp.square(g.astype(a.dtype))).astype(a.dtype),
            updates, state.accumulator,
        )
        updates = jax.tree.map(
            lambda g, a: (g.astype(a.dtype) / jnp.sqrt(a + epsilon)).astype(g.dtype),
            updates, accumulator,
        )
        return updates, ScaleByAdagradState(accumulator=accumulator)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByRmspropState(NamedTuple):
    """State of :func:`scale_by_rmsprop`: the mean square, and the mean gradient if centered."""

    mean_square: optax.Updates
    mean_gradient: optax.Updates | None


def scale_by_rmsprop(
    rho: jax.typing.ArrayLike = 0.9, epsilon: jax.typing.ArrayLike = 1e-7, centered: bool = False
) -> optax.GradientTransformation:
    """Keras's RMSprop scaling, epsilon inside the square root::

        s_t = rho * s_{t-1} + (1 - rho) * g_t**2                 (s_0 = 0)
        centered: m_t = rho * m_{t-1} + (1 - rho) * g_t          (m_0 = 0)
                  update_t = g_t / sqrt(s_t - m_t**2 + epsilon)
        else:     update_t = g_t / sqrt(s_t + epsilon)

    Keras's RMSprop momentum is not part of this transform: it acts on the rescaled step
    with the learning rate inside the buffer, i.e. :func:`scale_by_momentum` placed after
    ``optax.scale_by_learning_rate``. Moments are kept in each parameter's dtype (float32
    for float16 and bfloat16 parameters).

    Args:
      rho: decay of the moving averages, in [0, 1]. Default 0.9.
      epsilon: added inside the square root, > 0. Default 1e-7.
      centered: divide by the estimated variance instead of the mean square. Default False.

    Warning:
      ``optax.rmsprop(eps=1e-7)`` computes the same (Optax's default eps is 1e-8). PyTorch
      defaults to ``alpha=0.99, eps=1e-8`` and puts epsilon outside the square root,
      ``g / (sqrt(s) + eps)`` (docs/parity.md, V10), as does Keras 2 without momentum.

    References:
      Tieleman and Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for Machine
      Learning, 2012. Graves, "Generating sequences with recurrent neural networks",
      arXiv:1308.0850, 2013 (centered variant).
    """
    check_range("rho", rho, 0, 1)
    _check_epsilon(epsilon)

    def init_fn(params):
        return ScaleByRmspropState(
            mean_square=_zeros_like(params),
            mean_gradient=_zeros_like(params) if centered else None,
        )

    def update_fn(updates, state, params=None):
        del params
        _check_same_tree(updates, state.mean_square, "scale_by_rmsprop")
        mean_square = jax.tree.map(
            lambda g, s: (rho * s + (1 - rho) * jnp.square(g.astype(s.dtype))).astype(s.dtype),
            updates, state.mean_square,
        )
        if centered:
            mean_gradient = jax.tree.map(
                lambda g, m: (rho * m + (1 - rho) * g.astype(m.dtype)).astype(m.dtype),
                updates, state.mean_gradient,
            )
            updates = jax.tree.map(
                lambda g, s, m: (
                    g.astype(s.dtype) / jnp.sqrt(s - jnp.square(m) + epsilon)
                ).astype(g.dtype),
                updates, mean_square, mean_gradient,
            )
        else:
            mean_gradient = None
            updates = jax.tree.map(
                lambda g, s: (g.astype(s.dtype) / jnp.sqrt(s + epsilon)).astype(g.dtype),
                updates, mean_square,
            )
        return updates, ScaleByRmspropState(mean_square=mean_square, mean_gradient=mean_gradient)

    return optax.GradientTransformation(init_fn, update_fn)


def _step_terms(updates, state, beta_1, beta_2, name: str):
    """Adam's and Nadam's shared preamble: checks the tree, counts the step, and returns
    ``(count, dtype, t, beta_1, beta_2)`` with the last three in the updates' dtype."""
    _check_same_tree(updates, state.mu, name)
    count = optax.safe_increment(state.count)
    dtype = _scalar_dtype(updates)
    return count, dtype, count.astype(dtype), jnp.asarray(beta_1, dtype), jnp.asarray(beta_2, dtype)


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`: step count, moments, and the running max of ``nu``."""

    count: jax.Array  # type: ignore[assignment] # int32 scalar: number of updates done
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None  # only with amsgrad


def scale_by_adam(
    beta_1: jax.typing.ArrayLike = 0.9,
    beta_2: jax.typing.ArrayLike = 0.999,
    epsilon: jax.typing.ArrayLike = 1e-7,
    amsgrad: bool = False,
) -> optax.GradientTransformation:
    """Keras's Adam scaling, with its "epsilon hat" (epsilon not bias-corrected)::

        m_t = m_{t-1} + (g_t - m_{t-1}) * (1 - beta_1)           (m_0 = 0)
        v_t = v_{t-1} + (g_t**2 - v_{t-1}) * (1 - beta_2)        (v_0 = 0)
        amsgrad: v_t <- max(v_max_{t-1}, v_t) = v_max_t
        alpha_t = sqrt(1 - beta_2**t) / (1 - beta_1**t)
        update_t = alpha_t * m_t / (sqrt(v_t) + epsilon)

    with ``t = 1, 2, ...`` the update's index. Moments are kept in each parameter's dtype
    (float32 for float16 and bfloat16 parameters);
    ``beta**t`` is a float32 (float64 for float64 leaves) power, as in Keras.

    Args:
      beta_1: decay of the first moment, in [0, 1). Default 0.9.
      beta_2: decay of the second moment, in [0, 1). Default 0.999.
      epsilon: added to ``sqrt(v_t)``, > 0. Default 1e-7.
      amsgrad: use the running maximum of ``v`` (AMSGrad). Default False.

    Warning:
      Keras (2 and 3) adds epsilon to ``sqrt(v_t)`` *before* the bias correction. Optax
      (``optax.adam``, eps=1e-8) and PyTorch add it after: ``m_hat / (sqrt(v_hat) + eps)``.
      Keras with epsilon equals them with a step-dependent ``eps / sqrt(1 - beta_2**t)``, so
      no constant maps one onto the other; the difference is ~1e-6 relative with the
      defaults and large for a large epsilon (docs/parity.md, V13, V14).

    References:
      Kingma and Ba, "Adam: a method for stochastic optimization", ICLR 2015,
      arXiv:1412.6980. Reddi, Kale and Kumar, "On the convergence of Adam and beyond",
      ICLR 2018 (AMSGrad).
    """
    check_range("beta_1", beta_1, 0, 1, high_open=True)
    check_range("beta_2", beta_2, 0, 1, high_open=True)
    _check_epsilon(epsilon)

    def init_fn(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=_zeros_like(params),
            nu=_zeros_like(params),
            nu_max=_zeros_like(params) if amsgrad else None,
        )

    def update_fn(updates, state, params=None):
        del params
        count, _, t, b1, b2 = _step_terms(updates, state, beta_1, beta_2, "scale_by_adam")
        alpha = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        mu = jax.tree.map(
            lambda g, m: (m + (g.astype(m.dtype) - m) * (1 - beta_1)).astype(m.dtype),
            updates, state.mu,
        )
        nu = jax.tree.map(
            lambda g, v: (v + (jnp.square(g.astype(v.dtype)) - v) * (1 - beta_2)).astype(v.dtype),
            updates, state.nu,
        )
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
        updates = jax.tree.map(
            lambda g, m, v: (alpha * m / (jnp.sqrt(v) + epsilon)).astype(g.dtype),
            updates, mu, nu_max if amsgrad else nu,
        )
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByNadamState(NamedTuple):
    """State of :func:`scale_by_nadam`: step count, moments and the momentum product."""

    count: jax.Array  # type: ignore[assignment] # int32 scalar: number of updates done
    mu: optax.Updates
    nu: optax.Updates
    mu_product: jax.Array  # prod_{i<=t} mu_i, float32 (float64 for float64 params)


def scale_by_nadam(
    beta_1: jax.typing.ArrayLike = 0.9,
    beta_2: jax.typing.ArrayLike = 0.999,
    epsilon: jax.typing.ArrayLike = 1e-7,
    momentum_decay: jax.typing.ArrayLike = 1.0,
) -> optax.GradientTransformation:
    """Nadam scaling with Dozat's momentum schedule, as Keras computes it::

        mu_t = beta_1 * (1 - 0.5 * 0.96**(momentum_decay * t))
        P_t = mu_1 * ... * mu_t                                  (P_0 = 1, kept in the state)
        m_t = m_{t-1} + (g_t - m_{t-1}) * (1 - beta_1)
        v_t = v_{t-1} + (g_t**2 - v_{t-1}) * (1 - beta_2)
        m_hat = mu_{t+1} * m_t / (1 - P_t * mu_{t+1}) + (1 - mu_t) * g_t / (1 - P_t)
        v_hat = v_t / (1 - beta_2**t)
        update_t = m_hat / (sqrt(v_hat) + epsilon)

    Moments are kept in each parameter's dtype (float32 for float16 and bfloat16
    parameters); the product ``P`` is one scalar shared by
    all leaves (as Keras's ``_u_product``), float32 or float64 for float64 parameters.

    Args:
      beta_1: base momentum, in [0, 1). Default 0.9.
      beta_2: decay of the second moment, in [0, 1). Default 0.999.
      epsilon: added to ``sqrt(v_hat)``, > 0. Default 1e-7.
      momentum_decay: ``psi`` in the schedule above, in [0, inf]. Default 1.0, Keras 3's
        schedule (``0.96**t``). 0.004 is the schedule of Dozat's paper, of Keras 2's legacy
        Nadam (its ``schedule_decay``) and of PyTorch's ``NAdam(momentum_decay=4e-3)``.
        ``math.inf`` gives a constant ``mu_t = beta_1``, i.e. ``optax.nadam``.

    Warning:
      The three libraries differ only in the schedule, epsilon and learning rate: Keras 3
      uses psi = 1, eps 1e-7, lr 1e-3; PyTorch psi = 0.004, eps 1e-8, lr 2e-3 (so
      ``momentum_decay=0.004, epsilon=1e-8`` reproduces PyTorch); ``optax.nadam`` has no
      schedule (psi = inf) and eps 1e-8 (docs/parity.md, V15, V15b, V16).

    References:
      Dozat, "Incorporating Nesterov momentum into Adam", ICLR 2016 workshop.
    """
    check_range("beta_1", beta_1, 0, 1, high_open=True)
    check_range("beta_2", beta_2, 0, 1, high_open=True)
    _check_epsilon(epsilon)
    check_range("momentum_decay", momentum_decay, 0, math.inf)

    def init_fn(params):
        return ScaleByNadamState(
            count=jnp.zeros([], jnp.int32),
            mu=_zeros_like(params),
            nu=_zeros_like(params),
            mu_product=jnp.ones([], _scalar_dtype(params)),
        )

    def update_fn(updates, state, params=None):
        del params
        count, dtype, t, b1, b2 = _step_terms(updates, state, beta_1, beta_2, "scale_by_nadam")
        decay = jnp.asarray(0.96, dtype)
        mu_t = b1 * (1 - 0.5 * decay ** (momentum_decay * t))
        mu_next = b1 * (1 - 0.5 * decay ** (momentum_decay * (t + 1)))
        product = state.mu_product.astype(dtype) * mu_t
        coef_m = mu_next / (1 - product * mu_next)
        coef_g = (1 - mu_t) / (1 - product)
        correction_v = 1 - b2**t
        # Unlike its Adam, Keras's Nadam takes 1 - beta from the rounded betas; in float32
        # this cancels most of the rounding of beta_2**t in v_hat.
        mu = jax.tree.map(
            lambda g, m: (m + (g.astype(m.dtype) - m) * (1 - b1)).astype(m.dtype), updates, state.mu
        )
        nu = jax.tree.map(
            lambda g, v: (v + (jnp.square(g.astype(v.dtype)) - v) * (1 - b2)).astype(v.dtype),
            updates, state.nu,
        )
        updates = jax.tree.map(
            lambda g, m, v: (
                (coef_m * m + coef_g * g.astype(m.dtype)) / (jnp.sqrt(v / correction_v) + epsilon)
            ).astype(g.dtype),
            updates, mu, nu,
        )
        return updates, ScaleByNadamState(
            count=count, mu=mu, nu=nu, mu_product=product.astype(state.mu_product.dtype)
        )

    return optax.GradientTransformation(init_fn, update_fn)
