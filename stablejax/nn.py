"""Flax NNX layers: Keras-semantics batch norm, PReLU, RReLU, activation-aware Dense, mlp.

Deep stacks of identical layers compile once with ``mlp(..., scan_layers=True)``: the
repeated layers become a :class:`Stack`, their variables stacked and run by a scan.

The Fashion-MNIST model of docs/guide.md §1.3 with batch normalisation after each hidden layer::

    from flax import nnx
    import stablejax as sj

    model = sj.nn.mlp([300, 100], activation="elu", batch_norm="after", rngs=nnx.Rngs(0))
    y = model(x)            # training mode: batch statistics, moving averages updated
    model.eval()            # inference mode: moving statistics
    sj.nn.variables(model.layers[1])
    # [('bias', True), ('mean', False), ('scale', True), ('var', False)]
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from stablejax import activations, initializers
from stablejax._checks import check_range, concrete, index, non_negative, require

__all__ = [
    "BatchNorm",
    "FrozenCalls",
    "Dense",
    "Activation",
    "PReLU",
    "RReLU",
    "Flatten",
    "Stack",
    "mlp",
    "unroll",
    "copy_layers",
    "path_name",
    "variables",
]

BATCH_NORM_PLACEMENTS = (None, "after", "before")

ActivationLike = str | Callable[[jax.Array], jax.Array]


def _size(name: str, value: Any) -> int:
    """``value`` as an int after checking it is an integer >= 1 (NumPy ints too, not bools).

    ``_checks.index`` takes bools as 0 and 1; a bool given as a layer size is a mistake.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (a layer size), got {value!r}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    """``value`` as a bool, after checking that it is one (a truthy string is a mistake)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_rngs(rngs: Any) -> None:
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be a flax.nnx.Rngs, e.g. rngs=nnx.Rngs(0), got {rngs!r}")


def _check_initializer(name: str, init: Any) -> None:
    if init is not None and not callable(init):
        raise TypeError(f"{name} must be None or an initializer init(key, shape, dtype), e.g. "
                        f"stablejax.initializers.he_normal(), got {init!r}")


def _check_activation(name: str, value: Any) -> None:
    """Raises ``ValueError`` naming ``name`` for an activation no layer here can apply."""
    if isinstance(value, str) and value.lower() in ("prelu", "rrelu"):
        return  # layers with their own state (see _activation_layer)
    try:
        activations.get(value)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _is_softmax(activation: Any) -> bool:
    if isinstance(activation, str):
        return activation.lower() == "softmax"
    return activation is activations.softmax or activation is jax.nn.softmax


def _check_not_softmax_of_one(activation: Any, units: int, activation_name: str,
                              units_name: str) -> None:
    """Refuses softmax over a single unit: its output is the constant 1, nothing can learn."""
    if units == 1 and _is_softmax(activation):
        raise ValueError(
            f"{activation_name}='softmax' with {units_name}=1 outputs the constant 1 (softmax "
            f"over one unit): for two classes use {activation_name}='sigmoid' with "
            f"{units_name}=1 (and binary_crossentropy), or {units_name}=2 with softmax"
        )


def _check_width(layer: str, axis_name: str, expected: int, x: jax.Array, axis: int) -> None:
    # Static shapes: checked while tracing, before anything compiles.
    if x.ndim == 0 or x.shape[axis] != expected:
        raise ValueError(
            f"{layer} expects inputs with {expected} features on axis {axis} "
            f"({axis_name}={expected}), got an input of shape {tuple(x.shape)}"
        )


def _check_momentum_epsilon(momentum: float, epsilon: float) -> None:
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
        num_features = _size("num_features", num_features)
        _check_momentum_epsilon(momentum, epsilon)
        if isinstance(axis, bool | np.bool_) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"axis must be an integer (the feature axis), got {axis!r}")
        use_scale, use_bias = _flag("use_scale", use_scale), _flag("use_bias", use_bias)
        trainable = _flag("trainable", trainable)
        _check_rngs(rngs)
        super().__init__(
            num_features,
            use_running_average=_flag("use_running_average", use_running_average),
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
        _check_width("BatchNorm", "num_features", self.num_features, x, self.axis)
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
        shape = tuple(_size("shape", d) for d in dims)
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
        self.deterministic = _flag("deterministic", deterministic)
        if rngs is not None:
            _check_rngs(rngs)
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


def _stack_split(module: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
    """``(graphdef, params, shared, rest)``: a stack's per-layer variables and shared counts."""
    return nnx.split(module, nnx.Param, FrozenCalls, ...)  # type: ignore[return-value]


class Stack(nnx.Module):
    """Identical blocks kept as one block with stacked variables, run by a scan over layers.

    ``Stack(blocks)`` takes modules of one structure (same types, shapes and settings,
    e.g. ``nnx.Sequential(Dense(64, 64), BatchNorm(64))`` repeated) and keeps a single
    module ``blocks`` whose every variable has a leading layer axis of size ``length``:
    ``stack.blocks.layers[0].kernel`` has shape ``(length, 64, 64)`` and its slice ``[i]``
    is block ``i``'s kernel. A call runs ``blocks[0]``, then ``blocks[1]``, ... on the
    output of the previous one, as ``jax.lax.scan`` over the layer axis, so the compiled
    program holds the block once whatever ``length`` is. Variables a block changes when
    called (batch-norm moving statistics, RReLU's RNG count) are written back per layer;
    the result is the same as calling the blocks one after the other.

    A batch norm's ``frozen_calls`` counter (``BatchNorm.freeze_for``) is the one
    exception: it is shared by every block (one call of the stack is one call of each
    block) and is not stacked.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from stablejax.nn import Dense, Stack
        >>> rngs = nnx.Rngs(0)
        >>> stack = Stack([Dense(4, 4, activation="relu", rngs=rngs) for _ in range(3)])
        >>> stack.length, stack.blocks.kernel.shape, stack(jnp.ones((2, 4))).shape
        (3, (3, 4, 4), (2, 4))
    """

    def __init__(self, blocks: Sequence[nnx.Module]) -> None:
        blocks = list(blocks)
        if not blocks:
            raise ValueError("blocks must hold at least one module, got none")
        graphdef, first_params, shared, first_rest = _stack_split(blocks[0])
        expected = _shapes(first_params, first_rest)
        params, rest = [], []
        for i, block in enumerate(blocks):
            g, p, _, r = _stack_split(block)
            if g != graphdef or _shapes(p, r) != expected:
                raise ValueError(f"blocks[{i}] differs in structure from blocks[0]")
            params.append(p)
            rest.append(r)

        def stack(*values: jax.Array) -> jax.Array:
            return jnp.stack(values)

        self.length = len(blocks)
        self.blocks = nnx.merge(
            graphdef, jax.tree.map(stack, *params), shared, jax.tree.map(stack, *rest)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Runs the blocks in order, as one scan over the layer axis."""
        graphdef, params, shared, rest = _stack_split(self.blocks)

        def layer(x: jax.Array, variables: tuple[nnx.State, nnx.State]):
            # copy: the block mutates its variables (statistics, RNG counts) in this trace.
            block = nnx.merge(graphdef, *variables, shared, copy=True)
            y = block(x)
            _, _, new_shared, new_rest = _stack_split(block)
            return y, (new_shared, new_rest)

        y, (new_shared, new_rest) = jax.lax.scan(layer, x, (params, rest))
        # Every block starts from the same shared counters and changes them alike.
        nnx.update(self.blocks, jax.tree.map(lambda v: v[-1], new_shared), new_rest)
        return y

    def unstack(self) -> list[nnx.Module]:
        """The blocks as separate modules (copies), in order: the unrolled layout."""
        graphdef, params, shared, rest = _stack_split(self.blocks)
        return [
            nnx.merge(graphdef, *jax.tree.map(lambda v, i=i: v[i], (params, rest)), shared,
                      copy=True)
            for i in range(self.length)
        ]


def _shapes(*states: nnx.State) -> list[tuple[Any, ...]]:
    return [
        (path, type(var), jnp.shape(var[...]), var[...].dtype)
        for state in states
        for path, var in nnx.to_flat_state(state)
    ]


def _activation_layer(
    name_or_fn: ActivationLike | None, features: int, rngs: nnx.Rngs
) -> nnx.Module:
    if isinstance(name_or_fn, str) and name_or_fn.lower() == "prelu":
        return PReLU((features,))
    if isinstance(name_or_fn, str) and name_or_fn.lower() == "rrelu":
        return RReLU(rngs=rngs)
    return Activation(name_or_fn)


def _default_init(name_or_fn: ActivationLike | None) -> initializers.Initializer:
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
        in_features = _size("in_features", in_features)
        out_features = _size("out_features", out_features)
        _check_not_softmax_of_one(activation, out_features, "activation", "out_features")
        _check_initializer("kernel_init", kernel_init)
        _check_rngs(rngs)
        super().__init__(
            in_features,
            out_features,
            use_bias=_flag("use_bias", use_bias),
            kernel_init=kernel_init or _default_init(activation),
            rngs=rngs,
        )
        self.activation = _activation_layer(activation, out_features, rngs)

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Applies the affine map (``out_sharding`` as in ``nnx.Linear``) then the activation."""
        _check_width("Dense", "in_features", self.in_features, inputs, -1)
        return self.activation(super().__call__(inputs, out_sharding=out_sharding))


def mlp(
    hidden: Sequence[int] = (300, 100),
    *,
    input_shape: Sequence[int] = (28, 28),
    activation: ActivationLike = "elu",
    kernel_init: initializers.Initializer | None = None,
    batch_norm: str | None = None,
    output_size: int = 10,
    output_activation: ActivationLike | None = "auto",
    momentum: float = 0.99,
    epsilon: float = 1e-3,
    scan_layers: bool = False,
    rngs: nnx.Rngs,
) -> nnx.Sequential:
    """Builds the dense networks of docs/guide.md §1.3 in one call, as an ``nnx.Sequential``.

    - ``batch_norm=None``: Flatten -> [Dense(h, activation)] * k -> Dense(output).
    - ``batch_norm="after"`` (docs/guide.md's first model): Flatten -> BatchNorm ->
      [Dense(h, activation) -> BatchNorm] * k -> Dense(output).
    - ``batch_norm="before"`` (its second model): Flatten -> BatchNorm ->
      [Dense(h, use_bias=False) -> BatchNorm -> Activation] * k -> Dense(output);
      batch norm's beta makes the Dense bias redundant.

    The output activation (``output_activation="auto"``, the default) is softmax for
    ``output_size >= 2`` (docs/guide.md's classifiers) and sigmoid for ``output_size=1``,
    Keras's ``Dense(1, activation="sigmoid")`` for a binary task. An explicit
    ``"softmax"`` with ``output_size=1`` raises ``ValueError``: softmax over one unit is
    the constant 1 and the model could not learn. ``None`` gives logits (pair it with a
    ``*_from_logits`` loss).

    With ``kernel_init=None`` each hidden layer takes the initialiser matched to
    ``activation`` and the output layer the one matched to ``output_activation``. The
    trainable and non-trainable parameter counts equal Keras's for the same
    architecture (e.g. 268,978 and 2,368 for docs/guide.md's first model).

    ``scan_layers=True`` makes deep stacks compile once. A hidden block is the
    bracketed group above; the rule: every maximal run of at least two consecutive
    blocks with the same fan-in and width, the first hidden block excepted (it follows
    the input), becomes one :class:`Stack` in the place of its layers. Its variables
    are stacked along a leading layer axis and the blocks run as one ``jax.lax.scan``,
    so the compiled program holds one block however many there are. ``hidden=[64] * 100``
    gives ``Flatten -> Dense(64) -> Stack(99 x Dense(64, 64)) -> Dense(output)``;
    ``[300, 100]`` has no such run and is built unrolled, exactly as without the flag.
    The initial values are the unrolled model's, drawn in the same order from ``rngs``
    (:func:`unroll` gives it back; :func:`copy_layers` copies between the layouts), and
    so are the outputs, batch statistics and gradients, to float32 rounding: the scan's
    body is compiled apart from its neighbours (measured on CPU in a compiled train
    step: outputs, loss and gradients bitwise equal, moving variances within 1 ulp).
    Parameter paths inside a stack are those of the stacked arrays, e.g.
    ``layers/2/blocks/layers/0/kernel`` of shape ``(99, 64, 64)``; :func:`variables`
    lists them per block. Freezing (``stablejax.transfer``) selects a whole stack, not
    single blocks of it.

    Args:
      hidden: sizes of the hidden layers, integers >= 1 (may be empty).
      input_shape: shape of one input sample (flattened first), a sequence of integers
        >= 1 such as ``(28, 28)`` or ``(64,)``.
      activation: hidden activation (name or callable).
      kernel_init: initialiser for the hidden kernels (default: matched to activation).
      batch_norm: None, ``"after"`` or ``"before"``.
      output_size: units of the output layer, an integer >= 1.
      output_activation: ``"auto"`` (softmax, or sigmoid for one unit: see above),
        ``"softmax"``, ``"sigmoid"``, None for logits, a callable, ...
      momentum, epsilon: batch-norm hyperparameters (Keras's defaults).
      scan_layers: stack repeated hidden blocks and scan over them (a bool, default False).
      rngs: ``nnx.Rngs``.

    Raises:
      ValueError: a size that is not an integer >= 1, an unknown ``batch_norm`` or
        activation name, bad batch-norm hyperparameters, softmax with ``output_size=1``,
        a non-bool ``scan_layers``.
      TypeError: ``hidden`` or ``input_shape`` not a sequence, ``kernel_init`` not
        callable, ``rngs`` not an ``nnx.Rngs``.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from stablejax.nn import mlp
        >>> model = mlp([16], input_shape=(8, 8), batch_norm="after", rngs=nnx.Rngs(0))
        >>> [type(layer).__name__ for layer in model.layers]
        ['Flatten', 'BatchNorm', 'Dense', 'BatchNorm', 'Dense']
        >>> y = model(jnp.ones((5, 8, 8)))
        >>> y.shape, round(float(y[0].sum()), 5)  # softmax rows sum to 1
        ((5, 10), 1.0)
        >>> deep = mlp([16] * 6, input_shape=(8,), batch_norm="after", scan_layers=True,
        ...            rngs=nnx.Rngs(0))
        >>> [type(layer).__name__ for layer in deep.layers]
        ['Flatten', 'BatchNorm', 'Dense', 'BatchNorm', 'Stack', 'Dense']
        >>> deep.layers[4].length, deep.layers[4].blocks.layers[0].kernel.shape
        (5, (5, 16, 16))
    """
    if batch_norm not in BATCH_NORM_PLACEMENTS:
        raise ValueError(f"batch_norm must be one of {BATCH_NORM_PLACEMENTS}, got {batch_norm!r}")
    hidden = tuple(_size("hidden", h) for h in _sequence("hidden", hidden, "[300, 100] or [300]"))
    output_size = _size("output_size", output_size)
    input_shape = tuple(
        _size("input_shape", d) for d in _sequence("input_shape", input_shape, "(28, 28) or (64,)")
    )
    if isinstance(output_activation, str) and output_activation == "auto":
        output_activation = "sigmoid" if output_size == 1 else "softmax"
    _check_not_softmax_of_one(output_activation, output_size, "output_activation",
                              "output_size")
    _check_activation("activation", activation)
    _check_activation("output_activation", output_activation)
    _check_momentum_epsilon(momentum, epsilon)
    _flag("scan_layers", scan_layers)
    _check_initializer("kernel_init", kernel_init)
    _check_rngs(rngs)

    def bn(n: int) -> BatchNorm:
        return BatchNorm(n, momentum=momentum, epsilon=epsilon, rngs=rngs)

    def block(fan_in: int, size: int) -> list[nnx.Module]:
        if batch_norm == "before":
            init = kernel_init or _default_init(activation)
            return [
                Dense(fan_in, size, kernel_init=init, use_bias=False, rngs=rngs),
                bn(size),
                _activation_layer(activation, size, rngs),
            ]
        dense = Dense(fan_in, size, activation=activation, kernel_init=kernel_init, rngs=rngs)
        return [dense, bn(size)] if batch_norm == "after" else [dense]

    width = math.prod(input_shape)
    layers: list[nnx.Module] = [Flatten()]
    if batch_norm is not None:
        layers.append(bn(width))
    # Every block is built in the unrolled order, so both layouts draw the same initial
    # values from ``rngs``.
    shapes = list(zip((width, *hidden)[:-1], hidden, strict=True))
    blocks = [block(fan_in, size) for fan_in, size in shapes]
    for run in _runs(shapes):
        if scan_layers and len(run) >= 2:
            layers.append(Stack([nnx.Sequential(*blocks[i]) for i in run]))
        else:
            layers += [layer for i in run for layer in blocks[i]]
    width = hidden[-1] if hidden else width
    layers.append(Dense(width, output_size, activation=output_activation, rngs=rngs))
    return nnx.Sequential(*layers)


def _sequence(name: str, value: Any, example: str) -> Any:
    """``value`` after checking that it is a sequence (of sizes), not a lone number or a string."""
    if isinstance(value, str | bytes | numbers.Number) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of sizes such as {example}, got {value!r} "
                        f"({type(value).__name__})")
    return value


def _runs(shapes: list[tuple[int, int]]) -> list[list[int]]:
    """Indices of the hidden blocks grouped into runs of equal ``(fan_in, width)``.

    The first block is always alone: it follows the input, not a hidden layer.
    """
    runs: list[list[int]] = []
    for i, shape in enumerate(shapes):
        if i >= 2 and shape == shapes[i - 1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _flat_layers(model: nnx.Sequential) -> list[Any]:
    """The layers of ``model`` in the unrolled layout: each Stack's blocks in its place."""
    flat: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, Stack):
            for block in layer.unstack():
                flat += list(block.layers) if isinstance(block, nnx.Sequential) else [block]
        else:
            flat.append(layer)
    return flat


def unroll(model: nnx.Sequential) -> nnx.Sequential:
    """A copy of ``model`` with every :class:`Stack` replaced by its blocks' layers.

    ``unroll(mlp(..., scan_layers=True))`` has the structure of ``mlp(...)`` and, built
    from the same ``rngs``, the same values. Gradients and optimizer states are not
    models; to read one of them per layer, ``nnx.update`` a clone of the model with it
    and unroll that.
    """
    if not isinstance(model, nnx.Sequential):
        raise ValueError(f"model must be an nnx.Sequential, got {type(model).__name__}")
    return nnx.Sequential(*_flat_layers(nnx.clone(model)))


def copy_layers(source: nnx.Sequential, target: nnx.Sequential) -> None:
    """Copies every variable of ``source`` into ``target``, in place, across layouts.

    The two are the same network, each unrolled or with stacks (:class:`Stack`, e.g.
    ``mlp(..., scan_layers=True)``): layer ``k`` of the unrolled layout of ``source``
    goes to layer ``k`` of that of ``target``, stacked where ``target`` stacks. Raises
    ``ValueError`` naming the first layer whose variables (paths, kinds, shapes,
    dtypes) differ. Example, training unrolled weights in the scanned layout::

        >>> from flax import nnx
        >>> from stablejax.nn import copy_layers, mlp
        >>> unrolled = mlp([8, 8, 8], input_shape=(4,), rngs=nnx.Rngs(0))
        >>> scanned = mlp([8, 8, 8], input_shape=(4,), scan_layers=True, rngs=nnx.Rngs(1))
        >>> copy_layers(unrolled, scanned)
        >>> bool((scanned.layers[2].blocks.layers[0].kernel[1]
        ...       == unrolled.layers[3].kernel[...]).all())
        True
    """
    for name, model in (("source", source), ("target", target)):
        if not isinstance(model, nnx.Sequential):
            raise ValueError(f"{name} must be an nnx.Sequential, got {type(model).__name__}")
    flat = _flat_layers(source)
    pos = 0
    updates: list[tuple[Any, nnx.State]] = []
    for k, layer in enumerate(target.layers):
        if isinstance(layer, Stack):
            sequential = isinstance(layer.blocks, nnx.Sequential)
            per_block = len(layer.blocks.layers) if sequential else 1
            count = layer.length * per_block
            taken = flat[pos:pos + count]
            if len(taken) < count:
                raise ValueError(f"source has fewer layers than target (at target layer {k})")
            blocks = [
                nnx.Sequential(*taken[i:i + per_block]) if sequential else taken[i]
                for i in range(0, count, per_block)
            ]
            try:
                src: nnx.Module = Stack(blocks)
            except ValueError as err:
                raise ValueError(f"source layers for target layer {k} differ: {err}") from None
            pos += count
        else:
            if pos >= len(flat):
                raise ValueError(f"source has fewer layers than target (at target layer {k})")
            src = flat[pos]
            pos += 1
        state = nnx.state(src)
        if _shapes(state) != _shapes(nnx.state(layer)):
            raise ValueError(f"target layer {k} ({type(layer).__name__}) differs from its "
                             "source layer in its variables")
        updates.append((layer, state))
    if pos != len(flat):
        raise ValueError(f"source has {len(flat)} layers unrolled, target {pos}")
    for layer, state in updates:
        nnx.update(layer, state)


def path_name(path: Sequence[Any]) -> str:
    """``"layers/2/kernel"`` for a variable's path (raw keys or ``jax.tree_util`` keys).

    The one spelling of parameter paths used by :func:`variables` and the freezing
    functions of ``stablejax.transfer``; a Variable's own ``.value`` step is dropped.

    Example::

        >>> from stablejax.nn import path_name
        >>> path_name(("layers", 2, "kernel"))
        'layers/2/kernel'
    """
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value":
            continue
        names.append(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))))
    return "/".join(names)


def variables(model: nnx.Module) -> list[tuple[str, bool]]:
    """Lists ``(path, trainable)`` for every variable of ``model``, per layer.

    ``trainable`` is True for ``nnx.Param`` (learned by backpropagation) and False for
    everything else (``nnx.BatchStat`` moving statistics, RNG state). This is the JAX
    answer to Keras's ``[(v.name, v.trainable) for v in layer.variables]``; for a batch
    norm layer it gives ``scale`` (gamma) and ``bias`` (beta) trainable, ``mean`` and
    ``var`` not.

    A :class:`Stack` (``mlp(..., scan_layers=True)``) keeps one array per variable for
    all its blocks; it is listed once per block, block by block, with the block's index
    after ``blocks``: ``layers/4/blocks[2]/layers/0/kernel`` is the slice ``[2]`` of the
    stacked array at ``layers/4/blocks/layers/0/kernel`` (the path that ``nnx.state``,
    :func:`path_name` and ``stablejax.transfer`` use). A batch norm's shared
    ``frozen_calls`` counter is not stacked and is listed once, without an index.

    Example::

        >>> from flax import nnx
        >>> from stablejax.nn import BatchNorm, mlp, variables
        >>> variables(BatchNorm(3, rngs=nnx.Rngs(0)))
        [('bias', True), ('mean', False), ('scale', True), ('var', False)]
        >>> model = mlp([4, 4, 4], input_shape=(2,), scan_layers=True, rngs=nnx.Rngs(0))
        >>> [name for name, _ in variables(model)]  # doctest: +NORMALIZE_WHITESPACE
        ['layers/1/bias', 'layers/1/kernel',
         'layers/2/blocks[0]/layers/0/bias', 'layers/2/blocks[0]/layers/0/kernel',
         'layers/2/blocks[1]/layers/0/bias', 'layers/2/blocks[1]/layers/0/kernel',
         'layers/3/bias', 'layers/3/kernel']
    """
    flat = [(tuple(path), var) for path, var in nnx.to_flat_state(nnx.state(model))]
    stacks = [
        ((*path, "blocks"), module.length)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, Stack)
    ]

    def stack_of(path: tuple[Any, ...], var: nnx.Variable) -> tuple[tuple[Any, ...], int] | None:
        if isinstance(var, FrozenCalls):
            return None
        return next(((p, n) for p, n in stacks if path[: len(p)] == p), None)

    listed: list[tuple[str, bool]] = []
    done = set()
    for path, var in flat:
        stack = stack_of(path, var)
        if stack is None:
            listed.append((path_name(path), isinstance(var, nnx.Param)))
        elif stack[0] not in done:
            done.add(stack[0])
            prefix, length = stack
            members = [(p, v) for p, v in flat if stack_of(p, v) == stack]
            for i in range(length):
                for p, v in members:
                    name = path_name((*prefix[:-1], f"blocks[{i}]", *p[len(prefix):]))
                    listed.append((name, isinstance(v, nnx.Param)))
    return listed
