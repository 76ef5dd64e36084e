"""Transfer learning: reuse a trained model's layers, freeze them, then fine-tune.

The classic recipe, as functions::

    model_a = ...                                   # trained, e.g. restored with
    sj.checkpoint.load_model("runs/a", model_a)     # Keras's keras.models.load_model
    model_b = sj.transfer.reuse(model_a, sj.nn.Dense(100, 1, activation="sigmoid",
                                                     rngs=nnx.Rngs(1)))
    reused = sj.transfer.reused_paths(model_a)      # every layer but model A's head
    tx = sj.transfer.freeze_then_finetune(
        model_b, trainable=sj.transfer.not_matching(reused), frozen_steps=4 * steps_per_epoch,
        first=sj.sgd(1e-3), then=sj.sgd(1e-4))
    sj.train.fit(model_b, tx, data_b, epochs=20, loss="binary_crossentropy")

Freezing is done in the optimizer with ``optax.multi_transform`` and
``optax.set_to_zero()``: a frozen parameter's update is exactly zero. (A plain
``optax.masked`` would pass the raw gradient through for masked-out leaves, and
``apply_updates`` would add it to the weights.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import jax
import optax
from flax import nnx

from stablejax import nn
from stablejax.combine import SwitchState, switch

__all__ = [
    "reuse",
    "param_paths",
    "reused_paths",
    "matching",
    "not_matching",
    "labels",
    "freeze",
    "switch",
    "SwitchState",
    "freeze_then_finetune",
]

Predicate = Callable[[str], bool]


def reuse(model_a: nnx.Sequential, head: nnx.Module, *, clone: bool = True) -> nnx.Sequential:
    """Model B: every layer of ``model_a`` but its last, followed by ``head``.

    With ``clone=True`` (default) model A is copied first, structure and weights (Keras's
    ``clone_model`` followed by ``set_weights``), so training model B never changes model
    A. With ``clone=False`` the layers are shared, as Keras's
    ``Sequential(model_A.layers[:-1])``: training B then changes A too.
    """
    if not isinstance(model_a, nnx.Sequential):
        raise ValueError(f"model_a must be an nnx.Sequential, got {type(model_a).__name__}")
    if len(model_a.layers) < 2:
        raise ValueError(f"model_a must have at least 2 layers, got {len(model_a.layers)}")
    source = nnx.clone(model_a) if clone else model_a
    return nnx.Sequential(*list(source.layers)[:-1], head)


def param_paths(model: nnx.Module) -> list[str]:
    """Paths of ``model``'s trainable parameters, e.g. ``"layers/2/kernel"``."""
    _, params, _ = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    return [nn.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def reused_paths(model_a: nnx.Sequential) -> list[str]:
    """Parameter paths of every layer of ``model_a`` but the last: what :func:`reuse` keeps."""
    last = f"layers/{len(model_a.layers) - 1}/"
    return [p for p in param_paths(model_a) if not p.startswith(last)]


def matching(patterns: str | Iterable[str]) -> Predicate:
    """A predicate true for paths that a regular expression in ``patterns`` searches.

    A list of exact paths works too (each is escaped and anchored).
    """
    if isinstance(patterns, str):
        compiled = [re.compile(patterns)]
    else:
        compiled = [re.compile(rf"^{re.escape(p)}$") for p in patterns]
    return lambda path: any(c.search(path) for c in compiled)


def not_matching(patterns: str | Iterable[str]) -> Predicate:
    """The negation of :func:`matching`."""
    match = matching(patterns)
    return lambda path: not match(path)


def _predicate(trainable: str | Iterable[str] | Predicate) -> Predicate:
    return trainable if callable(trainable) else matching(trainable)


def labels(
    params: Any, trainable: str | Iterable[str] | Predicate, yes: str, no: str
) -> Any:
    """A pytree like ``params`` with ``yes`` where ``trainable(path)`` holds, else ``no``."""
    predicate = _predicate(trainable)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: yes if predicate(nn.path_name(path)) else no, params
    )


def _check_some_trainable(model: nnx.Module, predicate: Predicate) -> list[str]:
    paths = param_paths(model)
    frozen = [p for p in paths if not predicate(p)]
    if len(frozen) == len(paths):
        raise ValueError(
            f"trainable matches none of the model's parameters; they are: {paths[:8]}"
        )
    return frozen


def _frozen_batch_norms(model: nnx.Module, frozen: set[str]) -> list[nn.BatchNorm]:
    """The batch-norm layers whose gamma and beta are all among the ``frozen`` paths."""
    found = []
    for path, module in nnx.iter_modules(model):
        if isinstance(module, nn.BatchNorm):
            owned = [
                nn.path_name((*path, name))
                for name in ("scale", "bias")
                if getattr(module, name, None) is not None
            ]
            if all(name in frozen for name in owned):
                found.append(module)
    return found


def freeze(
    tx: optax.GradientTransformation,
    model: nnx.Module,
    trainable: str | Iterable[str] | Predicate,
    *,
    freeze_batch_norm: bool = True,
) -> optax.GradientTransformation:
    """``tx`` for the parameters ``trainable`` selects; exact zero updates for the rest.

    ``trainable`` is a regular expression searched in each parameter path (e.g.
    ``r"^layers/5/"``), a list of exact paths, or a predicate ``path -> bool``. Frozen
    batch-norm layers (both gamma and beta frozen) are switched to inference mode, as
    Keras does for ``layer.trainable = False`` (``freeze_batch_norm=False`` keeps their
    statistics updating). The returned transform must be initialised with the model's
    parameters (``sj.train.init_state`` does).

    In a model with stacks (``sj.nn.mlp(..., scan_layers=True)``) each parameter of a
    :class:`stablejax.nn.Stack` is one array for all its blocks, with one path (e.g.
    ``layers/4/blocks/layers/0/kernel``): a stack freezes or trains as a whole, and its
    batch norms freeze together. To freeze some blocks of a stack only, build the model
    unrolled.

    Warning:
      Keras needs ``compile()`` after changing ``trainable`` and starts a fresh
      optimizer; here freezing is a property of the optimizer, nothing is recompiled by
      hand. ``optax.masked`` alone is not freezing: it passes raw gradients through.
    """
    predicate = _predicate(trainable)
    frozen = _check_some_trainable(model, predicate)
    if freeze_batch_norm:
        # Keras semantics: a frozen batch-norm layer runs in inference mode.
        for layer in _frozen_batch_norms(model, set(frozen)):
            layer.trainable = False
    return _zero_outside(tx, predicate)


def _zero_outside(tx: optax.GradientTransformation, predicate: Predicate):
    return optax.multi_transform(
        {"train": tx, "frozen": optax.set_to_zero()},
        lambda params: labels(params, predicate, "train", "frozen"),
    )


def freeze_then_finetune(
    model: nnx.Module,
    trainable: str | Iterable[str] | Predicate,
    *,
    frozen_steps: int,
    first: optax.GradientTransformation,
    then: optax.GradientTransformation,
) -> optax.GradientTransformation:
    """The two-phase schedule of docs/guide.md §1.4 as one optimizer.

    For the first ``frozen_steps`` updates only the parameters ``trainable`` selects (the
    new head) train, with ``first``; the rest (the reused layers) get exact zero
    updates. From then on every parameter trains with ``then`` (typically the same
    optimizer with a smaller learning rate, e.g. ``sj.sgd(1e-4)``), one transform over
    the whole tree, so its clipping by global norm sees every gradient::

        switch(first on trainable + zero elsewhere, then on everything, frozen_steps)

    The switch happens inside the compiled step, by step count: one ``fit`` call, no
    recompilation. What is kept across the switch: the parameters, the batch-norm
    statistics and the step count; ``then`` starts with a fresh state, exactly like
    Keras's recompile in docs/guide.md §1.4 (which also resets the optimizer).

    Batch-norm layers among the reused ones run in inference mode during the first
    phase, as Keras runs frozen ones, and train from the switch on
    (:meth:`stablejax.nn.BatchNorm.freeze_for`); this adds a counter variable to them,
    so call this before ``sj.train.init_state`` or ``fit``.
    """
    predicate = _predicate(trainable)
    frozen = _check_some_trainable(model, predicate)
    for layer in _frozen_batch_norms(model, set(frozen)):
        layer.freeze_for(frozen_steps)
    return switch(_zero_outside(first, predicate), then, frozen_steps)
