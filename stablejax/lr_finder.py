"""The learning-rate finder: which rate should this model, this optimizer and these data
train at? :func:`lr_find` measures it on the user's own model, two ways.

- ``method="grid"`` (the default): ``num`` rates on a log grid, each trained for
  ``epochs`` epochs from the same initial model, all side by side as one ``vmap``-ed
  program (:func:`stablejax.sweep.run`); the curve is each rate's loss at the end, the
  suggestion the rate with the lowest.
- ``method="range"``: Smith's range test (Smith 2017, "Cyclical learning rates for
  training neural networks"; PyTorch Lightning's and fastai's ``lr_find``): one model
  trained for ``steps`` updates while the rate grows exponentially from ``min_lr`` to
  ``max_lr``; the loss is smoothed, the curve ends where it blows up, and the suggestion
  is the rate where it falls fastest.

Example::

    >>> import stablejax as sj
    >>> from flax import nnx
    >>> data = sj.data.synthetic_classification(256, num_features=8, num_classes=3)
    >>> make = lambda seed: sj.nn.mlp([16], input_shape=(8,), output_size=3,
    ...                               rngs=nnx.Rngs(seed))
    >>> finder = sj.lr_find(make, sj.adam, data, num=5, min_lr=1e-4, max_lr=1.0)
    >>> len(finder.learning_rates), 1e-4 <= finder.suggestion <= 1.0
    (5, True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stablejax import data as sj_data
from stablejax import feeding, optimizers, sweep
from stablejax._checks import index, positive
from stablejax._extras import require as require_extra
from stablejax.steps import Loss

__all__ = ["LRFinder", "lr_find", "METHODS", "SMOOTHING", "DIVERGENCE"]

METHODS = ("grid", "range")
SMOOTHING = 0.98  # the range test's exponential moving average (Lightning's, fastai's)
DIVERGENCE = 4.0  # the range test stops once the smoothed loss exceeds 4x its minimum


@dataclass(frozen=True)
class LRFinder:
    """What :func:`lr_find` measured.

    Attributes:
      learning_rates: the rates tried, increasing.
      losses: the loss at each (``inf`` where training diverged): for ``"grid"`` the
        validation loss after training at that rate (the last epoch's training loss
        without validation data); for ``"range"`` the smoothed training loss of the
        update made at that rate, cut where it blew up.
      suggestion: the suggested rate (see :func:`lr_find`).
      method: ``"grid"`` or ``"range"``.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    suggestion: float
    method: str

    def plot(self, path_or_ax: str | os.PathLike[str] | Any) -> None:
        """Draws the loss against the rate (log axis), the suggestion marked.

        ``path_or_ax``: a ``.png`` path (its directory is created; matplotlib's Agg
        canvas draws it, no global backend is changed) or a matplotlib ``Axes`` to draw
        into. matplotlib is the ``plots`` extra.
        """
        if isinstance(path_or_ax, str | os.PathLike):
            from stablejax.diagnostics.report import check_plot_path

            path = check_plot_path(path_or_ax, "path_or_ax")
            figure = require_extra("matplotlib.figure", "plotting")
            agg = require_extra("matplotlib.backends.backend_agg", "plotting")
            fig = figure.Figure(figsize=(6, 4), layout="constrained")
            agg.FigureCanvasAgg(fig)
            self._draw(fig.subplots())
            fig.savefig(path, dpi=100)
        elif hasattr(path_or_ax, "plot") and hasattr(path_or_ax, "set_xscale"):
            self._draw(path_or_ax)
        else:
            raise TypeError(f"path_or_ax must be a .png path or a matplotlib Axes, got "
                            f"{type(path_or_ax).__name__}")

    def _draw(self, ax: Any) -> None:
        finite = np.isfinite(self.losses)
        ax.plot(self.learning_rates[finite], self.losses[finite],
                "o-" if self.method == "grid" else "-")
        ax.axvline(self.suggestion, color="C1", linestyle="--",
                   label=f"suggestion {self.suggestion:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("validation loss" if self.method == "grid" else "smoothed loss")
        ax.set_title(f"learning-rate finder ({self.method})")
        ax.legend()


def lr_find(
    make_model: Callable[[int], nnx.Module],
    optimizer: Callable[[Any], optax.GradientTransformation],
    data: Any,
    *,
    validation_data: Any = None,
    loss: Loss = "sparse_categorical_crossentropy",
    batch_size: int = 32,
    method: str = "grid",
    min_lr: float = 1e-5,
    max_lr: float = 1.0,
    num: int = 11,
    epochs: int = 2,
    steps: int = 100,
    seed: int = 0,
) -> LRFinder:
    """Measures the learning rate at which ``make_model(seed)`` trains best.

    ``method="grid"`` (default): the ``num`` rates ``min_lr * (max_lr / min_lr) **
    (i / (num - 1))`` (11 by default: two per decade from 1e-5 to 1), each training
    ``make_model(seed)`` with ``optimizer(rate)`` for ``epochs`` epochs on the same
    batches, side by side as one compiled :func:`stablejax.sweep.run`. ``losses[i]`` is
    the validation loss at the end (the last epoch's training loss without
    ``validation_data``), ``inf`` when it is not finite or a step was skipped as
    non-finite; ``suggestion`` is the rate of the lowest.

    ``method="range"``: Smith's range test. ``make_model(seed)`` trains for ``steps``
    updates with ``optimizer(schedule)``, ``schedule(t) = min_lr * (max_lr / min_lr) **
    (t / (steps - 1))``; the batch losses are smoothed by a bias-corrected exponential
    moving average (``SMOOTHING = 0.98``) and the curve ends before the first smoothed
    loss above ``DIVERGENCE = 4`` times the lowest so far (or a non-finite one), as
    Lightning and fastai do. The updates after it still run (one compiled program) but
    are not reported. ``suggestion`` is the rate where the smoothed loss falls fastest
    (the most negative slope against ``log(rate)``, the first 10% of the curve aside:
    Lightning's rule).

    Why the grid is the default: it measures what the suggestion is judged by (a rate
    that trains to a low validation loss), so it is right by construction up to its
    resolution (half a decade); the range test's suggestion is a heuristic read off a
    curve made while the rate changes. Measured by ``python benchmarks/lr_find.py`` on
    the bundled digits (its output names the models, optimizers, both methods' hit
    rates against the standard below, and their times). The standard: train at each
    rate of a log grid for a few epochs; a suggestion passes when its validation loss is
    within 2x of the grid's best. The grid costs ``num * epochs`` epochs of one model
    as one program, batched by ``vmap``; the range test ``steps`` updates of one.

    Args:
      make_model: ``make_model(seed) -> nnx.Module`` (as :func:`stablejax.sweep.run`).
      optimizer: ``optimizer(learning_rate) -> GradientTransformation``: ``sj.adam``
        itself, ``lambda lr: sj.sgd(lr, momentum=0.9)``, ``optax.adam``... For ``"grid"``
        ``optimizer(min_lr)`` must inject its rate (the stablejax aliases do, and
        ``optax.inject_hyperparams(optax.adam)`` does); for ``"range"`` ``optimizer``
        must accept a schedule (they all do).
      data: ``(x, y)`` or a ``stablejax.data.Split``, the training data.
      validation_data: ``(x, y)`` to judge the grid's rates by (recommended).
      loss: a name from ``stablejax.losses.LOSSES`` or a callable (default
        ``"sparse_categorical_crossentropy"``, for a model ending in softmax).
      batch_size: samples per update, >= 1 (default 32, ``fit``'s).
      method: ``"grid"`` or ``"range"``.
      min_lr, max_lr: the range of rates, ``0 < min_lr < max_lr`` (defaults 1e-5, 1).
      num: the grid's rates, >= 2 (default 11).
      epochs: the grid's epochs per rate, >= 1 (default 2).
      steps: the range test's updates, >= 10 (default 100, Lightning's).
      seed: the model's seed (``make_model(seed)``) and the batches' shuffling seed.

    Returns:
      an :class:`LRFinder`.

    Raises:
      ValueError: a bad ``method``, rate range, ``num``, ``epochs``, ``steps`` or
        ``batch_size``; data that do not fit the model or the loss; an optimizer whose
        rate cannot be set (grid). All before any training.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    positive("min_lr", min_lr)
    positive("max_lr", max_lr)
    if not float(min_lr) < float(max_lr) < math.inf:
        raise ValueError(f"min_lr must be below max_lr, both finite: got min_lr={min_lr!r}, "
                         f"max_lr={max_lr!r}")
    index("num", num, 2)
    index("epochs", epochs, 1)
    index("steps", steps, 10)
    index("batch_size", batch_size, 1)
    index("seed", seed, 0)
    if not callable(optimizer):
        raise TypeError(f"optimizer must be a callable learning_rate -> "
                        f"GradientTransformation such as sj.adam, got {optimizer!r}")
    if method == "grid":
        return _grid(make_model, optimizer, data, validation_data, loss, batch_size,
                     np.geomspace(min_lr, max_lr, num), epochs, seed)
    return _range(make_model, optimizer, data, loss, batch_size,
                  (float(min_lr), float(max_lr)), steps, seed)


def _grid(make_model: Callable[[int], nnx.Module], optimizer: Callable[[Any], Any],
          data: Any, validation_data: Any, loss: Loss, batch_size: int,
          rates: np.ndarray, epochs: int, seed: int) -> LRFinder:
    """Every rate trained side by side for ``epochs``; the lowest final loss wins."""
    tx = optimizer(float(rates[0]))
    try:
        optimizers.set_learning_rate(tx.init({"w": jnp.zeros(1)}), float(rates[0]))
    except ValueError as e:
        raise ValueError(f"optimizer({rates[0]:.3g}) must inject its learning rate for "
                         f"method='grid' (the stablejax aliases do; wrap an Optax factory "
                         f"as optax.inject_hyperparams(optax.adam)): {e}") from None
    runs = sweep.run(make_model, tx, data,
                     seeds=[seed] * len(rates), epochs=epochs, batch_size=batch_size,
                     validation_data=validation_data, loss=loss, data_seed=seed,
                     learning_rates=[float(r) for r in rates])
    key = "loss" if validation_data is None else "val_loss"
    losses = np.array([run.history[key][-1] if sum(run.history["skipped"]) == 0
                       else np.inf for run in runs])
    losses[~np.isfinite(losses)] = np.inf
    best = int(np.argmin(losses))
    return LRFinder(rates, losses, float(rates[best]), "grid")


def _range(make_model: Callable[[int], nnx.Module], optimizer: Callable[[Any], Any],
           data: Any, loss: Loss, batch_size: int, bounds: tuple[float, float],
           steps: int, seed: int) -> LRFinder:
    """Smith's range test: one run whose rate grows exponentially at every update."""
    low, high = bounds
    x, _ = feeding.as_split(data, "data")
    per_epoch = sj_data.num_batches(len(x), batch_size)
    ratio = high / low

    def schedule(count: Any) -> Any:
        return low * ratio ** (count / (steps - 1))

    run, = sweep.run(make_model, optimizer(schedule), data, seeds=[seed],
                     epochs=math.ceil(steps / per_epoch), batch_size=batch_size,
                     loss=loss, data_seed=seed)
    rates = low * ratio ** (np.arange(steps) / (steps - 1))
    smoothed = _smoothed(run.step_losses[:steps])
    end = _divergence(smoothed)
    rates, smoothed = rates[:end], smoothed[:end]
    return LRFinder(rates, smoothed, _steepest(rates, smoothed), "range")


def _smoothed(losses: np.ndarray) -> np.ndarray:
    """The bias-corrected exponential moving average of ``losses`` (NaN stays NaN on)."""
    average, out = 0.0, np.empty(len(losses))
    for t, value in enumerate(losses):
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        out[t] = average / (1 - SMOOTHING ** (t + 1))
    return out


def _divergence(smoothed: np.ndarray) -> int:
    """The length of the curve before the loss blows up (at least 2 points)."""
    best = np.inf
    for t, value in enumerate(smoothed):
        if not np.isfinite(value) or value > DIVERGENCE * best:
            return max(t, 2)
        best = min(best, value)
    return len(smoothed)


def _steepest(rates: np.ndarray, smoothed: np.ndarray) -> float:
    """The rate where the smoothed loss falls fastest against ``log(rate)``."""
    skip = len(rates) // 10
    if len(rates) - skip < 2:
        return float(rates[0])
    slopes = np.gradient(smoothed[skip:], np.log(rates[skip:]))
    slopes[~np.isfinite(slopes)] = np.inf
    return float(rates[skip + int(np.argmin(slopes))])
