"""Training: one-pytree run state, jit-compiled train/eval steps, and ``fit``.

A run's whole state is one :class:`TrainState` pytree: the model's parameters, its other
variables (batch-norm statistics, RNG streams), the optimizer state (schedule counts and
plateau state included), the step and epoch counters, and the callbacks' state. Saving
and restoring it continues a run bitwise as if it had never stopped::

    import optax, stablejax as sj
    from flax import nnx

    model = sj.nn.mlp([300, 100], input_shape=(8, 8), batch_norm="after", rngs=nnx.Rngs(0))
    data = sj.data.digits()
    history = sj.train.fit(model, sj.nadam(1e-3), data.train, epochs=10, batch_size=32,
                           validation_data=data.valid)
    history.history["val_accuracy"]

The step functions are built on ``nnx.split``/``nnx.merge`` inside a plain ``jax.jit``
with donated buffers, which is faster per step than ``nnx.jit`` for small models.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stablejax import checkpoint, clipping, data, losses, optimizers, plateau
from stablejax._checks import index

__all__ = [
    "TrainState",
    "init_state",
    "make_train_step",
    "make_eval_step",
    "update_model",
    "fit",
    "evaluate",
    "History",
    "NonFiniteError",
    "ReduceLROnPlateau",
    "EarlyStopping",
    "LearningRateScheduler",
]

Batch = tuple[jax.Array, jax.Array]


class TrainState(NamedTuple):
    """The whole state of a run, one pytree of arrays."""

    params: nnx.State  # the model's nnx.Param variables: what the optimizer trains
    rest: nnx.State  # every other variable: batch statistics, RNG streams (RReLU draws)
    opt_state: optax.OptState
    step: jax.Array  # int32, updates attempted (skipped ones included)
    epoch: jax.Array  # int32, completed epochs
    skips: jax.Array  # int32, consecutive skipped (non-finite) updates
    callbacks: dict  # per-callback state, keyed by the callback's position


class NonFiniteError(FloatingPointError):
    """Raised by :func:`fit` after too many consecutive non-finite updates."""


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> TrainState:
    """Builds the initial :class:`TrainState` of ``model`` trained by ``tx``."""
    _, params, rest = nnx.split(model, nnx.Param, ...)
    zero = jnp.zeros((), jnp.int32)
    state = TrainState(params, rest, tx.init(params), zero, zero, zero, {})
    return jax.tree.map(_own_buffer, state)


def _own_buffer(x) -> jax.Array:
    # A copy, so no two leaves alias one buffer (optimizer states may) and the whole state
    # can be donated; committed to its sharding, like every output of the compiled step,
    # so the second call does not compile again.
    x = jnp.array(x)
    return jax.device_put(x, x.sharding)


def update_model(model: nnx.Module, state: TrainState) -> None:
    """Writes the state's parameters and other variables back into ``model``, in place."""
    nnx.update(model, state.params, state.rest)


def _select(pred: jax.Array, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _metric_fns(loss, metrics) -> dict[str, Callable]:
    if metrics is not None:
        return dict(metrics)
    if isinstance(loss, str) and loss in losses.ACCURACY_FOR:
        return {"accuracy": losses.ACCURACY_FOR[loss]}
    return {}


def _train_body(graphdef, tx, loss, metrics, skip_nonfinite=True):
    loss_fn = losses.get(loss)
    metric_fns = _metric_fns(loss, metrics)

    def body(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        x, y = batch

        def objective(params):
            # copy: the variables are mutated (batch statistics) inside this grad trace.
            model = nnx.merge(graphdef, params, state.rest, copy=True)
            outputs = model(x)
            _, _, rest = nnx.split(model, nnx.Param, ...)
            return loss_fn(outputs, y), (outputs, rest)

        (value, (outputs, rest)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if skip_nonfinite:
            # A non-finite loss or gradient leaves parameters, statistics and optimizer
            # state untouched: one bad batch must not poison the run.
            finite = jnp.isfinite(value) & clipping.all_finite(grads)
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
    loss: str | Callable = "sparse_categorical_crossentropy",
    *,
    metrics: dict[str, Callable] | None = None,
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
    graphdef = nnx.graphdef(model)
    body = _train_body(graphdef, tx, loss, metrics, skip_nonfinite)
    return jax.jit(body, donate_argnums=(0,) if donate else ())


def make_eval_step(
    model: nnx.Module,
    loss: str | Callable = "sparse_categorical_crossentropy",
    *,
    metrics: dict[str, Callable] | None = None,
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


def _make_run(graphdef, tx, loss, metrics):
    """A compiled call running a scan of steps over rows of batch indices on device."""
    body = _train_body(graphdef, tx, loss, metrics)

    def run(state: TrainState, x: jax.Array, y: jax.Array, index: jax.Array):
        def scan_body(carry, idx):
            carry, out = body(carry, (x[idx], y[idx]))
            n = jnp.asarray(idx.shape[0], jnp.float32)
            finite = 1.0 - out["skipped"].astype(jnp.float32)
            weighted = {k: v * n * finite for k, v in out.items() if k != "skipped"}
            weighted["count"] = n * finite
            weighted["skipped"] = out["skipped"]
            weighted["max_skips"] = carry.skips
            return carry, weighted

        state, outs = jax.lax.scan(scan_body, state, index)
        # The longest run of skipped updates inside the call, so that a run that a finite
        # step ended before the call returned is still seen by `fit`.
        return state, {k: jnp.max(v) if k == "max_skips" else jnp.sum(v) for k, v in outs.items()}

    return jax.jit(run, donate_argnums=(0,))


# ----------------------------------------------------------------------------- callbacks


def _mode_for(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


@dataclass
class ReduceLROnPlateau:
    """Feeds ``logs[monitor]`` to every ``reduce_on_plateau`` transform in the optimizer.

    The algorithm and its hyperparameters live in ``stablejax.reduce_on_plateau``, which
    must be part of the optimizer (e.g. ``sj.sgd(0.01, plateau=sj.reduce_on_plateau(
    patience=5))``); its state is in the optimizer state, so it is saved and resumed.
    """

    monitor: str = "val_loss"

    def init(self, state: TrainState):
        """Checks the optimizer holds a plateau transform whose mode suits the monitor."""
        found = plateau.states(state.opt_state)
        if not found:
            raise ValueError(
                "ReduceLROnPlateau needs a stablejax.reduce_on_plateau transform in the "
                "optimizer, e.g. sj.sgd(0.01, plateau=sj.reduce_on_plateau(patience=5))"
            )
        wanted = _mode_for(self.monitor, "auto")
        for node in found:
            mode = "min" if float(node.sign) > 0 else "max"
            if mode != wanted:
                raise ValueError(
                    f"monitor {self.monitor!r} improves upward, so reduce_on_plateau needs "
                    f"mode={wanted!r}, got mode={mode!r}"
                    if wanted == "max"
                    else f"monitor {self.monitor!r} improves downward, so reduce_on_plateau "
                    f"needs mode={wanted!r}, got mode={mode!r}"
                )
        return {}

    def on_epoch_end(self, state: TrainState, own, logs: dict) -> tuple[TrainState, Any, bool]:
        """Advances the plateau state with ``logs[monitor]``; never stops training."""
        opt_state = plateau.observe(state.opt_state, jnp.float32(_monitored(logs, self.monitor)))
        return state._replace(opt_state=opt_state), own, False


def _monitored(logs: dict, monitor: str) -> float:
    if monitor not in logs:
        raise ValueError(f"monitor {monitor!r} is not among the logged values {sorted(logs)}")
    return logs[monitor]


@dataclass
class EarlyStopping:
    """Stops ``fit`` when ``logs[monitor]`` stops improving (Keras's ``EarlyStopping``).

    ``restore_best=True`` puts back the parameters and statistics of the best epoch when
    training stops or ends. ``mode="auto"`` means "max" for a monitor containing "acc",
    "min" otherwise. The state (best value, wait, best weights) is part of the run
    state, so a resumed run stops exactly where an uninterrupted one would.
    """

    monitor: str = "val_loss"
    patience: int = 0
    min_delta: float = 0.0
    mode: str = "auto"
    baseline: float | None = None
    start_from_epoch: int = 0
    restore_best: bool = False
    machine: Any = field(init=False, repr=False)

    def __post_init__(self):
        if self.mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {self.mode!r}")
        self.machine = plateau.early_stopping(
            self.patience,
            self.min_delta,
            _mode_for(self.monitor, self.mode),
            self.baseline,
            self.start_from_epoch,
        )

    def init(self, state: TrainState):
        """The callback's initial state (and a copy of the weights with restore_best)."""
        own = {"machine": self.machine.init(), "stopped": jnp.asarray(False)}
        if self.restore_best:
            # A copy: the state's own buffers are donated to the next train step.
            own["best"] = jax.tree.map(jnp.copy, (state.params, state.rest))
        return own

    def on_epoch_end(self, state: TrainState, own, logs: dict):
        """Advances the early-stopping state; keeps the best weights; says whether to stop."""
        machine, improved, stop = self.machine.update(
            own["machine"], jnp.float32(_monitored(logs, self.monitor))
        )
        own = dict(own, machine=machine, stopped=stop)
        if self.restore_best and bool(improved):
            own["best"] = jax.tree.map(jnp.copy, (state.params, state.rest))
        return state, own, bool(stop)

    def on_train_end(self, state: TrainState, own) -> TrainState:
        """Puts back the best epoch's parameters and statistics with restore_best."""
        if self.restore_best and int(own["machine"].best_epoch) >= 0:
            params, rest = own["best"]
            return state._replace(params=params, rest=rest)
        return state


@dataclass
class LearningRateScheduler:
    """Sets the learning rate at the start of each epoch to ``schedule(epoch)``.

    Keras's ``LearningRateScheduler``: ``epoch`` is 0-based and absolute (a resumed run
    continues its count; no ``initial_epoch`` needed). ``schedule(epoch, lr)`` is tried
    first, then ``schedule(epoch)``. The optimizer must take a constant learning rate
    through ``optax.inject_hyperparams`` (every ``stablejax`` alias built with a float
    ``learning_rate`` does); see ``stablejax.optimizers.set_learning_rate``.
    """

    schedule: Callable

    def init(self, state: TrainState):
        """Checks that the optimizer's learning rate can be set."""
        optimizers.set_learning_rate(
            state.opt_state, optimizers.current_learning_rate(state.opt_state)
        )
        return {}

    def on_epoch_begin(self, state: TrainState, own, epoch: int) -> TrainState:
        """Sets the rate of the coming epoch."""
        current = float(optimizers.current_learning_rate(state.opt_state))
        try:
            lr = self.schedule(epoch, current)
        except TypeError:
            lr = self.schedule(epoch)
        lr = float(lr)
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"schedule({epoch}) must be a finite number >= 0, got {lr!r}")
        return state._replace(opt_state=optimizers.set_learning_rate(state.opt_state, lr))


# ------------------------------------------------------------------------------------ fit


@dataclass
class History:
    """What ``fit`` returns: ``history[key]`` is one value per epoch (Keras's ``History``).

    ``state`` is the final :class:`TrainState`; ``epoch`` the list of epoch indices.
    """

    history: dict[str, list[float]]
    epoch: list[int]
    state: TrainState


def _as_split(split) -> tuple[np.ndarray, np.ndarray]:
    x, y = split
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"inputs and targets differ in length: {len(x)} != {len(y)}")
    return x, y


def _evaluate(eval_step, state, x, y, batch_size) -> dict[str, float]:
    totals: dict[str, float] = {}
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = eval_step(state, (xb, yb))
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(xb)
    return {k: v / len(x) for k, v in totals.items()}


def _save(directory: str, epoch: int, state: TrainState, history: dict, keep: int) -> None:
    checkpoint.save_epoch(directory, epoch, state, history=history, keep=keep)


def _resume(directory: str, like: TrainState) -> tuple[TrainState, dict] | None:
    found = checkpoint.restore_latest(directory, like)
    if found is None:
        return None
    epoch, state, history = found
    if history is None:
        raise checkpoint.CheckpointError(
            f"the checkpoint of epoch {epoch} in {directory} has no history"
        )
    return state, history


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    train_data: tuple[Any, Any],
    *,
    epochs: int,
    batch_size: int = 32,
    validation_data: tuple[Any, Any] | None = None,
    loss: str | Callable = "sparse_categorical_crossentropy",
    metrics: dict[str, Callable] | None = None,
    callbacks: Sequence[Any] = (),
    checkpoint_dir: str | os.PathLike | None = None,
    keep: int = 3,
    seed: int = 0,
    verbose: int = 1,
    shuffle: bool = True,
    steps_per_call: int = 32,
    max_consecutive_skips: int = 10,
    state: TrainState | None = None,
) -> History:
    """Trains ``model`` with ``tx`` for ``epochs`` epochs, like Keras's ``model.fit``.

    Each epoch shuffles the training set from ``(seed, epoch)``, runs the compiled train
    step over its batches (``steps_per_call`` steps per compiled call, a ``lax.scan``
    over batches held on the device), then evaluates ``validation_data`` in inference
    mode. The same seed gives bitwise the same history. ``model`` is updated in place at
    the end (and when a ``NonFiniteError`` is raised, with the last finite state).

    History keys: ``loss`` and each metric (``accuracy`` for the cross-entropies), their
    ``val_`` versions, ``lr`` (the learning rate the last update used, when the
    optimizer exposes it) and ``skipped`` (non-finite updates skipped in the epoch).

    With ``checkpoint_dir`` the whole run state and history are saved after every epoch
    (the last ``keep`` kept); when the directory already holds a checkpoint the run
    resumes from it, so ``epochs`` is the total, not the number still to run, and
    schedules, plateau state and early stopping continue exactly.

    Args:
      model: a ``flax.nnx`` model.
      tx: the optimizer.
      train_data: ``(x, y)`` arrays (or a ``stablejax.data.Split``).
      epochs: total number of epochs, >= 1.
      batch_size: samples per update, >= 1 (the last batch may be smaller).
      validation_data: ``(x, y)`` evaluated after each epoch.
      loss: a name from ``stablejax.losses.LOSSES`` or a callable.
      metrics: ``{name: fn(outputs, targets)}``; default accuracy for cross-entropies.
      callbacks: :class:`ReduceLROnPlateau`, :class:`EarlyStopping`,
        :class:`LearningRateScheduler`.
      checkpoint_dir: directory for per-epoch checkpoints and resumption.
      keep: checkpoints kept, >= 1.
      seed: shuffling seed.
      verbose: 0 silent, 1 a progress bar per epoch.
      shuffle: shuffle the training set each epoch.
      steps_per_call: train steps per compiled call, >= 1.
      max_consecutive_skips: raise :class:`NonFiniteError` after this many consecutive
        non-finite updates, >= 1.
      state: start from this :class:`TrainState` instead of a fresh one (its buffers
        are donated: do not use it afterwards).

    Raises:
      NonFiniteError: after ``max_consecutive_skips`` consecutive non-finite updates.
    """
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("keep", keep),
        ("steps_per_call", steps_per_call),
        ("max_consecutive_skips", max_consecutive_skips),
    ):
        index(name, value, 1)
    if verbose not in (0, 1):
        raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
    x, y = _as_split(train_data)
    valid = None if validation_data is None else _as_split(validation_data)
    callbacks = list(callbacks)

    graphdef = nnx.graphdef(model)
    state = init_state(model, tx) if state is None else state
    history: dict[str, list[float]] = {}
    for i, cb in enumerate(callbacks):
        own = cb.init(state) if hasattr(cb, "init") else {}
        state.callbacks[str(i)] = own
    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        resumed = _resume(checkpoint_dir, state)
        if resumed is not None:
            state, history = resumed

    run = _make_run(graphdef, tx, loss, metrics)
    eval_step = make_eval_step(model, loss, metrics=metrics)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    n = len(x)
    steps = data.num_batches(n, batch_size, drop_last=False)
    full = n // batch_size

    # A resumed run that early stopping had already ended stays ended.
    stop = any(
        bool(own.get("stopped", False)) for own in state.callbacks.values() if isinstance(own, dict)
    )
    try:
        for epoch in range(int(state.epoch), epochs if not stop else int(state.epoch)):
            for i, cb in enumerate(callbacks):
                if hasattr(cb, "on_epoch_begin"):
                    state = cb.on_epoch_begin(state, state.callbacks[str(i)], epoch)
            order = data.epoch_order(n, shuffle=shuffle, seed=seed, epoch=epoch)
            rows = order[: full * batch_size].reshape(full, batch_size)
            chunks = [rows[i : i + steps_per_call] for i in range(0, full, steps_per_call)]
            if n % batch_size:
                chunks.append(order[full * batch_size :][None, :])
            totals: dict[str, float] = {}
            bar = _progress(epoch, epochs, steps, verbose)
            for chunk in chunks:
                # The callbacks' state stays out of the donated buffers.
                own = state.callbacks
                state, out = run(
                    state._replace(callbacks={}), x_dev, y_dev, jnp.asarray(chunk, jnp.int32)
                )
                state = state._replace(callbacks=own)
                out = {k: float(v) for k, v in out.items()}
                longest = int(out.pop("max_skips"))
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + v
                if longest >= max_consecutive_skips:
                    raise NonFiniteError(
                        f"{longest} consecutive updates had a non-finite loss or "
                        f"gradient (epoch {epoch}, step {int(state.step)}); the model holds "
                        "the last finite state. Lower the learning rate or clip gradients."
                    )
                if bar is not None:
                    bar.update(len(chunk))
                    bar.set_postfix(_logs(totals), refresh=False)
            logs = _logs(totals)
            logs["skipped"] = totals.get("skipped", 0.0)
            if valid is not None:
                val = _evaluate(eval_step, state, *valid, batch_size=max(batch_size, 1024))
                logs.update({f"val_{k}": v for k, v in val.items()})
            try:
                logs["lr"] = float(optimizers.current_learning_rate(state.opt_state))
            except ValueError:  # the optimizer exposes no single learning rate
                pass
            if bar is not None:
                bar.set_postfix({k: v for k, v in logs.items() if k != "skipped"})
                bar.close()
            for k, v in logs.items():
                history.setdefault(k, []).append(v)
            for i, cb in enumerate(callbacks):
                if hasattr(cb, "on_epoch_end"):
                    state, own, wants_stop = cb.on_epoch_end(state, state.callbacks[str(i)], logs)
                    state.callbacks[str(i)] = own
                    stop = stop or wants_stop
            state = state._replace(epoch=jnp.asarray(epoch + 1, jnp.int32))
            if checkpoint_dir is not None:
                _save(checkpoint_dir, epoch + 1, state, history, keep)
            if stop:
                break
        for i, cb in enumerate(callbacks):
            if hasattr(cb, "on_train_end"):
                state = cb.on_train_end(state, state.callbacks[str(i)])
    finally:
        update_model(model, state)
    return History(history, list(range(len(history.get("loss", [])))), state)


def _logs(totals: dict[str, float]) -> dict[str, float]:
    count = totals.get("count", 0.0)
    return {
        k: (v / count if count else float("nan"))
        for k, v in totals.items()
        if k not in ("count", "skipped")
    }


def _progress(epoch: int, epochs: int, steps: int, verbose: int):
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="step", leave=True)


def evaluate(
    model: nnx.Module,
    state: TrainState,
    data_split: tuple[Any, Any],
    *,
    loss: str | Callable = "sparse_categorical_crossentropy",
    metrics: dict[str, Callable] | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Loss and metrics of ``state`` on ``(x, y)`` in inference mode, sample-weighted."""
    x, y = _as_split(data_split)
    return _evaluate(make_eval_step(model, loss, metrics=metrics), state, x, y, batch_size)
