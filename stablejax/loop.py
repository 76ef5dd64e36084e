"""``fit``, ``evaluate`` and ``predict``: Keras's training loop over the compiled steps.

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

import numbers
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stablejax import distributed, feeding, losses, optimizers, resuming
from stablejax import metrics as metrics_
from stablejax._checks import check_range, index, writable_directory
from stablejax.callbacks import Callback
from stablejax.compilation_cache import enable as enable_compilation_cache
from stablejax.evaluation import EVAL_BATCH_SIZE, evaluate, predict
from stablejax.steps import (
    Loss,
    Metrics,
    TrainState,
    init_state,
    make_eval_scan,
    make_train_scan,
    update_model,
)

__all__ = ["fit", "evaluate", "predict", "History", "NonFiniteError"]

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
    the epochs ``history`` holds, 0-based and absolute, as Keras's (a run continued from
    epoch 2 gives ``[2, 3, ...]``; one resumed from ``checkpoint_dir`` holds every epoch
    since the first).
    """

    history: dict[str, list[float]]
    epoch: list[int]
    state: TrainState = field(repr=False)


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    train_data: tuple[Any, Any],
    *,
    epochs: int,
    batch_size: int = 32,
    validation_data: tuple[Any, ...] | None = None,
    validation_split: float = 0.0,
    sample_weight: Any = None,
    class_weight: dict[int, float] | None = None,
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
    run_config: dict[str, Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    shard_optimizer_state: bool = False,
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
      validation_data: ``(x, y)`` or ``(x, y, sample_weight)`` evaluated after each
        epoch (``val_loss`` sample-weighted, the metrics not).
      validation_split: the fraction of ``train_data`` held out for validation, in
        ``[0, 1)``; Keras's rule: the last ``n - floor(n * (1 - validation_split))``
        samples (and their ``sample_weight``), taken before shuffling, so sort or
        shuffle the data first if they are ordered. Ignored when ``validation_data``
        is given. Default 0: none.
      sample_weight: one finite weight >= 0 per training sample, shape ``(samples,)``;
        default None (every weight 1).
        Each batch trains on ``sum(w_i * loss_i) / batch_size`` (divided by the batch
        size, not the weights' sum: Keras 3's formula, see
        :func:`stablejax.losses.sample_weighted`); the logged ``loss`` is that value
        and the metrics are unweighted, as Keras's ``metrics`` are.
      class_weight: ``{class index: weight}``; a training sample of class ``c`` weighs
        ``class_weight.get(c, 1.0)`` as if given in ``sample_weight`` (the class is
        the label, a one-hot target's largest index, or a rounded binary target). It
        does not apply to the validation data, and cannot be combined with
        ``sample_weight``. Default None.
      loss: a name from ``stablejax.losses.LOSSES`` or a callable ``loss(outputs, targets)``
        returning the batch's mean (with sample weights it is evaluated on one-sample
        batches, see :func:`stablejax.losses.sample_weighted`).
      metrics: ``{name: fn(outputs, targets)}``, or Keras's list form: ``["accuracy"]``
        (or ``"acc"``, the loss's accuracy) and callables (named by ``__name__``); Keras's
        names ``"sparse_categorical_accuracy"``, ``"binary_accuracy"`` and ``"mse"`` are
        taken in both forms; default accuracy for cross-entropies.
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
      run_config: more settings of the run (``{name: value}``, str keys), saved with
        each checkpoint and compared on resume like fit's own (see below); items whose
        value is not JSON-serialisable are left out. Leave out what may change between
        a run and its resumption, such as ``epochs``.
      mesh: train data-parallel on this ``jax.sharding.Mesh`` with a ``"data"`` axis
        (``sj.distributed.data_mesh()``: every device, of every process after
        ``sj.distributed.initialize``). ``batch_size`` stays the global batch and must
        be a multiple of the ``"data"`` devices; each device trains on its equal part
        of every batch, parameters, batch statistics and optimizer state are replicated,
        batch-norm statistics are the global batch's, and the numbers equal a
        one-device run up to float32 rounding (measured on 8 simulated CPU devices:
        ``tests/test_distributed.py``). The partial last batch of an epoch runs
        whole on every device when its size does not divide over them (the same
        numbers; sharded when it does). Each epoch, every device receives only its
        rows of the epoch's batches, gathered on the host from ``train_data``; across
        processes, every process passes the same ``train_data`` and feeds its own
        devices. Validation data sit whole on every device, and each evaluation batch
        is split like a training batch. Resuming a checkpoint places it on the
        mesh (a run saved on 8 devices resumes on 1, and the other way round);
        across processes, ``checkpoint_dir`` must be one directory that every process
        sees (a shared filesystem), and every process saves into it. ``None``: the
        default device.
      shard_optimizer_state: with ``mesh``, split the optimizer state's buffers (Adam's
        ``m`` and ``v``) along ``"data"`` where their leading dimension divides, so each
        device holds ``1/n`` of them; same numbers (see
        :func:`stablejax.distributed.state_shardings`).

    The data are checked on the host before anything compiles: ``x`` must have a batch
    axis and fit the model (traced once on one sample with ``jax.eval_shape``), and for
    the sparse cross-entropies ``y`` must hold integer labels of shape ``(samples,)`` in
    ``[0, classes)``, ``classes`` being the model's output width.

    With ``checkpoint_dir``, the run's configuration is saved with each checkpoint:
    ``batch_size``, ``shuffle``, ``seed``, the loss's name, the shape of each parameter,
    the optimizer's hyperparameters as ``tx.init`` gives them (injected learning rates,
    for instance; a schedule by its first value) and ``run_config``'s items. Resuming a
    checkpoint whose configuration differs raises ``ValueError`` naming each difference.
    Checkpoints saved without a configuration (stablejax 0.1) resume unchecked.

    Raises:
      NonFiniteError: after ``max_consecutive_skips`` consecutive non-finite updates.
      TypeError: ``model``, ``tx``, the data, ``metrics`` or ``callbacks`` are not of the
        kinds above.
      ValueError: a bad argument, data that do not fit the model or the loss (naming the
        argument, the shapes or the first bad label and its index), or a checkpoint of
        another configuration.
    """
    _check_settings(epochs=epochs, batch_size=batch_size, keep=keep,
                    max_consecutive_skips=max_consecutive_skips, steps_per_call=steps_per_call,
                    verbose=verbose, mesh=mesh, shard_optimizer_state=shard_optimizer_state)
    feeding.check_model(model)
    _check_tx(tx)
    losses.get(loss)
    check_range("validation_split", validation_split, 0, 1, high_open=True)
    metrics, callbacks = metrics_.as_metrics(metrics, loss), _as_callbacks(callbacks)
    data = _training_data(model, loss, train_data, validation_data, validation_split,
                          sample_weight, class_weight)
    if run_config is not None and not isinstance(run_config, dict):
        raise TypeError("run_config must be a dict of settings, got "
                        f"{feeding.describe(run_config)}")
    if checkpoint_dir is not None:
        writable_directory(checkpoint_dir, "checkpoint_dir")

    place = feeding.Placement(mesh, shard_optimizer_state)
    state = place.state(init_state(model, tx) if state is None else _checked_state(state))
    _set_up_callbacks(callbacks, state, model, tx, {
        "epochs": epochs, "steps": -(-len(data.x) // batch_size), "verbose": verbose,
        "loss": loss, "input_shape": tuple(data.x.shape[1:])})
    if compilation_cache:
        enable_compilation_cache()
    saving = None
    history: dict[str, list[float]] = {}
    if checkpoint_dir is not None:
        config = resuming.run_config(state.params, tx, batch_size, shuffle, seed, loss, run_config)
        # Set only when used, so runs saved before these existed resume as before.
        if validation_data is None and validation_split:
            config["validation_split"] = float(validation_split)
        if class_weight is not None:
            config.update({f"class_weight/{k}": float(v) for k, v in class_weight.items()})
        if sample_weight is not None:  # the weights themselves are data, like x and y
            config["sample_weight"] = True
        saving = resuming.Saving(checkpoint_dir, keep, config)
        state, history = saving.resume(state)

    run = make_train_scan(model, tx, loss, metrics=metrics,
                          max_consecutive_skips=max_consecutive_skips,
                          step_stats=_step_stats(callbacks), mesh=mesh,
                          shard_optimizer_state=shard_optimizer_state,
                          batched=mesh is not None)
    epochs_ = _Epochs(run, data, feeding.Batching(len(data.x), batch_size, shuffle, seed),
                      _CallPlan(steps_per_call, verbose), place, max_consecutive_skips)
    if data.valid is not None:
        val_batch = max(batch_size, EVAL_BATCH_SIZE)
        epochs_.validate_with(make_eval_scan(model, loss, metrics=metrics,
                                             batch_size=val_batch, mesh=mesh), val_batch)
    state = _train(model, epochs_, state, epochs, callbacks, history, saving, loss, verbose)
    end = int(state.epoch)
    return History(history, list(range(end - len(history.get("loss", [])), end)), state)


def _check_settings(*, epochs: int, batch_size: int, keep: int, max_consecutive_skips: int,
                    steps_per_call: int | None, verbose: int, mesh: Any,
                    shard_optimizer_state: bool) -> None:
    """fit's counts, ``verbose`` and mesh arguments, checked before anything else."""
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
    if mesh is not None:
        distributed.check_mesh(mesh)
        distributed.check_batch_size(batch_size, mesh)
    elif shard_optimizer_state:
        raise ValueError("shard_optimizer_state=True needs a mesh to shard along: pass "
                         "mesh=sj.distributed.data_mesh()")


def _check_tx(tx: Any) -> None:
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        hint = (" (a learning rate? pass an optimizer built with it, e.g. sj.sgd(0.01))"
                if isinstance(tx, numbers.Number) else "")
        raise TypeError(f"tx must be an optax.GradientTransformation such as sj.adam(1e-3), "
                        f"got {feeding.describe(tx)}{hint}")


@dataclass
class _Data:
    """fit's checked data: training inputs, targets and weights (or None), and the
    validation triple ``(x, y, weights or None)`` or None."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray | None
    valid: tuple[np.ndarray, np.ndarray, Any] | None


def _training_data(model: nnx.Module, loss: Loss, train_data: Any, validation_data: Any,
                   validation_split: float, sample_weight: Any, class_weight: Any) -> _Data:
    """fit's data checked against the model and the loss, with Keras's
    ``validation_split`` taken and ``class_weight`` turned into per-sample weights."""
    x, y = feeding.as_split(train_data, "train_data")
    w = None if sample_weight is None else feeding.as_sample_weight(sample_weight, len(x),
                                                                    "sample_weight")
    if class_weight is not None and w is not None:
        raise ValueError("class_weight and sample_weight cannot both be given: fold the "
                         "class weights into sample_weight")
    valid = None
    if validation_data is not None:
        valid = feeding.as_weighted_split(validation_data, "validation_data")
    elif validation_split:
        (x, y, w), valid = feeding.validation_split(x, y, w, validation_split)
    outputs = feeding.model_outputs(model, x, "train_data")
    feeding.check_targets(loss, y, outputs, "train_data")
    if valid is not None:
        feeding.check_targets(loss, valid[1],
                              feeding.model_outputs(model, valid[0], "validation_data"),
                              "validation_data")
    if class_weight is not None:
        # The classes are the outputs' last axis; one output unit is a binary task.
        width = outputs.shape[-1] if getattr(outputs, "ndim", 0) >= 2 else 1
        w = feeding.class_weights(class_weight, y, max(width, 2))
    return _Data(x, y, w, valid)


def _set_up_callbacks(callbacks: list[Callback], state: TrainState, model: nnx.Module,
                      tx: Any, params: dict[str, Any]) -> None:
    """Keras's ``set_model`` and ``set_params``, then each callback's initial state (a
    given state keeps the callbacks' state it holds)."""
    for cb in callbacks:
        cb.set_model(model, tx)
        cb.set_params(params)
    for i, cb in enumerate(callbacks):
        if str(i) not in state.callbacks:
            state.callbacks[str(i)] = cb.init(state)


class _Epochs:
    """One epoch of fit: its compiled train calls over the placed data, then validation.

    On a mesh each epoch's batches are gathered from the host, each device its rows;
    otherwise the whole set sits on the device and the batches are rows of indices.
    """

    def __init__(self, run: Any, data: _Data, batching: feeding.Batching, plan: _CallPlan,
                 place: feeding.Placement, max_consecutive_skips: int):
        self.run, self.batching, self.plan, self.place = run, batching, plan, place
        self.max_consecutive_skips = max_consecutive_skips
        train = (data.x, feeding.targets(data.y, data.w))
        placed: tuple[Any, Any] = (train if place.mesh is not None
                                   else jax.tree.map(jnp.asarray, train))
        self.x, self.y = placed
        self.valid: Any = data.valid
        self.eval_run: Any = None

    def validate_with(self, eval_run: Any, batch_size: int) -> None:
        """Evaluates the validation data with ``eval_run`` (batches of ``batch_size``)
        after each epoch."""
        assert self.valid is not None
        val_x, val_y, val_w = self.valid
        self.eval_run, self.val_count, self.val_batch = eval_run, len(val_x), batch_size
        self.val_x, self.val_y = self.place.whole(
            jax.tree.map(jnp.asarray, (val_x, feeding.targets(val_y, val_w))))

    def train(self, state: TrainState, epoch: int, bar: Any) -> tuple[TrainState, dict]:
        """The epoch's training logs, then its ``val_`` logs."""
        state, logs = _train_epoch(self.run, self.place.state(state), self.x, self.y,
                                   self.batching, epoch, self.plan,
                                   self.max_consecutive_skips, bar, self.place)
        if self.eval_run is not None:
            outs = self.eval_run(state, self.val_x, self.val_y)
            val = feeding.means_of(outs, self.val_count, self.val_batch)
            logs.update({f"val_{k}": v for k, v in val.items()})
        return state, logs


def _train(model: nnx.Module, epochs_: _Epochs, state: TrainState, epochs: int,
           callbacks: list[Callback], history: dict[str, list[float]],
           saving: resuming.Saving | None, loss: Loss, verbose: int) -> TrainState:
    """fit's epoch loop, from ``state.epoch`` to ``epochs`` or until a callback stops it;
    returns the final state. The model holds the run's last state however the loop ends
    (the last finite one after a ``NonFiniteError``)."""
    run = _Run(state)
    try:
        _epoch_loop(epochs_, run, epochs, callbacks, history, saving, loss, verbose)
    finally:
        update_model(model, run.state)
    return run.state


@dataclass
class _Run:
    """The run state as the epoch loop leaves it, also when it raises."""

    state: TrainState


def _epoch_loop(epochs_: _Epochs, run: _Run, epochs: int, callbacks: list[Callback],
                history: dict[str, list[float]], saving: resuming.Saving | None, loss: Loss,
                verbose: int) -> None:
    """The epochs themselves (see :func:`_train`), advancing ``run.state``."""
    # A resumed run that early stopping had already ended stays ended.
    stop = any(cb.stopped(run.state.callbacks[str(i)]) for i, cb in enumerate(callbacks))
    warned = False
    while int(run.state.epoch) < epochs and not stop:
        epoch = int(run.state.epoch)
        for i, cb in enumerate(callbacks):
            run.state = cb.on_epoch_begin(run.state, run.state.callbacks[str(i)], epoch)
        bar = _progress(epoch, epochs, epochs_.batching.steps, verbose)
        try:
            run.state, logs = epochs_.train(run.state, epoch, bar)
        except NonFiniteError as e:
            if e.state is not None:  # the input state was donated
                run.state = e.state
            raise
        off = logs.pop("not_probabilities", None)
        if off and not warned:
            _warn_not_probabilities(off, loss)
        warned = True  # the first step of this fit only
        try:
            logs["lr"] = float(optimizers.current_learning_rate(run.state.opt_state))
        except ValueError:  # the optimizer exposes no single learning rate
            pass
        if bar is not None:
            bar.set_postfix({k: v for k, v in logs.items() if k != "skipped"})
            bar.close()
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        for i, cb in enumerate(callbacks):
            run.state, own, wants_stop = cb.on_epoch_end(run.state,
                                                         run.state.callbacks[str(i)], logs)
            run.state.callbacks[str(i)] = own
            stop = stop or wants_stop
        run.state = run.state._replace(epoch=optax.safe_increment(run.state.epoch))
        if saving is not None:
            saving.save(epoch + 1, run.state, history)
    for i, cb in enumerate(callbacks):
        run.state = cb.on_train_end(run.state, run.state.callbacks[str(i)])


def _checked_state(state: Any) -> TrainState:
    """A ``TrainState`` whose buffers still exist (``fit`` donates the one it is given)."""
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a stablejax TrainState (history.state, "
                        f"sj.train.init_state(...)), got {feeding.describe(state)}")
    if any(isinstance(a, jax.Array) and a.is_deleted() for a in jax.tree.leaves(state)):
        raise ValueError(
            "state was given to an earlier fit, which used up its buffers (fit donates "
            "them to train in place): continue from that fit's history.state, or pass a "
            "copy to each fit, e.g. fit(..., state=jax.tree.map(jnp.copy, state))"
        )
    return state


def _step_stats(callbacks: list[Callback]) -> Any:
    """The callbacks' :meth:`~stablejax.callbacks.Callback.step_stats`, as one function."""
    wanted = [cb for cb in callbacks if type(cb).step_stats is not Callback.step_stats]
    if not wanted:
        return None

    def step_stats(grads: Any, params: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cb in wanted:
            stats = cb.step_stats(grads, params)
            metrics_.check_log_names(stats, f"{type(cb).__name__}.step_stats", taken=out)
            out.update(stats)
        return out

    return step_stats


def _as_callbacks(callbacks: Sequence[Callback]) -> list[Callback]:
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of stablejax.callbacks.Callback instances, "
                        f"got {feeding.describe(callbacks)}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(
                f"callbacks[{i}] must be a stablejax.callbacks.Callback instance (subclass "
                f"Callback and override its hooks), got {feeding.describe(cb)}"
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


def _train_epoch(run, state, x, y, batching, epoch, plan, max_consecutive_skips, bar,
                 place):
    """Runs one epoch's compiled calls; returns the state and the epoch's mean logs.

    The logs are float64 sums over the steps that ran and were finite (skipped steps are
    left out, not multiplied by zero), so they do not depend on how the epoch was cut
    into calls.
    """
    x, y, rows, tail = place.epoch(x, y, *batching.epoch(epoch))
    totals: dict[str, float] = {"count": 0.0, "skipped": 0.0}
    start, first_off = 0, None
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
        ran = outs.pop("ran").astype(bool)
        off = outs.pop("not_probabilities", None)
        if off is not None and start == 0 and ran.any():
            first_off = float(off[ran][0])  # the epoch's first step
        plan.observe(time.perf_counter() - began, count)
        skipped = outs.pop("skipped").astype(bool) & ran
        longest = int(outs.pop("skips")[ran].max(initial=0))
        ok = ran & ~skipped
        for k, v in feeding.weighted_sums(outs, batching.sizes, ok).items():
            totals[k] = totals.get(k, 0.0) + v
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
    if first_off is not None:
        logs["not_probabilities"] = first_off
    return state, logs


def _warn_not_probabilities(fraction: float, loss: Loss) -> None:
    """Warns that a loss taking probabilities was given other numbers (logits, mostly)."""
    rule = "lie in [0, 1] and sum to 1" if loss == "sparse_categorical_crossentropy" else (
        "lie in [0, 1]")
    warnings.warn(
        f"loss {loss!r} takes probabilities, but the model's outputs for {fraction:.0%} of "
        f"the first batch's samples do not {rule}: the loss clips them and training "
        f"learns nonsense. End the model with a softmax (sigmoid), or pass loss="
        f"'{loss}_from_logits' (Keras's from_logits=True) for a model ending in a linear "
        "layer.",
        UserWarning,
        stacklevel=3,
    )


def _means(totals: dict[str, float]) -> dict[str, float]:
    count = totals.get("count", 0.0)
    return {
        k: (v / count if count else float("nan"))
        for k, v in totals.items()
        if k not in ("count", "skipped")
    }


def _progress(epoch: int, epochs: int, steps: int, verbose: int) -> Any:
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="step", leave=True)
