"""What should I change so that my model trains? :func:`prescribe` measures the notes'
remedies on the user's own model and data, and ranks them against the model as it is.

1. Diagnose ``make_model(seed)`` at initialisation (:func:`stablejax.diagnostics.
   signal_propagation`).
2. Candidates, one change each: the matched initialiser (:func:`stablejax.remedies.
   matched_init`), SELU, ELU or leaky ReLU with their initialisers and batch norm
   (``nnx.Sequential`` models only: :mod:`stablejax.remedies`), gradient clipping
   (``global_clipnorm=1``), the user's optimizer at the rate :func:`stablejax.lr_find`
   suggests for it, and Adam, Nadam and SGD with momentum 0.9 at theirs. A change that
   does not apply is listed in ``skipped`` with the reason.
3. The baseline and every candidate train for the same budget from ``seeds`` seeds;
   the candidates that share an architecture and an optimizer train as one compiled
   :func:`stablejax.sweep.run` (seeds and rates side by side).
4. Rank by mean validation loss. A candidate is *clearly better* when its mean plus
   one standard deviation over the seeds is below the baseline's mean minus one (the
   two mean ± std intervals do not overlap); ``keep`` is True when none is: "your
   model is fine, leave it".
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import optax
from flax import nnx

from stablejax import data as sj_data
from stablejax import feeding, optimizers, remedies, sweep
from stablejax._checks import check_range, index
from stablejax.clipping import clip_by_global_norm
from stablejax.diagnostics import SignalReport, recommend, signal_propagation
from stablejax.initializers import table_entry
from stablejax.lr_finder import LRFinder, lr_find
from stablejax.prescription_report import draw_curves, to_markdown
from stablejax.steps import Loss

__all__ = ["Budget", "BUDGETS", "Candidate", "Prescription", "prescribe", "CLIPNORM",
           "ACTIVATIONS"]


class Budget(NamedTuple):
    """How long each candidate and each learning-rate grid trains."""

    epochs: int  # each candidate's epochs
    lr_epochs: int  # each rate of lr_find's grid
    lr_num: int  # rates in lr_find's grid, from 1e-4 to 1


BUDGETS = {"quick": Budget(5, 2, 9), "full": Budget(20, 3, 13)}
CLIPNORM = 1.0
ACTIVATIONS = ("selu", "elu", "leaky_relu")
OTHERS = {"Adam": ("adam", {}), "Nadam": ("nadam", {}),
          "SGD with momentum 0.9": ("sgd", {"momentum": 0.9})}


@dataclass
class Candidate:
    """One change (or none: the baseline), measured.

    ``changes``: readable strings such as ``"init: matched (he_normal for relu)"``;
    ``val_loss``/``val_accuracy``: the mean over the seeds of the last epoch's
    validation figures, ``*_std`` their standard deviation (``ddof=1``; NaN accuracy
    for losses without one); ``verdict``: :func:`signal_propagation`'s at
    initialisation; ``make_model``/``optimizer``: what rebuilds it; ``code``: the
    Python lines that do, from the user's ``make_model``; ``curve``: the mean
    validation loss per epoch; ``clearly_better``: see :mod:`stablejax.prescription`.
    """

    changes: list[str]
    make_model: Callable[[int], nnx.Module]
    optimizer: optax.GradientTransformation
    code: str
    val_loss: float = math.nan
    val_loss_std: float = math.nan
    val_accuracy: float = math.nan
    val_accuracy_std: float = math.nan
    verdict: str = ""
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clearly_better: bool = False
    learning_rate: float | None = None  # the rate it trains at, when it is set


@dataclass
class Prescription:
    """What :func:`prescribe` found: ``baseline``, ``candidates`` (ranked by validation
    loss), ``best`` (the top clearly better candidate, or the baseline), ``keep`` (no
    candidate is clearly better), ``skipped`` (change, reason), ``diagnosis``, the
    learning-rate ``finders`` by optimizer name, and ``seconds`` in all."""

    baseline: Candidate
    candidates: list[Candidate]
    best: Candidate
    keep: bool
    skipped: list[tuple[str, str]]
    diagnosis: SignalReport
    finders: dict[str, LRFinder]
    seconds: float
    budget: str

    def to_markdown(self) -> str:
        """The report: the diagnosis, the ranked table, what was skipped, the code."""
        return to_markdown(self)

    def plot(self, directory: str | os.PathLike[str]) -> list[str]:
        """Writes ``lr_find.png`` (each optimizer's learning-rate curve) and
        ``validation.png`` (the validation loss per epoch of the baseline and the three
        best candidates) into ``directory`` (created); returns their paths."""
        return draw_curves(self, directory)


@dataclass
class _Spec:
    """A candidate before training, with the sweep it trains in."""

    candidate: Candidate
    group: tuple[Any, ...]  # (architecture, id of the optimizer)


def prescribe(
    make_model: Callable[[int], nnx.Module],
    data: Any,
    *,
    validation_data: Any = None,
    validation_split: float = 0.2,
    loss: Loss = "sparse_categorical_crossentropy",
    optimizer: optax.GradientTransformation | None = None,
    budget: str = "quick",
    seeds: int = 3,
    batch_size: int = 32,
    seed: int = 0,
) -> Prescription:
    """Measures which of the notes' remedies makes ``make_model`` train, on its data.

    See :mod:`stablejax.prescription` for the steps and the ranking rule. Budgets
    (``BUDGETS``): ``"quick"``: each candidate 5 epochs, each learning-rate grid 9
    rates (1e-4 to 1) of 2 epochs; ``"full"``: 20 epochs, 13 rates of 3 epochs.

    Args:
      make_model: ``make_model(seed) -> nnx.Module``.
      data: ``(x, y)`` or a ``stablejax.data.Split``: the training data.
      validation_data: ``(x, y)``; when None, the last ``validation_split`` of ``data``
        (Keras's rule, as ``fit``).
      validation_split: in ``(0, 1)``, default 0.2; used without ``validation_data``.
      loss: as ``fit``'s (default ``"sparse_categorical_crossentropy"``).
      optimizer: the user's: a stablejax alias (its rate can be changed:
        ``sj.sgd(0.01, momentum=0.9)``) or any Optax transform (kept as given);
        default ``sj.adam()``.
      budget: ``"quick"`` or ``"full"``.
      seeds: model seeds per candidate, >= 2 (a spread needs two), default 3.
      batch_size: samples per update, >= 1 (default 32).
      seed: the first model seed (``seed, seed + 1, ...``) and the shuffling seed.

    Raises:
      ValueError / TypeError: bad arguments, a ``make_model`` that does not return an
        ``nnx.Module``, data that do not fit the model or the loss: before training.
    """
    start = time.perf_counter()
    tx = optimizers.adam() if optimizer is None else optimizer
    _check(make_model, tx, budget, seeds, batch_size, seed)
    train, valid = _split(data, validation_data, validation_split)
    base = make_model(seed)
    feeding.check_model(base)
    diagnosis = signal_propagation(base, (train[0][:256], train[1][:256]), loss)
    plan = BUDGETS[budget]

    def find(name: str, factory: Callable[[float], Any]) -> LRFinder:
        finders[name] = lr_find(make_model, factory, train, validation_data=valid,
                                loss=loss, batch_size=batch_size, min_lr=1e-4, max_lr=1.0,
                                num=plan.lr_num, epochs=plan.lr_epochs, seed=seed)
        return finders[name]

    finders: dict[str, LRFinder] = {}
    updates = plan.epochs * sj_data.num_batches(len(train[0]), batch_size)
    specs, skipped = _candidates(make_model, base, tx, find, bn_momentum(updates))
    seed_list = [seed + i for i in range(seeds)]
    _train(specs, train, valid, loss, plan.epochs, batch_size, seed_list, seed)
    for spec in specs:
        spec.candidate.verdict = (diagnosis.verdict if spec.group[0] == "user" else
                                  signal_propagation(spec.candidate.make_model(seed),
                                                     (train[0][:256], train[1][:256]),
                                                     loss).verdict)
    baseline, ranked = specs[0].candidate, _ranked([s.candidate for s in specs[1:]])
    for candidate in ranked:
        candidate.clearly_better = (candidate.val_loss + candidate.val_loss_std
                                    < baseline.val_loss - baseline.val_loss_std)
    better = [c for c in ranked if c.clearly_better]
    return Prescription(baseline, ranked, better[0] if better else baseline, not better,
                        skipped, diagnosis, finders, time.perf_counter() - start, budget)


def _check(make_model: Any, tx: Any, budget: Any, seeds: Any, batch_size: Any,
           seed: Any) -> None:
    if not callable(make_model):
        raise TypeError(f"make_model must be a callable make_model(seed) -> nnx.Module, "
                        f"got {make_model!r}")
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation such as "
                        f"sj.adam(1e-3), got {tx!r}")
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {tuple(BUDGETS)}, got {budget!r}")
    index("seeds", seeds, 2)
    index("batch_size", batch_size, 1)
    index("seed", seed, 0)


def _split(data: Any, validation_data: Any, split: float) -> tuple[tuple, tuple]:
    """The training and validation pairs."""
    x, y = feeding.as_split(data, "data")
    if validation_data is not None:
        return (x, y), feeding.as_split(validation_data, "validation_data")
    check_range("validation_split", split, 0, 1, low_open=True, high_open=True)
    (x, y, _), (vx, vy, _) = feeding.validation_split(x, y, None, split)
    return (x, y), (vx, vy)


def bn_momentum(updates: int) -> float:
    """The batch-norm momentum for a run of ``updates``: Keras's 0.99, or less so that the
    moving statistics keep under 0.1% of their initial values at the end,
    ``momentum ** updates <= 1e-3`` (rounded down to 3 decimals)."""
    return min(0.99, math.floor(1000 * 0.001 ** (1 / updates)) / 1000)


def _candidates(make_model: Callable[[int], nnx.Module], base: nnx.Module, tx: Any,
                find: Callable[[str, Callable[[float], Any]], LRFinder], momentum: float,
                ) -> tuple[list[_Spec], list[tuple[str, str]]]:
    """The baseline first, then every candidate that applies; the rest as skipped."""
    user = optimizers.describe(tx)
    rate = user.arguments["learning_rate"] if user else None
    rate = float(rate) if isinstance(rate, int | float) else None
    tx_code = _alias_code(user.name, user.arguments) if user else "your_optimizer"
    specs = [_Spec(Candidate(["none (your model and optimizer)"], make_model, tx,
                             _code("make_model(seed)", tx_code), learning_rate=rate),
                   ("user", id(tx)))]
    skipped: list[tuple[str, str]] = []
    model_changes = _model_changes(make_model, base, skipped, momentum)
    for change, make, model_code in model_changes:
        group = ("user", id(tx)) if change.startswith("init") else (change, id(tx))
        specs.append(_Spec(Candidate([change], make, tx, _code(model_code, tx_code),
                                     learning_rate=rate), group))
    specs += _clipping(make_model, tx, user, tx_code, skipped)
    specs += _optimizers(make_model, tx, user, rate, find, skipped)
    return specs, skipped


def _model_changes(make_model: Callable[[int], nnx.Module], base: nnx.Module,
                   skipped: list[tuple[str, str]], momentum: float,
                   ) -> list[tuple[str, Any, str]]:
    """(change, make_model, code) of each model remedy that applies to ``base``."""
    out: list[tuple[str, Any, str]] = []
    try:
        remedies.matched_init(base)
        out.append(("init: matched to each layer's activation (the table's initialiser)",
                    lambda s: remedies.matched_init(make_model(s), seed=s),
                    "sj.remedies.matched_init(make_model(seed), seed=seed)"))
    except ValueError as e:
        skipped.append(("init: matched to each layer's activation", str(e)))
    current = {row.activation for row in recommend(base)[:-1]}
    for name in ACTIVATIONS:
        change = f"activation: {name} with {table_entry(name).initializer}"
        try:
            remedies.with_activation(base, name)
        except remedies.SequentialOnly as e:
            skipped.append((change, str(e)))
            continue
        if current == {name}:
            skipped.append((change, f"every hidden layer is {name} already"))
            continue
        out.append((change, lambda s, n=name: remedies.with_activation(make_model(s), n,
                                                                       seed=s),
                    f"sj.remedies.with_activation(make_model(seed), {name!r}, seed=seed)"))
    change = f"batch norm after each hidden layer (momentum {momentum:g})"
    try:
        remedies.with_batch_norm(base, momentum=momentum)
        out.append((change, lambda s: remedies.with_batch_norm(make_model(s), momentum=momentum),
                    f"sj.remedies.with_batch_norm(make_model(seed), momentum={momentum:g})"))
    except remedies.SequentialOnly as e:
        skipped.append((change, str(e)))
    return out


def _clipping(make_model: Callable[[int], nnx.Module], tx: Any, user: Any, tx_code: str,
              skipped: list[tuple[str, str]]) -> list[_Spec]:
    """Gradient clipping by the global norm: the alias's ``global_clipnorm``, or a chain."""
    change = f"clipping: global_clipnorm={CLIPNORM:g}"
    if user is None:
        clipped = optax.chain(clip_by_global_norm(CLIPNORM), tx)
        code = f"optax.chain(sj.clip_by_global_norm({CLIPNORM:g}), {tx_code})"
    elif any(user.arguments.get(k) is not None
             for k in ("clipvalue", "clipnorm", "global_clipnorm")):
        skipped.append((change, "your optimizer clips its gradients already"))
        return []
    else:
        arguments = {**user.arguments, "global_clipnorm": CLIPNORM}
        clipped = getattr(optimizers, user.name)(**arguments)
        code = _alias_code(user.name, arguments)
    rate = user.arguments["learning_rate"] if user else None
    return [_Spec(Candidate([change], make_model, clipped, _code("make_model(seed)", code),
                            learning_rate=rate if isinstance(rate, int | float) else None),
                  ("user", id(clipped)))]


def _optimizers(make_model: Callable[[int], nnx.Module], tx: Any, user: Any,
                rate: float | None, find: Callable[[str, Callable[[float], Any]], LRFinder],
                skipped: list[tuple[str, str]]) -> list[_Spec]:
    """The user's optimizer at lr_find's rate, then Adam, Nadam and momentum at theirs."""
    specs = []
    if rate is None:
        skipped.append(("optimizer: yours at the rate lr_find suggests",
                        "your optimizer is not a stablejax alias with a constant rate, so "
                        "its rate cannot be set; it is kept as given"))
    else:
        suggestion = find("yours", lambda r: tx).suggestion
        code = _alias_code(user.name, {**user.arguments, "learning_rate": suggestion})
        specs.append(_Spec(Candidate([f"optimizer: yours ({user.name}) at "
                                      f"{suggestion:.3g} (lr_find)"], make_model, tx,
                                     _code("make_model(seed)", code),
                                     learning_rate=suggestion), ("user", id(tx))))
    for label, (name, extra) in OTHERS.items():
        change = f"optimizer: {label} at the rate lr_find suggests"
        if user is not None and user.name == name and all(
                user.arguments.get(k) == v for k, v in extra.items()):
            skipped.append((change, f"your optimizer is {label} already (see above)"))
            continue
        alias = getattr(optimizers, name)
        suggestion = find(label, functools.partial(alias, **extra)).suggestion
        new_tx = alias(suggestion, **extra)
        specs.append(_Spec(Candidate([f"optimizer: {label} at {suggestion:.3g} (lr_find)"],
                                     make_model, new_tx,
                                     _code("make_model(seed)", _alias_code(
                                         name, {"learning_rate": suggestion, **extra})),
                                     learning_rate=suggestion), ("user", id(new_tx))))
    return specs


def _train(specs: list[_Spec], train: tuple, valid: tuple, loss: Loss, epochs: int,
           batch_size: int, seeds: Sequence[int], data_seed: int) -> None:
    """Every group of specs as one sweep: each spec's seeds side by side."""
    groups: dict[tuple[Any, ...], list[_Spec]] = {}
    for spec in specs:
        groups.setdefault(spec.group, []).append(spec)
    for members in groups.values():
        builders = [(spec.candidate.make_model, s) for spec in members for s in seeds]
        rates = [spec.candidate.learning_rate for spec in members for _ in seeds]
        given = [r for r in rates if r is not None]
        runs = sweep.run(functools.partial(_member, builders),
                         members[0].candidate.optimizer, train,
                         seeds=list(range(len(builders))), epochs=epochs,
                         batch_size=batch_size, validation_data=valid, loss=loss,
                         data_seed=data_seed,
                         learning_rates=given if len(given) == len(rates) else None)
        for i, spec in enumerate(members):
            _summarise(spec.candidate, runs[i * len(seeds):(i + 1) * len(seeds)])


def _member(builders: list[tuple[Callable[[int], nnx.Module], int]], i: int) -> nnx.Module:
    """Sweep member ``i``: its candidate's model at its seed."""
    make_model, seed = builders[i]
    return make_model(seed)


def _summarise(candidate: Candidate, runs: list[sweep.SweepRun]) -> None:
    """The mean and spread of the last epoch's validation figures over the seeds."""
    def final(key: str) -> np.ndarray:
        values = np.array([r.history[key][-1] if key in r.history else np.nan
                           for r in runs], float)
        return np.where(np.isfinite(values), values, np.inf if key == "val_loss" else np.nan)

    losses, accuracy = final("val_loss"), final("val_accuracy")
    candidate.val_loss = float(np.mean(losses))
    candidate.val_loss_std = float(np.std(losses, ddof=1)) if np.all(np.isfinite(losses)) \
        else math.inf
    candidate.val_accuracy = float(np.mean(accuracy))
    candidate.val_accuracy_std = float(np.std(accuracy, ddof=1))
    candidate.curve = np.mean([r.history["val_loss"] for r in runs], axis=0)


def _ranked(candidates: list[Candidate]) -> list[Candidate]:
    """By mean validation loss (a diverged candidate, ``inf``, last)."""
    return sorted(candidates, key=lambda c: (c.val_loss if math.isfinite(c.val_loss)
                                             else math.inf))


def _alias_code(name: str, arguments: dict[str, Any]) -> str:
    """``sj.<name>(rate, k=v, ...)`` with the arguments that differ from the defaults."""
    signature = inspect.signature(getattr(optimizers, name))
    parts = [f"{arguments['learning_rate']:.3g}"
             if isinstance(arguments.get("learning_rate"), int | float) else "schedule"]
    for key, value in arguments.items():
        default = signature.parameters[key].default if key in signature.parameters else None
        if key != "learning_rate" and value != default:
            parts.append(f"{key}={value!r}")
    return f"sj.{name}({', '.join(parts)})"


def _code(model_code: str, tx_code: str) -> str:
    """The lines that build the candidate from the user's ``make_model``."""
    return (f"import optax\nimport stablejax as sj\n\nseed = 0\nmodel = {model_code}\n"
            f"optimizer = {tx_code}\n")
