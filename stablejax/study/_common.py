"""What every part of the study shares: the budgets, the section names, the results'
types and the ordering check.

No training, plotting or Markdown here: the section modules train, :mod:`.plots`
draws, :mod:`.markdown` writes and :mod:`.runner` composes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stablejax._checks import index

#: The sections, in the report's order.
SECTIONS = ("init", "clip", "optimizers", "schedules", "transfer")
#: The loss of every classifier of the study but model B (a sigmoid output).
LOGITS = "sparse_categorical_crossentropy_from_logits"


@dataclass(frozen=True)
class Budget:
    """How much the study trains.

    Attributes:
      name: shown in the report.
      depth: hidden layers of the deep plain nets (sections ``init`` and ``clip``).
      width: units per hidden layer.
      seeds: initialisation seeds per configuration (sections ``init`` to ``schedules``).
      epochs: epochs per run (model B trains ``2 * epochs``, frozen for the first
        ``max(epochs // 2, 1)``; model A trains ``epochs``).
      transfer_seeds: seeds of the transfer section (model A and B's head).
      transfer_samples: labelled training images of model B's task.
      batch_size: samples per update (model B uses ``min(batch_size, 8)``).
      max_train: at most this many training images (the first ones), or None for all.
    """

    name: str
    depth: int
    width: int
    seeds: int
    epochs: int
    transfer_seeds: int
    transfer_samples: int = 40
    batch_size: int = 32
    max_train: int | None = None

    def __post_init__(self) -> None:
        for name in ("depth", "width", "seeds", "epochs", "transfer_seeds", "batch_size"):
            index(name, getattr(self, name), 1)
        index("transfer_samples", self.transfer_samples, 2)
        if self.max_train is not None:
            index("max_train", self.max_train, 1)


#: The default: about 2-4 minutes on a 2-core CPU with the digits.
QUICK = Budget("quick", depth=20, width=100, seeds=3, epochs=5, transfer_seeds=5,
               max_train=5000)
#: Deeper nets, more seeds and epochs.
FULL = Budget("full", depth=50, width=100, seeds=5, epochs=20, transfer_seeds=10,
              max_train=None)


def named_budget(budget: Budget | str) -> Budget:
    """``budget`` itself, or :data:`QUICK` for ``"quick"`` and :data:`FULL` for ``"full"``.

    Raises ``ValueError`` for any other name.
    """
    if isinstance(budget, Budget):
        return budget
    if budget in ("quick", "full"):
        return QUICK if budget == "quick" else FULL
    raise ValueError(f"budget must be 'quick', 'full' or a Budget, got {budget!r}")


@dataclass
class Section:
    """One section of the report: its Markdown, figure files and one-line finding."""

    key: str
    title: str
    markdown: str
    figures: list[str]
    finding: str
    seconds: float = 0.0


@dataclass
class Result:
    """What :func:`~stablejax.study.run` wrote: the report's path, the sections and the
    wall time."""

    report: str
    sections: list[Section]
    seconds: float

    def summary_table(self) -> str:
        """One Markdown row per section: its finding and wall time."""
        lines = ["| section | finding | time |", "|---|---|---|"]
        lines += [f"| {s.key} | {s.finding} | {s.seconds:.0f} s |" for s in self.sections]
        return "\n".join(lines)


@dataclass(frozen=True)
class PairCheck:
    """One step of an ordering claim: did ``better`` beat ``worse``?

    ``held`` when ``better``'s mean is above ``worse``'s; ``clear`` when the gap (either
    way) is more than twice its standard error ``sqrt(s_a^2 / n_a + s_b^2 / n_b)`` (sample standard
    deviations over seeds), so that seed noise is an unlikely explanation.
    """

    better: str
    worse: str
    gap: float
    held: bool
    clear: bool


def check_ordering(ranked: Sequence[tuple[str, Sequence[float] | np.ndarray]]
                   ) -> list[PairCheck]:
    """Checks a claimed ranking, best first, pair by adjacent pair.

    Args:
      ranked: ``(name, scores over seeds)`` in the claimed order, best first; higher
        scores are better.

    Returns:
      One :class:`PairCheck` per adjacent pair.

    >>> [(c.better, c.worse, c.held) for c in check_ordering(
    ...     [("a", [0.9, 0.8]), ("b", [0.5, 0.5]), ("c", [0.52, 0.6])])]
    [('a', 'b', True), ('b', 'c', False)]
    """
    checks = []
    for (a, sa), (b, sb) in zip(ranked, ranked[1:], strict=False):
        xa, xb = np.asarray(sa, np.float64), np.asarray(sb, np.float64)
        gap = float(xa.mean() - xb.mean())
        se = math.sqrt(sample_sd(xa) ** 2 / len(xa) + sample_sd(xb) ** 2 / len(xb))
        checks.append(PairCheck(a, b, gap, gap > 0, abs(gap) > 2 * se))
    return checks


def sample_sd(x: np.ndarray) -> float:
    """Sample standard deviation (0 for one value).

    >>> sample_sd(np.array([1.0, 3.0])), sample_sd(np.array([2.0]))
    (1.4142135623730951, 0.0)
    """
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
