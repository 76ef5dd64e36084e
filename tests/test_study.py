"""The study: the whole report on a tiny budget, its numbers against fit, bad input."""

import os
import re

import numpy as np
import pytest
from matplotlib.image import imread

import stablejax as sj
from stablejax import cli, study

pytestmark = pytest.mark.slow  # the study trains

TINY = study.Budget("tiny", depth=3, width=16, seeds=2, epochs=2, transfer_seeds=2)
FIGURES = ["init_gradients.png", "init_accuracy.png", "clip_loss.png", "optimizers_loss.png",
           "schedules.png", "transfer.png"]


@pytest.fixture
def small_study(monkeypatch):
    """Fewer set-ups per section, each branch of the code still taken: two activation
    set-ups, clipping off and global_clipnorm, two optimizers, a sweep schedule and
    performance scheduling (its own fits). Compiling is most of a section's time."""
    def patch(module, name, value):  # where the section reads it, and its re-export
        monkeypatch.setattr(module, name, value)
        monkeypatch.setattr(study, name, value)

    patch(study.init_section, "INIT_CONFIGS", tuple(
        c for c in study.INIT_CONFIGS if c[0] in ("sigmoid + Glorot", "ELU + He")))
    patch(study.init_section, "ORDERING", tuple(
        (name, labels) for name, labels in study.ORDERING
        if labels[0] in ("sigmoid + Glorot", "ELU + He")))
    patch(study.clip_section, "CLIP_VARIANTS", tuple(
        v for v in study.CLIP_VARIANTS if v[0] in ("no clipping", "global_clipnorm=1")))
    optimizers = study.optimizers_section.optimizer_table()
    monkeypatch.setattr(study.optimizers_section, "optimizer_table",
                        lambda: [optimizers[0], optimizers[-1]])
    patch(study.schedules_section, "SCHEDULES", ("constant", "performance"))


def _rows(text: str, head: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with ``head``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {head} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_check_ordering_against_hand_computed_gaps():
    checks = study.check_ordering([("a", [0.9, 0.8]), ("b", [0.5, 0.5]), ("c", [0.52, 0.6])])
    assert [(c.better, c.worse, c.held) for c in checks] == [("a", "b", True),
                                                            ("b", "c", False)]
    assert checks[0].gap == pytest.approx(0.35)
    # se = sqrt(0.0707^2 / 2 + 0) = 0.05; 0.35 > 2 se: clear.
    assert checks[0].clear
    # gap -0.06, se = sqrt(0.0566^2 / 2) = 0.04: |gap| < 2 se, within noise.
    assert checks[1].gap == pytest.approx(-0.06) and not checks[1].clear


def test_the_whole_study_writes_every_table_and_figure(tmp_path, small_study):
    result = study.run(tmp_path, budget=TINY, progress=False)
    text = (tmp_path / "REPORT.md").read_text()
    assert result.report == os.path.join(tmp_path, "REPORT.md")
    assert [s.key for s in result.sections] == list(study.SECTIONS)
    for figure in FIGURES:
        image = imread(tmp_path / figure)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0  # not a blank canvas
        assert f"]({figure})" in text
    assert len(_rows(text, "configuration")) == 2 * len(study.INIT_CONFIGS)
    assert len(_rows(text, "clipping")) == len(study.CLIP_VARIANTS)
    assert len(_rows(text, "optimizer")) == (len(study.optimizers_section.optimizer_table())
                                             * len(study.RATE_FACTORS))
    assert [r[0] for r in _rows(text, "schedule")] == list(study.SCHEDULES)
    assert len(_rows(text, "model")) == 3
    for word in ("JAX " + __import__("jax").__version__, "wall time", "budget: tiny",
                 "sequential"):
        assert word in text
    steps = len(study.ORDERING) - 1
    assert len(re.findall(rf"\d of {steps} steps of the ordering held", text)) == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".study-")]
    # Every section's finding is in the summary.
    assert len(_rows(result.summary_table(), "section")) == len(study.SECTIONS)


def test_the_report_numbers_are_those_of_fit_and_repeat_with_the_seed(tmp_path, small_study):
    study.run(tmp_path / "a", budget=TINY, sections="clip", progress=False)
    study.run(tmp_path / "b", budget=TINY, sections=["clip"], progress=False)
    first, second = ((tmp_path / d / "REPORT.md").read_text() for d in "ab")
    assert _rows(first, "clipping") == _rows(second, "clipping")

    # The global_clipnorm row, recomputed member by member with fit.
    data = study._training.load_data("digits", None, TINY, 0)
    accuracies = []
    for seed in (0, 1):
        model = sj.nn.mlp([16] * 3, input_shape=(64,), activation="relu", output_size=10,
                          output_activation=None, scan_layers=True,
                          rngs=__import__("flax").nnx.Rngs(seed))
        history = sj.fit(model, sj.sgd(0.1, momentum=0.9, global_clipnorm=1.0), data.train,
                         epochs=2, validation_data=data.valid, loss=study.LOGITS, verbose=0)
        accuracies.append(history.history["val_accuracy"][-1])
    row = dict((r[0], r) for r in _rows(first, "clipping"))["global_clipnorm=1"]
    mean, sd = (float(v) for v in re.findall(r"[\d.]+", row[2])[:2])
    assert mean == pytest.approx(np.mean(accuracies), abs=5e-4)
    assert sd == pytest.approx(np.std(accuracies, ddof=1), abs=5e-4)


def test_a_failing_section_leaves_no_report_and_no_half_written_files(tmp_path, monkeypatch,
                                                                      small_study):
    (tmp_path / "REPORT.md").write_text("an earlier, complete report")

    def broken(ctx):
        raise RuntimeError("interrupted")

    monkeypatch.setitem(study.runner.SECTION_RUNS, "transfer", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        study.run(tmp_path, budget=TINY, sections="clip,transfer", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["REPORT.md"]
    assert (tmp_path / "REPORT.md").read_text() == "an earlier, complete report"


@pytest.mark.parametrize("kwargs, match", [
    ({"sections": "init,warmup"}, "sections must be names from .*'warmup'"),
    ({"sections": ""}, "sections must be names"),
    ({"budget": "medium"}, "budget must be 'quick', 'full'"),
    ({"data": "mnist"}, "data must be 'digits' or 'fashion_mnist'"),
    ({"data": "fashion_mnist"}, "needs data_dir"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments_are_value_errors_naming_them(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        study.run(tmp_path, **kwargs)


def test_a_training_set_too_small_for_transfer_fails_before_training(tmp_path, monkeypatch):
    def must_not_run(ctx):
        raise AssertionError("a section ran")

    monkeypatch.setitem(study.runner.SECTION_RUNS, "clip", must_not_run)
    small = study.Budget("small", depth=2, width=8, seeds=1, epochs=1, transfer_seeds=1,
                         max_train=30)
    # The first 30 images of the seed-0 split hold 1 image of class 3 and none of class 5.
    with pytest.raises(ValueError, match=r"class 3: 1 of 20; class 5: 0 of 20.*max_train"):
        study.run(tmp_path, budget=small, sections="clip,transfer", progress=False)


@pytest.mark.parametrize("field, value", [("depth", 0), ("seeds", 0), ("epochs", 1.5),
                                           ("transfer_samples", 1), ("max_train", 0)])
def test_budget_checks_its_fields(field, value):
    kwargs = dict(name="x", depth=2, width=4, seeds=1, epochs=1, transfer_seeds=1)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        study.Budget(**kwargs)


def test_the_command_runs_the_study_and_prints_the_summary(capsys, tmp_path, monkeypatch,
                                                          small_study):
    monkeypatch.setattr(study, "QUICK", TINY)
    monkeypatch.setattr(study._common, "QUICK", TINY)  # where run reads it
    out = tmp_path / "report"
    assert cli.main(["study", "--only", "clip", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| clip |" in printed and f"report written to {out / 'REPORT.md'}" in printed
    assert "Written by `stablejax study --only clip --out" in (out / "REPORT.md").read_text()
    assert cli.STUDY_SECTIONS == study.SECTIONS


@pytest.mark.parametrize("argv, message", [
    (["study", "--only", "init,bogus"], "expected section names from"),
    (["study", "--quick", "--full"], "not allowed with argument"),
])
def test_bad_study_options_are_parser_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["study", "--data-dir", "x"], "--data-dir only applies with --data fashion_mnist"),
    (["study", "--data", "fashion_mnist"], "needs data_dir"),
])
def test_inconsistent_study_options_exit_2_with_one_line(capsys, argv, message, tmp_path):
    assert cli.main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_an_output_directory_that_cannot_be_written_fails_before_training(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["study", "--out", str(blocker / "study")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is, or is under, a file" in err and len(err.splitlines()) == 1
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert cli.main(["study", "--out", str(locked)]) == 2
        assert "not writable" in capsys.readouterr().err


def test_missing_fashion_mnist_files_exit_2_before_training(capsys, tmp_path):
    code = cli.main(["study", "--data", "fashion_mnist", "--data-dir", str(tmp_path),
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Fashion-MNIST files missing" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "REPORT.md").exists()


def test_fashion_mnist_files_feed_the_study_capped_to_the_budget(tmp_path):
    from test_data import fake_fashion

    fake_fashion(tmp_path, n_train=5300, n_test=50)
    budget = study.Budget("tiny", depth=2, width=8, seeds=2, epochs=1, transfer_seeds=2,
                          max_train=200)
    study.run(tmp_path / "out", data="fashion_mnist", data_dir=tmp_path, budget=budget,
              sections="transfer", progress=False)
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "Fashion-MNIST (28x28)" in text and "200 training, 5000 validation and 50 test" in text
    # The book's pair: sandals (5) against shirts (6).
    assert "tells 5 from 6" in text


def test_optimizer_scores_leave_out_seeds_without_a_value():
    from stablejax.sweep import SweepRun

    def runs(*finals):
        return [SweepRun({"val_accuracy": [0.0, v]}, None, None) for v in finals]

    assert study.optimizers_section.val_score(runs(0.5, np.nan, 0.7)) == pytest.approx(0.6)
    assert study.optimizers_section.val_score(runs(np.nan, np.nan)) == -np.inf
    ranked = sorted({"a": runs(np.nan), "b": runs(0.2), "c": runs(0.9, 0.7)}.items(),
                    key=lambda kv: -study.optimizers_section.val_score(kv[1]))
    assert [k for k, _ in ranked] == ["c", "b", "a"]
