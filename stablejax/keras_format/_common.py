"""What the reader, the writer and both maps share: paths, names and the lazy h5py."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stablejax import nn
from stablejax._extras import require as require_extra

PathLike = str | os.PathLike


def h5py() -> ModuleType:
    """The h5py module (the ``keras`` extra), imported on first use."""
    return require_extra("h5py", "reading and writing .keras files")


def check_path(path: Any) -> str:
    """``path`` as a str; ``TypeError`` naming it unless it is a str or path-like."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or path-like (the .keras file), got {path!r}")
    return str(os.fspath(path))


def keras_object(module: str, class_name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """A Keras object's description as ``config.json`` writes it."""
    return {"module": module, "class_name": class_name, "config": cfg, "registered_name": None}


def snake(class_name: str) -> str:
    """Keras's snake case of a class name: Dense -> dense, PReLU -> p_re_lu."""
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def h5_names(class_names: Sequence[str]) -> list[str]:
    """The weights file's group of each layer: Keras names them by class, not by the
    layer's own name (``dense``, ``dense_1``, ... in the order of the layers)."""
    used: dict[str, int] = {}
    names = []
    for class_name in class_names:
        base = snake(class_name)
        if base in used:
            used[base] += 1
            names.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            names.append(base)
    return names


def variable(module: nnx.Module, attribute: str) -> nnx.Variable:
    """The variable at ``attribute`` (``"kernel"``, ``"a/b"``) of ``module``."""
    for part in attribute.split("/"):
        module = getattr(module, part)
    return module  # type: ignore[return-value]


def path_leaves(tree: Any) -> list[tuple[str, Any]]:
    """``(path name, leaf)`` of each leaf of ``tree``."""
    return [(nn.path_name(p), leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def tree_from(like: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``like`` (a parameter tree) with its leaves taken from ``arrays`` by path."""
    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: jnp.asarray(arrays[nn.path_name(p)], leaf.dtype), like)
