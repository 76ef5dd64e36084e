"""``fit`` and ``evaluate``: Keras's training loop over the compiled steps.

::

    >>> import stablejax as sj
    >>> from flax import nnx
    >>> data = sj.data.synthetic_classification(64, num_features=4, num_classes=2)
    >>> model = sj.nn.mlp([8], input_shape=(4,), output_size=2, rngs=nnx.Rngs(0))
    >>> history = sj.fit(model, sj.adam(1e-2), data, epochs=2, batch_size=16, verbose=0)
    >>> sorted(history.history), history.epoch
    (['accuracy', 'loss', 'lr', 'skipped'], [0, 1])
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stablejax import data, optimizers
from stablejax._checks import index
from stablejax.callbacks import Callback
from stablejax.compilation_cache import enable as enable_compilation_cache
from stablejax.steps import (
    Loss,
    Metrics,
    TrainState,
    batch_sizes,
    init_state,
    make_eval_scan,
    make_train_scan,
    update_model,
)

__all__ = ["fit", "evaluate", "History", "NonFiniteError"]

EVAL_BATCH_SIZE = 1024  # samples per evaluation batch (at least fit's batch_size)
FIRST_CALL_STEPS = 8  # steps of a run's first call when fit chooses (see _CallPlan)
CALL_SECONDS = 0.1  # length of the later calls when fit chooses and a bar shows


class NonFiniteError(FloatingPointError):
    """Raised by :func:`fit` after too many consecutive non-finite updates.

    ``state`` is the run state when training stopped: skipped updates change nothing, so
    it holds the last finite parameters, statistics and optimizer state.
    """

    def __init__(self, message: str, state: TrainState | None = None):
        super().__init__(message)
        self.state = state


@dataclass
class History:
    """What ``fit`` returns: ``history[key]`` is one value per epoch (Keras's ``History``).

    ``state`` is the final :class:`~stablejax.steps.TrainState`; ``epoch`` the list of
    epoch indices.
    """

    history: dict[str, list[float]]
    epoch: list[int]
    state: TrainState


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    train_data: tuple[Any, Any],
    *,
    epochs: int,
    batch_size: int = 32,
    validation_data: tuple[Any, Any] | None = None,
    loss: Loss = "sparse_categorical_crossentropy",
    metrics: Metrics | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | os.PathLike | None = None,
    keep: int = 3,
    seed: int = 0,
    verbose: int = 1,
    shuffle: bool = True,
    steps_per_call: int | None = None,
    max_consecutive_skips: int = 10,
    state: TrainState | None = None,
    compilation_cache: bool = True,
) -> History:
    """Trains ``model`` with ``tx`` for ``epochs`` epochs, like Keras's ``model.fit``.

    Each epoch shuffles the training set from ``(seed, epoch)``, runs the compiled train
    step over its batches (a loop on the device over batches held there, several steps
    per compiled call), then evaluates ``validation_data`` in inference
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
      callbacks: :class:`~stablejax.callbacks.Callback` instances, e.g.
        ``ReduceLROnPlateau``, ``EarlyStopping``, ``LearningRateScheduler``.
      checkpoint_dir: directory for per-epoch checkpoints and resumption.
      keep: checkpoints kept, >= 1.
      seed: shuffling seed.
      verbose: 0 silent, 1 a progress bar per epoch.
      shuffle: shuffle the training set each epoch.
      steps_per_call: train steps per compiled call, >= 1. None (the default): one
        call per epoch with ``verbose=0``; with the progress bar, calls of about 0.1 s,
        sized from the previous call's time. Whatever the number, ``fit`` compiles its
        train call once and its evaluation once: every call passes the whole epoch's
        batches and runs a range of them in a device loop, and the partial last batch
        runs in the same program. The results do not depend on it.
      max_consecutive_skips: raise :class:`NonFiniteError` after this many consecutive
        non-finite updates, >= 1.
      state: start from this :class:`~stablejax.steps.TrainState` instead of a fresh one,
        with the callbacks' state it holds (its buffers are donated: do not use it
        afterwards).
      compilation_cache: turn on JAX's persistent compilation cache (see
        :mod:`stablejax.compilation_cache` for its directory and how to turn it off
        everywhere), so the next run of the same configuration skips compiling.

    Raises:
      NonFiniteError: after ``max_consecutive_skips`` consecutive non-finite updates.
    """
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("keep", keep),
        ("max_consecutive_skips", max_consecutive_skips),
    ):
        index(name, value, 1)
    if steps_per_call is not None:
        index("steps_per_call", steps_per_call, 1)
    if verbose not in (0, 1):
        raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
    x, y = _as_split(train_data)
    valid = None if validation_data is None else _as_split(validation_data)
    callbacks = _as_callbacks(callbacks)

    state = init_state(model, tx) if state is None else state
    for i, cb in enumerate(callbacks):
        if str(i) not in state.callbacks:  # a given state keeps its callbacks' state
            state.callbacks[str(i)] = cb.init(state)
    if compilation_cache:
        enable_compilation_cache()
    history: dict[str, list[float]] = {}
    if checkpoint_dir is not None:
        from stablejax import checkpoint  # Orbax loads only for runs that checkpoint

        found = checkpoint.restore_latest(checkpoint_dir, state)
        if found is not None:
            _, state, saved = found
            history = saved or {}

    run = make_train_scan(model, tx, loss, metrics=metrics,
                          max_consecutive_skips=max_consecutive_skips,
                          step_stats=_step_stats(callbacks))
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    batching = _Batching(len(x), batch_size, shuffle, seed)
    plan = _CallPlan(steps_per_call, verbose)
    if valid is not None:
        val_batch = max(batch_size, EVAL_BATCH_SIZE)
        eval_run = make_eval_scan(model, loss, metrics=metrics, batch_size=val_batch)
        val_x, val_y = jnp.asarray(valid[0]), jnp.asarray(valid[1])
    # A resumed run that early stopping had already ended stays ended.
    stop = any(cb.stopped(state.callbacks[str(i)]) for i, cb in enumerate(callbacks))
    try:
        while int(state.epoch) < epochs and not stop:
            epoch = int(state.epoch)
            for i, cb in enumerate(callbacks):
                state = cb.on_epoch_begin(state, state.callbacks[str(i)], epoch)
            bar = _progress(epoch, epochs, batching.steps, verbose)
            try:
                state, logs = _train_epoch(
                    run, _placed(state), x_dev, y_dev, batching, epoch, plan,
                    max_consecutive_skips, bar,
                )
            except NonFiniteError as e:
                if e.state is not None:  # the input state was donated
                    state = e.state
                raise
            if valid is not None:
                val = _means_of(eval_run(state, val_x, val_y), len(valid[0]), val_batch)
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
                state, own, wants_stop = cb.on_epoch_end(state, state.callbacks[str(i)], logs)
                state.callbacks[str(i)] = own
                stop = stop or wants_stop
            state = state._replace(epoch=optax.safe_increment(state.epoch))
            if checkpoint_dir is not None:
                checkpoint.save_epoch(checkpoint_dir, epoch + 1, state, history=history,
                                      keep=keep)
        for i, cb in enumerate(callbacks):
            state = cb.on_train_end(state, state.callbacks[str(i)])
    finally:
        update_model(model, state)
    return History(history, list(range(len(history.get("loss", [])))), state)


def evaluate(
    model: nnx.Module,
    state: TrainState,
    data_split: tuple[Any, Any],
    *,
    loss: Loss = "sparse_categorical_crossentropy",
    metrics: Metrics | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, float]:
    """Loss and metrics of ``state`` on ``(x, y)`` in inference mode, sample-weighted.

    The set is evaluated in batches of ``batch_size`` inside one compiled call; the
    result is ``sum(batch mean * batch size) / len(x)``, summed in float64.
    """
    x, y = _as_split(data_split)
    run = make_eval_scan(model, loss, metrics=metrics, batch_size=batch_size)
    return _means_of(run(state, jnp.asarray(x), jnp.asarray(y)), len(x), batch_size)


def _as_split(split: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    x, y = split
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"inputs and targets differ in length: {len(x)} != {len(y)}")
    return x, y


def _step_stats(callbacks: list[Callback]) -> Any:
    """The callbacks' :meth:`~stablejax.callbacks.Callback.step_stats`, as one function."""
    wanted = [cb for cb in callbacks if type(cb).step_stats is not Callback.step_stats]
    if not wanted:
        return None

    def step_stats(grads: Any, params: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cb in wanted:
            out.update(cb.step_stats(grads, params))
        return out

    return step_stats


def _as_callbacks(callbacks: Sequence[Callback]) -> list[Callback]:
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(
                f"callbacks must be stablejax.callbacks.Callback instances, got {cb!r}"
            )
    return callbacks


class _CallPlan:
    """How many train steps each compiled call of ``fit`` runs.

    A given ``steps_per_call`` is used as is. Otherwise, without a progress bar each
    call runs the rest of the epoch (the device loop stops by itself on non-finite
    steps, so nothing needs the host in between); with a bar, the first call of a run
    runs ``FIRST_CALL_STEPS`` steps and every later call as many steps as took
    ``CALL_SECONDS`` in the previous call, so the bar moves about ten times a second
    while a call's fixed cost (about 0.7 ms on a 2-core CPU: dispatch and reading its
    results, ``benchmarks/steps_per_call.py``) stays under 1% of its time. The compiled
    program is the same whatever the count, and the numbers do not depend on it.
    """

    def __init__(self, steps_per_call: int | None, verbose: int):
        self.fixed, self.verbose = steps_per_call, verbose
        self.calls, self.seconds_per_step = 0, 0.0

    def count(self, remaining: int) -> int:
        if remaining <= 0:
            return 0
        if self.fixed is not None:
            return min(self.fixed, remaining)
        if not self.verbose:
            return remaining
        if self.calls < 2:  # the first call's time is mostly compilation
            return min(FIRST_CALL_STEPS, remaining)
        return max(1, min(remaining, int(CALL_SECONDS / max(self.seconds_per_step, 1e-9))))

    def observe(self, seconds: float, steps: int) -> None:
        self.calls += 1
        if steps > 0:
            self.seconds_per_step = seconds / steps


class _Batching:
    """An epoch's batches as rows of sample indices, and the partial last batch."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.full, self.rest = divmod(n, batch_size)
        self.steps = self.full + bool(self.rest)
        # One row at least, so the compiled program can index it even when every sample
        # is in the partial batch.
        rows = max(self.full, 1)
        self.sizes = np.array([batch_size] * rows + ([self.rest] if self.rest else []),
                              np.float64)

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(rows, tail)``: the full batches' indices and the partial batch's, if any."""
        order = data.epoch_order(self.n, shuffle=self.shuffle, seed=self.seed, epoch=epoch)
        order = order.astype(np.int32)
        split = self.full * self.batch_size
        rows = np.zeros((max(self.full, 1), self.batch_size), np.int32)
        rows[: self.full] = order[:split].reshape(self.full, self.batch_size)
        return rows, (order[split:] if self.rest else None)


def _placed(state: TrainState) -> TrainState:
    # Every array committed to its device, as the compiled call's outputs are, so that
    # arrays a callback or a restore replaced do not change the call's signature and
    # compile it again.
    own = state.callbacks
    state = jax.tree.map(lambda a: jax.device_put(a, a.sharding), state._replace(callbacks={}))
    return state._replace(callbacks=own)


def _train_epoch(run, state, x, y, batching, epoch, plan, max_consecutive_skips, bar):
    """Runs one epoch's compiled calls; returns the state and the epoch's mean logs.

    The logs are float64 sums over the steps that ran and were finite (skipped steps are
    left out, not multiplied by zero), so they do not depend on how the epoch was cut
    into calls.
    """
    rows, tail = batching.epoch(epoch)
    rows = jnp.asarray(rows)
    tail = None if tail is None else jnp.asarray(tail)
    totals: dict[str, float] = {"count": 0.0, "skipped": 0.0}
    start = 0
    while True:
        count = plan.count(batching.full - start)
        use_tail = tail is not None and start + count >= batching.full
        began = time.perf_counter()
        # The callbacks' state stays out of the donated buffers.
        own = state.callbacks
        state, outs = run(state._replace(callbacks={}), x, y, rows, start, count, tail,
                          use_tail)
        state = state._replace(callbacks=own)
        outs = jax.device_get(outs)
        plan.observe(time.perf_counter() - began, count)
        ran = outs.pop("ran").astype(bool)
        skipped = outs.pop("skipped").astype(bool) & ran
        longest = int(outs.pop("skips")[ran].max(initial=0))
        ok = ran & ~skipped
        for k, v in outs.items():
            totals[k] = totals.get(k, 0.0) + float(
                np.sum(v[ok].astype(np.float64) * batching.sizes[ok])
            )
        totals["count"] += float(batching.sizes[ok].sum())
        totals["skipped"] += float(skipped.sum())
        if longest >= max_consecutive_skips:
            raise NonFiniteError(
                f"{longest} consecutive updates had a non-finite loss or gradient (epoch "
                f"{int(state.epoch) + 1}, step {int(state.step)}); the model holds the last "
                "finite state. Lower the learning rate or clip gradients.",
                state,
            )
        if bar is not None:
            bar.update(int(ran.sum()))
            bar.set_postfix(_means(totals), refresh=False)
        start += count
        if start >= batching.full:
            break
    logs = _means(totals)
    logs["skipped"] = totals["skipped"]
    return state, logs


def _means(totals: dict[str, float]) -> dict[str, float]:
    count = totals.get("count", 0.0)
    return {
        k: (v / count if count else float("nan"))
        for k, v in totals.items()
        if k not in ("count", "skipped")
    }


def _means_of(outs: dict[str, Any], n: int, batch_size: int) -> dict[str, float]:
    """A set's sample-weighted means from its per-batch means (``make_eval_scan``)."""
    sizes = batch_sizes(n, batch_size)
    result = {}
    for k, v in outs.items():
        total = 0.0
        for mean, size in zip(np.asarray(v).tolist(), sizes, strict=True):
            total += mean * size
        result[k] = total / n
    return result


def _progress(epoch: int, epochs: int, steps: int, verbose: int) -> Any:
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="step", leave=True)
