"""The stablejax command: help, exit codes, a short run, resumption from its checkpoint."""

import math
import os
import subprocess
import sys

import numpy as np
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


# stablejax prescribe ------------------------------------------------------------------

MODEL_FILE = '''
from flax import nnx
import stablejax as sj


def make_model(seed):
    return sj.nn.mlp([16], input_shape=(8, 8), rngs=nnx.Rngs(seed))


def wrong_input(seed):
    return sj.nn.mlp([16], input_shape=(28, 28), rngs=nnx.Rngs(seed))


def three_outputs(seed):
    return sj.nn.mlp([16], input_shape=(8, 8), output_size=3, rngs=nnx.Rngs(seed))


def raises(seed):
    raise RuntimeError("no GPU here")


def returns_a_dict(seed):
    return {"seed": seed}


def takes_nothing():
    return make_model(0)


not_callable = 3
'''
OTHER_FILES = {"broken.py": "def make_model(seed)\n    return None\n",
               "crash.py": "import os\nraise RuntimeError('no config')\n"}


@pytest.fixture
def model_dir(tmp_path):
    """A directory holding model.py (MODEL_FILE), OTHER_FILES and a plain file ``file``."""
    (tmp_path / "model.py").write_text(MODEL_FILE)
    for name, text in OTHER_FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "file").write_text("")
    return tmp_path


@pytest.fixture
def no_training(monkeypatch):
    """Any training (a sweep, a learning-rate grid) fails the test."""
    from stablejax import prescription, sweep

    def trained(*args, **kwargs):
        raise AssertionError("training ran")

    monkeypatch.setattr(sweep, "run", trained)
    monkeypatch.setattr(prescription, "lr_find", trained)


def prescribe_fails(capsys, directory, argv, expected):
    """``stablejax prescribe`` with ``argv`` (``{dir}`` is ``directory``): status 2, one
    line naming the problem, nothing printed or written."""
    argv = [a.replace("{dir}", str(directory)) for a in argv]
    out_dir = directory / "out"
    if "--out" not in argv:
        argv += ["--out", str(out_dir)]
    assert cli.main(["prescribe", "--quiet", *argv]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("stablejax prescribe: error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text.replace("{dir}", str(directory)) in err, (text, err)
    assert out == "" and not out_dir.exists()


FORM = "must be FILE.py:FUNCTION or package.module:FUNCTION"
# The --model text, checked before anything is imported.
BAD_SPECS = {
    "no colon": ("{dir}/model.py", ["--model '{dir}/model.py' " + FORM]),
    "no function": ("{dir}/model.py:", ["--model '{dir}/model.py:' " + FORM]),
    "no file": ("{dir}/nothing.py:make_model",
                ["--model '{dir}/nothing.py:make_model': no file '{dir}/nothing.py'"]),
    "a directory": ("{dir}:make_model", ["no file '{dir}'"]),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_prescribe_refuses_a_malformed_model_spec(capsys, model_dir, no_training, case):
    spec, expected = BAD_SPECS[case]
    prescribe_fails(capsys, model_dir, ["--model", spec], expected)


# The file or module, imported: it must import and define a callable of that name.
BAD_SOURCES = {
    "misspelt": ("{dir}/model.py:make_modle",
                 ["'{dir}/model.py' defines no function 'make_modle' (it defines: "
                  "make_model, raises, returns_a_dict, takes_nothing, three_outputs, "
                  "wrong_input)"]),
    "not callable": ("{dir}/model.py:not_callable", ["defines no function 'not_callable'"]),
    "module without it": ("json:make_model", ["'json' defines no function 'make_model'"]),
    "no such module": ("no_such_package.models:make_model",
                       ["importing 'no_such_package.models' raised ModuleNotFoundError: "
                        "No module named 'no_such_package'"]),
    "syntax error": ("{dir}/broken.py:make_model",
                     ["importing '{dir}/broken.py' raised SyntaxError: ", "(line 1)"]),
    "raises on import": ("{dir}/crash.py:make_model",
                         ["importing '{dir}/crash.py' raised RuntimeError: no config (line 2)"]),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_prescribe_refuses_a_model_that_cannot_be_found(capsys, model_dir, no_training, case):
    spec, expected = BAD_SOURCES[case]
    prescribe_fails(capsys, model_dir, ["--model", spec], expected)


# The function, called once as make_model(0), then prescribe's own checks of the model
# against the data and the loss.
BAD_MODELS = {
    "raises": (["--model", "{dir}/model.py:raises"],
               ["--model '{dir}/model.py:raises': make_model(0) raised RuntimeError: "
                "no GPU here"]),
    "takes no seed": (["--model", "{dir}/model.py:takes_nothing"],
                      ["make_model(0) raised TypeError: takes_nothing() takes 0 positional "
                       "arguments but 1 was given"]),
    "not a module": (["--model", "{dir}/model.py:returns_a_dict"],
                     ["make_model(0) must return a flax.nnx.Module, got {'seed': 0} (dict)"]),
    "input shape": (["--model", "{dir}/model.py:wrong_input"],
                    ["batch x of shape (256, 8, 8) does not fit the model"]),
    "too few classes": (["--model", "{dir}/model.py:three_outputs"],
                        ["outputs of shape (256, 3)", "is not a class index in [0, 3)"]),
    "loss": (["--model", "{dir}/model.py:make_model", "--loss", "binary_crossentropy"],
             ["the loss fails on outputs of shape (256, 10) and targets of shape (256,)"]),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_prescribe_refuses_a_model_that_does_not_fit(capsys, model_dir, no_training, case):
    argv, expected = BAD_MODELS[case]
    prescribe_fails(capsys, model_dir, argv, expected)


MODEL = ["--model", "{dir}/model.py:make_model"]
BAD_OPTIONS = {
    "out is a file": ([*MODEL, "--out", "{dir}/file"],
                      ["--out '{dir}/file' is, or is under, a file: give a directory"]),
    "out under a file": ([*MODEL, "--out", "{dir}/file/report"],
                         ["--out '{dir}/file/report' is, or is under, a file"]),
    "data-dir without fashion_mnist": ([*MODEL, "--data-dir", "{dir}"],
                                       ["--data-dir only applies with --data fashion_mnist"]),
    "fashion_mnist without data-dir": ([*MODEL, "--data", "fashion_mnist"],
                                       ["--data fashion_mnist needs --data-dir"]),
    "fashion_mnist files missing": ([*MODEL, "--data", "fashion_mnist", "--data-dir", "{dir}"],
                                    ["Fashion-MNIST files missing: train-images-idx3-ubyte.gz"]),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_prescribe_refuses_options_it_cannot_use(capsys, model_dir, no_training, case):
    argv, expected = BAD_OPTIONS[case]
    prescribe_fails(capsys, model_dir, argv, expected)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--seeds", "1"], "--seeds: expected an integer >= 2, got '1'"),
        (["--budget", "slow"], "--budget: invalid choice: 'slow'"),
        (["--loss", "hinge"], "--loss: invalid choice: 'hinge'"),
        (["--optimizer", "adamw"], "--optimizer: invalid choice: 'adamw'"),
        (["--lr", "0"], "--lr: expected a finite number > 0, got '0'"),
        ([], "the following arguments are required: --model"),
    ],
)
def test_prescribe_bad_arguments_exit_2_with_one_line(capsys, argv, expected):
    model = [] if not argv else ["--model", "model.py:make_model"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prescribe", *model, *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("stablejax prescribe: error: ") and err.count("\n") == 1
    assert expected in err


class Called(Exception):
    """Raised by a stand-in for sj.prescribe once it has recorded its arguments."""


@pytest.mark.parametrize(
    "argv, optimizer, flat",
    [
        ([], ("adam", {"learning_rate": 1e-3}), False),
        (["--optimizer", "momentum", "--lr", "0.01", "--flatten"],
         ("sgd", {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False}), True),
        (["--optimizer", "nesterov", "--lr", "0.5"],
         ("sgd", {"learning_rate": 0.5, "momentum": 0.9, "nesterov": True}), False),
        (["--optimizer", "rmsprop", "--budget", "full", "--seeds", "4", "--batch-size", "64",
          "--seed", "7", "--loss", "sparse_categorical_crossentropy_from_logits"],
         ("rmsprop", {"learning_rate": 1e-3, "rho": 0.9}), False),
    ],
)
def test_prescribe_passes_the_options_to_sj_prescribe(monkeypatch, capsys, model_dir, argv,
                                                      optimizer, flat):
    from stablejax import data, optimizers, prescription

    seen = {}

    def record(make_model, train, **kwargs):
        seen.update(kwargs, make_model=make_model, train=train)
        raise Called

    monkeypatch.setattr(prescription, "prescribe", record)
    with pytest.raises(Called):
        cli.main(["prescribe", "--quiet", "--model", f"{model_dir}/model.py:make_model",
                  "--out", str(model_dir / "out"), *argv])
    options = dict(zip(argv[::2], argv[1::2], strict=False))  # --flatten comes last
    seed = int(options.get("--seed", 0))
    digits = data.digits(seed=seed)  # the command's split: --seed seeds it, as train's
    width = (64,) if flat else (8, 8)
    np.testing.assert_array_equal(seen["train"].x, digits.train.x.reshape(-1, *width))
    np.testing.assert_array_equal(seen["validation_data"].x, digits.valid.x.reshape(-1, *width))
    np.testing.assert_array_equal(seen["validation_data"].y, digits.valid.y)
    assert seen["make_model"](0).layers[1].in_features == 64  # model.py's make_model
    described = optimizers.describe(seen["optimizer"])
    assert described.name == optimizer[0]
    assert optimizer[1].items() <= described.arguments.items()
    assert (seen["loss"], seen["budget"], seen["seeds"], seen["batch_size"], seen["seed"]) == (
        options.get("--loss", "sparse_categorical_crossentropy"),
        options.get("--budget", "quick"), int(options.get("--seeds", 3)),
        int(options.get("--batch-size", 32)), seed)


def test_prescribe_writes_the_report_and_figures_and_prints_the_winner(capsys, model_dir):
    # About a minute on a 2-core CPU: the quick budget, 2 seeds, the bundled digits.
    out = model_dir / "out"
    assert cli.main(["prescribe", "--model", f"{model_dir}/model.py:make_model",
                     "--data", "digits", "--seeds", "2", "--budget", "quick",
                     "--batch-size", "128", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = (out / "REPORT.md").read_text()
    for name in ("lr_find.png", "validation.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in report.splitlines()
            if line.startswith("| ")]
    assert rows[0] == ["rank", "changes", "val loss", "val accuracy", "verdict at init",
                       "clearly better"]
    baseline, candidates = rows[1], rows[2:]
    assert baseline[:2] == ["-", "none (your model and optimizer)"]
    assert [c[0] for c in candidates] == [str(i) for i in range(1, len(candidates) + 1)]
    kinds = {c[1].split(":")[0].split(" after")[0] for c in candidates}
    assert {"activation", "batch norm", "clipping", "optimizer"} <= kinds
    losses = [float(c[2].split(" ± ")[0]) for c in candidates if c[2] != "diverged"]
    assert losses == sorted(losses)  # ranked by validation loss
    # The printed summary is the report's; the baseline trained (below chance, ln 10).
    first = printed.splitlines()[1]
    assert first.startswith("baseline: val loss ") and first in report
    baseline_loss = float(baseline[2].split(" ± ")[0])
    assert f"val loss {baseline[2]}," in first and 0 < baseline_loss < math.log(10)
    assert "best: " in printed or "keep your model" in printed
    code = report.split("```python\n")[1].split("```")[0]
    assert "\n".join("    " + line if line else "" for line in code.splitlines()) in printed
    assert printed.rstrip().splitlines()[-1].startswith(f"report written to {out / 'REPORT.md'}")
