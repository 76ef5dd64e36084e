"""The study behind ``stablejax study``: each technique of docs/guide.md, measured.

Five sections, each trained on real data (scikit-learn's bundled digits by default, or
Fashion-MNIST), each a table, one or two PNG figures and a verdict written from the
numbers of the run that wrote them:

- ``init``: initialisation x activation x batch norm on a deep plain MLP: the signal at
  initialisation (:func:`stablejax.diagnostics.signal_propagation`) and the validation
  accuracy after a fixed budget; whether the guide's ordering SELU > ELU > leaky ReLU
  (and variants) > ReLU > tanh > logistic held.
- ``clip``: a deep ReLU net at a learning rate that makes it explode, without clipping
  and with ``clipvalue``, ``clipnorm`` and ``global_clipnorm``.
- ``optimizers``: SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam and Nadam at their
  Keras default rate and at a tenth and ten times it.
- ``schedules``: constant, power, exponential, piecewise, performance (plateau) and
  1cycle learning rates.
- ``transfer``: the model A / model B experiment: B from scratch against B on A's
  layers, frozen first and then fine-tuned.

Runs of one architecture train together as one compiled program
(:func:`stablejax.sweep.run`); the report says how much time that saved. Every input is
standardised with the training set's per-feature mean and standard deviation (SELU's
self-normalisation assumes it; the other activations lose nothing by it). The same
``seed`` gives the same numbers (wall times aside)::

    result = stablejax.study.run("study", budget="quick", sections=["init", "clip"])
    print(result.report)          # study/REPORT.md
    print(result.summary_table())
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

import stablejax as sj
from stablejax import data as sj_data
from stablejax._checks import index, writable_directory
from stablejax.sweep import SweepRun

__all__ = ["SECTIONS", "Budget", "QUICK", "FULL", "Section", "Result", "PairCheck",
           "check_ordering", "run"]

SECTIONS = ("init", "clip", "optimizers", "schedules", "transfer")
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

# Section "init": (label, activation, initialiser name or "normal" for N(0, 1)).
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
# Section "clip": SGD with momentum 0.9 at this rate makes the deep ReLU + He net explode.
CLIP_LEARNING_RATE = 0.1
CLIP_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
                 ("no clipping", {}), ("clipvalue=1", {"clipvalue": 1.0}),
                 ("clipnorm=1", {"clipnorm": 1.0}),
                 ("global_clipnorm=1", {"global_clipnorm": 1.0}))
# Sections "optimizers" and "schedules": a 5-hidden-layer ELU + He net of `width` units.
SHALLOW_DEPTH = 5
RATE_FACTORS = (0.1, 1.0, 10.0)
SCHEDULE_LR0 = 0.01  # SGD with momentum 0.9, as in the guide's schedule examples
# Section "transfer": model B tells these two classes apart; model A learns the others.
TRANSFER_PAIRS = {"digits": (3, 5), "fashion_mnist": (5, 6)}  # Fashion: sandal, shirt
TRANSFER_HIDDEN = (100, 100, 50)
# SGD rates: B from scratch; B on A's head while A's layers are frozen, then everything.
TRANSFER_RATES = {"scratch": 0.01, "frozen": 0.1, "finetune": 0.01}


def _optimizers() -> list[tuple[str, Callable[[float], optax.GradientTransformation], float]]:
    """(name, learning rate -> optimizer, Keras's default rate)."""
    return [
        ("SGD", lambda lr: sj.sgd(lr), 0.01),
        ("momentum", lambda lr: sj.sgd(lr, momentum=0.9), 0.01),
        ("Nesterov", lambda lr: sj.sgd(lr, momentum=0.9, nesterov=True), 0.01),
        ("AdaGrad", lambda lr: sj.adagrad(lr), 0.001),
        ("RMSProp", lambda lr: sj.rmsprop(lr), 0.001),
        ("Adam", lambda lr: sj.adam(lr), 0.001),
        ("Nadam", lambda lr: sj.nadam(lr), 0.001),
    ]


SCHEDULES = ("constant", "power", "exponential", "piecewise", "performance", "1cycle")


def _schedule(name: str, total_steps: int) -> optax.Schedule | float:
    """The learning rate of each schedule over ``total_steps`` updates, from ``lr0``.

    power: ``lr0 / (1 + t / s)`` with ``s = T / 4`` (ends at ``lr0 / 5``); exponential:
    ``lr0 * 0.1 ** (t / s)`` with ``s = T / 2`` (ends at ``lr0 / 100``); piecewise:
    ``lr0``, then ``lr0 / 10`` from ``T / 2`` and ``lr0 / 100`` from ``3 T / 4``;
    1cycle: up to ``10 lr0`` over the first 30%, then down to ``10 lr0 / 25e4``.
    """
    lr0, t = SCHEDULE_LR0, total_steps
    if name == "power":
        return sj.power_decay(lr0, max(t / 4, 1.0))
    if name == "exponential":
        return sj.exponential_decay(lr0, max(t / 2, 1.0))
    if name == "piecewise":
        return sj.piecewise_constant([max(t // 2, 1), max(3 * t // 4, 2)],
                                     [lr0, lr0 / 10, lr0 / 100])
    if name == "1cycle":
        return sj.schedules.one_cycle(10 * lr0, max(t, 2))
    return lr0  # constant; performance scheduling scales it from the epoch's val_loss


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
    """What :func:`run` wrote: the report's path, the sections and the wall time."""

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
    """
    checks = []
    for (a, sa), (b, sb) in zip(ranked, ranked[1:], strict=False):
        xa, xb = np.asarray(sa, np.float64), np.asarray(sb, np.float64)
        gap = float(xa.mean() - xb.mean())
        se = math.sqrt(_sd(xa) ** 2 / len(xa) + _sd(xb) ** 2 / len(xb))
        checks.append(PairCheck(a, b, gap, gap > 0, abs(gap) > 2 * se))
    return checks


def _sd(x: np.ndarray) -> float:
    """Sample standard deviation (0 for one value)."""
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def _spread(values: Sequence[float] | np.ndarray) -> str:
    """``mean ± sd`` over seeds, with NaN shown as such."""
    x = np.asarray(values, np.float64)
    if not np.all(np.isfinite(x)):
        return f"{np.nanmean(x):.3f} ({int(np.sum(~np.isfinite(x)))} NaN)" \
            if np.any(np.isfinite(x)) else "NaN"
    return f"{x.mean():.3f} ± {_sd(x):.3f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- data -------------------------------------------------------------------------------


@dataclass
class _Data:
    name: str
    train: sj_data.Split
    valid: sj_data.Split
    test: sj_data.Split
    classes: int
    description: str


def _load(data: str, data_dir: str | os.PathLike | None, budget: Budget, seed: int) -> _Data:
    """The data set, flattened, capped to ``budget.max_train`` and standardised."""
    if data == "digits":
        splits = sj_data.digits(seed=seed, flatten=True)
        source = "scikit-learn's digits (8x8, bundled)"
    else:
        assert data_dir is not None
        full = sj_data.fashion_mnist(data_dir)
        splits = sj_data.Splits(*(sj_data.Split(s.x.reshape(len(s.x), -1), s.y)
                                  for s in full))
        source = f"Fashion-MNIST (28x28) from {os.fspath(data_dir)}"
    train = splits.train
    if budget.max_train is not None and len(train.x) > budget.max_train:
        train = sj_data.Split(train.x[: budget.max_train], train.y[: budget.max_train])
    mean = train.x.mean(axis=0)
    std = train.x.std(axis=0)
    std[std == 0] = 1.0

    def standardise(split: sj_data.Split) -> sj_data.Split:
        return sj_data.Split(((split.x - mean) / std).astype(np.float32), split.y)

    train, valid, test = (standardise(s) for s in (train, splits.valid, splits.test))
    return _Data(data, train, valid, test, int(max(train.y.max(), valid.y.max()) + 1),
                 f"{source}: {len(train.x)} training, {len(valid.x)} validation and "
                 f"{len(test.x)} test images, inputs standardised per feature")


# --- running ------------------------------------------------------------------------------


@dataclass
class _Context:
    data: _Data
    budget: Budget
    seed: int
    out: str
    tick: Callable[[str], None]
    sweeps: list[tuple[int, float]] = field(default_factory=list)  # (members, seconds)
    solo: tuple[str, int, float, float] | None = None  # (what, members, sweep s, solo s)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.budget.seeds)]

    def sweep(self, what: str, make: Callable[[int], nnx.Module],
              tx: optax.GradientTransformation, seeds: Sequence[int], *,
              train: sj_data.Split | None = None, valid: sj_data.Split | None = None,
              loss: str = LOGITS, epochs: int | None = None,
              batch_size: int | None = None,
              learning_rates: Sequence[float] | None = None) -> list[SweepRun]:
        """Trains ``make(seed)`` for each seed as one program; times it."""
        train = self.data.train if train is None else train
        valid = self.data.valid if valid is None else valid
        epochs = self.budget.epochs if epochs is None else epochs
        batch_size = self.budget.batch_size if batch_size is None else batch_size
        start = time.perf_counter()
        runs = sj.sweep.run(make, tx, train, seeds=seeds, epochs=epochs,
                            batch_size=batch_size, validation_data=valid, loss=loss,
                            data_seed=self.seed, learning_rates=learning_rates)
        seconds = time.perf_counter() - start
        self.sweeps.append((len(runs), seconds))
        if (self.solo is None and learning_rates is None and len(runs) > 1
                and len(self.sweeps) > 1):
            # Once per study (not on the first program, which pays JAX's start-up): the
            # same first member trained alone by fit, compile included.
            start = time.perf_counter()
            sj.fit(make(seeds[0]), tx, train, epochs=epochs, batch_size=batch_size,
                   validation_data=valid, loss=loss, seed=self.seed, verbose=0)
            self.solo = (what, len(runs), seconds, time.perf_counter() - start)
        self.tick(what)
        return runs

    def figure(self, ncols: int = 1, width: float = 6.0, height: float = 4.2):
        """A new Agg figure (no global backend is touched) and its axes."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(width * ncols, height), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, ncols, squeeze=False)[0]
        return fig, list(axes)

    def save(self, fig: Any, name: str) -> str:
        fig.savefig(os.path.join(self.out, name), dpi=90)
        return name


def _initializer(name: str) -> Any:
    if name == "normal":
        return jax.nn.initializers.normal(1.0)
    return getattr(sj.initializers, name)()


def _deep_mlp(ctx: _Context, activation: str, init: str | None, batch_norm: str | None,
              depth: int | None = None) -> Callable[[int], nnx.Module]:
    """``seed -> mlp`` of ``depth`` (default the budget's) hidden layers, logits out."""
    depth = ctx.budget.depth if depth is None else depth
    width, features = ctx.budget.width, ctx.data.train.x.shape[1]
    kernel_init = None if init is None else _initializer(init)

    def make(seed: int) -> nnx.Module:
        return sj.nn.mlp([width] * depth, input_shape=(features,), activation=activation,
                         kernel_init=kernel_init, batch_norm=batch_norm,
                         output_size=ctx.data.classes, output_activation=None,
                         scan_layers=depth > 2, rngs=nnx.Rngs(seed))

    return make


def _final(runs: list[SweepRun], key: str) -> list[float]:
    return [r.history[key][-1] for r in runs]


def _mean_curve(runs: list[SweepRun], key: str) -> np.ndarray:
    return np.mean([r.history[key] for r in runs], axis=0)


def _epochs_axis(ax: Any, n: int) -> None:
    ax.set_xlabel("epoch")
    ax.set_xticks(range(1, n + 1) if n <= 12 else ax.get_xticks())


# --- sections -------------------------------------------------------------------------------


def _section_init(ctx: _Context) -> Section:
    batch = (ctx.data.train.x[:256], ctx.data.train.y[:256])
    rows, curves, scores, train_acc, verdict = [], {}, {}, {}, {}
    for batch_norm in (None, "after"):
        for label, activation, init in INIT_CONFIGS:
            make = _deep_mlp(ctx, activation, init, batch_norm)
            report = sj.diagnostics.signal_propagation(make(ctx.seed), batch, loss=LOGITS)
            runs = ctx.sweep(f"init: {label}{' + BN' if batch_norm else ''}", make,
                             sj.nadam(1e-3), ctx.seeds)
            acc = _final(runs, "val_accuracy")
            scores[label, batch_norm] = acc
            train_acc[label, batch_norm] = float(np.mean(_final(runs, "accuracy")))
            verdict[label, batch_norm] = report.verdict
            curves[label, batch_norm] = [r.kernel_grad_std for r in report.layers
                                         if r.kernel_grad_std is not None]
            rows.append([label, "yes" if batch_norm else "no", report.verdict,
                         f"{report.grad_ratio:.3g}", f"{report.forward_ratio:.3g}",
                         f"{train_acc[label, batch_norm]:.3f}", _spread(acc),
                         f"{min(acc):.3f} - {max(acc):.3f}"])

    fig, axes = ctx.figure(ncols=2)
    for ax, batch_norm in zip(axes, (None, "after"), strict=True):
        for label, _, _ in INIT_CONFIGS:
            stds = np.asarray(curves[label, batch_norm], np.float64)
            stds[~(stds > 0) | ~np.isfinite(stds)] = np.nan
            ax.plot(range(1, len(stds) + 1), stds, marker=".", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("kernel layer (input side first)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("std of dL/dW at initialisation")
        ax.set_title("with batch norm" if batch_norm else "without batch norm")
    axes[0].legend(fontsize=7)
    grads = ctx.save(fig, "init_gradients.png")

    fig, axes = ctx.figure(height=5.0)
    ax, y = axes[0], np.arange(len(INIT_CONFIGS))
    for offset, batch_norm in ((-0.2, None), (0.2, "after")):
        means = [np.mean(scores[c[0], batch_norm]) for c in INIT_CONFIGS]
        sds = [_sd(np.asarray(scores[c[0], batch_norm])) for c in INIT_CONFIGS]
        ax.barh(y + offset, means, 0.4, xerr=sds,
                label="with batch norm" if batch_norm else "without batch norm")
    ax.set_yticks(y, [c[0] for c in INIT_CONFIGS])
    ax.set_xlabel(f"validation accuracy after {ctx.budget.epochs} epochs "
                  f"(mean ± sd over {ctx.budget.seeds} seeds)")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    accuracy = ctx.save(fig, "init_accuracy.png")

    verdicts, findings = [], []
    for batch_norm in (None, "after"):
        ranked = [(name, max((scores[label, batch_norm] for label in labels), key=np.mean))
                  for name, labels in ORDERING]
        checks = check_ordering(ranked)
        held = sum(c.held for c in checks)
        where = "without" if batch_norm is None else "with"
        lines = [f"- {c.better} > {c.worse}: {'held' if c.held else 'did not hold'} "
                 f"(gap {c.gap:+.3f}, {'clear of' if c.clear else 'within'} seed noise)"
                 for c in checks]
        verdicts.append(f"**{where.capitalize()} batch norm**, {held} of {len(checks)} "
                        "steps of the ordering held:\n\n" + "\n".join(lines))
        findings.append(f"{held}/{len(checks)} {where} BN")
    best = max(scores, key=lambda k: np.mean(scores[k]))
    plain = [c[0] for c in INIT_CONFIGS]
    fixed_by_bn = [label for label in plain
                   if np.mean(scores[label, "after"]) - np.mean(scores[label, None]) > 0.1]
    text = "\n\n".join([
        f"A plain MLP of {ctx.budget.depth} hidden layers of {ctx.budget.width} units, each "
        "configuration without and with batch norm after every hidden layer "
        f"(`mlp(batch_norm=\"after\")`), trained {ctx.budget.epochs} epochs with "
        f"`{INIT_OPTIMIZER}`, batch {ctx.budget.batch_size}, seeds {ctx.seeds}. The verdict "
        "and ratios are `signal_propagation` on 256 training images at initialisation "
        f"(seed {ctx.seed}): grad ratio = std of the first hidden kernel's gradient over "
        "the last hidden one's; forward ratio = std of the last hidden activation over the "
        "first's; outside [0.1, 10] the signal vanishes or explodes.",
        _table(["configuration", "batch norm", "verdict at init", "grad ratio",
                "forward ratio", "train accuracy", "val accuracy", "min - max"], rows),
        _prediction(verdict, scores), *_moving_lag(ctx, train_acc, scores),
        f"![per-layer gradient std]({grads})", f"![validation accuracy]({accuracy})",
        "The guide's ordering for deep nets is SELU > ELU > leaky ReLU (and variants) > "
        "ReLU > tanh > logistic, each with its matched initialiser (the best of leaky "
        "ReLU, RReLU and PReLU stands for the variants). Measured here:",
        *verdicts,
        f"Best configuration: {best[0]}{' with batch norm' if best[1] else ''} "
        f"({_spread(scores[best])}). Batch norm raised the mean accuracy by more than 0.1 "
        f"for: {', '.join(fixed_by_bn) or 'none'}.",
    ])
    return Section("init", "Initialisation x activation x batch norm", text,
                   [grads, accuracy],
                   f"best {best[0]}{' + BN' if best[1] else ''} {np.mean(scores[best]):.3f}; "
                   f"ordering held {', '.join(findings)}")


def _prediction(verdict: dict[Any, str], scores: dict[Any, list[float]]) -> str:
    """How well the verdict at initialisation foretold the accuracy after training."""
    top = max(np.mean(s) for s in scores.values())
    poor = {k for k, s in scores.items() if np.mean(s) < top / 2}
    sick = {k for k, v in verdict.items() if v != "healthy"}
    return (f"Did the diagnosis at initialisation foretell training? {len(poor & sick)} of the "
            f"{len(sick)} configurations diagnosed vanishing or exploding ended below half "
            f"the best validation accuracy ({top:.3f}), against {len(poor - sick)} of the "
            f"{len(verdict) - len(sick)} diagnosed healthy.")


def _moving_lag(ctx: _Context, train_acc: dict[Any, float],
                scores: dict[Any, list[float]]) -> list[str]:
    """A note on batch-norm configurations that validate far below their training accuracy."""
    lagging = [label for (label, bn), acc in train_acc.items()
               if bn and acc - np.mean(scores[label, bn]) > 0.3]
    if not lagging:
        return []
    steps = ctx.budget.epochs * sj_data.num_batches(len(ctx.data.train.x),
                                                    ctx.budget.batch_size)
    return [f"With batch norm, {', '.join(lagging)} validated far below their training "
            "accuracy. Training normalises with each batch's statistics, validation with "
            f"the moving ones (momentum 0.99): after {steps} updates these still weigh their "
            f"initial values (mean 0, variance 1) by 0.99^{steps} = {0.99 ** steps:.2g}, and "
            "the error compounds layer after layer (Keras behaves the same). A smaller "
            "momentum or more steps close the gap."]


def _diverged(run: SweepRun, classes: int) -> bool:
    """Diverged: the last epoch's loss is not finite or no better than chance."""
    last = run.history["loss"][-1]
    return not math.isfinite(last) or last >= math.log(classes)


def _section_clip(ctx: _Context) -> Section:
    make = _deep_mlp(ctx, "relu", None, None)
    results = {}
    for label, options in CLIP_VARIANTS:
        tx = sj.sgd(CLIP_LEARNING_RATE, momentum=0.9, **options)
        results[label] = ctx.sweep(f"clip: {label}", make, tx, ctx.seeds)
    steps = sj_data.num_batches(len(ctx.data.train.x), ctx.budget.batch_size)
    rows = []
    for label, runs in results.items():
        rows.append([label, _spread(_final(runs, "loss")), _spread(_final(runs, "val_accuracy")),
                     int(sum(sum(r.history["skipped"]) for r in runs)),
                     f"{sum(_diverged(r, ctx.data.classes) for r in runs)} of {len(runs)}"])
    fig, axes = ctx.figure()
    ax = axes[0]
    for i, (label, runs) in enumerate(results.items()):
        for j, r in enumerate(runs):
            loss = np.asarray(r.history["loss"], np.float64)
            loss[~np.isfinite(loss)] = np.nan
            ax.plot(range(1, len(loss) + 1), loss, color=f"C{i}", marker="o",
                    label=label if j == 0 else None, alpha=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("training loss (epoch mean over finite steps)")
    _epochs_axis(ax, ctx.budget.epochs)
    ax.set_title("deep ReLU + He, SGD momentum 0.9, lr 0.1 (gaps: every step skipped)")
    ax.legend(fontsize=8)
    curves = ctx.save(fig, "clip_loss.png")
    none_div = sum(_diverged(r, ctx.data.classes) for r in results["no clipping"])
    best = max(results, key=lambda k: np.mean(_final(results[k], "val_accuracy")))
    text = "\n\n".join([
        f"The deep ReLU + He net of the first section ({ctx.budget.depth} x "
        f"{ctx.budget.width}) with SGD, momentum 0.9 and a learning rate of "
        f"{CLIP_LEARNING_RATE} (ten times Keras's default), {ctx.budget.epochs} epochs of "
        f"{steps} steps, seeds {ctx.seeds}. `fit` and `sweep` skip a step whose loss or "
        "gradients are not finite (counted below); a run *diverged* when its last "
        "epoch's loss is not finite or no better than chance (ln "
        f"{ctx.data.classes} = {math.log(ctx.data.classes):.2f}).",
        _table(["clipping", "final training loss", "val accuracy", "skipped steps",
                "diverged"], rows),
        f"![training loss per epoch]({curves})",
        f"Without clipping {none_div} of {len(results['no clipping'])} runs diverged. "
        f"Best: {best} ({_spread(_final(results[best], 'val_accuracy'))}). `clipvalue` "
        "clips each component and so turns the gradient's direction; `clipnorm` and "
        "`global_clipnorm` keep it and only shorten the step.",
    ])
    return Section("clip", "Gradient clipping", text, [curves],
                   f"no clipping diverged {none_div}/{len(results['no clipping'])}; best {best} "
                   f"{np.mean(_final(results[best], 'val_accuracy')):.3f}")


def _shallow(ctx: _Context) -> Callable[[int], nnx.Module]:
    return _deep_mlp(ctx, "elu", None, None, depth=SHALLOW_DEPTH)


def _val_score(runs: list[SweepRun]) -> float:
    """The optimizers section's one score: mean final val accuracy over the seeds, a
    seed without one (NaN) left out, -inf when none has one (ranked last)."""
    values = np.asarray(_final(runs, "val_accuracy"), np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else -math.inf


def _section_optimizers(ctx: _Context) -> Section:
    make = _shallow(ctx)
    rows, best_curve, plotted = [], {}, {}
    for name, build, default in _optimizers():
        rates = [default * f for f in RATE_FACTORS]
        seeds = [s for _ in rates for s in ctx.seeds]
        runs = ctx.sweep(f"optimizers: {name}", make, build(default), seeds,
                         learning_rates=[r for r in rates for _ in ctx.seeds])
        n = len(ctx.seeds)
        by_rate = {rate: runs[i * n:(i + 1) * n] for i, rate in enumerate(rates)}
        for rate, group in by_rate.items():
            rows.append([name, f"{rate:g}{' (Keras default)' if rate == default else ''}",
                         _spread(_final(group, "loss")), _spread(_final(group, "val_accuracy"))])
        best_rate = max(rates, key=lambda r: _val_score(by_rate[r]))
        best_curve[name] = (best_rate, by_rate[best_rate])
        plotted[name] = (default, by_rate[default])
    fig, axes = ctx.figure(ncols=2)
    for ax, (title, chosen) in zip(axes, (("at Keras's default rate", plotted),
                                          ("at the best of the three rates", best_curve)),
                                   strict=True):
        for name, (rate, group) in chosen.items():
            ax.plot(range(1, ctx.budget.epochs + 1), _mean_curve(group, "loss"), marker="o",
                    label=f"{name} ({rate:g})")
        ax.set_yscale("log")
        ax.set_ylabel("training loss (mean over seeds)")
        _epochs_axis(ax, ctx.budget.epochs)
        ax.set_title(title)
        ax.legend(fontsize=7)
    curves = ctx.save(fig, "optimizers_loss.png")
    ranking = sorted(best_curve, key=lambda k: -_val_score(best_curve[k][1]))
    at_default = sorted(plotted, key=lambda k: -_val_score(plotted[k][1]))
    text = "\n\n".join([
        f"A {SHALLOW_DEPTH}-hidden-layer ELU + He net of {ctx.budget.width} units, "
        f"{ctx.budget.epochs} epochs, batch {ctx.budget.batch_size}, seeds {ctx.seeds}, "
        "each optimizer at a tenth of, at, and at ten times its Keras default learning "
        "rate (momentum 0.9 for momentum and Nesterov; the other hyperparameters at "
        "Keras's defaults). The three rates and all seeds of one optimizer train as one "
        "program.",
        _table(["optimizer", "learning rate", "final training loss", "val accuracy"], rows),
        f"![training loss]({curves})",
        "By validation accuracy at the default rate: " + " > ".join(at_default) + ". "
        "At each optimizer's best rate: " + " > ".join(
            f"{k} ({best_curve[k][0]:g})" for k in ranking) + ".",
    ])
    top = ranking[0]
    return Section("optimizers", "Optimizers", text, [curves],
                   f"best {top} at {best_curve[top][0]:g}: "
                   f"{_val_score(best_curve[top][1]):.3f}; at defaults "
                   f"{at_default[0]} first")


def _section_schedules(ctx: _Context) -> Section:
    make = _shallow(ctx)
    steps = sj_data.num_batches(len(ctx.data.train.x), ctx.budget.batch_size)
    total = steps * ctx.budget.epochs
    histories: dict[str, list[dict[str, list[float]]]] = {}
    rates: dict[str, np.ndarray] = {}
    for name in SCHEDULES:
        schedule = _schedule(name, total)
        if name == "performance":
            # Performance scheduling reads each epoch's val_loss on the host: one fit per
            # seed (it cannot share one program).
            histories[name] = []
            for seed in ctx.seeds:
                plateau = sj.reduce_on_plateau(factor=0.5, patience=1,
                                               learning_rate=SCHEDULE_LR0)
                tx = sj.sgd(SCHEDULE_LR0, momentum=0.9, plateau=plateau)
                history = sj.fit(make(seed), tx, ctx.data.train, epochs=ctx.budget.epochs,
                                 batch_size=ctx.budget.batch_size,
                                 validation_data=ctx.data.valid, loss=LOGITS,
                                 callbacks=[sj.train.ReduceLROnPlateau("val_loss")],
                                 seed=ctx.seed, verbose=0)
                histories[name].append(history.history)
            ctx.tick(f"schedules: {name}")
            rates[name] = np.repeat(np.mean([h["lr"] for h in histories[name]], axis=0), steps)
        else:
            runs = ctx.sweep(f"schedules: {name}", make,
                             sj.sgd(schedule, momentum=0.9), ctx.seeds)
            histories[name] = [r.history for r in runs]
            rates[name] = (np.asarray(jax.vmap(schedule)(np.arange(total)))
                           if callable(schedule) else np.full(total, schedule))
    rows = [[name, f"{rates[name][-1]:.3g}", _spread([h["loss"][-1] for h in hs]),
             _spread([h["val_accuracy"][-1] for h in hs])] for name, hs in histories.items()]
    fig, axes = ctx.figure(ncols=2)
    for name, hs in histories.items():
        axes[0].plot(range(1, ctx.budget.epochs + 1), np.mean([h["loss"] for h in hs], axis=0),
                     marker="o", label=name)
        axes[1].plot(np.arange(total) / steps, rates[name], label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss (mean over seeds)")
    _epochs_axis(axes[0], ctx.budget.epochs)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("learning rate")
    axes[0].legend(fontsize=8)
    curves = ctx.save(fig, "schedules.png")
    ranking = sorted(histories, key=lambda k: -np.mean([h["val_accuracy"][-1]
                                                        for h in histories[k]]))
    text = "\n\n".join([
        f"The optimizers section's net, SGD with momentum 0.9 from lr0 = {SCHEDULE_LR0} "
        f"(Keras's default), {ctx.budget.epochs} epochs of {steps} steps (T = {total}), "
        f"seeds {ctx.seeds}. power: lr0 / (1 + t / s), s = T / 4; exponential: lr0 * "
        "0.1^(t / s), s = T / 2; piecewise: lr0, lr0 / 10 from T / 2, lr0 / 100 from "
        "3T / 4; performance: `ReduceLROnPlateau` on val_loss, factor 0.5, patience 1 "
        "(one `fit` per seed: the rate depends on each run's validation loss); 1cycle: "
        "up to 10 lr0 over 30% of T, then down.",
        _table(["schedule", "final learning rate", "final training loss", "val accuracy"],
               rows),
        f"![loss and learning rate]({curves})",
        "By validation accuracy: " + " > ".join(ranking) + ".",
    ])
    final = {k: np.mean([h["val_accuracy"][-1] for h in hs]) for k, hs in histories.items()}
    best = ranking[0]
    return Section("schedules", "Learning-rate schedules", text, [curves],
                   f"best {best} {final[best]:.3f}" + (
                       f", constant {final['constant']:.3f}" if best != "constant" else ""))


def _subset(split: sj_data.Split, keep: np.ndarray, labels: np.ndarray) -> sj_data.Split:
    return sj_data.Split(split.x[keep], labels[keep])


def _check_transfer_data(dataset: _Data, budget: Budget) -> None:
    """Before training: model B's two classes need ``transfer_samples // 2`` training
    images each, and model A every other class, in the (``max_train``-capped) set."""
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


def _section_transfer(ctx: _Context) -> Section:
    pair = TRANSFER_PAIRS[ctx.data.name]
    others = [c for c in range(ctx.data.classes) if c not in pair]
    to_a = np.full(ctx.data.classes, -1, np.int32)
    to_a[others] = np.arange(len(others))

    def task_a(split: sj_data.Split) -> sj_data.Split:
        return _subset(split, np.isin(split.y, others), to_a[split.y])

    def task_b(split: sj_data.Split) -> sj_data.Split:
        return _subset(split, np.isin(split.y, pair), (split.y == pair[1]).astype(np.float32))

    rng = np.random.default_rng(ctx.seed)
    train_b = task_b(ctx.data.train)
    per_class = ctx.budget.transfer_samples // 2
    chosen = np.concatenate([rng.permutation(np.flatnonzero(train_b.y == c))[:per_class]
                             for c in (0.0, 1.0)])
    train_b = sj_data.Split(train_b.x[np.sort(chosen)], train_b.y[np.sort(chosen)])
    held_b = task_b(sj_data.Split(np.concatenate([ctx.data.valid.x, ctx.data.test.x]),
                                  np.concatenate([ctx.data.valid.y, ctx.data.test.y])))
    features = ctx.data.train.x.shape[1]
    seeds = [ctx.seed + i for i in range(ctx.budget.transfer_seeds)]

    def make_a(seed: int) -> nnx.Module:
        return sj.nn.mlp(list(TRANSFER_HIDDEN), input_shape=(features,), activation="selu",
                         output_size=len(others), output_activation=None,
                         rngs=nnx.Rngs(seed))

    runs_a = ctx.sweep("transfer: model A", make_a, sj.nadam(1e-3), seeds,
                       train=task_a(ctx.data.train), valid=task_a(ctx.data.valid))
    models_a: dict[int, Any] = dict(zip(seeds, (r.model for r in runs_a), strict=True))

    def head(seed: int) -> nnx.Module:
        return sj.nn.Dense(TRANSFER_HIDDEN[-1], 1, activation="sigmoid",
                           rngs=nnx.Rngs(10_000 + seed))

    def make_scratch(seed: int) -> nnx.Module:
        return sj.nn.mlp(list(TRANSFER_HIDDEN), input_shape=(features,), activation="selu",
                         output_size=1, output_activation="sigmoid", rngs=nnx.Rngs(10_000 + seed))

    def make_on_a(seed: int) -> nnx.Module:
        return sj.transfer.reuse(models_a[seed], head(seed))

    batch_b = min(ctx.budget.batch_size, 8)
    steps_b = sj_data.num_batches(len(train_b.x), batch_b)
    epochs_b, frozen = 2 * ctx.budget.epochs, max(ctx.budget.epochs // 2, 1)
    common: dict[str, Any] = dict(train=train_b, valid=held_b, loss="binary_crossentropy",
                                  epochs=epochs_b, batch_size=batch_b)
    scratch = ctx.sweep("transfer: B from scratch", make_scratch,
                        sj.sgd(TRANSFER_RATES["scratch"]), seeds, **common)
    probe = make_on_a(seeds[0])
    tx = sj.transfer.freeze_then_finetune(
        probe, sj.transfer.not_matching(sj.transfer.reused_paths(models_a[seeds[0]])),
        frozen_steps=frozen * steps_b, first=sj.sgd(TRANSFER_RATES["frozen"]),
        then=sj.sgd(TRANSFER_RATES["finetune"]))
    on_a = ctx.sweep("transfer: B on A", make_on_a, tx, seeds, **common)

    acc_s, acc_a = np.array(_final(scratch, "val_accuracy")), np.array(_final(on_a, "val_accuracy"))
    err_s, err_a = 1 - acc_s.mean(), 1 - acc_a.mean()
    reduction = (err_s - err_a) / err_s if err_s > 0 else float("nan")
    wins = int(np.sum(acc_a > acc_s))
    check = check_ordering([("B on A", acc_a), ("B from scratch", acc_s)])[0]
    rows = [["A (8 classes)", len(task_a(ctx.data.train).x), epochs_b // 2,
             _spread(_final(runs_a, "val_accuracy")), "-"],
            ["B from scratch", len(train_b.x), epochs_b, _spread(acc_s), f"{err_s:.3f}"],
            ["B on A (frozen, then fine-tuned)", len(train_b.x), epochs_b, _spread(acc_a),
             f"{err_a:.3f}"]]
    fig, axes = ctx.figure(ncols=2)
    for label, runs in (("B from scratch", scratch), ("B on A", on_a)):
        axes[0].plot(range(1, epochs_b + 1), _mean_curve(runs, "val_accuracy"), marker="o",
                     label=label)
    axes[0].axvline(frozen + 0.5, color="grey", linestyle=":", label="B on A unfrozen")
    axes[0].set_ylabel("held-out accuracy (mean over seeds)")
    _epochs_axis(axes[0], epochs_b)
    axes[0].legend(fontsize=8)
    axes[1].scatter(acc_s, acc_a)
    low = min(acc_s.min(), acc_a.min()) - 0.02
    axes[1].plot([low, 1], [low, 1], color="grey", linestyle=":")
    axes[1].set_xlabel("B from scratch: accuracy")
    axes[1].set_ylabel("B on A: accuracy")
    axes[1].set_title("one point per seed (above the diagonal: A helped)")
    figure = ctx.save(fig, "transfer.png")
    if check.clear:
        finding = (f"B on A beat B from scratch in {wins} of {len(seeds)} seeds, by more than "
                   "seed noise")
    elif check.held:
        finding = (f"B on A was ahead on average ({wins} of {len(seeds)} seeds), but within "
                   "seed noise")
    else:
        finding = f"B on A did not beat B from scratch ({wins} of {len(seeds)} seeds)"
    text = "\n\n".join([
        f"Model A ({'-'.join(map(str, TRANSFER_HIDDEN))} SELU + LeCun, Nadam 1e-3, "
        f"{ctx.budget.epochs} epochs) learns the {len(others)} classes other than "
        f"{pair[0]} and {pair[1]}. Model B tells {pair[0]} from {pair[1]} (a sigmoid "
        f"output) with only {len(train_b.x)} labelled images, batch {batch_b}, "
        f"{epochs_b} epochs, and is scored on the {len(held_b.x)} validation and test "
        f"images of the two classes. B from scratch: the same layers freshly initialised, "
        f"SGD {TRANSFER_RATES['scratch']:g}. B on A: A's hidden layers (a copy) and a new "
        f"head; for {frozen} epochs only the head trains (SGD "
        f"{TRANSFER_RATES['frozen']:g}), then everything (SGD "
        f"{TRANSFER_RATES['finetune']:g}) "
        f"(`sj.transfer.freeze_then_finetune`). Seeds {seeds} (model A's initialisation "
        f"and B's head); the {len(train_b.x)} images are drawn once, with the study's "
        "seed.",
        _table(["model", "training images", "epochs", "accuracy", "error rate"], rows),
        f"![transfer]({figure})",
        f"{finding}. The error rate went from {err_s:.3f} to {err_a:.3f}"
        + (f": {'a reduction' if reduction >= 0 else 'an increase'} of "
           f"{abs(reduction) * 100:.0f}%" if err_s > 0 else " (B from scratch made no errors)")
        + ". Such gains depend on the set-up: another class "
        "pair, another sample of the few labelled images or other rates can shrink or "
        "reverse them (the guide warns that published gains are often chosen among "
        "many tries); this is one pair and one sample.",
    ])
    return Section("transfer", "Transfer learning", text, [figure],
                   f"error {err_s:.3f} -> {err_a:.3f}"
                   + (f" ({-reduction * 100:+.0f}%)" if err_s > 0 else "") + ", "
                   f"B on A ahead in {wins}/{len(seeds)} seeds")


_SECTIONS: dict[str, Callable[[_Context], Section]] = {
    "init": _section_init,
    "clip": _section_clip,
    "optimizers": _section_optimizers,
    "schedules": _section_schedules,
    "transfer": _section_transfer,
}


def _units(sections: Sequence[str]) -> int:
    """Progress-bar steps: the compiled programs (or groups of fits) the sections train."""
    per = {"init": 2 * len(INIT_CONFIGS), "clip": len(CLIP_VARIANTS),
           "optimizers": len(_optimizers()), "schedules": len(SCHEDULES), "transfer": 3}
    return sum(per[s] for s in sections)


# --- the report ---------------------------------------------------------------------------


def _parse_sections(sections: Sequence[str] | str | None) -> list[str]:
    if sections is None:
        return list(SECTIONS)
    names = sections.split(",") if isinstance(sections, str) else list(sections)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise ValueError(f"sections must be names from {', '.join(SECTIONS)}; got "
                         f"{', '.join(map(repr, unknown)) or 'none'}")
    return [s for s in SECTIONS if s in names]


def _budget(budget: Budget | str) -> Budget:
    if isinstance(budget, Budget):
        return budget
    if budget in ("quick", "full"):
        return QUICK if budget == "quick" else FULL
    raise ValueError(f"budget must be 'quick', 'full' or a Budget, got {budget!r}")


def _header(ctx: _Context, sections: list[Section], seconds: float, command: str) -> str:
    device = jax.devices()[0]
    n_runs = sum(m for m, _ in ctx.sweeps)
    sweep_s = sum(s for _, s in ctx.sweeps)
    lines = [
        "# stablejax study",
        "",
        f"Written by `{command}`. Every number below comes from this run.",
        "",
        f"- data: {ctx.data.description}",
        f"- budget: {ctx.budget.name} (depth {ctx.budget.depth}, width {ctx.budget.width}, "
        f"{ctx.budget.seeds} seeds, {ctx.budget.epochs} epochs, batch "
        f"{ctx.budget.batch_size}; transfer: {ctx.budget.transfer_seeds} seeds, "
        f"{ctx.budget.transfer_samples} labelled images); study seed {ctx.seed}",
        f"- wall time: {seconds:.0f} s; stablejax {sj.__version__}, JAX {jax.__version__}, "
        f"device {device.platform} ({device.device_kind}), {jax.device_count()} device(s), "
        f"Python {platform.python_version()}",
        f"- {n_runs} training runs in {len(ctx.sweeps)} sweeps ({sweep_s:.0f} s), each sweep "
        "one compiled program for all its seeds (and rates)",
    ]
    if ctx.solo is not None:
        what, members, sweep_s1, solo_s = ctx.solo
        lines.append(
            f"- one program against sequential runs, measured on \"{what}\": the sweep of "
            f"{members} runs took {sweep_s1:.1f} s; one of them alone by `fit` took "
            f"{solo_s:.1f} s (both including compilation), so {members} sequential runs "
            f"would take about {members * solo_s:.1f} s ({members * solo_s / sweep_s1:.1f}x)")
    lines += ["", "## Summary", "", "| section | finding |", "|---|---|"]
    lines += [f"| [{s.title}](#{s.key}) | {s.finding} |" for s in sections]
    return "\n".join(lines)


def run(
    out: str | os.PathLike[str] = "study",
    *,
    data: str = "digits",
    data_dir: str | os.PathLike[str] | None = None,
    budget: Budget | str = "quick",
    sections: Sequence[str] | str | None = None,
    seed: int = 0,
    progress: bool = True,
    command: str | None = None,
) -> Result:
    """Runs the study and writes ``REPORT.md`` and its PNG figures into ``out``.

    The files are written into a temporary directory inside ``out`` and moved into
    ``out`` only when every section has finished: a failed or interrupted study leaves
    no report (and no new figures) behind; a finished one replaces the files of an
    earlier study of the same names.

    Args:
      out: the output directory (created if needed; checked writable before training).
      data: ``"digits"`` (bundled) or ``"fashion_mnist"`` (needs ``data_dir``).
      data_dir: the directory of the four Fashion-MNIST IDX files.
      budget: ``"quick"`` (:data:`QUICK`, the default), ``"full"`` (:data:`FULL`) or a
        :class:`Budget`.
      sections: names from :data:`SECTIONS` (a list or a comma-separated string), or
        None for all, run in :data:`SECTIONS`' order.
      seed: the study's seed: the data split, the shuffling and the first
        initialisation seed (configurations use ``seed, seed + 1, ...``).
      progress: show a progress bar (on stderr) over the study's compiled programs.
      command: the command line to quote in the report (default: this call).

    Returns:
      A :class:`Result` with the report's path.

    Raises:
      ValueError: an unknown section, budget or data name, ``fashion_mnist`` without
        ``data_dir``, a bad ``seed``, an ``out`` that cannot be written, or (with the
        transfer section) a training set too small for it; all before any training.
      FileNotFoundError: missing Fashion-MNIST files.
    """
    from tqdm.auto import tqdm

    names = _parse_sections(sections)
    chosen = _budget(budget)
    seed = index("seed", seed, 0)
    if data not in ("digits", "fashion_mnist"):
        raise ValueError(f"data must be 'digits' or 'fashion_mnist', got {data!r}")
    if data == "fashion_mnist" and data_dir is None:
        raise ValueError("data='fashion_mnist' needs data_dir, the directory of its four "
                         "IDX files")
    out = os.fspath(out)
    writable_directory(out, "out")
    dataset = _load(data, data_dir, chosen, seed)
    if "transfer" in names:
        _check_transfer_data(dataset, chosen)
    if command is None:
        command = (f"stablejax.study.run({out!r}, data={data!r}, budget={chosen.name!r}, "
                   f"sections={names}, seed={seed})")

    start = time.perf_counter()
    work = tempfile.mkdtemp(prefix=".study-", dir=out)
    bar = tqdm(total=_units(names), desc="study", unit="program", disable=not progress,
               file=sys.stderr, leave=False)

    def tick(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update()

    ctx = _Context(dataset, chosen, seed, work, tick)
    try:
        done = []
        for name in names:
            t0 = time.perf_counter()
            section = _SECTIONS[name](ctx)
            done.append(replace(section, seconds=time.perf_counter() - t0))
        bar.close()
        seconds = time.perf_counter() - start
        parts = [_header(ctx, done, seconds, command)]
        parts += [f'<a id="{s.key}"></a>\n\n## {s.title}\n\n{s.markdown}\n\n'
                  f"_Section time: {s.seconds:.0f} s._" for s in done]
        with open(os.path.join(work, "REPORT.md"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(parts) + "\n")
        for section in done:
            for figure in section.figures:
                os.replace(os.path.join(work, figure), os.path.join(out, figure))
        os.replace(os.path.join(work, "REPORT.md"), os.path.join(out, "REPORT.md"))
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    return Result(os.path.join(out, "REPORT.md"), done, seconds)
