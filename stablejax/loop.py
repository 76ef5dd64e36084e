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

import functools
import json
import math
import numbers
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stablejax import data, distributed, losses, nn, optimizers
from stablejax._checks import check_range, index, writable_directory
from stablejax.callbacks import Callback
from stablejax.compilation_cache import enable as enable_compilation_cache
from stablejax.steps import (
    Loss,
    Metrics,
    TrainState,
    Weighted,
    _eval_scan,
    batch_sizes,
    check_log_names,
    init_state,
    make_eval_scan,
    make_train_scan,
    metric_fns,
    over_batches,
    update_model,
)

__all__ = ["fit", "evaluate", "predict", "History", "NonFiniteError"]

EVAL_BATCH_SIZE = 1024  # samples per evaluation batch (at least fit's batch_size)
FIRST_CALL_STEPS = 8  # steps of a run's first call when fit chooses (see _CallPlan)
CALL_SECONDS = 0.1  # length of the later calls when fit chooses and a bar shows
SHOWN_DIFFERENCES = 5  # settings a refused resume lists (then a count of the rest)


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
    _check_model(model)
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        hint = (" (a learning rate? pass an optimizer built with it, e.g. sj.sgd(0.01))"
                if isinstance(tx, numbers.Number) else "")
        raise TypeError(f"tx must be an optax.GradientTransformation such as sj.adam(1e-3), "
                        f"got {_describe(tx)}{hint}")
    losses.get(loss)
    check_range("validation_split", validation_split, 0, 1, high_open=True)
    x, y = _as_split(train_data, "train_data")
    w = None if sample_weight is None else _as_sample_weight(sample_weight, len(x),
                                                               "sample_weight")
    if class_weight is not None and w is not None:
        raise ValueError("class_weight and sample_weight cannot both be given: fold the "
                         "class weights into sample_weight")
    valid = None
    if validation_data is not None:
        valid = _as_weighted_split(validation_data, "validation_data")
    elif validation_split:
        (x, y, w), valid = _validation_split(x, y, w, validation_split)
    metrics = _as_metrics(metrics, loss)
    callbacks = _as_callbacks(callbacks)
    outputs = _outputs(model, x, "train_data")
    _check_targets(loss, y, outputs, "train_data")
    if valid is not None:
        _check_targets(loss, valid[1], _outputs(model, valid[0], "validation_data"),
                       "validation_data")
    if class_weight is not None:
        # The classes are the outputs' last axis; one output unit is a binary task.
        width = outputs.shape[-1] if getattr(outputs, "ndim", 0) >= 2 else 1
        w = _class_weights(class_weight, y, max(width, 2))
    if run_config is not None and not isinstance(run_config, dict):
        raise TypeError(f"run_config must be a dict of settings, got {_describe(run_config)}")
    if checkpoint_dir is not None:
        writable_directory(checkpoint_dir, "checkpoint_dir")

    if state is None:
        state = init_state(model, tx)
    else:
        _check_state(state)
    place = _Placement(mesh, shard_optimizer_state)
    state = place.state(state)  # a restored checkpoint takes this layout too
    for cb in callbacks:
        cb.set_model(model, tx)
        cb.set_params({"epochs": epochs, "steps": -(-len(x) // batch_size), "verbose": verbose,
                       "loss": loss, "input_shape": tuple(x.shape[1:])})
    for i, cb in enumerate(callbacks):
        if str(i) not in state.callbacks:  # a given state keeps its callbacks' state
            state.callbacks[str(i)] = cb.init(state)
    if compilation_cache:
        enable_compilation_cache()
    history: dict[str, list[float]] = {}
    if checkpoint_dir is not None:
        from stablejax import checkpoint  # Orbax loads only for runs that checkpoint

        config = _run_config(state.params, tx, batch_size, shuffle, seed, loss, run_config)
        # Set only when used, so runs saved before these existed resume as before.
        if validation_data is None and validation_split:
            config["validation_split"] = float(validation_split)
        if class_weight is not None:
            config.update({f"class_weight/{k}": float(v) for k, v in class_weight.items()})
        if sample_weight is not None:  # the weights themselves are data, like x and y
            config["sample_weight"] = True
        last = checkpoint.latest_epoch(checkpoint_dir)
        if last is not None:
            _check_same_config(checkpoint.saved_config(checkpoint_dir, last), config,
                               checkpoint_dir, last)
        found = checkpoint.restore_latest(checkpoint_dir, state)
        if found is not None:
            _, state, saved = found
            history = saved or {}

    run = make_train_scan(model, tx, loss, metrics=metrics,
                          max_consecutive_skips=max_consecutive_skips,
                          step_stats=_step_stats(callbacks), mesh=mesh,
                          shard_optimizer_state=shard_optimizer_state,
                          batched=mesh is not None)
    # On a mesh, each epoch's batches are gathered from the host, each device its rows.
    x_dev, y_dev = (x, _targets(y, w)) if mesh is not None else jax.tree.map(
        jnp.asarray, (x, _targets(y, w)))
    batching = _Batching(len(x), batch_size, shuffle, seed)
    plan = _CallPlan(steps_per_call, verbose)
    if valid is not None:
        val_batch = max(batch_size, EVAL_BATCH_SIZE)
        eval_run = make_eval_scan(model, loss, metrics=metrics, batch_size=val_batch,
                                  mesh=mesh)
        val_in, val_labels, val_weights = valid
        val_x, val_y = place.whole(jax.tree.map(jnp.asarray,
                                                (val_in, _targets(val_labels, val_weights))))
    # A resumed run that early stopping had already ended stays ended.
    stop = any(cb.stopped(state.callbacks[str(i)]) for i, cb in enumerate(callbacks))
    warned = False
    try:
        while int(state.epoch) < epochs and not stop:
            epoch = int(state.epoch)
            for i, cb in enumerate(callbacks):
                state = cb.on_epoch_begin(state, state.callbacks[str(i)], epoch)
            bar = _progress(epoch, epochs, batching.steps, verbose)
            try:
                state, logs = _train_epoch(
                    run, place.state(state), x_dev, y_dev, batching, epoch, plan,
                    max_consecutive_skips, bar, place,
                )
            except NonFiniteError as e:
                if e.state is not None:  # the input state was donated
                    state = e.state
                raise
            off = logs.pop("not_probabilities", None)
            if off and not warned:
                _warn_not_probabilities(off, loss)
            warned = True  # the first step of this fit only
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
                                      keep=keep, config=config)
        for i, cb in enumerate(callbacks):
            state = cb.on_train_end(state, state.callbacks[str(i)])
    finally:
        update_model(model, state)
    end = int(state.epoch)
    return History(history, list(range(end - len(history.get("loss", [])), end)), state)


@overload
def evaluate(model: nnx.Module, x: Any, y: Any, *, loss: Loss = ...,
             metrics: Metrics | None = ..., batch_size: int = ..., sample_weight: Any = ...,
             verbose: int | str = ..., return_dict: Literal[True] = ...) -> dict[str, float]:
    ...


@overload
def evaluate(model: nnx.Module, x: Any, y: Any, *, loss: Loss = ...,
             metrics: Metrics | None = ..., batch_size: int = ..., sample_weight: Any = ...,
             verbose: int | str = ..., return_dict: Literal[False]) -> float | list[float]:
    ...


def evaluate(
    model: nnx.Module,
    x: Any,
    y: Any,
    *,
    loss: Loss = "sparse_categorical_crossentropy",
    metrics: Metrics | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
    sample_weight: Any = None,
    verbose: int | str = "auto",
    return_dict: bool = True,
) -> dict[str, float] | float | list[float]:
    """Loss and metrics of ``model`` on ``(x, y)`` in inference mode (Keras's ``evaluate``).

    ``evaluate(model, x, y)`` evaluates the model's own variables, as Keras does after
    ``fit`` (which writes the trained state back into the model);
    ``evaluate(model, state, (x, y))`` evaluates a :class:`~stablejax.steps.TrainState`
    instead, such as ``history.state``. Batch norm uses its moving statistics and RReLU
    its mean slope. The set is evaluated in batches of ``batch_size`` inside one
    compiled call; each value is ``sum(batch mean * batch size) / len(x)``, summed in
    float64, so ``batch_size`` changes only the speed (up to float32 rounding). The
    result is a dict, as Keras's ``return_dict=True`` gives (``return_dict=False``: Keras's
    default form, the loss alone, or ``[loss, *metrics]`` with metrics).

    With ``sample_weight`` (one finite weight >= 0 per sample; or ``(x, y, w)`` in the
    state form) the loss is ``sum(w_i * loss_i) / len(x)`` and the metrics are
    unweighted, as in :func:`fit`. The data are checked as :func:`fit` checks them.

    Args:
      model: a ``flax.nnx`` model.
      x: the inputs, or a ``TrainState`` (then ``y`` is the pair ``(x, y)``).
      y: the targets, or the data split for the state form.
      loss: as in :func:`fit`.
      metrics: as in :func:`fit`.
      batch_size: samples per evaluation batch, >= 1. Default 1024.
      sample_weight: per-sample weights of the loss. Default None.
      verbose: Keras's ``0``, ``1``, ``2`` or ``"auto"``, accepted for Keras code; the
        set is evaluated in one compiled call and nothing is printed.
      return_dict: return ``{name: value}`` (default True, unlike Keras's False).

    Example:
      >>> import numpy as np, stablejax as sj
      >>> from flax import nnx
      >>> model = sj.nn.mlp([8], input_shape=(4,), output_size=2, rngs=nnx.Rngs(0))
      >>> x, y = np.ones((10, 4), np.float32), np.zeros(10, np.int32)
      >>> sorted(sj.train.evaluate(model, x, y))
      ['accuracy', 'loss']
    """
    _check_model(model)
    index("batch_size", batch_size, 1)
    _check_quiet_verbose(verbose)
    if isinstance(x, History):
        raise TypeError("evaluate takes a TrainState, not a History: pass history.state")
    if isinstance(x, TrainState):
        state, name = x, "data_split"
        x, y, w = _as_weighted_split(y, name)
        if w is not None and sample_weight is not None:
            raise ValueError("sample weights given twice: in the data split (x, y, w) and "
                             "as sample_weight=")
    else:
        _, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
        zero = jnp.zeros((), jnp.int32)
        state, name = TrainState(params, rest, (), zero, zero, zero, {}), "evaluate"
        x, y = _as_split((x, y), name)
        w = None
    if sample_weight is not None:
        w = _as_sample_weight(sample_weight, len(x), "sample_weight")
    metrics = _as_metrics(metrics, loss)
    _check_targets(loss, y, _outputs(model, x, name), name)
    run = _eval_program(nnx.graphdef(model), loss,
                        None if metrics is None else tuple(metrics.items()), batch_size)
    targets = jax.tree.map(jnp.asarray, _targets(y, w))
    state = _committed(state._replace(callbacks={}))
    scores = _means_of(run(state, jnp.asarray(x), targets), len(x), batch_size)
    # The compiled program returns its dict with sorted keys: Keras's order is the loss,
    # then the metrics as given.
    names = ["loss", *metric_fns(loss, metrics)]
    if return_dict:
        return {name: scores[name] for name in names}
    return scores["loss"] if len(names) == 1 else [scores[name] for name in names]


def _check_quiet_verbose(verbose: Any) -> None:
    """Keras's ``verbose`` values, accepted where nothing is printed anyway."""
    if isinstance(verbose, bool) or verbose not in (0, 1, 2, "auto"):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")


def predict(model: nnx.Module, x: Any, batch_size: int = 32,
            verbose: int | str = "auto") -> np.ndarray:
    """The model's outputs for ``x`` in inference mode, as Keras's ``predict``.

    Batch norm uses its moving statistics and RReLU its mean slope; nothing in the model
    changes. ``x`` is cut into batches of ``batch_size`` (the last may be shorter), all
    run in one compiled call; the program is compiled once per model structure, input
    shape and ``batch_size``, so calling ``predict`` again on the same model, or on a
    model of the same structure with other weights, does not compile again. The outputs
    do not depend on ``batch_size`` beyond float32 rounding.

    Args:
      model: a ``flax.nnx`` model.
      x: inputs of shape ``(samples, features...)``.
      batch_size: samples per batch, >= 1. Default 32, Keras's.
      verbose: Keras's ``0``, ``1``, ``2`` or ``"auto"``, accepted for Keras code; the
        batches run in one compiled call and nothing is printed.

    Returns:
      A NumPy array of shape ``(samples, outputs...)``.

    Example:
      >>> import numpy as np, stablejax as sj
      >>> from flax import nnx
      >>> model = sj.nn.mlp([8], input_shape=(4,), output_size=3, rngs=nnx.Rngs(0))
      >>> sj.train.predict(model, np.ones((70, 4), np.float32)).shape
      (70, 3)
    """
    _check_model(model)
    index("batch_size", batch_size, 1)
    _check_quiet_verbose(verbose)
    x = _as_inputs(x, "x")
    _outputs(model, x, "x")
    graphdef, variables = nnx.split(model)
    return np.asarray(jax.device_get(_predict(graphdef, _committed(variables),
                                              jnp.asarray(x), batch_size)))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _predict(graphdef: nnx.GraphDef, variables: nnx.State, x: jax.Array,
             batch_size: int) -> Any:
    def forward(variables: nnx.State, batch: jax.Array) -> Any:
        model = nnx.merge(graphdef, variables)
        model.eval()
        return model(batch)

    full, last = over_batches(forward, variables, x, batch_size)
    outputs = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), full)  # batches joined
    if last is None:
        return outputs
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outputs, last)


@functools.lru_cache(maxsize=16)
def _eval_program(graphdef: nnx.GraphDef, loss: Loss, metrics: tuple | None,
                  batch_size: int) -> Any:
    """``evaluate``'s compiled program, kept for the next call with the same structure,
    loss, metrics and batch size (a new program per call would compile every time)."""
    return _eval_scan(graphdef, loss, None if metrics is None else dict(metrics), batch_size)


def _committed(tree: Any) -> Any:
    """Every array committed to its device, as ``fit`` leaves a model's: a compiled
    program is cached per placement, so a fresh model and a trained one share it."""
    return jax.tree.map(lambda a: jax.device_put(a, a.sharding), tree)


def _describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, jax.Array)):
        return f"an array of shape {tuple(value.shape)}"
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _check_state(state: Any) -> None:
    """A ``TrainState`` whose buffers still exist (``fit`` donates the one it is given)."""
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a stablejax TrainState (history.state, "
                        f"sj.train.init_state(...)), got {_describe(state)}")
    if any(isinstance(a, jax.Array) and a.is_deleted() for a in jax.tree.leaves(state)):
        raise ValueError(
            "state was given to an earlier fit, which used up its buffers (fit donates "
            "them to train in place): continue from that fit's history.state, or pass a "
            "copy to each fit, e.g. fit(..., state=jax.tree.map(jnp.copy, state))"
        )


def _check_model(model: Any) -> None:
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module such as sj.nn.mlp(...), "
                        f"got {_describe(model)}")


def _as_inputs(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array of numbers with a sample axis and at least one sample."""
    try:
        x = np.asarray(x)
    except ValueError:  # NumPy: "inhomogeneous shape", e.g. a pair (x, y)
        shapes = [np.shape(item) for item in x] if isinstance(x, (list, tuple)) else []
        raise ValueError(
            f"{name}: x must be one array of samples, got a {type(x).__name__} of items of "
            f"different shapes {shapes[:3]}{'...' if len(shapes) > 3 else ''}"
            + (" (inputs alone are taken here, not a pair (x, y))" if len(shapes) == 2 else "")
        ) from None
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"{name}: x must hold numbers, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(
            f"{name}: x must have shape (samples, features...), got shape {x.shape}; "
            "for one feature per sample pass x.reshape(-1, 1)"
        )
    if len(x) == 0:
        raise ValueError(f"{name} is empty (0 samples): pass at least one sample")
    return x


def _as_split(split: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as numpy arrays, checked: a pair, the same length, not empty."""
    if not isinstance(split, (tuple, list)):
        raise TypeError(f"{name} must be a pair (x, y) of inputs and targets (or a "
                        f"stablejax.data.Split), got {_describe(split)}")
    if len(split) != 2:
        raise ValueError(f"{name} must be a pair (x, y) of inputs and targets, got "
                         f"{len(split)} items (fit takes sample weights as sample_weight=)")
    x, y = _as_inputs(split[0], name), np.asarray(split[1])
    if y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"{name}: inputs and targets differ in length: x has shape "
                         f"{x.shape}, y has shape {y.shape}")
    return x, y


def _as_weighted_split(split: Any, name: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(x, y)`` or ``(x, y, sample_weight)``, checked: ``(x, y, weights or None)``."""
    if isinstance(split, (tuple, list)) and len(split) == 3:
        x, y = _as_split(tuple(split[:2]), name)
        return x, y, _as_sample_weight(split[2], len(x), f"{name}'s sample weights")
    return (*_as_split(split, name), None)


def _as_sample_weight(weights: Any, n: int, name: str) -> np.ndarray:
    """One finite, non-negative float32 weight per sample, shape ``(n,)`` (Keras's
    ``(n, 1)`` is taken too)."""
    w = np.asarray(weights)
    if not (np.issubdtype(w.dtype, np.number) or w.dtype == np.bool_) or np.iscomplexobj(w):
        raise ValueError(f"{name} must hold real numbers, got dtype {w.dtype}")
    if w.shape == (n, 1):
        w = w[:, 0]
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one weight per sample, got shape "
                         f"{w.shape}")
    with np.errstate(over="ignore"):
        w32 = w.astype(np.float32)  # checked as trained: a weight past float32 is inf
    bad = np.flatnonzero(~np.isfinite(w32) | (w32 < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must be finite and >= 0 in float32: weight {w[i]} at "
                         f"index {i} ({bad.size} bad weights)")
    return w32


def _class_weights(class_weight: Any, y: np.ndarray, classes: int) -> np.ndarray:
    """Keras's ``class_weight`` as one weight per sample: ``class_weight.get(c, 1.0)``.

    The class of a sample is its label; for targets with a last axis, the index of the
    largest value (one-hot), or the value itself when that axis has size 1; float labels
    (binary targets) are rounded to the nearest integer, as Keras does. Keys must lie in
    ``[0, classes)``: a key no sample can have would be ignored without a word.
    """
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class index: weight}}, got "
                        f"{_describe(class_weight)}")
    labels = y
    if labels.ndim > 1:
        labels = labels.argmax(axis=-1) if labels.shape[-1] != 1 else labels[..., 0]
    labels = np.round(labels).astype(np.int64)
    weights = np.ones(len(y), np.float32)
    for key, value in class_weight.items():
        if isinstance(key, bool | np.bool_) or not isinstance(key, numbers.Integral):
            raise ValueError(f"class_weight keys must be class indices (int), got {key!r}")
        if not 0 <= int(key) < classes:
            raise ValueError(f"class_weight key {key!r} is not a class: the model's outputs "
                             f"have {classes} classes, [0, {classes})")
        check_range(f"class_weight[{key!r}]", value, 0, math.inf, high_open=True)
        weights[labels == int(key)] = float(value)
    return weights


def _validation_split(x: np.ndarray, y: np.ndarray, w: Any, split: float) -> tuple:
    """Keras's ``validation_split``: the last ``n - floor(n * (1 - split))`` samples,
    taken before any shuffling, are the validation set; returns both parts."""
    n = len(x)
    at = int(math.floor(n * (1.0 - float(split))))
    if at in (0, n):
        side = "training" if at == 0 else "validation"
        raise ValueError(f"validation_split={split!r} leaves no {side} samples of the {n} in "
                         "train_data: pass more data or another validation_split")
    head, tail = slice(None, at), slice(at, None)
    return ((x[head], y[head], None if w is None else w[head]),
            (x[tail], y[tail], None if w is None else w[tail]))


def _targets(y: Any, w: Any) -> Any:
    """The targets the steps take: ``y``, or ``Weighted(y, w)`` with sample weights."""
    return y if w is None else Weighted(y, w)


# Keras's metric names (besides "accuracy"/"acc", which follow the loss).
METRIC_NAMES = {
    "sparse_categorical_accuracy": losses.sparse_categorical_accuracy,
    "binary_accuracy": losses.binary_accuracy,
    "mse": losses.mean_squared_error,
    "mean_squared_error": losses.mean_squared_error,
}


def _named_metric(name: str, loss: Loss, where: str) -> Any:
    """A metric by Keras's name: ``"accuracy"`` (or ``"acc"``), the accuracy that goes
    with a named cross-entropy loss, or one of :data:`METRIC_NAMES`."""
    if name in ("accuracy", "acc"):
        if not (isinstance(loss, str) and loss in losses.ACCURACY_FOR):
            raise ValueError(
                f"{where}: {name!r} is the accuracy of a named cross-entropy loss "
                f"({', '.join(losses.ACCURACY_FOR)}), but loss is {loss!r}; pass "
                "metrics={name: fn(outputs, targets)} instead"
            )
        return losses.ACCURACY_FOR[loss]
    if name in METRIC_NAMES:
        return METRIC_NAMES[name]
    raise ValueError(f"{where}={name!r} is unknown: accepted are 'accuracy' (or 'acc'), "
                     f"{', '.join(map(repr, METRIC_NAMES))}, callables fn(outputs, targets), "
                     "or a dict of them")


def _as_metrics(metrics: Any, loss: Loss) -> Metrics | None:
    """``metrics`` as ``{name: fn}``: Keras's list form, or a dict; names resolved by
    :func:`_named_metric`, callables named by ``__name__`` in a list."""
    if metrics is None:
        return None
    if isinstance(metrics, dict):
        resolved_dict: Metrics = {}
        for key, fn in metrics.items():
            if isinstance(fn, str):
                fn = _named_metric(fn, loss, f"metrics[{key!r}]")
            elif not callable(fn):
                raise TypeError(f"metrics[{key!r}] must be a callable fn(outputs, targets) "
                                f"or a metric name such as 'accuracy', got {_describe(fn)}")
            resolved_dict[key] = fn
        return resolved_dict
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise TypeError(f"metrics must be a dict {{name: fn(outputs, targets)}} or a list such "
                        f"as ['accuracy'], got {_describe(metrics)}")
    resolved: Metrics = {}
    for i, metric in enumerate(metrics):
        if isinstance(metric, str):
            resolved[metric] = _named_metric(metric, loss, f"metrics[{i}]")
        elif callable(metric):
            name = getattr(metric, "__name__", f"metric_{i}")
            check_log_names([name], f"metrics[{i}]", taken=resolved)
            resolved[name] = metric
        else:
            raise ValueError(f"metrics[{i}]={metric!r} is unknown: accepted are metric names "
                             "such as 'accuracy', callables fn(outputs, targets), or a dict "
                             "of them")
    return resolved


def _first_width(model: nnx.Module) -> str:
    """Where the model's first sized layer says how many input features it takes, or ""."""
    for path, module in nnx.iter_modules(model):
        width = getattr(module, "in_features", getattr(module, "num_features", None))
        if isinstance(width, int):
            where = "/".join(str(p) for p in path) or "the model"
            return (f"; its first sized layer ({type(module).__name__} at {where}) takes "
                    f"{width} features per sample")
    return ""


def _outputs(model: nnx.Module, x: np.ndarray, name: str) -> jax.ShapeDtypeStruct:
    """The model's output shape on one sample of ``x``, traced (nothing runs or compiles).

    Raises a ``ValueError`` naming ``name`` and both shapes when ``x`` does not fit.
    """
    graphdef, variables = nnx.split(model)

    def forward(variables: nnx.State, sample: jax.Array) -> Any:
        return nnx.merge(graphdef, variables, copy=True)(sample)

    dtype = jax.dtypes.canonicalize_dtype(x.dtype)
    sample = jax.ShapeDtypeStruct((1, *x.shape[1:]), dtype)
    try:
        return jax.eval_shape(forward, variables, sample)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"{name}: the model does not accept samples of shape {x.shape[1:]} (x has shape "
            f"{x.shape}){_first_width(model)}: {reason}"
        ) from e


SPARSE_LOSSES = ("sparse_categorical_crossentropy", "sparse_categorical_crossentropy_from_logits")


def _check_targets(loss: Loss, y: np.ndarray, outputs: Any, name: str) -> None:
    """For the sparse cross-entropies: integer labels of shape (samples,) in [0, classes)."""
    if not (isinstance(loss, str) and loss in SPARSE_LOSSES):
        return
    shape: tuple[int, ...] = tuple(getattr(outputs, "shape", ()))
    if len(shape) != 2:
        raise ValueError(f"{name}: loss {loss!r} needs model outputs of shape (samples, "
                         f"classes), the model gives {tuple(shape)} for one sample")
    classes = shape[-1]
    if y.ndim != 1:
        hint = (" (one-hot targets? pass y.argmax(axis=1))"
                if y.ndim == 2 and y.shape[1] == classes and classes > 1
                else " (pass y.reshape(-1))" if y.ndim == 2 and y.shape[1] == 1 else "")
        raise ValueError(f"{name}: loss {loss!r} needs integer class labels of shape "
                         f"(samples,), got y of shape {y.shape}{hint}")
    if not np.issubdtype(y.dtype, np.integer):
        whole = np.issubdtype(y.dtype, np.number) and bool(np.all(np.mod(y, 1) == 0))
        hint = ("convert whole-number labels with y.astype(np.int32)" if whole else
                "for real-valued targets pass another loss, e.g. loss='mse'")
        raise ValueError(f"{name}: loss {loss!r} needs integer class labels, got y of dtype "
                         f"{y.dtype}; {hint}")
    bad = np.flatnonzero((y < 0) | (y >= classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}: label {y[i]} at index {i} is outside [0, {classes}), the classes of "
            f"the model's {classes} outputs ({bad.size} labels out of range)"
        )


def _run_config(params: Any, tx: optax.GradientTransformation, batch_size: int,
                shuffle: bool, seed: int, loss: Loss, run_config: dict | None) -> dict:
    """The settings a resumed run must share with the checkpointed one, flat and JSON-able."""
    config: dict[str, Any] = {
        "batch_size": batch_size,
        "shuffle": bool(shuffle),
        "seed": seed,
        "loss": loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss)),
    }
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        config[f"parameters/{nn.path_name(path)}"] = list(np.shape(leaf))

    def injected(node: Any) -> bool:
        return isinstance(getattr(node, "hyperparams", None), dict)

    opt_state = tx.init(params)
    for path, node in jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=injected)[0]:
        if injected(node):
            for key, value in node.hyperparams.items():
                if np.size(value) == 1:
                    prefix = nn.path_name(path)
                    config[f"optimizer/{prefix + '/' if prefix else ''}{key}"] = float(
                        np.asarray(value).reshape(()))
    for key, value in (run_config or {}).items():
        if not isinstance(key, str):
            raise TypeError(f"run_config keys must be str, got {key!r}")
        try:
            config[f"run_config/{key}"] = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError):
            continue  # not JSON-serialisable: not saved, not compared
    return config


def _check_same_config(saved: dict | None, config: dict, directory: Any, epoch: int) -> None:
    if saved is None:  # saved before configurations were: resumed unchecked
        return
    differences = [
        f"{key}: {saved.get(key, '(absent)')!r} in the checkpoint, "
        f"{config.get(key, '(absent)')!r} now"
        for key in sorted(set(saved) | set(config))
        if saved.get(key, None) != config.get(key, None) or (key in saved) != (key in config)
    ]
    if differences:
        shown, more = differences[:SHOWN_DIFFERENCES], len(differences) - SHOWN_DIFFERENCES
        raise ValueError(
            f"checkpoint_dir {os.fspath(directory)} holds epoch {epoch} of a run with another "
            "configuration; resuming would mix two runs:\n  " + "\n  ".join(shown)
            + (f"\n  ... and {more} more differences" if more > 0 else "")
            + "\nUse another checkpoint_dir, or the checkpoint's settings to resume it."
        )


def _step_stats(callbacks: list[Callback]) -> Any:
    """The callbacks' :meth:`~stablejax.callbacks.Callback.step_stats`, as one function."""
    wanted = [cb for cb in callbacks if type(cb).step_stats is not Callback.step_stats]
    if not wanted:
        return None

    def step_stats(grads: Any, params: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cb in wanted:
            stats = cb.step_stats(grads, params)
            check_log_names(stats, f"{type(cb).__name__}.step_stats", taken=out)
            out.update(stats)
        return out

    return step_stats


def _as_callbacks(callbacks: Sequence[Callback]) -> list[Callback]:
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of stablejax.callbacks.Callback instances, "
                        f"got {_describe(callbacks)}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(
                f"callbacks[{i}] must be a stablejax.callbacks.Callback instance (subclass "
                f"Callback and override its hooks), got {_describe(cb)}"
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


class _Placement:
    """Where ``fit`` puts its arrays: the default device, or the mesh.

    Every array is committed to its place, as the compiled call's outputs are, so that
    arrays a callback or a restore replaced do not change the call's signature and
    compile it again.
    """

    def __init__(self, mesh: jax.sharding.Mesh | None, shard_optimizer_state: bool):
        self.mesh, self.shard_optimizer_state = mesh, shard_optimizer_state

    def state(self, state: TrainState) -> TrainState:
        if self.mesh is not None:
            return distributed.place_state(state, self.mesh, self.shard_optimizer_state)
        return _committed(state._replace(callbacks={}))._replace(callbacks=state.callbacks)

    def whole(self, array: Any) -> Any:
        return array if self.mesh is None else distributed.replicate(array, self.mesh)

    def epoch(self, x: Any, y: Any, rows: np.ndarray, tail: np.ndarray | None) -> tuple:
        """``run``'s data arguments: the whole set and the batches' indices on the
        device, or on a mesh each device's rows of the epoch's batches."""
        if self.mesh is None:
            return x, y, jnp.asarray(rows), None if tail is None else jnp.asarray(tail)
        mesh = self.mesh

        def gather(a: np.ndarray, where: np.ndarray) -> jax.Array:
            return distributed.gather_rows(a, where, mesh)

        batches = jax.tree.map(lambda a: gather(a, rows), (x, y))
        last = None if tail is None else jax.tree.map(lambda a: gather(a, tail), (x, y))
        return *batches, None, last


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
        for k, v in _weighted_sums(outs, batching.sizes, ok).items():
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


def _weighted_sums(outs: dict[str, Any], sizes: np.ndarray, ok: np.ndarray) -> dict[str, float]:
    """Float64 sums of each per-step value over the steps ``ok``, weighted by batch size."""
    return {k: float(np.sum(np.asarray(v)[ok].astype(np.float64) * sizes[ok]))
            for k, v in outs.items()}


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
