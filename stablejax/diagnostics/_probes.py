"""The measured layers: which layers the diagnostics see, and how a pass records them.

:func:`instrument` copies a model and wraps each measured layer in :class:`Probed`;
:func:`recorded_call` runs the copy and returns, per layer call in call order, the
layer's pre-activation and output. Shared by signal propagation, the initialisation
check and the gradient monitor.

Why not ``nnx.capture`` with ``Module.sow`` and ``Module.perturb``: it gives the same
figures on a plain MLP, but keys what it records by module path, so the call order is
lost (rows are in call order, which need not be the order of the names), and keeps one
perturbation per module, so a layer called twice gets the sum of its two calls'
gradients instead of one row each.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from stablejax import initializers, nn


@dataclass
class Site:
    """A layer that signal_propagation measures: a kernel layer or an activation."""

    name: str  # the layer's path, spelled as stablejax.nn.variables spells it
    layer: Any  # the module (or, in an nnx.Sequential, the plain function)
    applies: str  # name of the activation the layer applies itself ("linear": none)
    container: int | None  # id of the enclosing nnx.Sequential, None elsewhere
    feeds: str = ""  # kernel layers: the activation that decides their initialiser

    @property
    def kernel(self) -> jax.Array | None:
        kernel = getattr(self.layer, "kernel", None)
        return kernel[...] if isinstance(kernel, nnx.Param) else None


def activation_name(layer: Any) -> str:
    """The name of the activation ``layer`` applies (``"logistic"`` reads ``"sigmoid"``)."""
    if isinstance(layer, nn.PReLU):
        return "prelu"
    if isinstance(layer, nn.RReLU):
        return "rrelu"
    fn = layer.fn if isinstance(layer, nn.Activation) else layer
    name = getattr(fn, "__name__", type(fn).__name__)
    return "sigmoid" if name == "logistic" else name


def has_kernel(layer: Any) -> bool:
    """Whether ``layer`` holds a ``kernel`` parameter."""
    return isinstance(getattr(layer, "kernel", None), nnx.Param)


def std(x: jax.Array) -> jax.Array:
    """The standard deviation of ``x``'s entries, in float32."""
    return jnp.std(x.astype(jnp.float32))


class Probed(nnx.Module):
    """A measured layer: records its pre-activation and output, adds a zero probe to it."""

    def __init__(self, layer: Any, site: int) -> None:
        self.layer = layer
        self.site = site

    def __call__(self, x: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        if isinstance(self.layer, nn.Dense):  # Dense applies its activation itself
            pre = nnx.Linear.__call__(self.layer, x, *args, **kwargs)
            out = self.layer.activation(pre)
        elif has_kernel(self.layer):
            pre = out = self.layer(x, *args, **kwargs)
        else:  # an activation: its input is its pre-activation
            pre, out = x, self.layer(x, *args, **kwargs)
        recording = _RECORDING.get()
        if recording is not None:
            if recording.probes is not None:
                out = out + recording.probes[len(recording.seen)]
            recording.seen.append((self.site, pre, out))
        return out


@dataclass
class Recording:
    """What one :func:`recorded_call` saw: (site, pre-activation, output) per layer call."""

    probes: Sequence[jax.Array] | None  # one zero per layer call, in call order
    seen: list[tuple[int, jax.Array, jax.Array]] = field(default_factory=list)


# Set only while an instrumented copy of the model runs (see recorded_call).
_RECORDING: contextvars.ContextVar[Recording | None] = contextvars.ContextVar(
    "stablejax_diagnostics_recording", default=None
)


def recorded_call(module: nnx.Module, x: jax.Array,
                  probes: Sequence[jax.Array] | None = None) -> tuple[Any, Recording]:
    """``module(x)`` for an instrumented copy, with the record of its measured calls."""
    recording = Recording(probes)
    token = _RECORDING.set(recording)
    try:
        outputs = module(x)
    finally:
        _RECORDING.reset(token)
    return outputs, recording


def join(prefix: str, key: Any) -> str:
    """``prefix/key``, or ``key`` at the root."""
    return f"{prefix}/{key}" if prefix else str(key)


def _is_measured(obj: Any, container: int | None) -> bool:
    return has_kernel(obj) or isinstance(obj, nn.Activation | nn.PReLU | nn.RReLU) or (
        container is not None and callable(obj) and not isinstance(obj, nnx.Module)
    )


def _applies(obj: Any) -> str:
    if isinstance(obj, nn.Dense):
        return activation_name(obj.activation)
    return "linear" if has_kernel(obj) else activation_name(obj)


def _wrap_children(obj: nnx.Module, name: str, visit: Any) -> None:
    """Replaces each child module of ``obj`` by ``visit(child, path, None)``."""
    for key, child in list(nnx.iter_children(obj)):
        if isinstance(child, nnx.Module):
            new = visit(child, join(name, key), None)
            if new is not child:
                if isinstance(key, int):
                    obj[key] = nnx.data(new)  # type: ignore[index]
                else:
                    setattr(obj, str(key), nnx.data(new))


def _set_feeds(sites: list[Site]) -> None:
    """Each kernel layer's ``feeds``: its own activation, else the next in its Sequential."""
    for i, site in enumerate(sites):
        site.feeds = site.applies
        if site.kernel is not None and site.applies == "linear" and site.container is not None:
            # A Dense without its own activation (batch_norm="before") feeds the next
            # activation of its Sequential, before the next kernel layer.
            for later in sites[i + 1:]:
                if later.container != site.container or later.kernel is not None:
                    break
                site.feeds = later.applies
                break


def instrument(model: nnx.Module) -> tuple[Any, list[Site]]:
    """A copy of ``model`` whose measured layers are wrapped in :class:`Probed`.

    Each :class:`stablejax.nn.Stack` becomes an ``nnx.Sequential`` of its blocks (as
    ``nn.unroll`` does), so its blocks are measured one by one; the names keep the
    stacked layout's spelling (``layers/4/blocks[2]/layers/0``).
    """
    sites: list[Site] = []

    def visit(obj: Any, name: str, container: int | None) -> Any:
        if _is_measured(obj, container):
            sites.append(Site(name, obj, _applies(obj), container))
            return Probed(obj, len(sites) - 1)
        if isinstance(obj, nn.Stack):
            return nnx.Sequential(*[visit(block, join(name, f"blocks[{i}]"), None)
                                    for i, block in enumerate(obj.unstack())])
        if isinstance(obj, nnx.Sequential):
            for j, layer in enumerate(list(obj.layers)):
                obj.layers[j] = nnx.data(visit(layer, join(name, f"layers/{j}"), id(obj)))
            return obj
        if isinstance(obj, nnx.Module):
            _wrap_children(obj, name, visit)
        return obj

    clone = visit(nnx.clone(model), "", None)
    _set_feeds(sites)
    return clone, sites


def expected_variance(activation: str, shape: Sequence[int]) -> tuple[str, float] | None:
    """The table's initialiser for ``activation`` and its variance for a kernel of
    ``shape``; None when the table has no entry for it."""
    try:
        entry = initializers.table_entry(activation)
    except ValueError:
        return None
    return entry.initializer, entry.variance(shape)


def check_model(model: Any) -> None:
    """Raises unless ``model`` is an ``nnx.Module`` with at least one kernel layer."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx Module, got {type(model).__name__}")
    if not any(has_kernel(m) for _, m in nnx.iter_modules(model)):
        raise ValueError("model has no layer with a kernel (stablejax.nn.Dense, flax.nnx."
                         "Linear, ...): the diagnostics measure kernel layers, add one")
