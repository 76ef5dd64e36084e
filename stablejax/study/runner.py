"""``run``: checks the study's arguments, then for each section measures, draws and
writes, and moves the finished report into place."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from stablejax._checks import index, writable_directory
from stablejax.study import (
    clip_section,
    init_section,
    markdown,
    optimizers_section,
    plots,
    schedules_section,
    transfer_section,
)
from stablejax.study._common import SECTIONS, Budget, Result, Section, named_budget
from stablejax.study._training import Context, load_data


def init(ctx: Context) -> Section:
    """Section ``init``: measured, drawn and written."""
    found = init_section.measure(ctx)
    return markdown.init(found, ctx, plots.init_gradients(found, ctx.out),
                         plots.init_accuracy(found, ctx.out, ctx.budget.epochs))


def clip(ctx: Context) -> Section:
    """Section ``clip``: measured, drawn and written."""
    found = clip_section.measure(ctx)
    return markdown.clip(found, ctx.budget, ctx.data.classes,
                         plots.clip_loss(found, ctx.out, ctx.budget.epochs))


def optimizers(ctx: Context) -> Section:
    """Section ``optimizers``: measured, drawn and written."""
    found = optimizers_section.measure(ctx)
    return markdown.optimizers(found, ctx.budget,
                               plots.optimizers_loss(found, ctx.out, ctx.budget.epochs))


def schedules(ctx: Context) -> Section:
    """Section ``schedules``: measured, drawn and written."""
    found = schedules_section.measure(ctx)
    return markdown.schedules(found, ctx.budget,
                              plots.schedules_curves(found, ctx.out, ctx.budget.epochs))


def transfer(ctx: Context) -> Section:
    """Section ``transfer``: measured, drawn and written."""
    found = transfer_section.measure(ctx)
    return markdown.transfer(found, plots.transfer_accuracy(found, ctx.out))


#: Each section's work, by name; the compiled programs each trains, for the progress bar.
SECTION_RUNS: dict[str, Callable[[Context], Section]] = {
    "init": init, "clip": clip, "optimizers": optimizers, "schedules": schedules,
    "transfer": transfer,
}
PROGRAMS: dict[str, Callable[[], int]] = {
    "init": init_section.programs, "clip": clip_section.programs,
    "optimizers": optimizers_section.programs, "schedules": schedules_section.programs,
    "transfer": transfer_section.programs,
}


def parse_sections(sections: Sequence[str] | str | None) -> list[str]:
    """Section names from a list or a comma-separated string (None: all), in
    :data:`~stablejax.study.SECTIONS`' order.

    Raises ``ValueError`` naming unknown sections, or for none.

    >>> parse_sections("transfer, init")
    ['init', 'transfer']
    """
    if sections is None:
        return list(SECTIONS)
    names = sections.split(",") if isinstance(sections, str) else list(sections)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise ValueError(f"sections must be names from {', '.join(SECTIONS)}; got "
                         f"{', '.join(map(repr, unknown)) or 'none'}")
    return [s for s in SECTIONS if s in names]


def _check_data(data: str, data_dir: str | os.PathLike[str] | None) -> None:
    if data not in ("digits", "fashion_mnist"):
        raise ValueError(f"data must be 'digits' or 'fashion_mnist', got {data!r}")
    if data == "fashion_mnist" and data_dir is None:
        raise ValueError("data='fashion_mnist' needs data_dir, the directory of its four "
                         "IDX files")


def _sections(ctx: Context, names: list[str]) -> list[Section]:
    """Each named section, measured, drawn and written, with its wall time."""
    done = []
    for name in names:
        t0 = time.perf_counter()
        section = SECTION_RUNS[name](ctx)
        done.append(replace(section, seconds=time.perf_counter() - t0))
    return done


def _publish(ctx: Context, done: list[Section], out: str, seconds: float,
             command: str) -> str:
    """Writes the report into ``ctx.out`` (the work directory), then moves the figures
    and the report into ``out``; returns the report's path."""
    with open(os.path.join(ctx.out, "REPORT.md"), "w", encoding="utf-8") as f:
        f.write(markdown.report(ctx, done, seconds, command))
    for section in done:
        for figure in section.figures:
            os.replace(os.path.join(ctx.out, figure), os.path.join(out, figure))
    os.replace(os.path.join(ctx.out, "REPORT.md"), os.path.join(out, "REPORT.md"))
    return os.path.join(out, "REPORT.md")


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
      budget: ``"quick"`` (:data:`~stablejax.study.QUICK`, the default), ``"full"``
        (:data:`~stablejax.study.FULL`) or a :class:`~stablejax.study.Budget`.
      sections: names from :data:`~stablejax.study.SECTIONS` (a list or a
        comma-separated string), or None for all, run in that order.
      seed: the study's seed: the data split, the shuffling and the first
        initialisation seed (configurations use ``seed, seed + 1, ...``).
      progress: show a progress bar (on stderr) over the study's compiled programs.
      command: the command line to quote in the report (default: this call).

    Returns:
      A :class:`~stablejax.study.Result` with the report's path.

    Raises:
      ValueError: an unknown section, budget or data name, ``fashion_mnist`` without
        ``data_dir``, a bad ``seed``, an ``out`` that cannot be written, or (with the
        transfer section) a training set too small for it; all before any training.
      FileNotFoundError: missing Fashion-MNIST files.
      ImportError: matplotlib (the ``plots`` extra) is missing; before any training.
    """
    from tqdm.auto import tqdm

    names = parse_sections(sections)
    chosen = named_budget(budget)
    seed = index("seed", seed, 0)
    _check_data(data, data_dir)
    out = os.fspath(out)
    writable_directory(out, "out")
    plots.check_available()
    dataset = load_data(data, data_dir, chosen, seed)
    if "transfer" in names:
        transfer_section.check_transfer_data(dataset, chosen)
    if command is None:
        command = (f"stablejax.study.run({out!r}, data={data!r}, budget={chosen.name!r}, "
                   f"sections={names}, seed={seed})")

    start = time.perf_counter()
    work = tempfile.mkdtemp(prefix=".study-", dir=out)
    bar = tqdm(total=sum(PROGRAMS[n]() for n in names), desc="study", unit="program",
               disable=not progress, file=sys.stderr, leave=False)

    def tick(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update()

    ctx = Context(dataset, chosen, seed, work, tick)
    try:
        done = _sections(ctx, names)
        bar.close()
        seconds = time.perf_counter() - start
        report = _publish(ctx, done, out, seconds, command)
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    return Result(report, done, seconds)
