"""``evaluate`` and ``predict``: a model's loss, metrics and outputs in inference mode.

Keras's ``evaluate`` and ``predict`` over one compiled program each, kept per model
structure, so that calling them again (on a fresh model or a trained one of the same
structure) compiles nothing. The data are checked as :func:`stablejax.fit` checks them
(:mod:`stablejax.feeding`).
"""

from __future__ import annotations

import functools
from typing import Any, Literal, overload

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stablejax import feeding
from stablejax import metrics as metrics_
from stablejax._checks import index
from stablejax.metrics import Loss, Metrics
from stablejax.steps import TrainState, eval_scan, over_batches

__all__ = ["EVAL_BATCH_SIZE", "evaluate", "predict"]

EVAL_BATCH_SIZE = 1024  # samples per evaluation batch (at least fit's batch_size)


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
    feeding.check_model(model)
    index("batch_size", batch_size, 1)
    _check_quiet_verbose(verbose)
    if not isinstance(x, TrainState) and isinstance(getattr(x, "state", None), TrainState):
        kind = type(x).__name__
        raise TypeError(f"evaluate takes a TrainState, not a {kind}: pass "
                        f"{'history' if kind == 'History' else 'its'}.state")
    if isinstance(x, TrainState):
        state, name = x, "data_split"
        x, y, w = feeding.as_weighted_split(y, name)
        if w is not None and sample_weight is not None:
            raise ValueError("sample weights given twice: in the data split (x, y, w) and "
                             "as sample_weight=")
    else:
        _, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
        zero = jnp.zeros((), jnp.int32)
        state, name = TrainState(params, rest, (), zero, zero, zero, {}), "evaluate"
        x, y = feeding.as_split((x, y), name)
        w = None
    if sample_weight is not None:
        w = feeding.as_sample_weight(sample_weight, len(x), "sample_weight")
    metrics = metrics_.as_metrics(metrics, loss)
    feeding.check_targets(loss, y, feeding.model_outputs(model, x, name), name)
    run = _eval_program(nnx.graphdef(model), loss,
                        None if metrics is None else tuple(metrics.items()), batch_size)
    targets = jax.tree.map(jnp.asarray, feeding.targets(y, w))
    state = feeding.committed(state._replace(callbacks={}))
    scores = feeding.means_of(run(state, jnp.asarray(x), targets), len(x), batch_size)
    # The compiled program returns its dict with sorted keys: Keras's order is the loss,
    # then the metrics as given.
    names = ["loss", *metrics_.metric_fns(loss, metrics)]
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
    feeding.check_model(model)
    index("batch_size", batch_size, 1)
    _check_quiet_verbose(verbose)
    x = feeding.as_inputs(x, "x")
    feeding.model_outputs(model, x, "x")
    graphdef, variables = nnx.split(model)
    return np.asarray(jax.device_get(_predict(graphdef, feeding.committed(variables),
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
    return eval_scan(graphdef, loss, None if metrics is None else dict(metrics), batch_size)
