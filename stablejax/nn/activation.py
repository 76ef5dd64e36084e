"""Activation layers: by name (:class:`Activation`), with learned slopes (:class:`PReLU`)
or random ones (:class:`RReLU`), and :func:`activation_layer`, which picks one for a name.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from stablejax import activations
from stablejax._checks import check_range, concrete, non_negative
from stablejax.nn._common import ActivationLike, as_flag, as_size, check_rngs

__all__ = ["Activation", "PReLU", "RReLU", "activation_layer"]


def check_activation(name: str, value: Any) -> None:
    """Raises ``ValueError`` naming ``name`` for an activation no layer here can apply."""
    if isinstance(value, str) and value.lower() in ("prelu", "rrelu"):
        return  # layers with their own state (see activation_layer)
    try:
        activations.get(value)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _is_softmax(activation: Any) -> bool:
    if isinstance(activation, str):
        return activation.lower() == "softmax"
    return activation is activations.softmax or activation is jax.nn.softmax


def check_not_softmax_of_one(activation: Any, units: int, activation_name: str,
                              units_name: str) -> None:
    """Refuses softmax over a single unit: its output is the constant 1, nothing can learn."""
    if units == 1 and _is_softmax(activation):
        raise ValueError(
            f"{activation_name}='softmax' with {units_name}=1 outputs the constant 1 (softmax "
            f"over one unit): for two classes use {activation_name}='sigmoid' with "
            f"{units_name}=1 (and binary_crossentropy), or {units_name}=2 with softmax"
        )


class PReLU(nnx.Module):
    """Parametric ReLU with a learned slope: ``x`` if ``x > 0`` else ``alpha * x``.

    ``alpha`` is an ``nnx.Param`` of ``shape``: the shape of one sample (Keras's default,
    one slope per element), ``(channels,)`` for one per channel, or ``()`` for one in
    all. Initialised to ``alpha_init`` (0.0, Keras; PyTorch uses 0.25).

    Example::

        >>> import jax.numpy as jnp
        >>> from stablejax.nn import PReLU
        >>> PReLU(3, alpha_init=0.25)(jnp.array([-2.0, 0.0, 3.0]))
        Array([-0.5,  0. ,  3. ], dtype=float32)

    ``alpha_init`` must be a finite number and ``param_dtype`` a floating-point dtype
    (integer slopes could not be learned; 0.25 would become 0).

    Warning:
      PyTorch's ``nn.PReLU()`` learns one slope shared by every element (``shape=()``
      here) and starts it at 0.25; Keras's starts at 0 with one slope per element.
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        alpha_init: float = 0.0,
        *,
        param_dtype: DTypeLike = jnp.float32,
    ) -> None:
        dims: Any = (shape,) if isinstance(shape, numbers.Integral) else shape
        shape = tuple(as_size("shape", d) for d in dims)
        check_range("alpha_init", alpha_init, -math.inf, math.inf, low_open=True,
                    high_open=True)
        if not jnp.issubdtype(param_dtype, jnp.floating):
            raise ValueError(f"param_dtype must be a floating-point dtype (float32, ...), got "
                             f"{param_dtype!r}")
        self.alpha = nnx.Param(jnp.full(shape, alpha_init, param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies ``activations.prelu(x, alpha)``."""
        return activations.prelu(x, self.alpha[...])


class RReLU(nnx.Module):
    """Randomized leaky ReLU: random slopes in training, their mean in inference.

    In training (``deterministic=False``) each call draws a slope ``U(lower, upper)``
    per element from the ``rngs`` stream ``"rrelu"`` (falling back to ``"default"``);
    after ``model.eval()`` (``deterministic=True``) the slope is ``(lower + upper) / 2``.
    Defaults 1/8 and 1/3 as PyTorch's ``nn.RReLU``. The stream's key and count are part
    of the model's state, so a saved and restored run draws the same slopes.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from stablejax.nn import RReLU
        >>> layer = RReLU(rngs=nnx.Rngs(0))
        >>> layer.eval()  # slope (1/8 + 1/3) / 2 = 11/48
        >>> layer(jnp.array([-48.0, 2.0]))
        Array([-11.,   2.], dtype=float32)

    ``lower`` and ``upper`` must be finite numbers with ``0 <= lower <= upper`` (Python or
    NumPy numbers, or 0-d arrays; kept as Python floats) and ``deterministic`` a bool,
    checked here with a ``ValueError`` naming the argument.

    Warning:
      Keras has no RReLU; the defaults and the inference slope are PyTorch's.
    """

    def __init__(
        self,
        lower: float = 1.0 / 8.0,
        upper: float = 1.0 / 3.0,
        *,
        deterministic: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        non_negative("lower", lower)
        non_negative("upper", upper)
        low, high = concrete("lower", lower, ""), concrete("upper", upper, "")
        if low is None or high is None:
            raise ValueError("RReLU's lower and upper must be concrete numbers, not traced")
        if low > high:
            raise ValueError(f"lower must be <= upper, got lower={lower!r} > upper={upper!r}")
        self.lower, self.upper = low, high
        self.deterministic = as_flag("deterministic", deterministic)
        if rngs is not None:
            check_rngs(rngs)
        self.rngs = nnx.data(None) if rngs is None else rngs["rrelu"].fork()

    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        """Applies ``activations.rrelu`` with a fresh key in training."""
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic:
            return activations.rrelu(x, None, self.lower, self.upper)
        if self.rngs is None:
            raise ValueError("RReLU in training mode needs rngs=nnx.Rngs(...) at construction")
        return activations.rrelu(x, self.rngs(), self.lower, self.upper)


class Activation(nnx.Module):
    """A layer applying an activation by Keras-style name or callable (None: identity).

    Example::

        >>> import jax.numpy as jnp
        >>> from stablejax.nn import Activation
        >>> Activation("elu")(jnp.array([-1.0, 1.0]))  # exp(-1) - 1 = -0.632
        Array([-0.63212055,  1.        ], dtype=float32)
    """

    def __init__(self, name_or_fn: ActivationLike | None) -> None:
        self.fn = activations.get(name_or_fn)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the activation."""
        return self.fn(x)


def activation_layer(
    name_or_fn: ActivationLike | None, features: int, rngs: nnx.Rngs
) -> nnx.Module:
    """The layer applying an activation after ``features`` units.

    ``"prelu"``: a :class:`PReLU` with one slope per unit; ``"rrelu"``: an :class:`RReLU`
    drawing from ``rngs``; anything else (a name, a callable, None): an :class:`Activation`.
    """
    if isinstance(name_or_fn, str) and name_or_fn.lower() == "prelu":
        return PReLU((features,))
    if isinstance(name_or_fn, str) and name_or_fn.lower() == "rrelu":
        return RReLU(rngs=rngs)
    return Activation(name_or_fn)
