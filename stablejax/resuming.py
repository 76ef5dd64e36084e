"""A run's checkpoints: saved after each epoch, resumed only into the same configuration.

:func:`stablejax.fit` with ``checkpoint_dir`` saves the whole run state and history
after every epoch (:class:`Saving`, over :mod:`stablejax.checkpoint`) with the run's
settings (:func:`run_config`), and resumes from the latest checkpoint only when its
settings equal the current ones (:func:`check_same_config`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import optax

from stablejax import nn
from stablejax.metrics import Loss
from stablejax.steps import TrainState

__all__ = ["Saving", "check_same_config", "run_config"]

SHOWN_DIFFERENCES = 5  # settings a refused resume lists (then a count of the rest)


def run_config(params: Any, tx: optax.GradientTransformation, batch_size: int,
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


def check_same_config(saved: dict | None, config: dict, directory: Any, epoch: int) -> None:
    """Raises ``ValueError`` when the ``saved`` settings of ``directory``'s checkpoint of
    ``epoch`` differ from ``config`` (a key absent from one of them differs too), listing
    the first :data:`SHOWN_DIFFERENCES` and counting the rest. Checkpoints saved without
    settings (``saved`` None, stablejax 0.1) pass."""
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


class Saving:
    """fit's per-epoch checkpoints: the directory, how many to keep, the run's settings."""

    def __init__(self, directory: Any, keep: int, config: dict[str, Any]):
        from stablejax import checkpoint  # Orbax loads only for runs that checkpoint

        self.checkpoint, self.directory, self.keep, self.config = (
            checkpoint, directory, keep, config)

    def resume(self, state: TrainState) -> tuple[TrainState, dict[str, list[float]]]:
        """The latest checkpoint's state and history (after checking its settings), or
        ``state`` and an empty history when the directory holds none."""
        last = self.checkpoint.latest_epoch(self.directory)
        if last is not None:
            check_same_config(self.checkpoint.saved_config(self.directory, last),
                               self.config, self.directory, last)
        found = self.checkpoint.restore_latest(self.directory, state)
        if found is None:
            return state, {}
        _, state, saved = found
        return state, saved or {}

    def save(self, epoch: int, state: TrainState, history: dict[str, list[float]]) -> None:
        """Saves the state and history after ``epoch`` (1-based), keeping the last ones."""
        self.checkpoint.save_epoch(self.directory, epoch, state, history=history,
                                   keep=self.keep, config=self.config)
