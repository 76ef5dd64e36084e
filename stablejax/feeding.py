"""The data path: user data checked, weighted, batched and placed for the compiled steps.

:func:`stablejax.fit`, :func:`stablejax.train.evaluate`, :func:`stablejax.train.predict`
and :func:`stablejax.sweep.run` take data here: pairs ``(x, y)`` (or ``(x, y, w)``) are
checked on the host before anything compiles (:func:`as_split`, :func:`as_sample_weight`,
:func:`check_targets` against the model's traced outputs, :func:`model_outputs`),
Keras's ``validation_split`` and ``class_weight`` become arrays
(:func:`validation_split`, :func:`class_weights`), each epoch's batches are rows of
sample indices (:class:`Batching`), placed on the default device or a mesh
(:class:`Placement`), and per-step outputs become the epoch's sample-weighted means
(:func:`weighted_sums`, :func:`means_of`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stablejax import data, distributed
from stablejax._checks import check_range, describe
from stablejax.steps import Loss, TrainState, Weighted, batch_sizes


def check_model(model: Any) -> None:
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module such as sj.nn.mlp(...), "
                        f"got {describe(model)}")


def as_inputs(x: Any, name: str) -> np.ndarray:
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


def as_split(split: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as numpy arrays, checked: a pair, the same length, not empty."""
    if not isinstance(split, (tuple, list)):
        raise TypeError(f"{name} must be a pair (x, y) of inputs and targets (or a "
                        f"stablejax.data.Split), got {describe(split)}")
    if len(split) != 2:
        raise ValueError(f"{name} must be a pair (x, y) of inputs and targets, got "
                         f"{len(split)} items (fit takes sample weights as sample_weight=)")
    x, y = as_inputs(split[0], name), np.asarray(split[1])
    if y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"{name}: inputs and targets differ in length: x has shape "
                         f"{x.shape}, y has shape {y.shape}")
    return x, y


def as_weighted_split(split: Any, name: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(x, y)`` or ``(x, y, sample_weight)``, checked: ``(x, y, weights or None)``."""
    if isinstance(split, (tuple, list)) and len(split) == 3:
        x, y = as_split(tuple(split[:2]), name)
        return x, y, as_sample_weight(split[2], len(x), f"{name}'s sample weights")
    return (*as_split(split, name), None)


def as_sample_weight(weights: Any, n: int, name: str) -> np.ndarray:
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


def class_weights(class_weight: Any, y: np.ndarray, classes: int) -> np.ndarray:
    """Keras's ``class_weight`` as one weight per sample: ``class_weight.get(c, 1.0)``.

    The class of a sample is its label; for targets with a last axis, the index of the
    largest value (one-hot), or the value itself when that axis has size 1; float labels
    (binary targets) are rounded to the nearest integer, as Keras does. Keys must lie in
    ``[0, classes)``: a key no sample can have would be ignored without a word.
    """
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class index: weight}}, got "
                        f"{describe(class_weight)}")
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


def validation_split(x: np.ndarray, y: np.ndarray, w: Any, split: float) -> tuple:
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


def targets(y: Any, w: Any) -> Any:
    """The targets the steps take: ``y``, or ``Weighted(y, w)`` with sample weights."""
    return y if w is None else Weighted(y, w)


# Keras's metric names (besides "accuracy"/"acc", which follow the loss).


def first_width(model: nnx.Module) -> str:
    """Where the model's first sized layer says how many input features it takes, or ""."""
    for path, module in nnx.iter_modules(model):
        width = getattr(module, "in_features", getattr(module, "num_features", None))
        if isinstance(width, int):
            where = "/".join(str(p) for p in path) or "the model"
            return (f"; its first sized layer ({type(module).__name__} at {where}) takes "
                    f"{width} features per sample")
    return ""


def model_outputs(model: nnx.Module, x: np.ndarray, name: str) -> jax.ShapeDtypeStruct:
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
            f"{x.shape}){first_width(model)}: {reason}"
        ) from e


SPARSE_LOSSES = ("sparse_categorical_crossentropy", "sparse_categorical_crossentropy_from_logits")


def check_targets(loss: Loss, y: np.ndarray, outputs: Any, name: str) -> None:
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


class Batching:
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


class Placement:
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
        return committed(state._replace(callbacks={}))._replace(callbacks=state.callbacks)

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


def committed(tree: Any) -> Any:
    """Every array committed to its device, as ``fit`` leaves a model's: a compiled
    program is cached per placement, so a fresh model and a trained one share it."""
    return jax.tree.map(lambda a: jax.device_put(a, a.sharding), tree)


def weighted_sums(outs: dict[str, Any], sizes: np.ndarray, ok: np.ndarray) -> dict[str, float]:
    """Float64 sums of each per-step value over the steps ``ok``, weighted by batch size."""
    return {k: float(np.sum(np.asarray(v)[ok].astype(np.float64) * sizes[ok]))
            for k, v in outs.items()}


def means_of(outs: dict[str, Any], n: int, batch_size: int) -> dict[str, float]:
    """A set's sample-weighted means from its per-batch means (``make_eval_scan``)."""
    sizes = batch_sizes(n, batch_size)
    result = {}
    for k, v in outs.items():
        total = 0.0
        for mean, size in zip(np.asarray(v).tolist(), sizes, strict=True):
            total += mean * size
        result[k] = total / n
    return result
