"""The run state and the compiled train and eval steps.

A run's whole state is one :class:`TrainState` pytree: the model's parameters, its other
variables (batch-norm statistics, RNG streams), the optimizer state (schedule counts and
plateau state included), the step and epoch counters, and the callbacks' state. Saving
and restoring it continues a run bitwise as if it had never stopped.

The steps are built on ``nnx.split``/``nnx.merge`` inside a plain ``jax.jit`` with
donated buffers, which is faster per step than ``nnx.jit`` for small models::

    >>> import jax.numpy as jnp, stablejax as sj
    >>> from flax import nnx
    >>> model = sj.nn.mlp([16], input_shape=(4,), output_size=3, rngs=nnx.Rngs(0))
    >>> tx = sj.adam(1e-3)
    >>> state = sj.steps.init_state(model, tx)
    >>> step = sj.steps.make_train_step(model, tx)
    >>> x, y = jnp.ones((8, 4)), jnp.zeros((8,), jnp.int32)
    >>> state, metrics = step(state, (x, y))
    >>> sorted(metrics), int(state.step)
    (['accuracy', 'loss', 'skipped'], 1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from stablejax import distributed, losses
from stablejax._checks import index
from stablejax.guard import all_finite
from stablejax.metrics import Loss, Metrics, check_log_names, metric_fns

__all__ = [
    "Batch",
    "Weighted",
    "TrainState",
    "init_state",
    "update_model",
    "make_train_step",
    "make_eval_step",
    "make_train_scan",
    "make_eval_scan",
    "train_body",
    "eval_scan",
    "over_batches",
    "batch_sizes",
]

Batch = tuple[jax.Array, Any]  # (x, y), y an array or Weighted(targets, weights)
Mesh = jax.sharding.Mesh


class Weighted(NamedTuple):
    """Targets with one weight per sample: a batch ``(x, Weighted(y, w))`` is trained on
    ``sum(w_i * loss_i) / batch_size`` (:func:`stablejax.losses.sample_weighted`, Keras's
    ``sample_weight``), while the metrics see ``y`` alone, unweighted, as Keras's
    ``metrics`` do. ``weights`` has shape ``(samples,)``."""

    targets: Any
    weights: jax.Array


def _labels(y: Any) -> Any:
    """The targets the metrics see: ``y`` without its weights."""
    return y.targets if isinstance(y, Weighted) else y


def _batch_loss(loss_fn: Callable, outputs: Any, y: Any) -> jax.Array:
    """The batch loss, sample-weighted for :class:`Weighted` targets."""
    if isinstance(y, Weighted):
        return losses.sample_weighted(loss_fn, outputs, y.targets, y.weights)
    return loss_fn(outputs, y)


def _rows(tree: Any, idx: Any) -> Any:
    """``a[idx]`` for every array of the targets (``y`` or :class:`Weighted`)."""
    return jax.tree.map(lambda a: a[idx], tree)


class TrainState(NamedTuple):
    """The whole state of a run, one pytree of arrays."""

    params: nnx.State  # the model's nnx.Param variables: what the optimizer trains
    rest: nnx.State  # every other variable: batch statistics, RNG streams (RReLU draws)
    opt_state: optax.OptState
    step: jax.Array  # int32, updates attempted (skipped ones included)
    epoch: jax.Array  # int32, completed epochs
    skips: jax.Array  # int32, consecutive skipped (non-finite) updates
    callbacks: dict[str, Any]  # per-callback state, keyed by the callback's position


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> TrainState:
    """Builds the initial :class:`TrainState` of ``model`` trained by ``tx``."""
    _, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    zero = jnp.zeros((), jnp.int32)
    state = TrainState(params, rest, tx.init(params), zero, zero, zero, {})
    return jax.tree.map(_own_buffer, state)


def _own_buffer(x: jax.typing.ArrayLike) -> jax.Array:
    # A copy, so no two leaves alias one buffer (optimizer states may) and the whole state
    # can be donated; committed to its sharding, like every output of the compiled step,
    # so the second call does not compile again.
    x = jnp.array(x)
    return jax.device_put(x, x.sharding)


def update_model(model: nnx.Module, state: TrainState) -> None:
    """Writes the state's parameters and other variables back into ``model``, in place."""
    nnx.update(model, state.params, state.rest)


StepStats = Callable[[Any, Any], dict[str, jax.Array]]


def _not_probabilities(loss: Loss, outputs: Any) -> jax.Array | None:
    """For a named loss that takes probabilities, the fraction of the batch's samples whose
    outputs are not probabilities (outside [0, 1], or, for the categorical one, a row
    whose sum is off 1 by more than 1e-3); None for the other losses."""
    if loss == "sparse_categorical_crossentropy":
        rows = outputs.reshape(len(outputs), -1)
        off = jnp.abs(rows.sum(axis=-1) - 1) > 1e-3
    elif loss == "binary_crossentropy":
        rows, off = outputs.reshape(len(outputs), -1), jnp.zeros(len(outputs), bool)
    else:
        return None
    off = off | jnp.any((rows < 0) | (rows > 1), axis=-1)
    return off.mean(dtype=jnp.float32)


def train_body(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss: Loss,
    metrics: Metrics | None,
    skip_nonfinite: bool = True,
    step_stats: StepStats | None = None,
    mesh: Mesh | None = None,
    shard_optimizer_state: bool = False,
    check_outputs: bool = False,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """The pure, uncompiled ``(state, (x, y)) -> (state, outs)`` of one training step,
    for a model's ``graphdef``: what :func:`make_train_step` compiles and
    :func:`make_train_scan` loops (and :func:`stablejax.sweep.run` vmaps). The arguments
    are those of :func:`make_train_step`; ``check_outputs`` adds ``not_probabilities``
    (see :func:`make_train_scan`) to its outputs for the losses that take probabilities."""
    loss_fn = losses.get(loss)
    reported = metric_fns(loss, metrics)

    def body(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        if mesh is not None:
            # The partitioner does the rest: reductions over the sharded batch (loss,
            # gradients, batch-norm statistics) become all-reduces over "data".
            batch = distributed.constrain_batch(batch, mesh)
        x, y = batch
        params_before = state.params

        def objective(params):
            # copy: the variables are mutated (batch statistics) inside this grad trace.
            model = nnx.merge(graphdef, params, state.rest, copy=True)
            outputs = model(x)
            _, _, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
            return _batch_loss(loss_fn, outputs, y), (outputs, rest)

        (value, (outputs, rest)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )

        def apply(rest: nnx.State) -> tuple[Any, nnx.State, optax.OptState]:
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return optax.apply_updates(state.params, updates), rest, opt_state

        if skip_nonfinite:
            # A non-finite loss or gradient leaves parameters, statistics and optimizer
            # state untouched: one bad batch must not poison the run. A branch rather than
            # a select per array: the update runs only when it is kept.
            finite = jnp.isfinite(value) & all_finite(grads)
            params, rest, opt_state = jax.lax.cond(
                finite, apply, lambda _: (state.params, state.rest, state.opt_state), rest
            )
        else:
            finite = jnp.asarray(True)
            params, rest, opt_state = apply(rest)
        skipped = (~finite).astype(jnp.int32)
        state = state._replace(
            params=params,
            rest=rest,
            opt_state=opt_state,
            step=optax.safe_increment(state.step),
            skips=jnp.where(finite, 0, optax.safe_increment(state.skips)).astype(jnp.int32),
        )
        out = {"loss": value, "skipped": skipped}
        out.update({name: fn(outputs, _labels(y)) for name, fn in reported.items()})
        off = _not_probabilities(loss, outputs) if check_outputs else None
        if off is not None:
            out["not_probabilities"] = off
        if step_stats is not None:
            stats = step_stats(grads, params_before)
            check_log_names(stats, "step_stats", taken=reported)
            out.update({name: jnp.asarray(v) for name, v in stats.items()})
        if mesh is not None:  # the layout the next step (or loop iteration) expects
            state = distributed.constrain_state(state, mesh, shard_optimizer_state)
        return state, out

    return body


def make_train_step(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    loss: Loss = "sparse_categorical_crossentropy",
    *,
    metrics: Metrics | None = None,
    donate: bool = True,
    skip_nonfinite: bool = True,
    step_stats: StepStats | None = None,
    mesh: Mesh | None = None,
    shard_optimizer_state: bool = False,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns a jit-compiled, pure ``(state, (x, y)) -> (state, metrics)``.

    One step: forward in training mode (batch statistics, fresh RReLU slopes from the
    model's RNG state), ``loss(outputs, y)``, gradients w.r.t. the ``nnx.Param``
    variables, ``tx.update`` and ``optax.apply_updates``. When the loss or any gradient
    is NaN or Inf the step changes nothing but the counters and reports ``skipped=1``.
    A batch ``(x, Weighted(y, w))`` trains on the sample-weighted loss (see
    :class:`Weighted`).

    Args:
      model: the ``flax.nnx`` model (its structure is captured; its values live in the
        state from :func:`init_state`).
      tx: the optimizer.
      loss: a name from ``stablejax.losses.LOSSES`` or ``loss(outputs, targets)``.
      metrics: ``{name: fn(outputs, targets)}``; default accuracy for the cross-entropies.
      donate: donate the input state's buffers (the caller must not reuse that state).
      skip_nonfinite: guard against non-finite steps as above: one reduction over the
        gradients and a branch around the update (measured on the guide's model, Adam,
        batch 32, 2-core CPU: about 8% of a step inside ``fit``'s device loop, within
        noise for a step called alone; a select per state array cost 36%). False
        trusts every step. The guard does not look at the update itself: an optimizer
        that turns finite gradients into a non-finite update (the clipping norms no
        longer can: they are computed without overflow) is not caught. Checking the new
        parameters too was measured at +47% per step and is left out.
      step_stats: ``fn(grads, params) -> {name: scalar}``, extra values to report
        (e.g. gradient norms), computed from the step's gradients and the parameters
        before the update; names are checked by :func:`check_log_names`.
      mesh: run data-parallel on this ``jax.sharding.Mesh`` (one with a ``"data"``
        axis, e.g. ``sj.distributed.data_mesh()``): the step places the state
        replicated on the mesh and the global batch split along ``"data"`` (a batch
        whose size does not divide over the devices runs whole on each of them), and
        the numbers equal one device's up to float32 rounding; batch-norm statistics
        are the global batch's. Across processes every process passes the same whole
        batch. See :mod:`stablejax.distributed`.
      shard_optimizer_state: with ``mesh``, split the optimizer state's buffers along
        ``"data"`` (see :func:`stablejax.distributed.state_shardings`); same numbers.

    Returns:
      ``step(state, batch)``; metrics hold ``loss``, ``skipped``, each metric and each
      step statistic. With ``mesh``, ``step.lower(state, batch)`` lowers the compiled
      program for inspection.
    """
    _check_mesh(mesh, shard_optimizer_state)
    body = train_body(nnx.graphdef(model), tx, loss, metrics, skip_nonfinite, step_stats,
                       mesh, shard_optimizer_state)
    jitted = jax.jit(body, donate_argnums=(0,) if donate else ())
    if mesh is None:
        return jitted

    def placed(state: TrainState, batch: Batch) -> tuple[TrainState, Batch]:
        return (distributed.place_state(state, mesh, shard_optimizer_state),
                distributed.shard_batch(batch, mesh))

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        return jitted(*placed(state, batch))

    step.lower = lambda state, batch: jitted.lower(*placed(state, batch))  # type: ignore[attr-defined]
    return step


def _check_mesh(mesh: Mesh | None, shard_optimizer_state: bool) -> None:
    if mesh is not None:
        distributed.check_mesh(mesh)
    elif shard_optimizer_state:
        raise ValueError("shard_optimizer_state=True needs a mesh to shard along: pass "
                         "mesh=sj.distributed.data_mesh()")


def _eval_body(
    graphdef: nnx.GraphDef, loss: Loss, metrics: Metrics | None, mesh: Mesh | None = None
) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
    loss_fn = losses.get(loss)
    reported = metric_fns(loss, metrics)

    def step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        if mesh is not None:  # each device evaluates its part of the batch
            batch = distributed.constrain_batch(batch, mesh)
        x, y = batch
        model = nnx.merge(graphdef, state.params, state.rest)
        model.eval()
        outputs = model(x)
        out = {"loss": _batch_loss(loss_fn, outputs, y)}
        out.update({name: fn(outputs, _labels(y)) for name, fn in reported.items()})
        return out

    return step


def make_eval_step(
    model: nnx.Module,
    loss: Loss = "sparse_categorical_crossentropy",
    *,
    metrics: Metrics | None = None,
) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
    """Returns a jit-compiled ``(state, (x, y)) -> metrics`` in inference mode.

    Batch norm uses its moving statistics and RReLU its mean slope; nothing is updated.
    """
    return jax.jit(_eval_body(nnx.graphdef(model), loss, metrics))


def make_train_scan(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    loss: Loss = "sparse_categorical_crossentropy",
    *,
    metrics: Metrics | None = None,
    skip_nonfinite: bool = True,
    max_consecutive_skips: int | None = None,
    step_stats: StepStats | None = None,
    mesh: Mesh | None = None,
    shard_optimizer_state: bool = False,
    batched: bool = False,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Returns a compiled ``run(state, x, y, rows, start, count, tail=None, use_tail=False)``.

    ``x`` and ``y`` are the whole training set on the device and ``rows`` an int32
    ``(steps, batch_size)`` array of sample indices, one row per step (an epoch's
    batches). A call runs rows ``start, start + 1, ...`` (``count`` of them, at most up to
    the last row) in order, each as :func:`make_train_step`'s step, in one loop on the
    device: one dispatch for all of them, and one compiled program whatever ``start``
    and ``count`` are. ``tail`` is an int32 ``(r,)`` array of indices for one shorter
    batch (an epoch's partial last batch), run in the same program after the last row
    when ``use_tail`` is true. With ``max_consecutive_skips`` the loop stops right after
    the step that makes that many consecutive skipped (non-finite) updates, so the
    state it returns is the last finite one and the step counter points at the failure.

    Returns ``(state, outs)``. ``outs[k]`` has one entry per row, plus one for the tail
    when it is given: ``ran`` (1 for the steps this call ran, 0 elsewhere), ``loss`` and
    each metric (the batch's mean), ``skipped`` (1 for a non-finite step) and ``skips``
    (consecutive skipped steps after it), each of ``step_stats``'s values (see
    :func:`make_train_step`), and for the losses that take probabilities
    (``"sparse_categorical_crossentropy"``, ``"binary_crossentropy"``)
    ``not_probabilities``, the fraction of the batch's samples whose outputs lie outside
    [0, 1] or (categorical) do not sum to 1 (logits given to a probability loss); entries
    of steps that did not run are 0. The input state
    is donated. ``y`` may be :class:`Weighted` (targets and per-sample weights, indexed
    alike).

    With ``batched=True`` the batches come gathered: ``x`` and ``y`` are the epoch's
    full batches, ``(steps, batch_size, ...)``, ``rows`` is None and ``tail`` the pair
    ``(x_tail, y_tail)`` of the shorter batch (or None); step ``i`` trains on
    ``(x[i], y[i])``.

    With ``mesh`` (see :func:`make_train_step`) the caller places the arguments: the
    state as :func:`stablejax.distributed.place_state` does and, batched, the batches
    split along their sample axis (:func:`stablejax.distributed.gather_rows`), so each
    device holds only its rows of the epoch; unbatched, ``x``, ``y``, ``rows`` and
    ``tail`` replicated (:func:`stablejax.distributed.replicate`), each step splitting
    its row of indices so that every device gathers its part of the batch. A tail whose
    size does not divide over the devices runs whole on each of them.

    Example::

        >>> import jax.numpy as jnp, numpy as np, stablejax as sj
        >>> from flax import nnx
        >>> model = sj.nn.mlp([8], input_shape=(4,), output_size=2, rngs=nnx.Rngs(0))
        >>> tx = sj.sgd(0.1)
        >>> run = sj.steps.make_train_scan(model, tx)
        >>> x, y = jnp.ones((10, 4)), jnp.zeros((10,), jnp.int32)
        >>> rows = np.arange(8, dtype=np.int32).reshape(2, 4)
        >>> state, outs = run(sj.steps.init_state(model, tx), x, y, rows, 0, 2,
        ...                   np.array([8, 9], np.int32), True)
        >>> int(state.step), outs["ran"].tolist()
        (3, [1, 1, 1])
    """
    if max_consecutive_skips is not None:
        index("max_consecutive_skips", max_consecutive_skips, 1)
    _check_mesh(mesh, shard_optimizer_state)
    body = train_body(nnx.graphdef(model), tx, loss, metrics, skip_nonfinite, step_stats,
                       mesh, shard_optimizer_state, check_outputs=True)

    def step(state: TrainState, idx: Any, x: jax.Array, y: jax.Array):
        if batched:  # idx: the batch itself
            batch = idx
        else:
            if mesh is not None:  # each device gathers its own rows of the batch
                idx = distributed.constrain_batch(idx, mesh)
            batch = (x[idx], _rows(y, idx))
        state, out = body(state, batch)
        out["skips"] = state.skips
        out["ran"] = jnp.ones((), jnp.int32)
        return state, out

    def going(state: TrainState) -> jax.Array:
        if max_consecutive_skips is None:
            return jnp.asarray(True)
        return state.skips < max_consecutive_skips

    def row(rows: jax.Array | None, x: jax.Array, y: jax.Array, i: Any) -> Any:
        return (x[i], _rows(y, i)) if batched else rows[i]  # type: ignore[index]

    def run(state, x, y, rows, start, count, tail=None, use_tail=False):
        if batched and rows is not None:
            raise ValueError("batched=True takes the batches as x and y: pass rows=None")
        steps = x.shape[0] if batched else rows.shape[0]
        shapes = jax.eval_shape(step, state, row(rows, x, y, 0), x, y)[1]
        size = steps + (tail is not None)
        outs = {k: jnp.zeros((size,), v.dtype) for k, v in shapes.items()}
        start = jnp.asarray(start, jnp.int32)
        stop = jnp.minimum(start + jnp.asarray(count, jnp.int32), steps)

        def record(outs, i, out):
            return {k: outs[k].at[i].set(out[k]) for k in outs}

        def more(carry):
            i, state, _ = carry
            return (i < stop) & going(state)

        def loop_body(carry):
            i, state, outs = carry
            state, out = step(state, row(rows, x, y, i), x, y)
            return i + 1, state, record(outs, i, out)

        i, state, outs = jax.lax.while_loop(more, loop_body, (start, state, outs))
        if tail is not None:

            def run_tail(carry):
                state, outs = carry
                state, out = step(state, tail, x, y)
                return state, record(outs, steps, out)

            wanted = jnp.asarray(use_tail) & (i >= stop) & going(state)
            state, outs = jax.lax.cond(wanted, run_tail, lambda carry: carry, (state, outs))
        if mesh is not None:
            # The loop's carry may leave in another layout than each step's constraint
            # asks (seen: replicated parameters split like the optimizer state).
            state = distributed.constrain_state(state, mesh, shard_optimizer_state)
            outs = distributed.constrain_replicated(outs, mesh)  # readable by each process
        return state, outs

    return jax.jit(run, donate_argnums=(0,))


def make_eval_scan(
    model: nnx.Module,
    loss: Loss = "sparse_categorical_crossentropy",
    *,
    metrics: Metrics | None = None,
    batch_size: int = 1024,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array], dict[str, jax.Array]]:
    """Returns a compiled ``(state, x, y) -> outs`` evaluating a whole set in one call.

    The set is cut into batches of ``batch_size`` (the last one may be shorter), each
    evaluated as :func:`make_eval_step` does, in one loop on the device. ``outs[k]`` holds
    each batch's ``loss`` and metrics (batch means), one entry per batch in order; the
    set's mean is ``sum(outs[k] * sizes) / len(x)`` with :func:`batch_sizes`. One
    compile per set size. ``y`` may be :class:`Weighted`: each batch's loss is then
    sample-weighted and the set's mean is ``sum(w_i * loss_i) / len(x)``. With ``mesh``
    (the state placed on it and ``x``, ``y`` replicated,
    :func:`stablejax.distributed.replicate`), each batch is split along ``"data"`` when
    its size divides over the devices, else evaluated whole on each.

    Example::

        >>> import jax.numpy as jnp, stablejax as sj
        >>> from flax import nnx
        >>> model = sj.nn.mlp([8], input_shape=(4,), output_size=2, rngs=nnx.Rngs(0))
        >>> state = sj.steps.init_state(model, sj.sgd(0.1))
        >>> evaluate = sj.steps.make_eval_scan(model, batch_size=4)
        >>> outs = evaluate(state, jnp.ones((10, 4)), jnp.zeros((10,), jnp.int32))
        >>> outs["loss"].shape, sj.steps.batch_sizes(10, 4)
        ((3,), [4, 4, 2])
    """
    index("batch_size", batch_size, 1)
    _check_mesh(mesh, False)
    return eval_scan(nnx.graphdef(model), loss, metrics, batch_size, mesh)


def eval_scan(graphdef: nnx.GraphDef, loss: Loss, metrics: Metrics | None, batch_size: int,
              mesh: Mesh | None = None) -> Callable[..., dict[str, jax.Array]]:
    """:func:`make_eval_scan` for a model's ``graphdef`` (no model needed, no checks)."""
    step = _eval_body(graphdef, loss, metrics, mesh)

    @jax.jit
    def evaluate_set(state: TrainState, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        outs, last = over_batches(step, state, (x, y), batch_size)
        if last is not None:
            outs = {k: jnp.concatenate([outs[k], last[k][None]]) for k in outs}
        if mesh is not None:  # whole on every device: each process can read them
            outs = distributed.constrain_replicated(outs, mesh)
        return outs

    return evaluate_set


def over_batches(fn: Callable[[Any, Any], Any], carry: Any, data: Any,
                 batch_size: int) -> tuple[Any, Any]:
    """``fn(carry, batch)`` on each batch of ``data`` inside a traced function.

    ``data`` is a pytree of arrays sharing their leading (sample) axis, cut into batches
    of ``batch_size`` (the last may be shorter). Returns ``(full, last)``: ``fn``'s
    outputs for the full batches stacked along a new leading axis (by ``jax.lax.scan``,
    one traced body), and its output for the shorter last batch, or None. ``carry`` rides
    in the scan's carry, unchanged: ``nnx`` variables closed over from outside the scan
    cannot be read inside it.
    """
    n = len(jax.tree.leaves(data)[0])
    full = n // batch_size
    split = full * batch_size
    batches = jax.tree.map(lambda a: a[:split].reshape(full, batch_size, *a.shape[1:]), data)
    _, outs = jax.lax.scan(lambda c, b: (c, fn(c, b)), carry, batches)
    last = fn(carry, _rows(data, slice(split, None))) if split < n else None
    return outs, last


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The sizes of the batches that cut ``n`` samples into ``batch_size`` (last shorter)."""
    full, rest = divmod(n, batch_size)
    return [batch_size] * full + ([rest] if rest else [])
