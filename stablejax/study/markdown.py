"""The report's words: each section's Markdown and finding from its measurements, the
header, and the whole ``REPORT.md``.

Nothing here trains or draws; the numbers come from the section modules' results and
the figures' file names from :mod:`stablejax.study.plots`.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from stablejax import __version__
from stablejax.study._common import Budget, Section, sample_sd
from stablejax.study._training import Context, final
from stablejax.study.clip_section import CLIP_LEARNING_RATE, ClipResults
from stablejax.study.init_section import BATCH_NORMS, INIT_OPTIMIZER, InitResults
from stablejax.study.optimizers_section import SHALLOW_DEPTH, OptimizersResults, val_score
from stablejax.study.schedules_section import SCHEDULE_LR0, SchedulesResults
from stablejax.study.transfer_section import TRANSFER_HIDDEN, TRANSFER_RATES, TransferResults


def spread(values: Sequence[float] | np.ndarray) -> str:
    """``mean ± sd`` over seeds, with NaN shown as such.

    >>> spread([0.5, 0.7]), spread([0.5, float("nan")]), spread([float("nan")])
    ('0.600 ± 0.141', '0.500 (1 NaN)', 'NaN')
    """
    x = np.asarray(values, np.float64)
    if not np.all(np.isfinite(x)):
        return f"{np.nanmean(x):.3f} ({int(np.sum(~np.isfinite(x)))} NaN)" \
            if np.any(np.isfinite(x)) else "NaN"
    return f"{x.mean():.3f} ± {sample_sd(x):.3f}"


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table.

    >>> print(table(["a", "b"], [[1, 2]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- init -------------------------------------------------------------------------------


def _init_rows(found: InitResults) -> list[list[Any]]:
    return [[r.label, "yes" if r.batch_norm else "no", r.verdict, f"{r.grad_ratio:.3g}",
             f"{r.forward_ratio:.3g}", f"{r.train_accuracy:.3f}", spread(r.val_accuracy),
             f"{min(r.val_accuracy):.3f} - {max(r.val_accuracy):.3f}"] for r in found.runs]


def _prediction(found: InitResults) -> str:
    top, poor_sick, sick, poor_healthy, healthy = found.foretold()
    return (f"Did the diagnosis at initialisation foretell training? {poor_sick} of the "
            f"{sick} configurations diagnosed vanishing or exploding ended below half "
            f"the best validation accuracy ({top:.3f}), against {poor_healthy} of the "
            f"{healthy} diagnosed healthy.")


def _moving_lag(found: InitResults, budget: Budget, steps_per_epoch: int) -> list[str]:
    """A note on batch-norm configurations that validate far below their training accuracy."""
    lagging = found.lagging()
    if not lagging:
        return []
    steps = budget.epochs * steps_per_epoch
    return [f"With batch norm, {', '.join(lagging)} validated far below their training "
            "accuracy. Training normalises with each batch's statistics, validation with "
            f"the moving ones (momentum 0.99): after {steps} updates these still weigh their "
            f"initial values (mean 0, variance 1) by 0.99^{steps} = {0.99 ** steps:.2g}, and "
            "the error compounds layer after layer (Keras behaves the same). A smaller "
            "momentum or more steps close the gap."]


def _ordering(found: InitResults) -> tuple[list[str], list[str]]:
    """Per batch-norm setting: the ordering's steps as Markdown, and a short finding."""
    verdicts, findings = [], []
    for batch_norm in BATCH_NORMS:
        checks = found.ordering(batch_norm)
        held = sum(c.held for c in checks)
        where = "without" if batch_norm is None else "with"
        lines = [f"- {c.better} > {c.worse}: {'held' if c.held else 'did not hold'} "
                 f"(gap {c.gap:+.3f}, {'clear of' if c.clear else 'within'} seed noise)"
                 for c in checks]
        verdicts.append(f"**{where.capitalize()} batch norm**, {held} of {len(checks)} "
                        "steps of the ordering held:\n\n" + "\n".join(lines))
        findings.append(f"{held}/{len(checks)} {where} BN")
    return verdicts, findings


def init(found: InitResults, ctx: Context, grads: str, accuracy: str) -> Section:
    """The ``init`` section, with the figures ``grads`` and ``accuracy``."""
    budget = ctx.budget
    verdicts, findings = _ordering(found)
    best = found.best()
    text = "\n\n".join([
        f"A plain MLP of {budget.depth} hidden layers of {budget.width} units, each "
        "configuration without and with batch norm after every hidden layer "
        f"(`mlp(batch_norm=\"after\")`), trained {budget.epochs} epochs with "
        f"`{INIT_OPTIMIZER}`, batch {budget.batch_size}, seeds {found.seeds}. The verdict "
        "and ratios are `signal_propagation` on 256 training images at initialisation "
        f"(seed {ctx.seed}): grad ratio = std of the first hidden kernel's gradient over "
        "the last hidden one's; forward ratio = std of the last hidden activation over the "
        "first's; outside [0.1, 10] the signal vanishes or explodes.",
        table(["configuration", "batch norm", "verdict at init", "grad ratio",
               "forward ratio", "train accuracy", "val accuracy", "min - max"],
              _init_rows(found)),
        _prediction(found), *_moving_lag(found, budget, ctx.steps),
        f"![per-layer gradient std]({grads})", f"![validation accuracy]({accuracy})",
        "The guide's ordering for deep nets is SELU > ELU > leaky ReLU (and variants) > "
        "ReLU > tanh > logistic, each with its matched initialiser (the best of leaky "
        "ReLU, RReLU and PReLU stands for the variants). Measured here:",
        *verdicts,
        f"Best configuration: {best.label}{' with batch norm' if best.batch_norm else ''} "
        f"({spread(best.val_accuracy)}). Batch norm raised the mean accuracy by more than "
        f"0.1 for: {', '.join(found.fixed_by_batch_norm()) or 'none'}.",
    ])
    return Section("init", "Initialisation x activation x batch norm", text,
                   [grads, accuracy],
                   f"best {best.label}{' + BN' if best.batch_norm else ''} "
                   f"{np.mean(best.val_accuracy):.3f}; ordering held {', '.join(findings)}")


# --- clip -------------------------------------------------------------------------------


def clip(found: ClipResults, budget: Budget, classes: int, curves: str) -> Section:
    """The ``clip`` section, with the figure ``curves``."""
    rows = [[label, spread(final(runs, "loss")), spread(final(runs, "val_accuracy")),
             int(sum(sum(r.history["skipped"]) for r in runs)),
             f"{found.diverged_count(label)} of {len(runs)}"]
            for label, runs in found.runs.items()]
    none_div, n_none = found.diverged_count("no clipping"), len(found.runs["no clipping"])
    best = found.best()
    best_acc = final(found.runs[best], "val_accuracy")
    text = "\n\n".join([
        f"The deep ReLU + He net of the first section ({budget.depth} x "
        f"{budget.width}) with SGD, momentum 0.9 and a learning rate of "
        f"{CLIP_LEARNING_RATE} (ten times Keras's default), {budget.epochs} epochs of "
        f"{found.steps} steps, seeds {found.seeds}. `fit` and `sweep` skip a step whose "
        "loss or gradients are not finite (counted below); a run *diverged* when its last "
        "epoch's loss is not finite or no better than chance (ln "
        f"{classes} = {math.log(classes):.2f}).",
        table(["clipping", "final training loss", "val accuracy", "skipped steps",
               "diverged"], rows),
        f"![training loss per epoch]({curves})",
        f"Without clipping {none_div} of {n_none} runs diverged. "
        f"Best: {best} ({spread(best_acc)}). `clipvalue` "
        "clips each component and so turns the gradient's direction; `clipnorm` and "
        "`global_clipnorm` keep it and only shorten the step.",
    ])
    return Section("clip", "Gradient clipping", text, [curves],
                   f"no clipping diverged {none_div}/{n_none}; best {best} "
                   f"{np.mean(best_acc):.3f}")


# --- optimizers ---------------------------------------------------------------------------


def optimizers(found: OptimizersResults, budget: Budget, curves: str) -> Section:
    """The ``optimizers`` section, with the figure ``curves``."""
    rows = [[name, f"{rate:g}{' (Keras default)' if rate == o.default else ''}",
             spread(final(group, "loss")), spread(final(group, "val_accuracy"))]
            for name, o in found.optimizers.items() for rate, group in o.by_rate.items()]
    ranking, at_default = found.ranking(at_default=False), found.ranking(at_default=True)
    best = {name: o.best_rate() for name, o in found.optimizers.items()}
    text = "\n\n".join([
        f"A {SHALLOW_DEPTH}-hidden-layer ELU + He net of {budget.width} units, "
        f"{budget.epochs} epochs, batch {budget.batch_size}, seeds {found.seeds}, "
        "each optimizer at a tenth of, at, and at ten times its Keras default learning "
        "rate (momentum 0.9 for momentum and Nesterov; the other hyperparameters at "
        "Keras's defaults). The three rates and all seeds of one optimizer train as one "
        "program.",
        table(["optimizer", "learning rate", "final training loss", "val accuracy"], rows),
        f"![training loss]({curves})",
        "By validation accuracy at the default rate: " + " > ".join(at_default) + ". "
        "At each optimizer's best rate: " + " > ".join(
            f"{k} ({best[k]:g})" for k in ranking) + ".",
    ])
    top = ranking[0]
    return Section("optimizers", "Optimizers", text, [curves],
                   f"best {top} at {best[top]:g}: "
                   f"{val_score(found.optimizers[top].by_rate[best[top]]):.3f}; at defaults "
                   f"{at_default[0]} first")


# --- schedules ----------------------------------------------------------------------------


def schedules(found: SchedulesResults, budget: Budget, curves: str) -> Section:
    """The ``schedules`` section, with the figure ``curves``."""
    rows = [[name, f"{found.rates[name][-1]:.3g}", spread([h["loss"][-1] for h in hs]),
             spread([h["val_accuracy"][-1] for h in hs])]
            for name, hs in found.histories.items()]
    ranking = found.ranking()
    text = "\n\n".join([
        f"The optimizers section's net, SGD with momentum 0.9 from lr0 = {SCHEDULE_LR0} "
        f"(Keras's default), {budget.epochs} epochs of {found.steps} steps "
        f"(T = {found.total}), seeds {found.seeds}. power: lr0 / (1 + t / s), s = T / 4; "
        "exponential: lr0 * 0.1^(t / s), s = T / 2; piecewise: lr0, lr0 / 10 from T / 2, "
        "lr0 / 100 from 3T / 4; performance: `ReduceLROnPlateau` on val_loss, factor 0.5, "
        "patience 1 (one `fit` per seed: the rate depends on each run's validation loss); "
        "1cycle: up to 10 lr0 over 30% of T, then down.",
        table(["schedule", "final learning rate", "final training loss", "val accuracy"],
              rows),
        f"![loss and learning rate]({curves})",
        "By validation accuracy: " + " > ".join(ranking) + ".",
    ])
    final_acc = found.final_accuracy()
    best = ranking[0]
    return Section("schedules", "Learning-rate schedules", text, [curves],
                   f"best {best} {final_acc[best]:.3f}" + (
                       f", constant {final_acc['constant']:.3f}" if best != "constant" else ""))


# --- transfer -----------------------------------------------------------------------------


def _transfer_setup(found: TransferResults) -> str:
    task = found.tasks
    pair, n_b = task.pair, len(task.train_b.x)
    return (
        f"Model A ({'-'.join(map(str, TRANSFER_HIDDEN))} SELU + LeCun, Nadam 1e-3, "
        f"{found.epochs_a} epochs) learns the {len(task.others)} classes other than "
        f"{pair[0]} and {pair[1]}. Model B tells {pair[0]} from {pair[1]} (a sigmoid "
        f"output) with only {n_b} labelled images, batch {found.batch_b}, "
        f"{found.epochs_b} epochs, and is scored on the {len(task.held_b.x)} validation and "
        f"test images of the two classes. B from scratch: the same layers freshly "
        f"initialised, SGD {TRANSFER_RATES['scratch']:g}. B on A: A's hidden layers (a "
        f"copy) and a new head; for {found.frozen} epochs only the head trains (SGD "
        f"{TRANSFER_RATES['frozen']:g}), then everything (SGD "
        f"{TRANSFER_RATES['finetune']:g}) "
        f"(`sj.transfer.freeze_then_finetune`). Seeds {found.seeds} (model A's "
        f"initialisation and B's head); the {n_b} images are drawn once, with the study's "
        "seed.")


def _transfer_finding(found: TransferResults) -> str:
    check, wins, n = found.check(), found.wins(), len(found.seeds)
    if check.clear:
        return f"B on A beat B from scratch in {wins} of {n} seeds, by more than seed noise"
    if check.held:
        return f"B on A was ahead on average ({wins} of {n} seeds), but within seed noise"
    return f"B on A did not beat B from scratch ({wins} of {n} seeds)"


def transfer(found: TransferResults, figure: str) -> Section:
    """The ``transfer`` section, with the figure ``figure``."""
    acc_s, acc_a = found.accuracies()
    err_s, err_a, reduction = found.errors()
    n_b = len(found.tasks.train_b.x)
    rows = [["A (8 classes)", len(found.tasks.train_a.x), found.epochs_b // 2,
             spread(final(found.runs_a, "val_accuracy")), "-"],
            ["B from scratch", n_b, found.epochs_b, spread(acc_s), f"{err_s:.3f}"],
            ["B on A (frozen, then fine-tuned)", n_b, found.epochs_b, spread(acc_a),
             f"{err_a:.3f}"]]
    text = "\n\n".join([
        _transfer_setup(found),
        table(["model", "training images", "epochs", "accuracy", "error rate"], rows),
        f"![transfer]({figure})",
        f"{_transfer_finding(found)}. The error rate went from {err_s:.3f} to {err_a:.3f}"
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
                   f"B on A ahead in {found.wins()}/{len(found.seeds)} seeds")


# --- the report ---------------------------------------------------------------------------


def _timing(ctx: Context) -> list[str]:
    """The sweeps' count and time, and the one sweep measured against sequential runs."""
    n_runs = sum(m for m, _ in ctx.sweeps)
    sweep_s = sum(s for _, s in ctx.sweeps)
    lines = [f"- {n_runs} training runs in {len(ctx.sweeps)} sweeps ({sweep_s:.0f} s), each "
             "sweep one compiled program for all its seeds (and rates)"]
    if ctx.solo is not None:
        what, members, sweep_s1, solo_s = ctx.solo
        lines.append(
            f"- one program against sequential runs, measured on \"{what}\": the sweep of "
            f"{members} runs took {sweep_s1:.1f} s; one of them alone by `fit` took "
            f"{solo_s:.1f} s (both including compilation), so {members} sequential runs "
            f"would take about {members * solo_s:.1f} s ({members * solo_s / sweep_s1:.1f}x)")
    return lines


def header(ctx: Context, sections: list[Section], seconds: float, command: str) -> str:
    """The report's title, set-up (data, budget, versions, device, timing) and summary."""
    device = jax.devices()[0]
    budget = ctx.budget
    lines = [
        "# stablejax study",
        "",
        f"Written by `{command}`. Every number below comes from this run.",
        "",
        f"- data: {ctx.data.description}",
        f"- budget: {budget.name} (depth {budget.depth}, width {budget.width}, "
        f"{budget.seeds} seeds, {budget.epochs} epochs, batch "
        f"{budget.batch_size}; transfer: {budget.transfer_seeds} seeds, "
        f"{budget.transfer_samples} labelled images); study seed {ctx.seed}",
        f"- wall time: {seconds:.0f} s; stablejax {__version__}, JAX {jax.__version__}, "
        f"device {device.platform} ({device.device_kind}), {jax.device_count()} device(s), "
        f"Python {platform.python_version()}",
        *_timing(ctx),
    ]
    lines += ["", "## Summary", "", "| section | finding |", "|---|---|"]
    lines += [f"| [{s.title}](#{s.key}) | {s.finding} |" for s in sections]
    return "\n".join(lines)


def report(ctx: Context, sections: list[Section], seconds: float, command: str) -> str:
    """The whole ``REPORT.md``: the header, then each section under its anchor."""
    parts = [header(ctx, sections, seconds, command)]
    parts += [f'<a id="{s.key}"></a>\n\n## {s.title}\n\n{s.markdown}\n\n'
              f"_Section time: {s.seconds:.0f} s._" for s in sections]
    return "\n\n".join(parts) + "\n"
