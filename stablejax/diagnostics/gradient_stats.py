"""Gradient statistics inside a compiled train step: an Optax transformation that keeps
the global gradient norm and each leaf's norm in its state."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["RecordGradientStatsState", "record_gradient_stats"]



class RecordGradientStatsState(NamedTuple):
    """The norms of the latest updates seen by :func:`record_gradient_stats`."""

    global_norm: jax.Array  # 0-d: sqrt of the sum of every leaf's squared entries
    norms: optax.Updates  # one 0-d L2 norm per leaf, a pytree like the updates


def _at_least_f32(x: Any) -> Any:
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def _norm_dtype(x: Any) -> Any:
    """The dtype of a leaf's norm: at least float32, real (complex64's is float32)."""
    return jnp.finfo(_at_least_f32(x)).dtype


def _tree_paths(tree: Any, shown: int = 3) -> str:
    """A tree's first leaf paths, for a short message."""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    more = f", ... ({len(paths)} leaves)" if len(paths) > shown else ""
    return "[" + ", ".join(paths[:shown]) + more + "]"


def record_gradient_stats() -> optax.GradientTransformation:
    """Passes the updates through unchanged and keeps their norms in its state.

    ``global_norm = sqrt(sum_leaves sum(u**2))`` (``optax.tree.norm``, formerly
    ``optax.global_norm``) and, per
    leaf, ``norms = ||u||_2`` of the flattened leaf (``jnp.linalg.norm``), both in at
    least float32 (real for complex leaves). Put first in a chain to see the raw
    gradients, e.g. to log them from a compiled train step; the state starts at zeros.
    No hyperparameters. ``update`` raises ``ValueError`` when the updates' tree is not
    the one ``init`` was given (its state would change structure between steps).

    Example::

        >>> import jax.numpy as jnp, optax
        >>> import stablejax as sj
        >>> from stablejax.diagnostics import record_gradient_stats
        >>> tx = optax.chain(record_gradient_stats(), sj.adam(1e-3))
        >>> params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
        >>> state = tx.init(params)
        >>> _, state = tx.update({"w": jnp.array([3.0, 4.0]), "b": jnp.array(12.0)}, state)
        >>> float(state[0].global_norm), float(state[0].norms["w"])
        (13.0, 5.0)
    """

    def init_fn(params: optax.Params) -> RecordGradientStatsState:
        norms = jax.tree.map(lambda p: jnp.zeros((), _norm_dtype(p)), params)
        leaves = jax.tree.leaves(norms)
        return RecordGradientStatsState(
            jnp.zeros((), jnp.result_type(jnp.float32, *leaves)), norms)

    def update_fn(
        updates: optax.Updates, state: RecordGradientStatsState, params: Any = None
    ) -> tuple[optax.Updates, RecordGradientStatsState]:
        del params
        structure: Any = jax.tree.structure(updates)  # PyTreeDef has no type stub
        if structure != jax.tree.structure(state.norms):
            raise ValueError(
                f"updates do not match the tree that init was given: updates "
                f"{_tree_paths(updates)}, init {_tree_paths(state.norms)}; call init "
                "with the parameters these updates are for")
        norms = jax.tree.map(lambda u: jnp.linalg.norm(jnp.asarray(u, _at_least_f32(u))),
                             updates)
        leaves = jax.tree.leaves(norms)
        global_norm = optax.tree.norm(updates).astype(jnp.result_type(jnp.float32, *leaves))
        return updates, RecordGradientStatsState(global_norm, norms)

    return optax.GradientTransformation(init_fn, update_fn)

