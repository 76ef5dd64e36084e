"""Section ``init``: initialisation x activation x batch norm on a deep plain MLP.

Each configuration is diagnosed at initialisation
(:func:`stablejax.diagnostics.signal_propagation`) and trained for the budget, without
and with batch norm; the guide's ordering SELU > ELU > leaky ReLU (and variants) > ReLU >
tanh > logistic is checked pair by pair (:func:`~stablejax.study.check_ordering`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stablejax import diagnostics, optimizers
from stablejax.study._common import LOGITS, PairCheck, check_ordering
from stablejax.study._training import Context, deep_mlp, final

# (label, activation, initialiser name or "normal" for N(0, 1)).
INIT_CONFIGS = (
    ("sigmoid + N(0, 1)", "sigmoid", "normal"),
    ("sigmoid + Glorot", "sigmoid", "glorot_uniform"),
    ("tanh + Glorot", "tanh", "glorot_uniform"),
    ("ReLU + Glorot", "relu", "glorot_uniform"),
    ("ReLU + He", "relu", "he_normal"),
    ("leaky ReLU + He", "leaky_relu", "he_normal"),
    ("RReLU + He", "rrelu", "he_normal"),
    ("PReLU + He", "prelu", "he_normal"),
    ("ELU + He", "elu", "he_normal"),
    ("SELU + LeCun", "selu", "lecun_normal"),
)
INIT_OPTIMIZER = "nadam(1e-3)"
# The guide's ordering for deep nets, best first: (name, configurations it stands for).
ORDERING = (
    ("SELU", ("SELU + LeCun",)),
    ("ELU", ("ELU + He",)),
    ("leaky ReLU & variants", ("leaky ReLU + He", "RReLU + He", "PReLU + He")),
    ("ReLU", ("ReLU + He",)),
    ("tanh", ("tanh + Glorot",)),
    ("logistic", ("sigmoid + Glorot",)),
)
BATCH_NORMS = (None, "after")  # without, then with batch norm after every hidden layer
SIGNAL_SAMPLES = 256  # training images signal_propagation looks at


@dataclass(frozen=True)
class InitRun:
    """One configuration, without or with batch norm: its diagnosis at initialisation
    and its accuracies after training (one per seed)."""

    label: str
    batch_norm: str | None
    verdict: str
    grad_ratio: float
    forward_ratio: float
    grad_stds: list[float]  # per kernel layer, input side first
    train_accuracy: float  # the mean over seeds
    val_accuracy: list[float]


@dataclass
class InitResults:
    """The section's measurements, in training order (every configuration without batch
    norm, then with it)."""

    runs: list[InitRun]
    seeds: list[int]

    @property
    def labels(self) -> list[str]:
        """The configurations, in :data:`INIT_CONFIGS`' order."""
        return [r.label for r in self.runs if r.batch_norm is None]

    def scores(self, batch_norm: str | None) -> dict[str, list[float]]:
        """Validation accuracies per configuration, without or with batch norm."""
        return {r.label: r.val_accuracy for r in self.runs if r.batch_norm == batch_norm}

    def best(self) -> InitRun:
        """The run of the highest mean validation accuracy (the first of equals)."""
        return max(self.runs, key=lambda r: np.mean(r.val_accuracy))

    def ordering(self, batch_norm: str | None) -> list[PairCheck]:
        """:data:`ORDERING` checked step by step; a group is its best configuration."""
        scores = self.scores(batch_norm)
        ranked = [(name, max((scores[label] for label in labels), key=np.mean))
                  for name, labels in ORDERING]
        return check_ordering(ranked)

    def fixed_by_batch_norm(self) -> list[str]:
        """Configurations whose mean accuracy batch norm raised by more than 0.1."""
        plain, normed = self.scores(None), self.scores("after")
        return [label for label in self.labels
                if np.mean(normed[label]) - np.mean(plain[label]) > 0.1]

    def foretold(self) -> tuple[float, int, int, int, int]:
        """How well the verdict at initialisation foretold the accuracy after training:
        the best mean accuracy, then (poor and sick, sick, poor and healthy, healthy)
        counts, where poor is below half the best and sick is not ``"healthy"``."""
        top = float(max(np.mean(r.val_accuracy) for r in self.runs))
        poor = {i for i, r in enumerate(self.runs) if np.mean(r.val_accuracy) < top / 2}
        sick = {i for i, r in enumerate(self.runs) if r.verdict != "healthy"}
        return (top, len(poor & sick), len(sick), len(poor - sick),
                len(self.runs) - len(sick))

    def lagging(self) -> list[str]:
        """Batch-norm configurations that validate far (0.3) below their training
        accuracy."""
        return [r.label for r in self.runs
                if r.batch_norm and r.train_accuracy - np.mean(r.val_accuracy) > 0.3]


def measure(ctx: Context) -> InitResults:
    """Diagnoses and trains every configuration of :data:`INIT_CONFIGS`, without and
    then with batch norm, with :data:`INIT_OPTIMIZER`."""
    batch = (ctx.data.train.x[:SIGNAL_SAMPLES], ctx.data.train.y[:SIGNAL_SAMPLES])
    runs = []
    for batch_norm in BATCH_NORMS:
        for label, activation, init in INIT_CONFIGS:
            make = deep_mlp(ctx, activation, init, batch_norm)
            report = diagnostics.signal_propagation(make(ctx.seed), batch, loss=LOGITS)
            swept = ctx.sweep(f"init: {label}{' + BN' if batch_norm else ''}", make,
                              optimizers.nadam(1e-3), ctx.seeds)
            runs.append(InitRun(
                label, batch_norm, report.verdict, report.grad_ratio, report.forward_ratio,
                [r.kernel_grad_std for r in report.layers if r.kernel_grad_std is not None],
                float(np.mean(final(swept, "accuracy"))), final(swept, "val_accuracy")))
    return InitResults(runs, ctx.seeds)


def programs() -> int:
    """The compiled programs the section trains (for the progress bar)."""
    return len(BATCH_NORMS) * len(INIT_CONFIGS)
