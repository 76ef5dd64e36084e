"""Sweeps: N runs of one architecture trained together as one ``jax.vmap``-ed program.

Member ``i`` starts from ``make_model(seeds[i])`` (and, optionally, its own learning rate
``learning_rates[i]``); all members see the same batches in the same order. Their
:class:`~stablejax.steps.TrainState`\\ s are stacked along a leading axis and each epoch
runs as one compiled call: a ``lax.scan`` over the epoch's full batches of the train
step ``vmap``-ed over the members (the batch is shared), then the partial last batch in
the same program. Each member equals the same run trained alone by :func:`stablejax.fit`
up to float32 rounding (``vmap`` batches the matmuls differently)::

    >>> import stablejax as sj
    >>> from flax import nnx
    >>> data = sj.data.synthetic_classification(40, num_features=4, num_classes=2)
    >>> make = lambda seed: sj.nn.mlp([8], input_shape=(4,), output_size=2,
    ...                               rngs=nnx.Rngs(seed))
    >>> runs = sj.sweep.run(make, sj.adam(1e-2), data, seeds=[0, 1], epochs=2,
    ...                     batch_size=16)
    >>> len(runs), sorted(runs[0].history), int(runs[1].state.step)
    (2, ['accuracy', 'loss', 'lr', 'skipped'], 6)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stablejax import feeding, losses, optimizers
from stablejax._checks import index
from stablejax.compilation_cache import enable as enable_compilation_cache
from stablejax.evaluation import EVAL_BATCH_SIZE
from stablejax.steps import (
    Loss,
    TrainState,
    batch_sizes,
    init_state,
    make_eval_scan,
    train_body,
    update_model,
)

__all__ = ["run", "SweepRun"]


@dataclass
class SweepRun:
    """One member of a sweep: what :func:`stablejax.fit` would have given for it.

    ``history[key]`` holds one value per epoch (the keys of ``fit``'s history: ``loss``,
    each metric, their ``val_`` versions, ``lr`` and ``skipped``), ``state`` the member's
    final :class:`~stablejax.steps.TrainState` and ``model`` the member's model, updated
    with it. ``step_losses`` holds the training loss of every update in order (the
    batch's mean, as ``fit``'s epoch means are built from), NaN for a skipped
    (non-finite) step.
    """

    history: dict[str, list[float]]
    state: TrainState
    model: nnx.Module
    step_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))


def run(
    make_model: Callable[[int], nnx.Module],
    tx: optax.GradientTransformation,
    train_data: tuple[Any, Any],
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 32,
    validation_data: tuple[Any, Any] | None = None,
    loss: Loss = "sparse_categorical_crossentropy",
    shuffle: bool = True,
    data_seed: int = 0,
    learning_rates: Sequence[float] | None = None,
) -> list[SweepRun]:
    """Trains ``len(seeds)`` members of one architecture at once; one result per member.

    Member ``i`` is ``make_model(seeds[i])`` trained by ``tx`` (with its injected learning
    rate set to ``learning_rates[i]`` by :func:`stablejax.optimizers.set_learning_rate`
    when given). Every member sees the batches of ``fit(..., seed=data_seed,
    shuffle=shuffle, batch_size=batch_size)``: epoch ``e``'s order is
    ``stablejax.data.epoch_order(n, shuffle=shuffle, seed=data_seed, epoch=e)``, cut into
    full batches and the partial last one. Per-epoch logs are float64 sums over the
    finite steps weighted by batch size, as in ``fit``; validation is
    :func:`stablejax.train.evaluate`'s sample-weighted mean. Non-finite steps are skipped
    per member (counted in ``skipped``) but, unlike ``fit``, never raise.

    Member ``i`` matches ``fit(make_model(seeds[i]), tx, train_data, epochs=epochs,
    batch_size=batch_size, seed=data_seed, shuffle=shuffle, verbose=0)`` to float32
    rounding: measured on a small mlp with Adam, 3 members, 2 epochs,
    ``max|sweep - fit| / max|fit|`` per array was at most 4e-7 for the parameters and
    optimizer state and 2e-7 for the history's values (``tests/test_sweep.py`` allows
    1e-5).

    Args:
      make_model: ``make_model(seed) -> nnx.Module``; the same structure, parameter
        shapes and dtypes for every seed.
      tx: the optimizer, shared by all members.
      train_data: ``(x, y)`` arrays (or a ``stablejax.data.Split``).
      seeds: one seed per member, at least one.
      epochs: number of epochs, >= 1.
      batch_size: samples per update, >= 1 (the last batch may be smaller).
      validation_data: ``(x, y)`` evaluated after each epoch, for each member.
      loss: a name from ``stablejax.losses.LOSSES`` or a callable; accuracy is reported
        for the cross-entropies.
      shuffle: shuffle the training set each epoch.
      data_seed: the shuffling seed (``fit``'s ``seed``).
      learning_rates: one learning rate per member, or None to keep ``tx``'s. ``tx`` must
        inject a constant rate (``sj.adam(1e-3)`` and the other aliases do).

    Returns:
      ``[SweepRun(history, state, model)]``, in the order of ``seeds``.

    Raises:
      ValueError: an empty ``seeds``, ``learning_rates`` of another length or with bad
        rates (or an optimizer without an injected constant rate), ``make_model``
        returning different structures, bad ``epochs``/``batch_size``, or data that do
        not fit the model or the loss.
    """
    seeds, learning_rates = _checked(seeds, epochs, batch_size, learning_rates, loss,
                                     make_model)
    x, y = feeding.as_split(train_data, "train_data")
    valid = (None if validation_data is None
             else feeding.as_split(validation_data, "validation_data"))
    models = _members(make_model, seeds, loss, x, y, valid)
    stacked = _stacked_states(models, tx, learning_rates)

    enable_compilation_cache()
    epoch_call = _make_epoch(nnx.graphdef(models[0]), tx, loss)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    batching = feeding.Batching(len(x), batch_size, shuffle, data_seed)
    sizes = np.array(batch_sizes(len(x), batch_size), np.float64)
    if valid is not None:
        val_batch = max(batch_size, EVAL_BATCH_SIZE)
        evaluate = jax.jit(jax.vmap(make_eval_scan(models[0], loss, batch_size=val_batch),
                                    in_axes=(0, None, None)))
        val_x, val_y = jnp.asarray(valid[0]), jnp.asarray(valid[1])

    histories: list[dict[str, list[float]]] = [{} for _ in seeds]
    step_losses: list[np.ndarray] = []
    for epoch in range(epochs):
        rows, tail = batching.epoch(epoch)
        # Only the full batches: fit's padding row (when all samples are in the tail) is
        # not needed here.
        stacked, outs = epoch_call(stacked, x_dev, y_dev, jnp.asarray(rows[: batching.full]),
                                   None if tail is None else jnp.asarray(tail))
        outs = jax.device_get(outs)  # each (steps, members)
        skipped = outs.pop("skipped").astype(bool)
        step_losses.append(np.where(skipped, np.nan, outs["loss"]))
        logs = _train_logs(outs, skipped, sizes)
        if valid is not None:
            val = jax.device_get(evaluate(stacked, val_x, val_y))
            for m, member_logs in enumerate(logs):
                member = feeding.means_of({k: v[m] for k, v in val.items()}, len(valid[0]),
                                          val_batch)
                member_logs.update({f"val_{k}": v for k, v in member.items()})
        for m, member_logs in enumerate(logs):
            try:
                member_logs["lr"] = float(optimizers.current_learning_rate(
                    jax.tree.map(lambda a, m=m: a[m], stacked.opt_state)))
            except ValueError:  # the optimizer exposes no single learning rate
                pass
            member_logs["skipped"] = float(skipped[:, m].sum())
            for k, v in member_logs.items():
                histories[m].setdefault(k, []).append(v)
        stacked = stacked._replace(epoch=stacked.epoch + 1)

    results = []
    losses_per_step = np.concatenate(step_losses)  # (updates, members)
    for m, model in enumerate(models):
        state = jax.tree.map(lambda a, m=m: a[m], stacked)
        update_model(model, state)
        results.append(SweepRun(histories[m], state, model, losses_per_step[:, m]))
    return results


def _checked(seeds: Sequence[int], epochs: int, batch_size: int,
             learning_rates: Sequence[float] | None, loss: Loss,
             make_model: Any) -> tuple[list[int], list[float] | None]:
    """run's arguments checked; ``seeds`` and ``learning_rates`` as lists."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed (one per member), got none")
    index("epochs", epochs, 1)
    index("batch_size", batch_size, 1)
    if learning_rates is not None:
        learning_rates = list(learning_rates)
        if len(learning_rates) != len(seeds):
            raise ValueError(f"learning_rates must hold one rate per seed: got "
                             f"{len(learning_rates)} rates for {len(seeds)} seeds")
    losses.get(loss)
    if not callable(make_model):
        raise TypeError(f"make_model must be a callable make_model(seed) -> nnx.Module, "
                        f"got {make_model!r}")
    return seeds, learning_rates


def _members(make_model: Callable[[int], nnx.Module], seeds: list[int], loss: Loss,
             x: np.ndarray, y: np.ndarray, valid: Any) -> list[nnx.Module]:
    """One model per seed, all of one structure, checked against the data and loss."""
    models = [make_model(seed) for seed in seeds]
    for model in models:
        feeding.check_model(model)
    first = _signature(models[0])
    for seed, model in zip(seeds[1:], models[1:], strict=True):
        if _signature(model) != first:
            raise ValueError(f"make_model must build the same structure for every seed: "
                             f"make_model({seed}) differs from make_model({seeds[0]}) in its "
                             "layers, variables, shapes or dtypes")
    outputs = feeding.model_outputs(models[0], x, "train_data")
    feeding.check_targets(loss, y, outputs, "train_data")
    if valid is not None:
        outputs = feeding.model_outputs(models[0], valid[0], "validation_data")
        feeding.check_targets(loss, valid[1], outputs, "validation_data")
    return models


def _stacked_states(models: list[nnx.Module], tx: optax.GradientTransformation,
                    learning_rates: list[float] | None) -> TrainState:
    """The members' initial states stacked along a leading axis, each with its rate."""
    states = [init_state(model, tx) for model in models]
    if learning_rates is not None:
        for i, rate in enumerate(learning_rates):
            try:
                opt_state = optimizers.set_learning_rate(states[i].opt_state, rate)
            except ValueError as e:
                raise ValueError(f"learning_rates[{i}]: {e}") from e
            states[i] = states[i]._replace(opt_state=opt_state)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def _train_logs(outs: dict[str, np.ndarray], skipped: np.ndarray,
                sizes: np.ndarray) -> list[dict[str, float]]:
    """Each member's epoch means over its finite steps, weighted by batch size."""
    logs = []
    for m in range(skipped.shape[1]):
        ok = ~skipped[:, m]
        count = float(sizes[ok].sum())
        sums = feeding.weighted_sums({k: v[:, m] for k, v in outs.items()}, sizes, ok)
        logs.append({k: total / count if count else float("nan") for k, total in sums.items()})
    return logs


def _signature(model: nnx.Module) -> tuple[Any, ...]:
    """What must agree between members: the graph and each variable's shape and dtype."""
    graphdef, variables = nnx.split(model)
    leaves, treedef = jax.tree.flatten(variables)
    return (repr(graphdef), treedef,
            tuple((np.shape(a), jnp.result_type(a)) for a in leaves))


def _make_epoch(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                loss: Loss) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """A compiled ``(states, x, y, rows, tail) -> (states, outs)`` running one epoch.

    ``states`` is the members' stacked :class:`TrainState`; ``rows`` the ``(steps,
    batch_size)`` sample indices of the full batches, ``tail`` the partial batch's (or
    None). ``outs[k]`` is ``(batches, members)``: ``loss``, each metric, ``skipped``.
    """
    body = train_body(graphdef, tx, loss, None)

    def step(state: TrainState, idx: jax.Array, x: jax.Array, y: jax.Array):
        return body(state, (x[idx], y[idx]))

    members_step = jax.vmap(step, in_axes=(0, None, None, None))

    def epoch(states, x, y, rows, tail):
        states, outs = jax.lax.scan(lambda s, idx: members_step(s, idx, x, y), states, rows)
        if tail is not None:
            states, last = members_step(states, tail, x, y)
            outs = {k: jnp.concatenate([outs[k], last[k][None]]) for k in outs}
        return states, outs

    return jax.jit(epoch, donate_argnums=(0,))
