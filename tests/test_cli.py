"""The stablejax command: help, exit codes, a short run, resumption from its checkpoint."""

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
                   "--schedule", "--epochs", "--checkpoint-dir", "--clipnorm", "--patience"):
        assert option in text


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
    assert "val_accuracy" in first and "test: loss" in first
    # Asking for 3 epochs resumes after epoch 2: the first two rows are unchanged.
    assert cli.main(argv(3)) == 0
    second = capsys.readouterr().out
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
    assert err.count("\n") == 1 and "epoch_1" in err


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
