"""Weight initialisers matched to the activation (Glorot, He, LeCun, variance scaling).

Every initialiser has the signature of ``jax.nn.initializers``: ``init(key, shape,
dtype=jnp.float32) -> jax.Array``, so it drops into ``flax.nnx.Linear(kernel_init=...)``.
``dtype`` must be a floating-point dtype: an integer one would truncate every weight
(most to 0), so it raises ``ValueError`` naming ``dtype``.

The rule behind all of them: draw weights with mean 0 and **variance** ``scale / fan``
so that the variance of a layer's outputs (forward) and of its gradients (backward)
stays close to the variance of its inputs. The classic table (the "std dev" column in
many notes is in fact a variance)::

    initialiser  activations                        variance
    Glorot       None, tanh, sigmoid, softmax       1 / fan_avg
    He           ReLU and its variants, ELU          2 / fan_in
    LeCun        SELU                                1 / fan_in

References: Glorot & Bengio (2010), "Understanding the difficulty of training deep
feedforward neural networks"; He et al. (2015), "Delving Deep into Rectifiers";
Klambauer et al. (2017), "Self-Normalizing Neural Networks".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from stablejax._checks import index, positive

Initializer = Callable[..., jax.Array]

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["truncated_normal", "normal", "uniform"]
MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")


def _dims(shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of ints, each checked to be an integer >= 0."""
    if isinstance(shape, str | bytes) or not isinstance(shape, Iterable):
        raise TypeError(f"shape must be a sequence of dimensions such as (784, 300), "
                        f"got {shape!r}")
    return tuple(index(f"shape[{i}]", d, 0) for i, d in enumerate(shape))


def _check_axis(name: str, value: Any, shape: tuple[int, ...] | None = None) -> None:
    """Raises ``ValueError`` unless ``value`` is an integer, and an axis of ``shape`` if given."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer axis, got {value!r}")
    if shape is not None and not -len(shape) <= int(value) < len(shape):
        rank = len(shape)
        raise ValueError(f"{name}={value!r} is not an axis of the rank-{rank} shape {shape}: "
                         f"use an integer in [{-rank}, {rank})")


def _batch_axes(batch_axis: Any) -> tuple[Any, ...]:
    """``batch_axis`` as a tuple (an int alone, or a sequence of them)."""
    if isinstance(batch_axis, numbers.Integral):
        return (batch_axis,)
    if isinstance(batch_axis, str | bytes) or not isinstance(batch_axis, Iterable):
        raise ValueError(f"batch_axis must be an integer axis or a sequence of them, "
                         f"got {batch_axis!r}")
    return tuple(batch_axis)


def _check_axes(in_axis: Any, out_axis: Any, batch_axis: Any,
                shape: tuple[int, ...] | None = None) -> None:
    """Checks every axis argument (as axes of ``shape`` when given)."""
    _check_axis("in_axis", in_axis, shape)
    _check_axis("out_axis", out_axis, shape)
    if isinstance(batch_axis, numbers.Integral):
        _check_axis("batch_axis", batch_axis, shape)
    else:
        for i, axis in enumerate(_batch_axes(batch_axis)):
            _check_axis(f"batch_axis[{i}]", axis, shape)


def compute_fans(
    shape: Sequence[int],
    in_axis: int = -2,
    out_axis: int = -1,
    batch_axis: int | Sequence[int] = (),
) -> tuple[float, float]:
    """Returns ``(fan_in, fan_out)`` of a kernel of ``shape`` with Keras's rules.

    - rank 0: ``(1, 1)``;
    - rank 1 ``(n,)``: ``(n, n)``;
    - rank >= 2: ``fan_in = shape[in_axis] * rf`` and ``fan_out = shape[out_axis] * rf``,
      where the receptive field ``rf`` is the product of every other axis that is not a
      batch axis. For a dense kernel ``(in, out)`` that is ``(in, out)``; for a
      convolution kernel ``(kh, kw, c_in, c_out)`` it is ``(kh*kw*c_in, kh*kw*c_out)``.

    Args:
      shape: the kernel's shape, a sequence of integers >= 0.
      in_axis: axis of the input dimension (default -2, the Keras/Flax layout).
      out_axis: axis of the output dimension (default -1).
      batch_axis: axes excluded from the receptive field (e.g. stacked layers).

    Raises:
      TypeError: ``shape`` is not a sequence.
      ValueError: a dimension that is not an integer >= 0; an axis that is not an
        integer; for rank >= 2, an axis outside ``[-rank, rank)`` or two axes that are the
        same (each message names the argument, its value and the shape).

    Example::

        >>> from stablejax.initializers import compute_fans
        >>> compute_fans((3, 3, 16, 32))  # a 3x3 convolution, 16 -> 32 channels
        (144.0, 288.0)
    """
    shape = _dims(shape)
    rank = len(shape)
    _check_axes(in_axis, out_axis, batch_axis, shape if rank >= 2 else None)
    if rank == 0:
        return 1.0, 1.0
    if rank == 1:
        return float(shape[0]), float(shape[0])
    batch = {a % rank for a in _batch_axes(batch_axis)}
    fan_axes = (in_axis % rank, out_axis % rank)
    if fan_axes[0] == fan_axes[1] or batch & set(fan_axes):
        raise ValueError(
            f"in_axis={in_axis}, out_axis={out_axis} and batch_axis={batch_axis!r} must be "
            f"distinct axes of the rank-{rank} shape {shape}"
        )
    receptive = math.prod(d for i, d in enumerate(shape) if i not in {*fan_axes, *batch})
    return float(shape[fan_axes[0]] * receptive), float(shape[fan_axes[1]] * receptive)


def variance_scaling(
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
    in_axis: int = -2,
    out_axis: int = -1,
    batch_axis: int | Sequence[int] = (),
) -> Initializer:
    """Initialiser with mean 0 and variance ``v = scale / n``.

    ``n`` is ``max(1, fan_in)``, ``max(1, fan_out)`` or ``max(1, (fan_in + fan_out) / 2)``
    for ``mode`` ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"`` (see :func:`compute_fans`).

    Distributions:
      - ``"truncated_normal"`` (default): N(0, 1) truncated to [-2, 2], times
        ``sqrt(v) / 0.8796256610342398`` (the std of the truncated unit normal), so the
        draw's standard deviation is exactly ``sqrt(v)`` and ``|w| <= 2.2737 * sqrt(v)``.
      - ``"normal"``: plain, untruncated N(0, v).
      - ``"uniform"``: U(-sqrt(3 v), +sqrt(3 v)).

    The draw is ``jax.nn.initializers.variance_scaling``'s, bitwise, for float32 and
    float64 kernels of rank >= 2 (see the warning for the other cases).

    docs/guide.md's "He initialisation averaged over fan-in and fan-out" is one call:
    ``variance_scaling(2.0, "fan_avg", "uniform")``.

    Example::

        >>> import jax
        >>> from stablejax.initializers import variance_scaling
        >>> init = variance_scaling(2.0, "fan_avg", "uniform")
        >>> w = init(jax.random.key(0), (400, 300))
        >>> w.shape, bool(abs(w).max() <= (6 / 350) ** 0.5)
        ((400, 300), True)

    Warning:
      Keras's ``VarianceScaling(distribution="normal")`` silently means
      ``"truncated_normal"`` (Keras's untruncated option is ``"untruncated_normal"``);
      here, as in ``jax.nn.initializers``, ``"normal"`` is untruncated. PyTorch's
      ``kaiming_normal_`` and ``xavier_normal_`` are untruncated and use the
      ``(out, in)`` weight layout. Three cases keep Keras's behaviour where
      ``jax.nn.initializers`` differs: a rank-0 or rank-1 shape gets Keras's fans
      ``(1, 1)`` and ``(n, n)`` (JAX refuses it); an empty shape gives an empty array
      (JAX divides by its zero fan, Keras clamps the fan to 1); a low-precision
      ``dtype`` is drawn in float32 then cast (JAX draws in ``dtype``, which quantises
      the variance and the distribution's tails).

    Args:
      scale: variance multiplier, a finite number > 0 (1 for Glorot and LeCun, 2 for He).
      mode: one of ``"fan_in"``, ``"fan_out"``, ``"fan_avg"``.
      distribution: one of ``"truncated_normal"``, ``"normal"``, ``"uniform"``.
      in_axis, out_axis, batch_axis: as in :func:`compute_fans`.

    Returns:
      ``init(key, shape, dtype=jnp.float32)``; a ``dtype`` that is not floating point
      raises ``ValueError``, and so does an axis outside the rank of ``shape`` (see
      :func:`compute_fans`: the rank is known only then).

    Raises:
      ValueError: at construction, a bad ``scale``, ``mode`` or ``distribution``, or an
        axis argument that is not an integer.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    positive("scale", scale)
    _check_axes(in_axis, out_axis, batch_axis)
    checked_mode, checked_distribution = cast(Mode, mode), cast(Distribution, distribution)
    kernel = jax.nn.initializers.variance_scaling(
        float(scale), checked_mode, checked_distribution, in_axis, out_axis, batch_axis
    )
    # Keras's rank-0 and rank-1 fans are JAX's with no in, out or batch axis.
    vector = jax.nn.initializers.variance_scaling(
        float(scale), checked_mode, checked_distribution, (), (), ()
    )

    def init(key: jax.Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> jax.Array:
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"dtype must be a floating-point dtype (float32, bfloat16, ...), got {dtype!r}"
            )
        shape = _dims(shape)
        compute_fans(shape, in_axis, out_axis, batch_axis)  # checks the axes against it
        if math.prod(shape) == 0:
            return jnp.zeros(shape, dtype)
        draw = jnp.promote_types(dtype, jnp.float32)
        return (kernel if len(shape) >= 2 else vector)(key, shape, draw).astype(dtype)

    return init


def glorot_normal() -> Initializer:
    """Glorot (Xavier) normal: truncated normal with variance ``1 / fan_avg``.

    Keras 3 ``GlorotNormal``; PyTorch's ``xavier_normal_`` is untruncated.
    Reference: Glorot & Bengio (2010).

    Example::

        >>> import jax
        >>> from stablejax.initializers import glorot_normal
        >>> w = glorot_normal()(jax.random.key(0), (400, 300))
        >>> w.shape, round(float(w.std()), 3)  # sqrt(2 / 700) = 0.0535
        ((400, 300), 0.053)
    """
    return variance_scaling(1.0, "fan_avg", "truncated_normal")


def glorot_uniform() -> Initializer:
    """Glorot (Xavier) uniform: U(-limit, limit), ``limit = sqrt(6 / (fan_in + fan_out))``.

    The default kernel initialiser of Keras's ``Dense``. Reference: Glorot & Bengio (2010).

    Example::

        >>> import jax
        >>> from stablejax.initializers import glorot_uniform
        >>> w = glorot_uniform()(jax.random.key(0), (400, 300))
        >>> w.shape, round(float(w.std()), 3)  # sqrt(2 / 700) = 0.0535
        ((400, 300), 0.053)
    """
    return variance_scaling(1.0, "fan_avg", "uniform")


def he_normal() -> Initializer:
    """He (Kaiming) normal: truncated normal with variance ``2 / fan_in``.

    Keras 3 ``HeNormal``; PyTorch's ``kaiming_normal_`` is untruncated.
    Reference: He et al. (2015).

    Example::

        >>> import jax
        >>> from stablejax.initializers import he_normal
        >>> w = he_normal()(jax.random.key(0), (400, 300))
        >>> w.shape, round(float(w.std()), 3)  # sqrt(2 / 400) = 0.0707
        ((400, 300), 0.071)
    """
    return variance_scaling(2.0, "fan_in", "truncated_normal")


def he_uniform() -> Initializer:
    """He (Kaiming) uniform: U(-limit, limit), ``limit = sqrt(6 / fan_in)``.

    Reference: He et al. (2015).

    Example::

        >>> import jax
        >>> from stablejax.initializers import he_uniform
        >>> w = he_uniform()(jax.random.key(0), (400, 300))
        >>> w.shape, round(float(w.std()), 3)  # sqrt(2 / 400) = 0.0707
        ((400, 300), 0.071)
    """
    return variance_scaling(2.0, "fan_in", "uniform")


def lecun_normal() -> Initializer:
    """LeCun normal: truncated normal with variance ``1 / fan_in``, the SELU partner.

    Reference: LeCun et al. (1998), "Efficient BackProp"; Klambauer et al. (2017).

    Example::

        >>> import jax
        >>> from stablejax.initializers import lecun_normal
        >>> w = lecun_normal()(jax.random.key(0), (400, 300))
        >>> w.shape, round(float(w.std()), 3)  # sqrt(1 / 400) = 0.05
        ((400, 300), 0.05)
    """
    return variance_scaling(1.0, "fan_in", "truncated_normal")


def lecun_uniform() -> Initializer:
    """LeCun uniform: U(-limit, limit), ``limit = sqrt(3 / fan_in)``.

    Reference: LeCun et al. (1998), "Efficient BackProp".

    Example::

        >>> import jax
        >>> from stablejax.initializers import lecun_uniform
        >>> w = lecun_uniform()(jax.random.key(0), (400, 300))
        >>> w.shape, round(float(w.std()), 3)  # sqrt(1 / 400) = 0.05
        ((400, 300), 0.05)
    """
    return variance_scaling(1.0, "fan_in", "uniform")


_BY_ACTIVATION: dict[str | None, Callable[[], Initializer]] = {
    None: glorot_uniform,
    "linear": glorot_uniform,
    "tanh": glorot_uniform,
    "sigmoid": glorot_uniform,
    "logistic": glorot_uniform,
    "softmax": glorot_uniform,
    "relu": he_normal,
    "leaky_relu": he_normal,
    "rrelu": he_normal,
    "prelu": he_normal,
    "elu": he_normal,
    "selu": lecun_normal,
}

KNOWN_ACTIVATIONS = tuple(k for k in _BY_ACTIVATION if k is not None)


def for_activation(name: str | None) -> Initializer:
    """Returns the initialiser the classic table pairs with activation ``name``.

    ======================================  ==================  ==============
    activation                              initialiser         variance
    ======================================  ==================  ==============
    None, linear, tanh, sigmoid/logistic,   Glorot (uniform,    1 / fan_avg
    softmax                                 Keras's default)
    relu, leaky_relu, rrelu, prelu, elu     He normal           2 / fan_in
    selu                                    LeCun normal        1 / fan_in
    ======================================  ==================  ==============

    Args:
      name: an activation name (case-insensitive) or ``None`` for a linear layer.

    Raises:
      ValueError: for an unknown name; the message lists the known ones.

    Example::

        >>> import jax
        >>> from stablejax.initializers import for_activation
        >>> w = for_activation("selu")(jax.random.key(0), (400, 300))  # LeCun normal
        >>> round(float(w.var()), 4)  # 1 / 400
        0.0025
    """
    return _matched(name)()


def _matched(name: str | None) -> Callable[[], Initializer]:
    key = name.lower() if isinstance(name, str) else name
    if key not in _BY_ACTIVATION:
        raise ValueError(
            f"activation must be None or one of {KNOWN_ACTIVATIONS} to choose an initialiser, "
            f"got {name!r}"
        )
    return _BY_ACTIVATION[key]


# The variance each initialiser of the table draws: scale / fan of the mode.
_SCALE_MODE: dict[Callable[[], Initializer], tuple[float, str]] = {
    glorot_uniform: (1.0, "fan_avg"),
    he_normal: (2.0, "fan_in"),
    lecun_normal: (1.0, "fan_in"),
}


class TableEntry(NamedTuple):
    """The classic table's row for one activation: the matched initialiser as a variance."""

    initializer: str  # its name in this module: "glorot_uniform", "he_normal", "lecun_normal"
    scale: float
    mode: str  # "fan_in" or "fan_avg"

    def variance(self, shape: Sequence[int]) -> float:
        """``scale / fan`` for a kernel of ``shape`` (fans as :func:`compute_fans`)."""
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}
        return self.scale / max(1.0, fan[self.mode])


def table_entry(name: str | None) -> TableEntry:
    """The row of the table of :func:`for_activation` for activation ``name``.

    ``for_activation(name)`` draws kernels of mean 0 and variance
    ``table_entry(name).variance(shape)``, exactly for its truncated normals (rescaled to
    the target variance) and uniforms.

    Raises:
      ValueError: for an unknown name, as :func:`for_activation`.

    Example::

        >>> from stablejax.initializers import table_entry
        >>> entry = table_entry("relu")
        >>> entry, entry.variance((400, 300))  # 2 / 400
        (TableEntry(initializer='he_normal', scale=2.0, mode='fan_in'), 0.005)
    """
    factory = _matched(name)
    scale, mode = _SCALE_MODE[factory]
    return TableEntry(factory.__name__, scale, mode)
