"""Learning-rate schedules: plain functions ``step -> value``.

Every schedule here takes the 0-based index of the optimizer update (the count
that ``optax.scale_by_schedule`` and ``optax.inject_hyperparams`` pass, and
Keras's ``optimizer.iterations``), works on Python ints and on (traced) JAX
integer arrays of any shape, and returns an array of JAX's default float dtype
(float32, or float64 under ``jax_enable_x64``). They plug into Optax anywhere a
``Schedule`` is accepted, e.g. ``optax.sgd(learning_rate=power_decay(0.01, 1e4))``.

Schedules count optimizer *steps* (batches), as Keras 3, Optax and PyTorch's
``LambdaLR`` stepped per batch do. :func:`per_epoch` turns a function of the epoch
(the form used with Keras's ``LearningRateScheduler`` callback) into one.

Every factory checks its numbers when it is called (a Python number, a NumPy scalar or a
concrete 0-d array; NaN and infinity are refused) and raises ``ValueError`` naming the
argument; a traced argument cannot be checked. A schedule called with a concrete step
refuses a negative one; a traced step is not checked. A schedule given as an argument
(to :func:`warmup`, or :func:`per_epoch` without ``num_epochs``) is a function whose
values cannot be checked ahead.

Every factory records what built each schedule it returns: :func:`describe` gives the
factory's name and its arguments (e.g. to write the schedule in another library's terms,
as :mod:`stablejax.keras_format` does).
"""

from __future__ import annotations

import functools
import inspect
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, ParamSpec

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from stablejax._checks import check_range, is_traced, non_negative, positive, require_int

Arguments = ParamSpec("Arguments")


class Description(NamedTuple):
    """What built a schedule (or an optimizer, :func:`stablejax.optimizers.describe`)."""

    name: str  # the factory, e.g. "exponential_decay"
    arguments: dict[str, Any]  # every argument by name, defaults included


# The description of each schedule returned here, keyed by the schedule (weak: it goes
# with the schedule).
_DESCRIPTIONS: weakref.WeakKeyDictionary[Callable[..., Any], Description] = (
    weakref.WeakKeyDictionary()
)


def describe(schedule: Any) -> Description | None:
    """The factory and arguments that built ``schedule``, or None for a function that no
    factory of this module returned.

    Example:
      >>> name, arguments = describe(exponential_decay(0.1, s=100))
      >>> print(name, arguments)
      exponential_decay {'lr0': 0.1, 's': 100, 'rate': 0.1, 'staircase': False}
      >>> print(describe(lambda step: 0.1))
      None
    """
    try:
        return _DESCRIPTIONS.get(schedule)
    except TypeError:  # not weakly referable: no factory returned it
        return None


def _described(
    factory: Callable[Arguments, optax.Schedule],
) -> Callable[Arguments, optax.Schedule]:
    """``factory`` recording the :class:`Description` of each schedule it returns."""
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def build(*args: Arguments.args, **kwargs: Arguments.kwargs) -> optax.Schedule:
        schedule = factory(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        _DESCRIPTIONS[schedule] = Description(factory.__name__, dict(bound.arguments))
        return schedule

    return build


def _check_step(step: ArrayLike) -> None:
    """Refuses a concrete negative step: schedules take the 0-based update index."""
    if not is_traced(step) and np.any(np.asarray(step) < 0):
        raise ValueError(f"step must be >= 0 (the 0-based update index), got {step!r}")


def _as_float(step: ArrayLike) -> jax.Array:
    _check_step(step)
    return jnp.asarray(step, dtype=jnp.result_type(float))


@_described
def power_decay(
    lr0: float,
    s: float,
    c: float = 1.0,
    staircase: bool = False,
    rate: float = 1.0,
) -> optax.Schedule:
    r"""Power (inverse-time) scheduling.

    .. math::
        \eta(t) = \frac{\eta_0}{(1 + r\,p)^c},\qquad
        p = t / s \quad(\text{or } \lfloor t / s \rfloor \text{ with ``staircase``})

    With the defaults (``c=1.0``, ``rate=1.0``, ``staircase=False``) this is the
    guide's law (docs/guide.md §3) :math:`\eta_0 / (1 + t/s)`: the rate is divided by 2 after ``s``
    steps, by 3 after ``2s`` steps, and so on.

    Args:
      lr0: initial learning rate :math:`\eta_0`, in (0, inf).
      s: number of steps per unit of ``p``, in (0, inf).
      c: power, in (0, inf). Default 1.0.
      staircase: if True, ``p`` is floored so the rate changes every ``s`` steps.
        Default False.
      rate: multiplier :math:`r` of ``p``, in (0, inf). Default 1.0.

    Returns:
      A schedule ``step -> learning rate``.

    Example:
      >>> schedule = power_decay(0.01, s=10)
      >>> schedule(jnp.array([0, 10, 20, 30])).tolist()
      [0.01, 0.005, 0.00333333, 0.0025]
      >>> power_decay(0.01, s=10, staircase=True)(jnp.array([9, 10, 19])).tolist()
      [0.01, 0.005, 0.005]

    Warning:
      Keras 3 ``InverseTimeDecay(lr0, decay_steps=T, decay_rate=r, staircase)``
      computes :math:`\eta_0 / (1 + r\,\lfloor t/T \rfloor)` (floor only with
      ``staircase``); it equals ``power_decay(lr0, s=T, rate=r, staircase=...)``.
      Without staircase it also equals ``power_decay(lr0, s=T / r)``, but with
      staircase it does not (the floor is taken over ``T`` steps, not ``T / r``).
      Keras 2's optimizer argument ``decay=d`` is ``power_decay(lr0, s=1 / d)``.
      Optax has no such schedule; PyTorch has it only inside ``Adagrad(lr_decay=)``
      or written with ``LambdaLR``.

    References:
      Géron, *Hands-On Machine Learning*, ch. 11 (power scheduling);
      Darken, Chang & Moody, "Learning rate schedules for faster stochastic
      gradient search", 1992.
    """
    positive("lr0", lr0)
    positive("s", s)
    positive("c", c)
    positive("rate", rate)
    exact_inverse = not isinstance(c, jax.Array | np.ndarray) and float(c) == 1

    def schedule(step: ArrayLike) -> jax.Array:
        p = _as_float(step) / s
        if staircase:
            p = jnp.floor(p)
        denominator = 1.0 + rate * p
        if not exact_inverse:
            denominator = denominator**c
        return lr0 / denominator

    return schedule


@_described
def exponential_decay(
    lr0: float,
    s: float,
    rate: float = 0.1,
    staircase: bool = False,
) -> optax.Schedule:
    r"""Exponential scheduling.

    .. math::
        \eta(t) = \eta_0 \, r^{p},\qquad
        p = t / s \quad(\text{or } \lfloor t / s \rfloor \text{ with ``staircase``})

    With the default ``rate=0.1`` the rate drops tenfold every ``s`` steps, the
    guide's :math:`\eta_0 \cdot 0.1^{t/s}`.

    Args:
      lr0: initial learning rate :math:`\eta_0`, in (0, inf).
      s: steps per factor of ``rate``, in (0, inf).
      rate: decay rate :math:`r`, in (0, inf); a rate above 1 makes the value
        *grow*. Default 0.1.
      staircase: if True, ``p`` is floored so the rate changes every ``s`` steps.
        Default False.

    Returns:
      A schedule ``step -> learning rate``.

    Example:
      >>> schedule = exponential_decay(1.0, s=2)
      >>> schedule(jnp.arange(5)).tolist()
      [1.0, 0.316228, 0.1, 0.0316228, 0.01]
      >>> exponential_decay(1.0, s=2, staircase=True)(jnp.arange(5)).tolist()
      [1.0, 1.0, 0.1, 0.1, 0.01]

    Note:
      The same numbers as Keras 3 ``ExponentialDecay(lr0, decay_steps=s,
      decay_rate=rate, staircase=...)`` and ``optax.exponential_decay(lr0, s, rate,
      staircase=...)`` (both 0-based, with the same floor). It is not a wrapper of
      the latter because Optax's factory branches in Python on ``transition_steps``
      and ``decay_rate``, so it cannot be built with a traced ``s`` or ``rate``
      (under ``jit`` or ``vmap``, e.g. a sweep over decay rates); this one can.
      docs/guide.md applies the law per *epoch*; per step that is
      ``exponential_decay(lr0, s * steps_per_epoch)``, or use :func:`per_epoch`.

    References:
      Géron, *Hands-On Machine Learning*, ch. 11 (exponential scheduling).
    """
    positive("lr0", lr0)
    positive("s", s)
    positive("rate", rate)

    def schedule(step: ArrayLike) -> jax.Array:
        p = _as_float(step) / s
        if staircase:
            p = jnp.floor(p)
        return lr0 * jnp.power(rate, p)

    return schedule


@_described
def piecewise_constant(
    boundaries: Sequence[float],
    values: Sequence[float],
    inclusive: str = "right",
) -> optax.Schedule:
    r"""Piecewise-constant scheduling.

    With ``inclusive="right"`` (the default, Keras's convention):

    .. math::
        \eta(t) = v_i \quad\text{for}\quad b_{i-1} < t \le b_i,

    with :math:`b_{-1} = -\infty` and :math:`b_n = +\infty`, so the value switches
    on the step *after* each boundary. With ``inclusive="left"``:

    .. math::
        \eta(t) = v_i \quad\text{for}\quad b_{i-1} \le t < b_i,

    so the value switches *at* each boundary.

    Args:
      boundaries: strictly increasing steps at which the value changes, finite numbers.
      values: the ``len(boundaries) + 1`` values, finite numbers >= 0.
      inclusive: ``"right"`` (Keras) or ``"left"`` (Optax, PyTorch, docs/guide.md).
        Default ``"right"``.

    Returns:
      A schedule ``step -> value``.

    Example:
      >>> steps = jnp.arange(7)
      >>> piecewise_constant([2, 5], [1.0, 0.5, 0.25])(steps).tolist()
      [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
      >>> piecewise_constant([2, 5], [1.0, 0.5, 0.25], inclusive="left")(steps).tolist()
      [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]

    Warning:
      Keras 3 ``PiecewiseConstantDecay(boundaries, values)`` is right-inclusive:
      ``[2, 5], [1, 0.5, 0.1]`` gives ``1, 1, 1, 0.5, 0.5, 0.5, 0.1`` for steps
      0..6. ``optax.piecewise_constant_schedule`` (which takes multiplicative
      scales, not values), PyTorch ``MultiStepLR`` and an epoch function written
      ``if epoch < 5: ...`` switch at ``step >= b``, one step earlier: use
      ``inclusive="left"`` for those. It is not a wrapper of Optax's schedule:
      rebuilding values from products of scales would round them (and cannot
      express a value of 0 followed by a non-zero one).

    References:
      Géron, *Hands-On Machine Learning*, ch. 11 (piecewise constant scheduling).
    """
    if inclusive not in ("right", "left"):
        raise ValueError(f"inclusive={inclusive!r} must be one of 'right', 'left'")
    boundaries = list(boundaries)
    values = list(values)
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"values={values!r} has {len(values)} entries but must have "
            f"len(boundaries) + 1 = {len(boundaries) + 1}"
        )
    for i, boundary in enumerate(boundaries):
        check_range(f"boundaries[{i}]", boundary, -math.inf, math.inf, low_open=True,
                    high_open=True)
    for i, value in enumerate(values):
        non_negative(f"values[{i}]", value)
    if any(not b1 > b0 for b0, b1 in zip(boundaries[:-1], boundaries[1:], strict=True)):
        raise ValueError(f"boundaries={boundaries!r} must be strictly increasing")
    side = "left" if inclusive == "right" else "right"

    def schedule(step: ArrayLike) -> jax.Array:
        float_dtype = jnp.result_type(float)
        # searchsorted counts the boundaries below the step (side="left": b < t,
        # so the step equal to a boundary keeps the previous value).
        index = jnp.searchsorted(
            jnp.asarray(boundaries, float_dtype), _as_float(step), side=side
        )
        return jnp.asarray(values, float_dtype)[index]

    return schedule


@_described
def per_epoch(
    schedule: Callable[[Any], ArrayLike],
    steps_per_epoch: int,
    num_epochs: int | None = None,
) -> optax.Schedule:
    r"""Runs a function of the epoch as a per-step schedule.

    .. math::
        \eta(t) = f\big(\lfloor t / \text{steps\_per\_epoch} \rfloor\big)

    The values are those Keras's ``LearningRateScheduler(schedule)`` sets at the
    start of each epoch.

    - Without ``num_epochs``, ``schedule`` is traced with the epoch as an integer
      array, which suits arithmetic such as docs/guide.md's ``lr0 * 0.1 ** (epoch / s)``.
    - With ``num_epochs``, ``schedule`` is called once per epoch ``0 .. num_epochs - 1``
      with a Python ``int`` when ``per_epoch`` is built, and the results are stored in
      a table: any function works, including ones with Python ``if`` branches
      (``if epoch < 5: ...``). Steps beyond the last epoch keep its value.

    A function that cannot be traced (it branches on the epoch in Python) and no
    ``num_epochs`` raises ``ValueError`` at construction, saying so. A tabulated value
    that is negative, infinite or NaN raises ``ValueError`` naming its epoch; a traced
    function's values cannot be checked ahead.

    Args:
      schedule: ``epoch -> learning rate``, with ``epoch`` 0-based.
      steps_per_epoch: optimizer updates per epoch (number of batches), an
        integer in [1, inf).
      num_epochs: None, or the number of epochs to tabulate, an integer in [1, inf);
        use the number of epochs you train for.

    Returns:
      A jit-safe schedule ``step -> learning rate``.

    Example:
      >>> def halve_after_two(epoch):
      ...     return 0.1 if epoch < 2 else 0.05
      >>> schedule = per_epoch(halve_after_two, steps_per_epoch=2, num_epochs=3)
      >>> schedule(jnp.arange(7)).tolist()
      [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
      >>> per_epoch(lambda epoch: 0.1 * 0.5**epoch, steps_per_epoch=2)(jnp.arange(6)).tolist()
      [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]

    Warning:
      Keras's ``LearningRateScheduler`` also accepts ``schedule(epoch, lr)``; here
      the function must take the epoch only. Because the epoch is derived from the
      optimizer's step count, which is saved with the optimizer state, training
      resumed from a checkpoint continues at the right epoch without Keras's
      ``initial_epoch``.
    """
    require_int("steps_per_epoch", steps_per_epoch, 1)
    steps_per_epoch = int(steps_per_epoch)
    if num_epochs is None:
        try:
            jax.eval_shape(lambda e: jnp.asarray(schedule(e)), jax.ShapeDtypeStruct((), jnp.int32))
        except (jax.errors.ConcretizationTypeError, TypeError) as error:
            raise ValueError(
                "schedule cannot be traced with an array epoch (it branches on the epoch "
                "in Python, for example); pass num_epochs to tabulate it instead"
            ) from error

        def traced_schedule(step: ArrayLike) -> jax.Array:
            _check_step(step)
            epoch = (jnp.asarray(step) // steps_per_epoch).astype(jnp.int32)
            return jnp.asarray(schedule(epoch), jnp.result_type(float))

        return traced_schedule

    require_int("num_epochs", num_epochs, 1)
    table = np.asarray([float(np.asarray(schedule(epoch))) for epoch in range(int(num_epochs))])
    for epoch, value in enumerate(table):
        non_negative(f"schedule({epoch})", value)

    def step_schedule(step: ArrayLike) -> jax.Array:
        _check_step(step)
        epoch = jnp.asarray(step) // steps_per_epoch
        epoch = jnp.clip(epoch, 0, len(table) - 1).astype(jnp.int32)
        return jnp.asarray(table, jnp.result_type(float))[epoch]

    return step_schedule


@_described
def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> optax.Schedule:
    r"""1cycle scheduling: a warm-up to ``max_lr``, then an anneal far below the start.

    With :math:`\eta_0 = \text{max\_lr} / \text{div\_factor}`,
    :math:`\eta_{end} = \eta_0 / \text{final\_div\_factor}` and
    :math:`w = \lfloor \text{pct\_start} \cdot T \rfloor`:

    .. math::
        \eta(t) = \begin{cases}
          I(\eta_0, \text{max\_lr}, t / w) & t < w \\
          I(\text{max\_lr}, \eta_{end}, (t - w) / (T - w)) & w \le t < T \\
          \eta_{end} & t \ge T
        \end{cases}

    where :math:`I(a, b, x) = b + (a - b)(1 + \cos \pi x)/2` for ``"cos"`` and
    :math:`a + (b - a)x` for ``"linear"``.

    Args:
      max_lr: peak learning rate, in (0, inf).
      total_steps: length :math:`T` of the cycle in steps, an integer in [1, inf).
      pct_start: fraction of the cycle spent rising, in (0, 1). Default 0.3.
      anneal_strategy: ``"cos"`` or ``"linear"``. Default ``"cos"``.
      div_factor: ``max_lr / div_factor`` is the starting value, in (0, inf).
        Default 25.0.
      final_div_factor: the final value is the starting value divided by this,
        in (0, inf). Default 1e4.

    Returns:
      A schedule ``step -> learning rate``.

    Example:
      >>> schedule = one_cycle(1.0, total_steps=10, pct_start=0.2, div_factor=10.0,
      ...                      final_div_factor=100.0)
      >>> schedule(jnp.array([0, 1, 2, 6, 10, 20])).tolist()
      [0.1, 0.55, 1.0, 0.5005, 0.001, 0.001]
      >>> one_cycle(1.0, 10, 0.2, "linear", 10.0, 100.0)(jnp.array([1, 6])).tolist()
      [0.55, 0.5005]

    Warning:
      This is Optax's piecewise interpolation applied elementwise (Optax's
      schedules take a scalar step): the ``"cos"`` schedule is
      ``optax.cosine_onecycle_schedule(T, max_lr, pct_start, div_factor,
      final_div_factor)``, and ``"linear"`` is the same two phases interpolated
      linearly (``optax.linear_onecycle_schedule`` is a different, three-phase
      schedule). The peak is at step ``w`` and the final value at step ``T``;
      PyTorch's ``OneCycleLR`` places them one step earlier (peak at
      ``pct_start * T - 1``, final value at ``T - 1``). Keras has no 1cycle
      schedule. Smith also cycles the momentum inversely; that is not done here.
      Only ``max_lr`` may be a traced array; the other arguments must be Python
      numbers (Optax checks the factors in Python).

    References:
      Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks
      Using Large Learning Rates", 2017 (arXiv:1708.07120).
    """
    positive("max_lr", max_lr)
    require_int("total_steps", total_steps, 1)
    check_range("pct_start", pct_start, 0, 1, low_open=True, high_open=True)
    positive("div_factor", div_factor)
    positive("final_div_factor", final_div_factor)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy={anneal_strategy!r} must be one of 'cos', 'linear'")
    total_steps = int(total_steps)
    scalar_schedule = optax.piecewise_interpolate_schedule(
        "cosine" if anneal_strategy == "cos" else "linear",
        max_lr / div_factor,
        {
            int(pct_start * total_steps): div_factor,
            total_steps: 1.0 / (div_factor * final_div_factor),
        },
    )
    vectorized = jnp.vectorize(scalar_schedule)

    def schedule(step: ArrayLike) -> jax.Array:
        _check_step(step)
        return vectorized(step)

    return schedule


@_described
def warmup(
    schedule_or_value: optax.ScalarOrSchedule,
    warmup_steps: int,
    init_value: float = 0.0,
    shift: bool = True,
) -> optax.Schedule:
    r"""Linear warm-up followed by a schedule (or a constant).

    With :math:`W` = ``warmup_steps`` and :math:`f` the schedule:

    .. math::
        \eta(t) = \begin{cases}
          \text{init\_value} + (f(t_0) - \text{init\_value})\, t / W & t < W \\
          f(t - W) \text{ if shift else } f(t) & t \ge W
        \end{cases}

    where :math:`t_0 = 0` if ``shift`` else :math:`W`, so the ramp always ends on
    the value the schedule takes next and the curve is continuous.

    Args:
      schedule_or_value: the schedule to warm up into (a function, whose values cannot
        be checked ahead), or a constant rate, a finite number >= 0.
      warmup_steps: length :math:`W` of the ramp, an integer in [0, inf); 0 means
        no warm-up.
      init_value: rate at step 0, a finite number >= 0. Default 0.0.
      shift: if True (default), the schedule starts *after* the warm-up (its step
        0 is step ``W``), as in ``optax.warmup_cosine_decay_schedule`` and Keras
        ``CosineDecay(warmup_steps=...)``; if False, the warm-up replaces the
        schedule's first ``W`` steps, which keep counting underneath.

    Returns:
      A schedule ``step -> learning rate``.

    Example:
      >>> warmup(0.1, warmup_steps=4)(jnp.arange(6)).tolist()
      [0.0, 0.025, 0.05, 0.075, 0.1, 0.1]
      >>> decay = exponential_decay(0.1, s=1, rate=0.5)
      >>> warmup(decay, warmup_steps=2)(jnp.arange(5)).tolist()
      [0.0, 0.05, 0.1, 0.05, 0.025]
      >>> warmup(decay, warmup_steps=2, shift=False)(jnp.arange(5)).tolist()
      [0.0, 0.0125, 0.025, 0.0125, 0.00625]

    Note:
      With ``shift=True`` the numbers are those of ``optax.join_schedules`` of
      ``optax.linear_schedule(init_value, f(0), W)`` and ``f`` (so
      ``warmup(optax.cosine_decay_schedule(peak, D), W, init)`` is
      ``optax.warmup_cosine_decay_schedule(init, peak, W, W + D)``), up to
      float32 rounding of the ramp. It is not built from them because Optax
      has no unshifted form and evaluates ``f`` at negative steps during the
      ramp.

    References:
      Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
      2017 (gradual warm-up).
    """
    require_int("warmup_steps", warmup_steps, 0)
    non_negative("init_value", init_value)
    warmup_steps = int(warmup_steps)
    if callable(schedule_or_value):
        after = schedule_or_value
    else:
        non_negative("schedule_or_value", schedule_or_value)
        constant = schedule_or_value

        def after(step: ArrayLike) -> jax.Array:
            return jnp.full(jnp.shape(step), constant, jnp.result_type(float))

    ramp_target_step = 0 if shift else warmup_steps
    offset = warmup_steps if shift else 0

    def schedule(step: ArrayLike) -> jax.Array:
        t = _as_float(step)
        target = after(ramp_target_step)
        ramp = init_value + (target - init_value) * (t / max(warmup_steps, 1))
        # The schedule is never evaluated at a negative step.
        main = after(jnp.maximum(jnp.asarray(step) - offset, 0))
        return jnp.where(t < warmup_steps, ramp, main)

    return schedule
