"""A ``fit`` callback that reports gradient sizes and warns when they vanish or explode."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from stablejax import nn
from stablejax.callbacks import Callback
from stablejax.diagnostics._probes import instrument, join, recorded_call, std
from stablejax.diagnostics.thresholds import ORDER_OF_MAGNITUDE
from stablejax.steps import TrainState

__all__ = ["GradientMonitor"]



def _kernel_grads(grads: Any) -> list[tuple[str, jax.Array]]:
    """The kernels (or their gradients) by path; a ``Stack``'s per block."""
    rows = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        name = nn.path_name(path)
        if name.split("/")[-1] != "kernel":
            continue
        if "/blocks/" in f"/{name}" and leaf.ndim == 3:  # an nn.Stack: one slice per block
            # Named per block as nn.variables names them: layers/4/blocks[2]/.../kernel.
            rows += [(f"/{name}".replace("/blocks/", f"/blocks[{i}]/", 1)[1:], leaf[i])
                     for i in range(leaf.shape[0])]
        else:
            rows.append((name, leaf))
    return rows


def _kernels_in_call_order(model: nnx.Module, input_shape: tuple[int, ...]) -> list[str]:
    """The paths of the kernels ``model`` calls, in the order of their first call.

    Traced with ``jax.eval_shape`` on a float32 batch of one sample of ``input_shape``
    (nothing runs), through the instrumentation of
    :func:`~stablejax.diagnostics.signal_propagation`; a
    ``Stack``'s kernels per block, named as :func:`_kernel_grads` names them.
    """
    clone, sites = instrument(model)
    clone.train()
    graphdef, state = nnx.split(clone)
    called: list[int] = []

    def forward(state: nnx.State, x: jax.Array) -> Any:
        outputs, recording = recorded_call(nnx.merge(graphdef, state, copy=True), x)
        called[:] = [site for site, _, _ in recording.seen]
        return outputs

    jax.eval_shape(forward, state, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    names = [join(sites[s].name, "kernel") for s in called if sites[s].kernel is not None]
    return list(dict.fromkeys(names))


@dataclass
class GradientMonitor(Callback):
    """Reports gradient sizes during :func:`stablejax.fit`; warns when they vanish or explode.

    Adds two keys to the history, computed inside the compiled train step from each
    step's gradients (:meth:`~stablejax.callbacks.Callback.step_stats`) and averaged over
    the epoch's finite steps:

    - ``grad_norm``: the global L2 norm of the gradients (``optax.tree.norm``);
    - ``grad_ratio``: the standard deviation of the first kernel's gradient over that of
      the last hidden kernel's (the kernel before the output layer), as
      :func:`signal_propagation`'s ``grad_ratio``; only for models with at least three
      kernels.

    "First" and "last" are in call order, not in the order of the parameters' names:
    :meth:`set_params` traces the model once (``jax.eval_shape`` on a float32 batch of
    ``fit``'s input shape; nothing runs) to list its kernels as it calls them, a
    ``Stack``'s per block. A model that cannot be traced on float32 inputs (one that
    takes integer token ids) gets a ``UserWarning`` and no ``grad_ratio``.

    The first epoch whose ``grad_ratio`` leaves ``[1 / threshold, threshold]`` issues one
    ``UserWarning`` for the run (the callback's state remembers it across resumes),
    naming ``vanishing`` or ``exploding``, the two layers, the figure and the fix of docs/guide.md.
    Training is unchanged: the statistics are extra outputs of the step.

    Args:
      threshold: the factor between the two gradients that counts as vanishing or
        exploding, > 1; default :data:`ORDER_OF_MAGNITUDE` (10), the scale of
        :func:`signal_propagation`'s verdict: beyond it no one learning rate suits both
        layers.

    Example::

        >>> import stablejax as sj
        >>> from flax import nnx
        >>> data = sj.data.synthetic_classification(64, num_features=4, num_classes=2)
        >>> model = sj.nn.mlp([8, 8], input_shape=(4,), output_size=2, rngs=nnx.Rngs(0))
        >>> history = sj.fit(model, sj.adam(1e-2), data, epochs=1, verbose=0,
        ...                  callbacks=[sj.diagnostics.GradientMonitor()])
        >>> sorted(k for k in history.history if k.startswith("grad"))
        ['grad_norm', 'grad_ratio']
    """

    threshold: float = ORDER_OF_MAGNITUDE
    _model: Any = field(default=None, init=False, repr=False, compare=False)
    # The model's kernel paths in call order; None until set_params has traced the model.
    _kernels: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = self.threshold
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 1
        ):
            raise ValueError(f"threshold must be a finite number > 1, got {value!r}")

    def init(self, state: TrainState) -> Any:
        del state
        return {"warned": jnp.zeros((), jnp.bool_)}

    def set_model(self, model: Any, tx: Any) -> None:
        """Keeps ``model`` for :meth:`set_params` to trace."""
        del tx
        self._model = model

    def set_params(self, params: dict[str, Any]) -> None:
        """Lists the model's kernels in call order, traced on ``params["input_shape"]``."""
        super().set_params(params)
        if not isinstance(self._model, nnx.Module):
            raise TypeError(f"GradientMonitor needs a flax.nnx model from set_model, got "
                            f"{type(self._model).__name__}")
        shape = tuple(params["input_shape"])
        try:
            self._kernels = _kernels_in_call_order(self._model, shape)
        except Exception as error:  # any failure to trace leaves the order unknown
            self._kernels = []
            warnings.warn(
                f"GradientMonitor cannot trace the model on float32 inputs of shape {shape} "
                f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
                "grad_ratio is not reported", UserWarning, stacklevel=2)

    def step_stats(self, grads: Any, params: Any) -> dict[str, jax.Array]:
        del params
        if self._kernels is None:
            raise ValueError("GradientMonitor has not seen its model: pass it to "
                             "stablejax.fit(callbacks=[...]), or call set_model(model, tx) "
                             "and set_params({'input_shape': ...}) first")
        out = {"grad_norm": optax.tree.norm(grads)}
        if len(self._kernels) >= 3:  # a first and a last hidden kernel, then the output's
            kernels = dict(_kernel_grads(grads))
            first, last = kernels[self._kernels[0]], kernels[self._kernels[-2]]
            out["grad_ratio"] = std(first) / std(last)
        return out

    def on_epoch_end(
        self, state: TrainState, own: Any, logs: dict[str, float]
    ) -> tuple[TrainState, Any, bool]:
        ratio = logs.get("grad_ratio")
        if ratio is None or math.isnan(ratio) or bool(own["warned"]):
            return state, own, False
        if 1 / self.threshold <= ratio <= self.threshold:
            return state, own, False
        assert self._kernels is not None  # a grad_ratio in the logs comes from step_stats
        first, last = self._kernels[0], self._kernels[-2]
        if ratio < 1:
            kind, fix = "vanishing", (
                "match the initialisation to the activation (He with ReLU and its "
                "variants, LeCun with SELU), use a non-saturating activation, or add "
                "batch norm")
        else:
            kind, fix = "exploding", (
                "clip gradients (clipnorm or global_clipnorm), lower the learning rate, "
                "or match the initialisation to the activation")
        warnings.warn(
            f"gradients are {kind}: epoch {int(state.epoch) + 1}'s gradient std of {first} "
            f"is {ratio:.3g} times that of {last} (outside [1/{self.threshold:g}, "
            f"{self.threshold:g}]); {fix}.",
            UserWarning,
            stacklevel=2,
        )
        return state, {"warned": jnp.ones((), jnp.bool_)}, False
