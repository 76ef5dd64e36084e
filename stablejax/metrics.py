"""Metrics by name and the names the logs reserve: what ``fit``, ``evaluate`` and the
compiled steps report besides the loss.

``metrics`` arguments take Keras's forms (:func:`as_metrics`): a dict ``{name:
fn(outputs, targets)}``, or a list of names and callables; by default the accuracy that
goes with a named cross-entropy (:func:`metric_fns`). Every name is checked by
:func:`check_log_names`, which the callbacks' step statistics share, so that no metric
replaces a logged value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from stablejax import losses
from stablejax._checks import describe

Loss = str | Callable[[jax.Array, jax.Array], jax.Array]
Metrics = dict[str, Callable[[jax.Array, jax.Array], jax.Array]]

__all__ = ["Loss", "Metrics", "METRIC_NAMES", "RESERVED_NAMES", "as_metrics",
           "check_log_names", "metric_fns", "named_metric"]


# Names the training loop logs or uses itself: no metric or step statistic may take one,
# nor a name starting with "val_" (the validation keys).
RESERVED_NAMES = ("loss", "skipped", "skips", "ran", "count", "lr", "epoch", "not_probabilities")


def check_log_names(names: Any, what: str, taken: Any = ()) -> None:
    """Raises ``ValueError`` unless every name of ``names`` may be logged beside the rest.

    A name must be a non-empty ``str``, not one of :data:`RESERVED_NAMES`, not start with
    ``"val_"`` and not be in ``taken`` (the names already given by the metrics or
    another callback): any of these would silently replace a logged value. ``what``
    says where the names come from in the message (``"metrics"``, ``"step_stats"``).
    """
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} names must be non-empty strings, got {name!r}")
        if name in RESERVED_NAMES or name.startswith("val_"):
            raise ValueError(
                f"{what} name {name!r} is reserved: the training loop logs or uses "
                f"{', '.join(RESERVED_NAMES)} and the val_ names itself; rename it"
            )
        if name in taken:
            raise ValueError(f"{what} name {name!r} is given twice: it would replace the "
                             "other value of that name in the logs; rename one")


def metric_fns(loss: Loss, metrics: Metrics | None) -> Metrics:
    """The metrics a step reports: ``metrics`` (names checked by :func:`check_log_names`),
    or by default the accuracy that goes with a named cross-entropy loss (none for other
    losses). The steps report them in this order after the loss."""
    if metrics is not None:
        check_log_names(metrics, "metrics")
        return dict(metrics)
    if isinstance(loss, str) and loss in losses.ACCURACY_FOR:
        return {"accuracy": losses.ACCURACY_FOR[loss]}
    return {}


METRIC_NAMES = {
    "sparse_categorical_accuracy": losses.sparse_categorical_accuracy,
    "binary_accuracy": losses.binary_accuracy,
    "mse": losses.mean_squared_error,
    "mean_squared_error": losses.mean_squared_error,
}


def named_metric(name: str, loss: Loss, where: str) -> Any:
    """A metric by Keras's name: ``"accuracy"`` (or ``"acc"``), the accuracy that goes
    with a named cross-entropy loss, or one of :data:`METRIC_NAMES`."""
    if name in ("accuracy", "acc"):
        if not (isinstance(loss, str) and loss in losses.ACCURACY_FOR):
            raise ValueError(
                f"{where}: {name!r} is the accuracy of a named cross-entropy loss "
                f"({', '.join(losses.ACCURACY_FOR)}), but loss is {loss!r}; pass "
                "metrics={name: fn(outputs, targets)} instead"
            )
        return losses.ACCURACY_FOR[loss]
    if name in METRIC_NAMES:
        return METRIC_NAMES[name]
    raise ValueError(f"{where}={name!r} is unknown: accepted are 'accuracy' (or 'acc'), "
                     f"{', '.join(map(repr, METRIC_NAMES))}, callables fn(outputs, targets), "
                     "or a dict of them")


def as_metrics(metrics: Any, loss: Loss) -> Metrics | None:
    """``metrics`` as ``{name: fn}``: Keras's list form, or a dict; names resolved by
    :func:`named_metric`, callables named by ``__name__`` in a list."""
    if metrics is None:
        return None
    if isinstance(metrics, dict):
        resolved_dict: Metrics = {}
        for key, fn in metrics.items():
            if isinstance(fn, str):
                fn = named_metric(fn, loss, f"metrics[{key!r}]")
            elif not callable(fn):
                raise TypeError(f"metrics[{key!r}] must be a callable fn(outputs, targets) "
                                f"or a metric name such as 'accuracy', got {describe(fn)}")
            resolved_dict[key] = fn
        return resolved_dict
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise TypeError(f"metrics must be a dict {{name: fn(outputs, targets)}} or a list such "
                        f"as ['accuracy'], got {describe(metrics)}")
    resolved: Metrics = {}
    for i, metric in enumerate(metrics):
        if isinstance(metric, str):
            resolved[metric] = named_metric(metric, loss, f"metrics[{i}]")
        elif callable(metric):
            name = getattr(metric, "__name__", f"metric_{i}")
            check_log_names([name], f"metrics[{i}]", taken=resolved)
            resolved[name] = metric
        else:
            raise ValueError(f"metrics[{i}]={metric!r} is unknown: accepted are metric names "
                             "such as 'accuracy', callables fn(outputs, targets), or a dict "
                             "of them")
    return resolved
