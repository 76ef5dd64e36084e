"""Diagnostics: do gradients vanish or explode, and does the forward signal survive?

- :func:`signal_propagation`: one forward and one backward pass on one batch, measured
  layer by layer as in Glorot & Bengio's figures, with a verdict ("vanishing",
  "exploding" or "healthy") and the fix from docs/guide.md.
- :func:`record_gradient_stats`: an Optax transformation that keeps the global gradient
  norm and each leaf's norm in its state, so a compiled train step can report them.
- :func:`recommend`: the classic initialisation table applied to a built model.
- :class:`GradientMonitor`: a ``fit`` callback that adds gradient norms and the
  first-to-last gradient ratio to the history, and warns when they vanish or explode.

The thresholds share one scale, an order of magnitude (see :func:`signal_propagation`).

One module per idea: ``propagation`` (with ``report``, its rows, Markdown and plot, and
``_verdict``), ``gradient_stats``, ``recommendation``, ``monitor``, and ``thresholds``;
``_probes`` instruments a model's layers for the first, third and fourth.

Reference: Glorot & Bengio (2010), "Understanding the difficulty of training deep
feedforward neural networks".
"""

from __future__ import annotations

from stablejax.diagnostics.gradient_stats import RecordGradientStatsState, record_gradient_stats
from stablejax.diagnostics.monitor import GradientMonitor
from stablejax.diagnostics.propagation import signal_propagation
from stablejax.diagnostics.recommendation import Recommendation, recommend
from stablejax.diagnostics.report import LayerStats, SignalReport, check_plot_path
from stablejax.diagnostics.thresholds import (
    MAJORITY,
    ORDER_OF_MAGNITUDE,
    SATURATED_DERIVATIVE,
    VARIANCE_TOLERANCE,
)

__all__ = [
    "LayerStats",
    "SignalReport",
    "check_plot_path",
    "signal_propagation",
    "RecordGradientStatsState",
    "record_gradient_stats",
    "Recommendation",
    "recommend",
    "GradientMonitor",
    "ORDER_OF_MAGNITUDE",
    "SATURATED_DERIVATIVE",
    "MAJORITY",
    "VARIANCE_TOLERANCE",
]
