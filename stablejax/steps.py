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

from stablejax import losses
from stablejax.guard import all_finite

__all__ = [
    "Batch",
    "TrainState",
    "init_state",
    "update_model",
    "make_train_step",
    "make_eval_step",
    "make_train_scan",
]

Batch = tuple[jax.Array, jax.Array]
Loss = str | Callable[[jax.Array, jax.Array], jax.Array]
Metrics = dict[str, Callable[[jax.Array, jax.Array], jax.Array]]


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


def _select(pred: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _metric_fns(loss: Loss, metrics: Metrics | None) -> Metrics:
    if metrics is not None:
        return dict(metrics)
    if isinstance(loss, str) and loss in losses.ACCURACY_FOR:
        return {"accuracy": losses.ACCURACY_FOR[loss]}
    return {}


def _train_body(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss: Loss,
    metrics: Metrics | None,
    skip_nonfinite: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    loss_fn = losses.get(loss)
    metric_fns = _metric_fns(loss, metrics)

    def body(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        x, y = batch

        def objective(params):
            # copy: the variables are mutated (batch statistics) inside this grad trace.
            model = nnx.merge(graphdef, params, state.rest, copy=True)
            outputs = model(x)
            _, _, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
            return loss_fn(outputs, y), (outputs, rest)

        (value, (outputs, rest)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if skip_nonfinite:
            # A non-finite loss or gradient leaves parameters, statistics and optimizer
            # state untouched: one bad batch must not poison the run.
            finite = jnp.isfinite(value) & all_finite(grads)
            params, rest, opt_state = _select(
                finite, (params, rest, opt_state), (state.params, state.rest, state.opt_state)
            )
        else:
            finite = jnp.asarray(True)
        skipped = (~finite).astype(jnp.int32)
        state = state._replace(
            params=params,
            rest=rest,
            opt_state=opt_state,
            step=optax.safe_increment(state.step),
            skips=jnp.where(finite, 0, optax.safe_increment(state.skips)).astype(jnp.int32),
        )
        out = {"loss": value, "skipped": skipped}
        out.update({name: fn(outputs, y) for name, fn in metric_fns.items()})
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
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns a jit-compiled, pure ``(state, (x, y)) -> (state, metrics)``.

    One step: forward in training mode (batch statistics, fresh RReLU slopes from the
    model's RNG state), ``loss(outputs, y)``, gradients w.r.t. the ``nnx.Param``
    variables, ``tx.update`` and ``optax.apply_updates``. When the loss or any gradient
    is NaN or Inf the step changes nothing but the counters and reports ``skipped=1``.

    Args:
      model: the ``flax.nnx`` model (its structure is captured; its values live in the
        state from :func:`init_state`).
      tx: the optimizer.
      loss: a name from ``stablejax.losses.LOSSES`` or ``loss(outputs, targets)``.
      metrics: ``{name: fn(outputs, targets)}``; default accuracy for the cross-entropies.
      donate: donate the input state's buffers (the caller must not reuse that state).
      skip_nonfinite: guard against non-finite steps as above. The guard costs one
        select per array (measured 3-15% of a step of the notes' small model at batch 32,
        ~3% at 256: ``benchmarks/train_step.py``); False trusts every step.

    Returns:
      ``step(state, batch)``; metrics hold ``loss``, ``skipped`` and each metric.
    """
    body = _train_body(nnx.graphdef(model), tx, loss, metrics, skip_nonfinite)
    return jax.jit(body, donate_argnums=(0,) if donate else ())


def make_eval_step(
    model: nnx.Module,
    loss: Loss = "sparse_categorical_crossentropy",
    *,
    metrics: Metrics | None = None,
) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
    """Returns a jit-compiled ``(state, (x, y)) -> metrics`` in inference mode.

    Batch norm uses its moving statistics and RReLU its mean slope; nothing is updated.
    """
    graphdef = nnx.graphdef(model)
    loss_fn = losses.get(loss)
    metric_fns = _metric_fns(loss, metrics)

    @jax.jit
    def step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        x, y = batch
        model = nnx.merge(graphdef, state.params, state.rest)
        model.eval()
        outputs = model(x)
        out = {"loss": loss_fn(outputs, y)}
        out.update({name: fn(outputs, y) for name, fn in metric_fns.items()})
        return out

    return step


def make_train_scan(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    loss: Loss = "sparse_categorical_crossentropy",
    *,
    metrics: Metrics | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Returns a compiled ``(state, x, y, rows) -> (state, sums)`` running many steps.

    ``x`` and ``y`` are the whole training set on the device; ``rows`` is an int32
    ``(steps, batch_size)`` array of sample indices, one row per step. The steps run as
    one ``lax.scan`` (one dispatch for all of them), each as :func:`make_train_step`'s.
    ``sums`` holds, over the finite steps, ``loss`` and each metric weighted by the
    batch size, their ``count`` of samples, ``skipped`` (non-finite steps) and
    ``max_skips``, the longest run of consecutive skips seen inside the call. The input
    state is donated.
    """
    body = _train_body(nnx.graphdef(model), tx, loss, metrics)

    def run(state: TrainState, x: jax.Array, y: jax.Array, rows: jax.Array):
        def scan_body(carry, idx):
            carry, out = body(carry, (x[idx], y[idx]))
            n = jnp.asarray(idx.shape[0], jnp.float32)
            finite = 1.0 - out["skipped"].astype(jnp.float32)
            weighted = {k: v * n * finite for k, v in out.items() if k != "skipped"}
            weighted["count"] = n * finite
            weighted["skipped"] = out["skipped"]
            weighted["max_skips"] = carry.skips
            return carry, weighted

        state, outs = jax.lax.scan(scan_body, state, rows)
        # The longest run of skipped updates inside the call, so that a run that a finite
        # step ended before the call returned is still seen by `fit`.
        return state, {k: jnp.max(v) if k == "max_skips" else jnp.sum(v) for k, v in outs.items()}

    return jax.jit(run, donate_argnums=(0,))
