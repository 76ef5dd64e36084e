"""The study's figures: one function per PNG, each drawing a section's measurements.

matplotlib (the ``plots`` extra) is imported on first use, through
:func:`stablejax._extras.require`; every figure is a new Agg figure, so no global
backend is touched. Each function writes its file into ``out`` and returns the file's
name (the report links it relative to itself).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from stablejax._extras import require
from stablejax.study._common import sample_sd
from stablejax.study._training import mean_curve
from stablejax.study.clip_section import ClipResults
from stablejax.study.init_section import BATCH_NORMS, InitResults
from stablejax.study.optimizers_section import OptimizersResults
from stablejax.study.schedules_section import SchedulesResults
from stablejax.study.transfer_section import TransferResults

PURPOSE = "drawing the study's figures"
DPI = 90


def check_available() -> None:
    """Raises ``ImportError`` naming the ``plots`` extra when matplotlib is missing."""
    require("matplotlib.figure", PURPOSE)


def _figure(ncols: int = 1, width: float = 6.0, height: float = 4.2) -> tuple[Any, list[Any]]:
    """A new Agg figure and its ``ncols`` axes side by side."""
    figure = require("matplotlib.figure", PURPOSE)
    agg = require("matplotlib.backends.backend_agg", PURPOSE)
    fig = figure.Figure(figsize=(width * ncols, height), layout="constrained")
    agg.FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Any, out: str, name: str) -> str:
    fig.savefig(os.path.join(out, name), dpi=DPI)
    return name


def _epochs_axis(ax: Any, n: int) -> None:
    ax.set_xlabel("epoch")
    ax.set_xticks(range(1, n + 1) if n <= 12 else ax.get_xticks())


def init_gradients(found: InitResults, out: str) -> str:
    """``init_gradients.png``: each configuration's per-layer gradient std at
    initialisation, without and with batch norm."""
    fig, axes = _figure(ncols=2)
    for ax, batch_norm in zip(axes, BATCH_NORMS, strict=True):
        for run in (r for r in found.runs if r.batch_norm == batch_norm):
            stds = np.asarray(run.grad_stds, np.float64)
            stds[~(stds > 0) | ~np.isfinite(stds)] = np.nan
            ax.plot(range(1, len(stds) + 1), stds, marker=".", label=run.label)
        ax.set_yscale("log")
        ax.set_xlabel("kernel layer (input side first)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("std of dL/dW at initialisation")
        ax.set_title("with batch norm" if batch_norm else "without batch norm")
    axes[0].legend(fontsize=7)
    return _save(fig, out, "init_gradients.png")


def init_accuracy(found: InitResults, out: str, epochs: int) -> str:
    """``init_accuracy.png``: each configuration's validation accuracy (mean and sd over
    seeds) after ``epochs``, without and with batch norm."""
    fig, axes = _figure(height=5.0)
    labels = found.labels
    ax, y = axes[0], np.arange(len(labels))
    for offset, batch_norm in zip((-0.2, 0.2), BATCH_NORMS, strict=True):
        scores = found.scores(batch_norm)
        means = [np.mean(scores[label]) for label in labels]
        sds = [sample_sd(np.asarray(scores[label])) for label in labels]
        ax.barh(y + offset, means, 0.4, xerr=sds,
                label="with batch norm" if batch_norm else "without batch norm")
    ax.set_yticks(y, labels)
    ax.set_xlabel(f"validation accuracy after {epochs} epochs "
                  f"(mean ± sd over {len(found.seeds)} seeds)")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out, "init_accuracy.png")


def clip_loss(found: ClipResults, out: str, epochs: int) -> str:
    """``clip_loss.png``: every run's training loss per epoch, one colour per variant
    (gaps where an epoch's loss is not finite)."""
    fig, axes = _figure()
    ax = axes[0]
    for i, (label, runs) in enumerate(found.runs.items()):
        for j, r in enumerate(runs):
            loss = np.asarray(r.history["loss"], np.float64)
            loss[~np.isfinite(loss)] = np.nan
            ax.plot(range(1, len(loss) + 1), loss, color=f"C{i}", marker="o",
                    label=label if j == 0 else None, alpha=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("training loss (epoch mean over finite steps)")
    _epochs_axis(ax, epochs)
    ax.set_title("deep ReLU + He, SGD momentum 0.9, lr 0.1 (gaps: every step skipped)")
    ax.legend(fontsize=8)
    return _save(fig, out, "clip_loss.png")


def optimizers_loss(found: OptimizersResults, out: str, epochs: int) -> str:
    """``optimizers_loss.png``: each optimizer's mean training loss at its default rate
    and at its best rate."""
    fig, axes = _figure(ncols=2)
    panels = (("at Keras's default rate", True), ("at the best of the three rates", False))
    for ax, (title, at_default) in zip(axes, panels, strict=True):
        for name, o in found.optimizers.items():
            rate = o.default if at_default else o.best_rate()
            ax.plot(range(1, epochs + 1), mean_curve(o.by_rate[rate], "loss"), marker="o",
                    label=f"{name} ({rate:g})")
        ax.set_yscale("log")
        ax.set_ylabel("training loss (mean over seeds)")
        _epochs_axis(ax, epochs)
        ax.set_title(title)
        ax.legend(fontsize=7)
    return _save(fig, out, "optimizers_loss.png")


def schedules_curves(found: SchedulesResults, out: str, epochs: int) -> str:
    """``schedules.png``: each schedule's mean training loss per epoch and its learning
    rate at every update."""
    fig, axes = _figure(ncols=2)
    for name, hs in found.histories.items():
        axes[0].plot(range(1, epochs + 1), np.mean([h["loss"] for h in hs], axis=0),
                     marker="o", label=name)
        axes[1].plot(np.arange(found.total) / found.steps, found.rates[name], label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss (mean over seeds)")
    _epochs_axis(axes[0], epochs)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("learning rate")
    axes[0].legend(fontsize=8)
    return _save(fig, out, "schedules.png")


def transfer_accuracy(found: TransferResults, out: str) -> str:
    """``transfer.png``: B's mean held-out accuracy per epoch, from scratch and on A, and
    one point per seed of the two final accuracies."""
    fig, axes = _figure(ncols=2)
    for label, runs in (("B from scratch", found.scratch), ("B on A", found.on_a)):
        axes[0].plot(range(1, found.epochs_b + 1), mean_curve(runs, "val_accuracy"),
                     marker="o", label=label)
    axes[0].axvline(found.frozen + 0.5, color="grey", linestyle=":", label="B on A unfrozen")
    axes[0].set_ylabel("held-out accuracy (mean over seeds)")
    _epochs_axis(axes[0], found.epochs_b)
    axes[0].legend(fontsize=8)
    acc_s, acc_a = found.accuracies()
    axes[1].scatter(acc_s, acc_a)
    low = min(acc_s.min(), acc_a.min()) - 0.02
    axes[1].plot([low, 1], [low, 1], color="grey", linestyle=":")
    axes[1].set_xlabel("B from scratch: accuracy")
    axes[1].set_ylabel("B on A: accuracy")
    axes[1].set_title("one point per seed (above the diagonal: A helped)")
    return _save(fig, out, "transfer.png")
