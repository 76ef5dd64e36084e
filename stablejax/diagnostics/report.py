"""What :func:`~stablejax.diagnostics.signal_propagation` returns: the rows, the report,
its Markdown table and its plot (matplotlib, the ``plots`` extra, imported on first plot).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from stablejax._checks import writable_directory
from stablejax._extras import require as require_extra

__all__ = ["LayerStats", "SignalReport", "check_plot_path", "fmt"]


@dataclass(frozen=True)
class LayerStats:
    """One measured layer of a :class:`SignalReport` (one row per call of the layer).

    Attributes:
      name: the layer's path (``"layers/2"``, ``"layers/4/blocks[0]/layers/0"``).
      activation: the activation that decides the layer's initialiser: its own, or for
        a kernel layer without one the activation that follows it in its
        ``nnx.Sequential`` (``batch_norm="before"``); ``"linear"`` for none.
      fan_in: the kernel's fan-in (None for an activation layer).
      kernel_std: the kernel's standard deviation.
      table_std: ``sqrt(scale / fan)`` of the initialiser the table matches to
        ``activation`` (None when it has no entry).
      pre_mean, pre_std: the pre-activation's (the affine output, or an activation
        layer's input) mean and standard deviation over the batch and the units.
      act_mean, act_std: the same of the layer's output.
      grad_std: standard deviation of the loss's gradient w.r.t. the layer's output.
      kernel_grad_std: standard deviation of the loss's gradient w.r.t. the kernel.
      saturated: sigmoid and tanh outputs: the fraction of outputs (samples x units)
        whose derivative is below ``SATURATED_DERIVATIVE`` of the peak (None otherwise).
      dead: layers that apply an activation: the fraction of units whose output is 0
        for every sample of the batch (None otherwise).
    """

    name: str
    activation: str
    fan_in: int | None
    kernel_std: float | None
    table_std: float | None
    pre_mean: float
    pre_std: float
    act_mean: float
    act_std: float
    grad_std: float
    kernel_grad_std: float | None
    saturated: float | None
    dead: float | None


def fmt(value: float | int | None) -> str:
    """A figure as the report writes it: 3 significant digits, an int whole, None "-"."""
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3g}"


@dataclass(frozen=True)
class SignalReport:
    """What :func:`signal_propagation` measured, and its verdict.

    Attributes:
      layers: one :class:`LayerStats` per measured layer call, in call order.
      loss: the batch's loss.
      grad_ratio: std of the first kernel layer's kernel gradient over that of the last
        hidden kernel layer (the one before the output layer); 1 with one kernel layer.
      forward_ratio: std of the last hidden layer's activation over the first's.
      saturated: the largest saturated fraction of a hidden layer (0 if none saturates).
      dead: the largest dead fraction of a hidden layer.
      verdict: ``"vanishing"``, ``"exploding"`` or ``"healthy"``.
      reason: the evidence (layer, figure) and the fix of docs/guide.md, in one sentence.
    """

    layers: list[LayerStats]
    loss: float
    grad_ratio: float
    forward_ratio: float
    saturated: float
    dead: float
    verdict: str
    reason: str

    def to_markdown(self) -> str:
        """The layers as a Markdown table, then the figures and the verdict."""
        head = ["layer", "activation", "fan_in", "kernel std", "table std", "pre mean",
                "pre std", "act mean", "act std", "grad std", "kernel grad std",
                "saturated", "dead"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.layers:
            cells = [r.name or "model", r.activation, r.fan_in, r.kernel_std, r.table_std,
                     r.pre_mean, r.pre_std, r.act_mean, r.act_std, r.grad_std,
                     r.kernel_grad_std, r.saturated, r.dead]
            lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c)
                                           for c in cells) + " |")
        lines += [
            "",
            f"loss {fmt(self.loss)}, grad ratio (first / last hidden kernel gradient std) "
            f"{fmt(self.grad_ratio)}, forward ratio (last / first hidden activation std) "
            f"{fmt(self.forward_ratio)}, saturated {fmt(self.saturated)}, "
            f"dead {fmt(self.dead)}",
            "",
            f"**{self.verdict}**: {self.reason}",
        ]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Writes a PNG of the forward and backward signal per layer, on a log axis.

        Forward: each layer's activation std; backward: the std of the gradient w.r.t.
        each layer's output, as in Glorot & Bengio's figures. Uses matplotlib's Agg
        canvas directly, so no global backend is changed; matplotlib (the ``plots``
        extra) is imported here, ``ImportError`` naming the extra when it is missing.

        ``path`` is checked by :func:`check_plot_path` before drawing: a ``.png`` file
        path whose directory is created if missing.
        """
        path = check_plot_path(path)
        figure = require_extra("matplotlib.figure", "plotting")
        agg = require_extra("matplotlib.backends.backend_agg", "plotting")
        fig = figure.Figure(figsize=(max(6.0, 0.3 * len(self.layers)), 4.5), layout="constrained")
        agg.FigureCanvasAgg(fig)
        ax = fig.subplots()
        steps = range(len(self.layers))
        ax.plot(steps, _positive([r.act_std for r in self.layers]), "o-",
                label="forward: activation std")
        ax.plot(steps, _positive([r.grad_std for r in self.layers]), "s-",
                label="backward: std of the gradient w.r.t. the output")
        ax.set_yscale("log")
        ax.set_xticks(list(steps), [r.name or "model" for r in self.layers], rotation=90,
                      fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("standard deviation")
        ax.set_title(f"{self.verdict}: grad ratio {fmt(self.grad_ratio)}, "
                     f"forward ratio {fmt(self.forward_ratio)}")
        ax.legend()
        fig.savefig(path, dpi=100)


def _positive(values: list[float]) -> list[float]:
    """The values a log axis can show; NaN (a gap) for the others."""
    return [v if v > 0 and math.isfinite(v) else math.nan for v in values]


def check_plot_path(path: Any, name: str = "path") -> str:
    """``path`` as a string, checked for :meth:`SignalReport.plot` before any drawing.

    It must be a ``str`` or ``os.PathLike`` (else ``TypeError``) ending in ``.png`` and
    not a directory (else ``ValueError``); its directory is created if missing and must
    be writable (``ValueError`` when it is, or is under, a file, or lacks permission).
    Messages start with ``name`` and the path, e.g. ``"--plot 'out/x.png': ..."``.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not path.lower().endswith(".png") or os.path.isdir(path):
        raise ValueError(f"{name} {path!r} must be a file path ending in .png (a PNG is "
                         "written)")
    writable_directory(os.path.dirname(path) or os.curdir, f"{name} {path!r}: its directory")
    return path

