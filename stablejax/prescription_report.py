"""A :class:`~stablejax.prescription.Prescription` as a Markdown report and figures."""

from __future__ import annotations

import math
import os
from typing import Any

from stablejax._checks import writable_directory
from stablejax._extras import require as require_extra

__all__ = ["to_markdown", "draw_curves", "summary"]


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "diverged" if mean == math.inf else "-"
    return f"{mean:.3f} ± {std:.3f}"


def summary(p: Any) -> str:
    """The verdict in a few lines: keep the model, or the winner and its changes."""
    b = p.baseline
    head = (f"baseline: val loss {_pm(b.val_loss, b.val_loss_std)}, val accuracy "
            f"{_pm(b.val_accuracy, b.val_accuracy_std)} (diagnosis: {p.diagnosis.verdict})")
    if p.keep:
        return (f"{head}\nkeep your model: no candidate beats it clearly (mean + std "
                f"below the baseline's mean - std)")
    w = p.best
    return (f"{head}\nbest: {'; '.join(w.changes)}: val loss "
            f"{_pm(w.val_loss, w.val_loss_std)}, val accuracy "
            f"{_pm(w.val_accuracy, w.val_accuracy_std)}")


def to_markdown(p: Any) -> str:
    """The diagnosis, the ranked table, what was skipped and why, the winner's code."""
    lines = ["# Prescription", "", summary(p).replace("\n", "\n\n"), "",
             f"Budget {p.budget!r}, {len(p.candidates) + 1} trainings of "
             f"{len(p.baseline.curve)} epochs each, {p.seconds:.0f} s in all.", "",
             "## Diagnosis at initialisation", "",
             f"**{p.diagnosis.verdict}**: {p.diagnosis.reason}", "",
             "## Candidates, ranked by validation loss", "",
             "Rule: a candidate is clearly better when its mean validation loss plus one "
             "standard deviation over the seeds is below the baseline's mean minus one.", "",
             "| rank | changes | val loss | val accuracy | verdict at init | clearly better |",
             "|---|---|---|---|---|---|"]
    rows = [("-", p.baseline)] + [(str(i + 1), c) for i, c in enumerate(p.candidates)]
    for rank, c in rows:
        lines.append(f"| {rank} | {'; '.join(c.changes)} | {_pm(c.val_loss, c.val_loss_std)} "
                     f"| {_pm(c.val_accuracy, c.val_accuracy_std)} | {c.verdict} | "
                     f"{'yes' if c.clearly_better else 'no'} |")
    lines += ["", "## Skipped", ""]
    lines += [f"- {change}: {reason}" for change, reason in p.skipped] or ["- nothing"]
    lines += ["", "## Learning rates (lr_find, grid)", ""]
    lines += [f"- {name}: {f.suggestion:.3g}" for name, f in p.finders.items()] or ["- none"]
    lines += ["", "## The code", "", "```python", p.best.code.rstrip(), "```", ""]
    return "\n".join(lines)


def draw_curves(p: Any, directory: str | os.PathLike[str]) -> list[str]:
    """``lr_find.png`` (when a rate was searched) and ``validation.png`` in ``directory``."""
    writable_directory(directory, "directory")
    figure = require_extra("matplotlib.figure", "plotting")
    agg = require_extra("matplotlib.backends.backend_agg", "plotting")
    paths = []
    if p.finders:
        fig = figure.Figure(figsize=(6, 4), layout="constrained")
        agg.FigureCanvasAgg(fig)
        ax = fig.subplots()
        for name, finder in p.finders.items():
            ax.plot(finder.learning_rates, finder.losses, "o-", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("validation loss after the grid's epochs")
        ax.legend()
        paths.append(os.path.join(os.fspath(directory), "lr_find.png"))
        fig.savefig(paths[-1], dpi=100)
    fig = figure.Figure(figsize=(6, 4), layout="constrained")
    agg.FigureCanvasAgg(fig)
    ax = fig.subplots()
    for c in [p.baseline, *p.candidates[:3]]:
        epochs = range(1, len(c.curve) + 1)
        ax.plot(epochs, c.curve, "o-", label="; ".join(c.changes)[:48])
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (mean over seeds)")
    ax.legend(fontsize=7)
    paths.append(os.path.join(os.fspath(directory), "validation.png"))
    fig.savefig(paths[-1], dpi=100)
    return paths
