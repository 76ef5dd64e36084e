"""Batch normalisation with Keras's defaults and frozen-means-inference (:class:`BatchNorm`)."""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stablejax._checks import check_range, index, require
from stablejax.nn._common import as_flag, as_size, check_rngs, check_width

__all__ = ["BatchNorm", "FrozenCalls"]


def check_momentum_epsilon(momentum: float, epsilon: float) -> None:
    """Raises ``ValueError`` unless ``momentum`` is in [0, 1) and ``epsilon`` in (0, inf)."""
    check_range("momentum", momentum, 0.0, 1.0, high_open=True)
    require("epsilon", epsilon, lambda v: math.isfinite(v) and v > 0, "(0, inf)")


class FrozenCalls(nnx.Variable):
    """A batch-norm layer's count of training calls still to run frozen (not trainable)."""


class BatchNorm(nnx.BatchNorm):
    """``flax.nnx.BatchNorm`` with Keras's defaults and frozen-means-inference.

    ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta`` over the feature ``axis``.
    Trainable ``scale`` (gamma, ones) and ``bias`` (beta, zeros) are ``nnx.Param``; the
    moving ``mean`` (zeros) and ``var`` (ones) are ``nnx.BatchStat``.

    - Training mode (``use_running_average=False``, after ``model.train()``): ``mean``
      and ``var`` are the batch's mean and **biased** variance over every axis but
      ``axis`` (over all devices of ``axis_name`` when given), and
      ``moving <- momentum * moving + (1 - momentum) * batch`` for both.
    - Inference mode (``model.eval()``): the moving statistics, left unchanged.
    - Frozen (``trainable=False``, the mode half of Keras's ``layer.trainable = False``):
      always inference mode, even in training, and the moving statistics never change.
      Gamma and beta stay ``nnx.Param``; freeze them in the optimizer
      (``stablejax.transfer.freeze`` does both).

    The normalisation is Flax's, with the two-pass variance ``mean((x - mean)**2)``
    (``use_fast_variance=False``) rather than Flax's default ``E[x**2] - E[x]**2``,
    which loses digits when the mean is large against the spread. Statistics are
    computed in float32 for low-precision inputs; ``y`` has ``x``'s dtype.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from stablejax.nn import BatchNorm
        >>> bn = BatchNorm(2, rngs=nnx.Rngs(0))
        >>> y = bn(jnp.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0], [7.0, 2.0]]))
        >>> [round(float(v), 4) for v in y[:, 0]]
        [-1.3415, -0.4472, 0.4472, 1.3415]
        >>> [round(float(v), 4) for v in bn.mean[...]]
        [0.04, 0.05]

    Args:
      num_features: size of the feature axis.
      momentum: moving-average momentum in [0, 1) (default 0.99).
      epsilon: positive constant added to the variance (default 1e-3).
      axis: the feature axis (default -1), an integer; checked against the input's rank
        at each call.
      use_scale, use_bias: learn gamma, beta (default True).
      axis_name: mapped axis over which to average statistics (``shard_map``).
      trainable: False freezes the layer as described above.
      use_running_average: start in inference mode (default False).
      rngs: ``nnx.Rngs``.

    Warning:
      Flax's own ``BatchNorm`` uses ``epsilon=1e-5`` and needs ``use_running_average``
      set to freeze; PyTorch's uses ``epsilon=1e-5``, ``momentum=0.1`` (= 1 - 0.9) and
      the unbiased variance for its running statistics.

    Reference: Ioffe & Szegedy (2015), "Batch Normalization: Accelerating Deep Network
    Training by Reducing Internal Covariate Shift".
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        axis: int = -1,
        use_scale: bool = True,
        use_bias: bool = True,
        axis_name: str | None = None,
        trainable: bool = True,
        use_running_average: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        num_features = as_size("num_features", num_features)
        check_momentum_epsilon(momentum, epsilon)
        if isinstance(axis, bool | np.bool_) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"axis must be an integer (the feature axis), got {axis!r}")
        use_scale, use_bias = as_flag("use_scale", use_scale), as_flag("use_bias", use_bias)
        trainable = as_flag("trainable", trainable)
        check_rngs(rngs)
        super().__init__(
            num_features,
            use_running_average=as_flag("use_running_average", use_running_average),
            axis=int(axis),
            momentum=momentum,
            epsilon=epsilon,
            use_scale=use_scale,
            use_bias=use_bias,
            axis_name=axis_name,
            use_fast_variance=False,
            rngs=rngs,
        )
        self.trainable: bool = trainable

    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """Normalises ``x``; see the class docstring for the modes.

        ``mask`` (broadcastable to ``x``, True where a sample counts) restricts the
        batch statistics to the masked positions, as in Flax.
        """
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"BatchNorm's axis={self.axis} is not an axis of the input of "
                             f"shape {tuple(x.shape)}")
        check_width("BatchNorm", "num_features", self.num_features, x, self.axis)
        if use_running_average is None:
            use_running_average = self.use_running_average
        if not self.trainable or use_running_average:
            return super().__call__(x, True).astype(x.dtype)
        frozen_calls = getattr(self, "frozen_calls", None)
        if frozen_calls is None:
            return super().__call__(x, False, mask=mask).astype(x.dtype)
        # Frozen for the first calls of a freeze-then-fine-tune run: inference mode,
        # chosen inside the compiled step so that the switch needs no recompilation. A
        # branch, so each call normalises once (frozen: with the moving statistics, left
        # unchanged; else with the batch's, updating the moving ones).
        graphdef, variables = nnx.split(self)

        def normalise(running: bool, variables: nnx.State) -> tuple[jax.Array, nnx.State]:
            layer = nnx.merge(graphdef, variables, copy=True)
            y = nnx.BatchNorm.__call__(layer, x, running, mask=None if running else mask)
            return y, nnx.state(layer, nnx.BatchStat)

        y, statistics = jax.lax.cond(
            frozen_calls[...] > 0,
            functools.partial(normalise, True),
            functools.partial(normalise, False),
            variables,
        )
        nnx.update(self, statistics)
        frozen_calls[...] = jnp.maximum(frozen_calls[...] - 1, 0)
        return y.astype(x.dtype)

    def freeze_for(self, calls: int) -> None:
        """Runs the next ``calls`` training-mode calls in inference mode, then trains.

        The count is a variable of the layer (``frozen_calls``, not trainable), so it is
        saved and resumed with the model; one training step calls each layer once, so
        ``calls`` is a number of steps. Used by ``stablejax.transfer.freeze_then_finetune``.

        Example::

            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from stablejax.nn import BatchNorm
            >>> bn = BatchNorm(2, rngs=nnx.Rngs(0))
            >>> bn.freeze_for(1)
            >>> x = jnp.array([[1.0, 2.0], [3.0, 6.0]])
            >>> _ = bn(x)  # frozen: moving statistics kept
            >>> [float(v) for v in bn.mean[...]], int(bn.frozen_calls[...])
            ([0.0, 0.0], 0)
            >>> _ = bn(x)  # training again
            >>> [round(float(v), 4) for v in bn.mean[...]]
            [0.02, 0.04]
        """
        self.frozen_calls = FrozenCalls(jnp.asarray(index("calls", calls, 0), jnp.int32))
