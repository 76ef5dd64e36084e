"""Section ``transfer``: the model A / model B experiment.

Model A learns every class but two; model B tells those two apart from a few labelled
images, either from scratch or on A's hidden layers, frozen first and then fine-tuned
(:func:`stablejax.transfer.freeze_then_finetune`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flax import nnx

from stablejax import data as sj_data
from stablejax import nn, optimizers, transfer
from stablejax.study._common import Budget, PairCheck, check_ordering
from stablejax.study._training import Context, Data, final
from stablejax.sweep import SweepRun

# Model B tells these two classes apart; model A learns the others.
TRANSFER_PAIRS = {"digits": (3, 5), "fashion_mnist": (5, 6)}  # Fashion: sandal, shirt
TRANSFER_HIDDEN = (100, 100, 50)
# SGD rates: B from scratch; B on A's head while A's layers are frozen, then everything.
TRANSFER_RATES = {"scratch": 0.01, "frozen": 0.1, "finetune": 0.01}
HEAD_SEED_OFFSET = 10_000  # B's head (and B from scratch) initialise from seed + this


def check_transfer_data(dataset: Data, budget: Budget) -> None:
    """Before training: model B's two classes need ``transfer_samples // 2`` training
    images each, and model A every other class, in the (``max_train``-capped) set.

    Raises ``ValueError`` naming the classes short of images and what to change.
    """
    counts = np.bincount(np.asarray(dataset.train.y), minlength=dataset.classes)
    need = {c: budget.transfer_samples // 2 for c in TRANSFER_PAIRS[dataset.name]}
    short = [f"class {c}: {counts[c]} of {need.get(c, 1)}" for c in range(dataset.classes)
             if counts[c] < need.get(c, 1)]
    if short:
        raise ValueError(
            f"the transfer section needs {budget.transfer_samples // 2} training images of "
            f"each of model B's classes {TRANSFER_PAIRS[dataset.name]} and at least one of "
            f"every other class, but the training set ({len(dataset.train.y)} images, "
            f"max_train={budget.max_train}) has too few: {'; '.join(short)}. Raise "
            "max_train, lower transfer_samples, or leave the section out"
        )


@dataclass
class Tasks:
    """The two tasks carved out of the study's data: A's training and validation sets,
    B's few labelled training images and B's held-out set (validation and test)."""

    pair: tuple[int, int]
    others: list[int]
    train_a: sj_data.Split
    valid_a: sj_data.Split
    train_b: sj_data.Split
    held_b: sj_data.Split


def _subset(split: sj_data.Split, keep: np.ndarray, labels: np.ndarray) -> sj_data.Split:
    return sj_data.Split(split.x[keep], labels[keep])


def tasks(data: Data, samples: int, seed: int) -> Tasks:
    """A's labels renumbered ``0 .. classes - 3``; B's label 1 for the pair's second
    class; ``samples // 2`` images of each of B's classes drawn with ``seed``."""
    pair = TRANSFER_PAIRS[data.name]
    others = [c for c in range(data.classes) if c not in pair]
    to_a = np.full(data.classes, -1, np.int32)
    to_a[others] = np.arange(len(others))

    def task_a(split: sj_data.Split) -> sj_data.Split:
        return _subset(split, np.isin(split.y, others), to_a[split.y])

    def task_b(split: sj_data.Split) -> sj_data.Split:
        return _subset(split, np.isin(split.y, pair), (split.y == pair[1]).astype(np.float32))

    rng = np.random.default_rng(seed)
    train_b = task_b(data.train)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(train_b.y == c))[:samples // 2]
                             for c in (0.0, 1.0)])
    train_b = sj_data.Split(train_b.x[np.sort(chosen)], train_b.y[np.sort(chosen)])
    held_b = task_b(sj_data.Split(np.concatenate([data.valid.x, data.test.x]),
                                  np.concatenate([data.valid.y, data.test.y])))
    return Tasks(pair, others, task_a(data.train), task_a(data.valid), train_b, held_b)


@dataclass
class TransferResults:
    """Model A's runs and model B's, from scratch and on A, one per seed."""

    tasks: Tasks
    seeds: list[int]
    epochs_a: int
    epochs_b: int
    frozen: int  # epochs B on A trains only its head
    batch_b: int
    runs_a: list[SweepRun]
    scratch: list[SweepRun]
    on_a: list[SweepRun]

    def accuracies(self) -> tuple[np.ndarray, np.ndarray]:
        """B's final held-out accuracy per seed: from scratch, on A."""
        return (np.array(final(self.scratch, "val_accuracy")),
                np.array(final(self.on_a, "val_accuracy")))

    def errors(self) -> tuple[float, float, float]:
        """B's mean error rate from scratch and on A, and the relative reduction (NaN
        when B from scratch made no errors)."""
        acc_s, acc_a = self.accuracies()
        err_s, err_a = 1 - acc_s.mean(), 1 - acc_a.mean()
        return err_s, err_a, (err_s - err_a) / err_s if err_s > 0 else float("nan")

    def wins(self) -> int:
        """Seeds where B on A ended more accurate than B from scratch."""
        acc_s, acc_a = self.accuracies()
        return int(np.sum(acc_a > acc_s))

    def check(self) -> PairCheck:
        """B on A against B from scratch, over the seeds."""
        acc_s, acc_a = self.accuracies()
        return check_ordering([("B on A", acc_a), ("B from scratch", acc_s)])[0]


def measure(ctx: Context) -> TransferResults:
    """Trains model A, then model B from scratch and on A (frozen for the first
    ``max(epochs // 2, 1)`` of its ``2 * epochs`` epochs), over the transfer seeds."""
    task = tasks(ctx.data, ctx.budget.transfer_samples, ctx.seed)
    features = ctx.data.train.x.shape[1]
    seeds = [ctx.seed + i for i in range(ctx.budget.transfer_seeds)]

    def make_a(seed: int) -> nnx.Module:
        return nn.mlp(list(TRANSFER_HIDDEN), input_shape=(features,), activation="selu",
                      output_size=len(task.others), output_activation=None,
                      rngs=nnx.Rngs(seed))

    runs_a = ctx.sweep("transfer: model A", make_a, optimizers.nadam(1e-3), seeds,
                       train=task.train_a, valid=task.valid_a)
    models_a: dict[int, Any] = dict(zip(seeds, (r.model for r in runs_a), strict=True))

    def make_scratch(seed: int) -> nnx.Module:
        return nn.mlp(list(TRANSFER_HIDDEN), input_shape=(features,), activation="selu",
                      output_size=1, output_activation="sigmoid",
                      rngs=nnx.Rngs(HEAD_SEED_OFFSET + seed))

    def make_on_a(seed: int) -> nnx.Module:
        head = nn.Dense(TRANSFER_HIDDEN[-1], 1, activation="sigmoid",
                        rngs=nnx.Rngs(HEAD_SEED_OFFSET + seed))
        return transfer.reuse(models_a[seed], head)

    batch_b = min(ctx.budget.batch_size, 8)
    steps_b = sj_data.num_batches(len(task.train_b.x), batch_b)
    epochs_b, frozen = 2 * ctx.budget.epochs, max(ctx.budget.epochs // 2, 1)
    common: dict[str, Any] = dict(train=task.train_b, valid=task.held_b,
                                  loss="binary_crossentropy", epochs=epochs_b,
                                  batch_size=batch_b)
    scratch = ctx.sweep("transfer: B from scratch", make_scratch,
                        optimizers.sgd(TRANSFER_RATES["scratch"]), seeds, **common)
    tx = transfer.freeze_then_finetune(
        make_on_a(seeds[0]), transfer.not_matching(transfer.reused_paths(models_a[seeds[0]])),
        frozen_steps=frozen * steps_b, first=optimizers.sgd(TRANSFER_RATES["frozen"]),
        then=optimizers.sgd(TRANSFER_RATES["finetune"]))
    on_a = ctx.sweep("transfer: B on A", make_on_a, tx, seeds, **common)
    return TransferResults(task, seeds, ctx.budget.epochs, epochs_b, frozen, batch_b,
                           runs_a, scratch, on_a)


def programs() -> int:
    """The compiled programs the section trains (for the progress bar)."""
    return 3
