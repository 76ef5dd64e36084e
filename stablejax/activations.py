"""Activations, from saturating (sigmoid, tanh) to non-saturating (ReLU family, ELU, SELU).

All are pure elementwise functions, safe under ``jit``, ``vmap`` and ``grad``, and keep
the input's dtype (float32, bfloat16, float16). Their gradients are finite everywhere,
including at large negative inputs to ELU and SELU and exactly at 0.

Inputs must be floating point, except for :func:`relu` and :func:`linear`, which are
exact on integers and return them unchanged in dtype. The others raise ``ValueError``
naming ``x`` and its dtype for an integer or boolean input: kept in the input's dtype
their results would be truncated (``elu(jnp.arange(-3, 3))`` gave int32 zeros for the
negative inputs). Cast first: ``x.astype(jnp.float32)``. Hyperparameters (slopes,
``alpha``) are numbers checked when the function is called; a traced one is not.

Order of preference for deep dense stacks, from the classic recipe:
``selu > elu > leaky_relu and variants > tanh > sigmoid``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._checks import concrete, is_traced, non_negative

# Full precision, as jax.nn.selu and PyTorch (Keras's docstring rounds them).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _floating(name: str, x: jax.typing.ArrayLike) -> jax.Array:
    """``x`` as an array, after checking that its dtype is floating point."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{name} needs a floating-point x, got dtype {x.dtype}; cast it first, "
            "e.g. x.astype(jnp.float32)"
        )
    return x


def sigmoid(x: jax.Array) -> jax.Array:
    """Logistic sigmoid ``1 / (1 + exp(-x))``; saturates, derivative at most 0.25 (at 0)."""
    return jax.nn.sigmoid(_floating("sigmoid", x))


def tanh(x: jax.Array) -> jax.Array:
    """Hyperbolic tangent; saturates at +-1, derivative at most 1 (at 0)."""
    return jnp.tanh(_floating("tanh", x))


def relu(x: jax.Array) -> jax.Array:
    """Rectified linear unit ``max(0, x)``; does not saturate for x > 0 but can "die".

    Exact on integer inputs too, whose dtype it keeps.
    """
    return jax.nn.relu(jnp.asarray(x))


def leaky_relu(x: jax.Array, negative_slope: float = 0.2) -> jax.Array:
    """Leaky ReLU: ``x`` if ``x >= 0`` else ``negative_slope * x``.

    Default 0.2 as Keras's function ``keras.activations.leaky_relu`` and the classic
    recipe's ``LeakyReLU(alpha=0.2)``. ``negative_slope`` must be a finite number >= 0;
    ``x`` must be floating point.

    Warning:
      The default slope differs between libraries: Keras's *layer* ``LeakyReLU`` uses 0.3,
      PyTorch and ``jax.nn.leaky_relu`` 0.01.

    Reference: Maas et al. (2013), "Rectifier Nonlinearities Improve Neural Network
    Acoustic Models".
    """
    non_negative("negative_slope", negative_slope)
    x = _floating("leaky_relu", x)
    return jnp.where(x >= 0, x, (negative_slope * x).astype(x.dtype))


def _slopes(alpha: jax.typing.ArrayLike, x: jax.Array) -> jax.Array:
    """``alpha`` as an array, checked to be real slopes that broadcast to ``x.shape``."""
    if alpha is None or isinstance(alpha, str | bytes):
        raise ValueError(f"alpha must be a real number or an array of slopes, got {alpha!r}")
    alpha = jnp.asarray(alpha)
    if not (jnp.issubdtype(alpha.dtype, jnp.integer) or jnp.issubdtype(alpha.dtype, jnp.floating)):
        raise ValueError(f"alpha must hold real slopes, got dtype {alpha.dtype}")
    try:
        fits = np.broadcast_shapes(alpha.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"alpha of shape {alpha.shape} must broadcast to x's shape {x.shape} "
                         "(e.g. x.shape[1:], (channels,) or ())")
    if not is_traced(alpha) and not np.isfinite(np.asarray(alpha)).all():
        raise ValueError(f"alpha must hold finite slopes, got {np.asarray(alpha)!r}")
    return alpha


def prelu(x: jax.Array, alpha: jax.Array) -> jax.Array:
    """Parametric ReLU: ``x`` if ``x > 0`` else ``alpha * x``, with a learned ``alpha``.

    ``alpha`` broadcasts against ``x``: shape ``x.shape[1:]`` gives one slope per element
    of a sample (Keras's default), shape ``(channels,)`` one per channel of a
    channels-last input, a scalar one for all. The result has ``x``'s dtype, which must be
    floating point.

    Checked: ``alpha`` must be real (not a string, ``None`` or booleans) and broadcast to
    ``x.shape`` without enlarging it (``ValueError`` naming both shapes); a concrete
    ``alpha`` must be finite. A traced one (the learned slopes inside ``jit``) is checked
    for shape only.

    Reference: He et al. (2015), "Delving Deep into Rectifiers".
    """
    x = _floating("prelu", x)
    alpha = _slopes(alpha, x)
    return jnp.where(x > 0, x, (alpha * x).astype(x.dtype))


def rrelu(
    x: jax.Array,
    key: jax.Array | None = None,
    lower: float = 1.0 / 8.0,
    upper: float = 1.0 / 3.0,
) -> jax.Array:
    """Randomized leaky ReLU: ``x`` if ``x >= 0`` else ``a * x``.

    - Training (``key`` given): ``a ~ U(lower, upper)`` drawn independently for every
      element on every call.
    - Inference (``key=None``): the mean slope ``a = (lower + upper) / 2``
      (11/48 with the defaults).

    Defaults as PyTorch's ``nn.RReLU`` (Keras has no RReLU). ``lower`` and ``upper`` must
    be finite numbers with ``0 <= lower <= upper``; ``x`` must be floating point; ``key``
    must be ``None`` or a PRNG key (``TypeError`` otherwise).

    Reference: Xu et al. (2015), "Empirical Evaluation of Rectified Activations in
    Convolutional Network".
    """
    non_negative("lower", lower)
    non_negative("upper", upper)
    low, high = concrete("lower", lower, ""), concrete("upper", upper, "")
    if low is not None and high is not None and low > high:
        raise ValueError(f"lower must be <= upper, got lower={lower!r} > upper={upper!r}")
    if key is not None and not isinstance(key, jax.Array):
        raise TypeError(f"key must be None (inference) or a PRNG key such as "
                        f"jax.random.key(0), got {key!r}")
    x = _floating("rrelu", x)
    if key is None:
        slope = jnp.asarray((lower + upper) / 2.0, x.dtype)
    else:
        slope = jax.random.uniform(key, x.shape, jnp.float32, lower, upper).astype(x.dtype)
    return jnp.where(x >= 0, x, slope * x)


def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """Exponential linear unit: ``x`` if ``x > 0`` else ``alpha * (exp(x) - 1)``.

    Tends to ``-alpha`` for large negative inputs; the gradient there is finite
    (``alpha * exp(x)``, exactly 0 once it underflows). Default ``alpha = 1`` as Keras,
    PyTorch and JAX. ``alpha`` must be a finite number >= 0; ``x`` must be floating point.

    Reference: Clevert et al. (2016), "Fast and Accurate Deep Network Learning by
    Exponential Linear Units (ELUs)".
    """
    non_negative("alpha", alpha)
    x = _floating("elu", x)
    # expm1 on min(x, 0) keeps the unused branch finite, so its gradient never is NaN.
    negative = (alpha * jnp.expm1(jnp.minimum(x, 0))).astype(x.dtype)
    return jnp.where(x > 0, x, negative)


def selu(x: jax.Array) -> jax.Array:
    """Scaled ELU: ``scale * elu(x, alpha)`` with the self-normalising constants.

    ``alpha = 1.6732632423543772848170429916717`` and
    ``scale = 1.0507009873554804934193349852946`` (full precision, as ``jax.nn.selu``
    and PyTorch). Self-normalisation needs LeCun-normal weights, standardised inputs
    and a plain sequential dense stack. ``x`` must be floating point.

    Reference: Klambauer et al. (2017), "Self-Normalizing Neural Networks".
    """
    x = _floating("selu", x)
    negative = SELU_ALPHA * jnp.expm1(jnp.minimum(x, 0))
    return (SELU_SCALE * jnp.where(x > 0, x, negative)).astype(x.dtype)


def linear(x: jax.Array) -> jax.Array:
    """Identity (no activation); any dtype."""
    return x


def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """Softmax over ``axis``: ``exp(x) / sum(exp(x))``, computed stably; ``x`` floating point.

    ``axis`` must be an integer in ``[-x.ndim, x.ndim)`` (``ValueError`` naming it).
    """
    x = _floating("softmax", x)
    if isinstance(axis, bool | np.bool_) or not isinstance(axis, numbers.Integral) or not (
        -x.ndim <= axis < x.ndim
    ):
        raise ValueError(f"axis={axis!r} is not an axis of x of shape {x.shape}: use an "
                         f"integer in [{-x.ndim}, {x.ndim})")
    return jax.nn.softmax(x, axis=axis)


_BY_NAME: dict[str, Callable[..., jax.Array]] = {
    "sigmoid": sigmoid,
    "logistic": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "rrelu": rrelu,
    "elu": elu,
    "selu": selu,
    "linear": linear,
    "softmax": softmax,
}

NAMES = tuple(_BY_NAME)


def get(name_or_fn: str | Callable[..., jax.Array] | None) -> Callable[..., jax.Array]:
    """Returns the activation for a Keras-style name, a callable unchanged.

    ``None`` and ``"linear"`` give the identity. ``prelu`` needs a learned parameter:
    use :class:`stablejax.nn.PReLU`.

    Raises:
      ValueError: for an unknown name; the message lists the known ones.
    """
    if name_or_fn is None:
        return linear
    if callable(name_or_fn):
        return name_or_fn
    if isinstance(name_or_fn, str) and name_or_fn.lower() in _BY_NAME:
        return _BY_NAME[name_or_fn.lower()]
    if isinstance(name_or_fn, str) and name_or_fn.lower() == "prelu":
        raise ValueError("activation 'prelu' learns its slopes: use the layer "
                         "stablejax.nn.PReLU (or Dense(..., activation='prelu'))")
    raise ValueError(f"activation must be a callable, None or one of {NAMES}, got {name_or_fn!r}")
