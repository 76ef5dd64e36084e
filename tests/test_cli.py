"""The stablejax command: help, exit codes, a short run, resumption from its checkpoint."""

import os
import subprocess
import sys

import pytest

from stablejax import cli

pytestmark = pytest.mark.slow  # every test here trains with fit


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data", "--hidden", "--activation", "--batch-norm", "--optimizer", "--lr",
                   "--schedule", "--epochs", "--checkpoint-dir", "--clipnorm", "--patience",
                   "--boundaries", "--values", "--factor", "--plateau-patience",
                   "--no-compilation-cache"):
        assert option in text
    # The schedules' settings show their defaults.
    text = " ".join(text.split())
    assert "default: 5 15" in text and "default: 0.5" in text and "default: 20" in text


def test_version(capsys):
    import stablejax

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"stablejax {stablejax.__version__}"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--lr", "abc"], "expected a finite number > 0, got 'abc'"),
        (["train", "--epochs", "two"], "expected an integer >= 1, got 'two'"),
        (["train", "--seed", "-3"], "expected an integer >= 0, got '-3'"),
        (["train", "--schedule", "plateau", "--factor", "2"], "expected a number in (0, 1)"),
    ],
)
def test_bad_numbers_say_what_is_expected(capsys, argv, expected):
    with pytest.raises(SystemExit):
        cli.main(argv)
    err = capsys.readouterr().err
    assert expected in err and "_positive" not in err and "_natural" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--decay-epochs", "5"], "--decay-epochs only applies with --schedule power or "
                                  "exponential"),
        (["--schedule", "piecewise", "--decay-epochs", "5"], "--decay-epochs only applies"),
        (["--boundaries", "3"], "--boundaries only applies with --schedule piecewise"),
        (["--schedule", "exponential", "--values", "0.1", "0.01"], "--values only applies"),
        (["--factor", "0.2"], "--factor only applies with --schedule plateau"),
        (["--plateau-patience", "3"], "--plateau-patience only applies"),
        (["--data-dir", "somewhere"], "--data-dir only applies with --data fashion_mnist"),
        (["--schedule", "piecewise", "--boundaries", "3", "--values", "0.1"],
         "--values needs one rate more than --boundaries"),
    ],
)
def test_options_that_would_do_nothing_are_errors(capsys, argv, message):
    assert cli.main(["train", "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_synthetic_data_validates_on_the_same_problem(capsys):
    assert cli.main(["train", "--data", "synthetic", "--hidden", "16", "--epochs", "3",
                     "--lr", "1e-2", "--quiet"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    header = next(r for r in rows if r and r[0] == "epoch")
    last = next(r for r in rows if r and r[0] == "3")
    assert float(last[header.index("val_accuracy")]) > 0.9


def test_a_diverging_run_is_one_line_with_status_1(capsys):
    status = cli.main(["train", "--optimizer", "sgd", "--lr", "10", "--epochs", "1", "--quiet"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "consecutive updates" in err and "epoch 1" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--optimizer", "adamw"],
        ["train", "--lr", "-1"],
        ["train", "--epochs", "0"],
        ["train", "--clipnorm", "1", "--clipvalue", "1"],
        ["train", "--hidden"],
        ["fly"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_missing_fashion_mnist_files_exit_2(capsys, tmp_path):
    assert cli.main(["train", "--data", "fashion_mnist", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err


def test_train_runs_prints_table_and_resumes(capsys, tmp_path):
    def argv(epochs):
        return ["train", "--hidden", "32", "--activation", "selu", "--batch-norm", "after",
                "--optimizer", "nadam", "--lr", "1e-2", "--schedule", "exponential",
                "--epochs", str(epochs), "--batch-size", "128",
                "--checkpoint-dir", str(tmp_path / "run"), "--quiet"]

    assert cli.main(argv(2)) == 0
    first = capsys.readouterr().out
    assert "val_accuracy" in first and "test: loss" in first and "resuming" not in first
    # The same command again says the run is complete and prints its history.
    assert cli.main(argv(2)) == 0
    again = capsys.readouterr().out
    assert "already holds a complete run (2 of 2 epochs)" in again
    # Asking for 3 epochs resumes after epoch 2: the first two rows are unchanged.
    assert cli.main(argv(3)) == 0
    second = capsys.readouterr().out
    assert f"resuming from epoch 3 of 3 in {tmp_path / 'run'}" in second
    rows_first = [line for line in first.splitlines() if line.strip().startswith(("1 ", "2 "))]
    rows_second = [line for line in second.splitlines() if line.strip()[:2] in ("1 ", "2 ", "3 ")]
    assert rows_second[:2] == rows_first and len(rows_second) == 3


def test_console_script_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "stablejax.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "train" in done.stdout


def test_checkpoint_of_another_model_exits_2(capsys, tmp_path):
    base = ["train", "--epochs", "1", "--batch-size", "256", "--quiet",
            "--checkpoint-dir", str(tmp_path / "run")]
    assert cli.main(base + ["--hidden", "16"]) == 0
    capsys.readouterr()
    assert cli.main(base + ["--hidden", "32"]) == 2
    err = capsys.readouterr().err
    # The first line names the checkpoint; the next ones the settings that differ.
    assert "run" in err.splitlines()[0]
    assert "parameters/layers/1/kernel" in err and "hidden" in err
    assert 2 <= err.count("\n") <= 7


def test_resuming_with_another_learning_rate_is_refused(capsys, tmp_path):
    base = ["train", "--hidden", "8", "--epochs", "1", "--batch-size", "256", "--quiet",
            "--checkpoint-dir", str(tmp_path / "run")]
    assert cli.main(base) == 0
    capsys.readouterr()
    assert cli.main([*base[:4], "2", *base[5:], "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "lr" in err and "0.001" in err and "0.5" in err


def test_diagnose_prints_the_table_and_verdict_and_writes_the_figure(capsys, tmp_path):
    argv = ["diagnose", "--hidden", "32", "32", "--activation", "relu", "--batch-size", "128",
            "--plot", str(tmp_path / "signal.png")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "| layers/1 | relu | 64 |" in out and "**healthy**" in out
    assert (tmp_path / "signal.png").read_bytes()[:4] == b"\x89PNG"
    argv = ["diagnose", "--data", "synthetic", "--hidden", *["32"] * 12,
            "--activation", "sigmoid", "--init", "normal"]
    assert cli.main(argv) == 0
    assert "**vanishing**" in capsys.readouterr().out


def test_diagnose_creates_the_plot_directory_as_train_and_study_do(capsys, tmp_path):
    path = tmp_path / "new" / "deeper" / "signal.png"
    argv = ["diagnose", "--hidden", "8", "--batch-size", "16", "--plot", str(path)]
    assert cli.main(argv) == 0
    assert f"figure written to {path}" in capsys.readouterr().out
    assert path.read_bytes()[:4] == b"\x89PNG"


# A --plot path that cannot be written: one line naming the option and the path, status 2,
# before any work (no table printed).
SUFFIX = "must be a file path ending in .png (a PNG is written)"
BAD_PLOTS = {
    "under a file": ("file/signal.png", "--plot '{path}': its directory '{dir}' is, or is "
                                        "under, a file: give a directory"),
    "a directory": ("", "--plot '{path}' " + SUFFIX),
    "another format": ("signal.jpg", "--plot '{path}' " + SUFFIX),
    "no suffix": ("signal", "--plot '{path}' " + SUFFIX),
}


@pytest.mark.parametrize("case", list(BAD_PLOTS))
def test_a_plot_path_that_cannot_be_written_fails_before_the_work(capsys, tmp_path, case):
    (tmp_path / "file").write_text("")
    name, expected = BAD_PLOTS[case]
    path = str(tmp_path / name) if name else str(tmp_path)
    assert cli.main(["diagnose", "--hidden", "8", "--plot", path]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no table: the path is checked before the network is built
    assert err == f"stablejax: error: {expected.format(path=path, dir=os.path.dirname(path))}\n"


@pytest.mark.parametrize(
    "argv",
    [["diagnose", "--init", "ones"], ["diagnose", "--batch-size", "0"],
     ["diagnose", "--data", "fashion_mnist"]],
)
def test_diagnose_bad_arguments_exit_2_with_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_diagnose_batch_larger_than_the_data_exits_2(capsys):
    assert cli.main(["diagnose", "--batch-size", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--batch-size 100000" in err


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_a_checkpoint_dir_that_cannot_be_written_is_one_line_before_training(capsys, tmp_path,
                                                                             where):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker if where == "file" else blocker / "run"
    assert cli.main(["train", "--hidden", "8", "--epochs", "1", "--quiet",
                     "--checkpoint-dir", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "checkpoint_dir" in err and "file" in err and err.count("\n") == 1
    assert "epoch" not in out  # nothing trained
