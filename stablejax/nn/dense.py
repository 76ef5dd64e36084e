"""Fully connected layers: :class:`Dense`, initialised to match its activation, and
:class:`Flatten`, which turns samples into the vectors it takes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from stablejax import initializers
from stablejax.nn._common import (
    ActivationLike,
    as_flag,
    as_size,
    check_initializer,
    check_rngs,
    check_width,
)
from stablejax.nn.activation import activation_layer, check_not_softmax_of_one

__all__ = ["Dense", "Flatten"]


def default_init(name_or_fn: ActivationLike | None) -> initializers.Initializer:
    """The initialiser matched to an activation; Glorot uniform (Keras's) when unknown."""
    name = name_or_fn if name_or_fn is None or isinstance(name_or_fn, str) else getattr(
        name_or_fn, "__name__", "")
    if name is None or name.lower() in initializers.KNOWN_ACTIVATIONS:
        return initializers.for_activation(name)
    return initializers.glorot_uniform()


class Dense(nnx.Linear):
    """``nnx.Linear`` followed by an activation, initialised to match that activation.

    ``y = activation(x @ kernel + bias)``. When ``kernel_init`` is None the initialiser is
    ``initializers.for_activation(activation)``: Glorot for None/tanh/sigmoid/softmax,
    He for the ReLU family and ELU, LeCun for SELU. ``"prelu"`` learns one slope per
    output unit; ``"rrelu"`` draws slopes from ``rngs``.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from stablejax.nn import Dense
        >>> layer = Dense(3, 2, activation="relu", rngs=nnx.Rngs(0))  # He normal kernel
        >>> layer.kernel.shape, layer(jnp.ones((4, 3))).shape
        ((3, 2), (4, 2))

    Checked at construction: the sizes (integers >= 1), ``use_bias`` (a bool),
    ``kernel_init`` (None or a callable), ``rngs`` (an ``nnx.Rngs``), and softmax over one
    unit (``out_features=1``), whose output is the constant 1: ``ValueError`` suggesting
    sigmoid.

    Warning:
      Keras's ``Dense`` always starts from Glorot uniform and Flax's ``nnx.Linear`` from
      LeCun normal, whatever the activation. A callable activation whose ``__name__`` is
      not a known name (a lambda, say) falls back to Glorot uniform, Keras's default;
      pass ``kernel_init`` to choose.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: ActivationLike | None = None,
        kernel_init: initializers.Initializer | None = None,
        use_bias: bool = True,
        rngs: nnx.Rngs,
    ) -> None:
        in_features = as_size("in_features", in_features)
        out_features = as_size("out_features", out_features)
        check_not_softmax_of_one(activation, out_features, "activation", "out_features")
        check_initializer("kernel_init", kernel_init)
        check_rngs(rngs)
        super().__init__(
            in_features,
            out_features,
            use_bias=as_flag("use_bias", use_bias),
            kernel_init=kernel_init or default_init(activation),
            rngs=rngs,
        )
        self.activation = activation_layer(activation, out_features, rngs)

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Applies the affine map (``out_sharding`` as in ``nnx.Linear``) then the activation."""
        check_width("Dense", "in_features", self.in_features, inputs, -1)
        return self.activation(super().__call__(inputs, out_sharding=out_sharding))


class Flatten(nnx.Module):
    """Flattens every axis but the first (the batch): ``(n, 28, 28) -> (n, 784)``.

    Example::

        >>> import jax.numpy as jnp
        >>> from stablejax.nn import Flatten
        >>> Flatten()(jnp.ones((2, 28, 28))).shape
        (2, 784)
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        """Reshapes ``x`` to ``(x.shape[0], -1)``; ``x`` needs a batch axis."""
        if jnp.ndim(x) == 0:
            raise ValueError("Flatten needs an input with a batch axis, got a scalar")
        return x.reshape(x.shape[0], -1)
