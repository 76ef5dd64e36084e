"""The ``stablejax`` command: run the study, train a dense network, diagnose one, or
measure which remedy makes your own model train.

Examples::

    stablejax study                       # the quick study on digits, into study/
    stablejax study --full --only init,clip --out study-full

    stablejax train --data digits --hidden 300 100 --activation selu --batch-norm after \\
        --optimizer nadam --lr 1e-3 --schedule exponential --epochs 10 --checkpoint-dir runs/x
    stablejax diagnose --hidden 100 100 100 100 100 --activation sigmoid --init normal \\
        --plot signal.png
    stablejax prescribe --model examples/deep_sigmoid.py:make_model --data digits \\
        --out prescription
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stablejax._extras import require as require_extra

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "nadam")
SCHEDULES = ("constant", "power", "exponential", "piecewise", "plateau")
DECAY_EPOCHS = 20.0  # s of the power and exponential schedules, in epochs
BOUNDARIES = (5, 15)  # epochs where the piecewise schedule drops
FACTOR, PLATEAU_PATIENCE = 0.5, 2  # the plateau schedule's reduction
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "rrelu", "prelu", "elu", "selu")
# "normal" is N(0, 1), the historical choice docs/guide.md starts from.
INITS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
         "lecun_normal", "normal")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(convert: Callable[[str], float], accepts: Callable[[float], bool],
            expected: str) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)`` when ``accepts`` it, else an error that says
    what is expected (not the parser function's name)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
_natural = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: 0 < v < math.inf, "a finite number > 0")
_fraction = _number(float, lambda v: 0 < v < 1, "a number in (0, 1)")
STUDY_SECTIONS = ("init", "clip", "optimizers", "schedules", "transfer")


def _sections(text: str) -> list[str]:
    """An argparse type: comma-separated study section names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STUDY_SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected section names from {','.join(STUDY_SECTIONS)}, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (``stablejax --help``)."""
    from stablejax import __version__

    parser = _Parser(
        prog="stablejax",
        description="Train deep networks stably in pure JAX: matched initialisation, "
        "non-saturating activations, batch norm, clipping, Keras-exact optimizers and "
        "learning-rate schedules.",
    )
    parser.add_argument("--version", action="version", version=f"stablejax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(commands)
    _add_study(commands)
    _add_diagnose(commands)
    _add_prescribe(commands)
    return parser


def _add_train(commands: Any) -> None:
    """The ``train`` command's options."""
    train = commands.add_parser(
        "train",
        help="train a dense network and print its per-epoch history",
        description="Train a dense network (the Fashion-MNIST model family of docs/guide.md) and "
        "print a progress bar per epoch and a final table.",
    )
    train.add_argument("--data", choices=("digits", "fashion_mnist", "synthetic"),
                       default="digits", help="data set (default: digits, bundled)")
    train.add_argument("--data-dir", default=None,
                       help="directory of the four Fashion-MNIST IDX .gz files "
                            "(only with --data fashion_mnist)")
    _add_model_options(train)
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="nadam",
                       help="optimizer (default: nadam)")
    train.add_argument("--lr", type=_positive_float, default=1e-3,
                       help="initial learning rate (default: 1e-3)")
    train.add_argument("--schedule", choices=SCHEDULES, default="constant",
                       help="learning-rate schedule (default: constant)")
    train.add_argument("--decay-epochs", type=_positive_float, default=None,
                       help="s of the power and exponential schedules, in epochs "
                            f"(default: {DECAY_EPOCHS:g})")
    train.add_argument("--boundaries", type=_positive_int, nargs="+", default=None,
                       metavar="EPOCH", help="epochs where the piecewise schedule drops "
                       f"(default: {' '.join(map(str, BOUNDARIES))})")
    train.add_argument("--values", type=_positive_float, nargs="+", default=None,
                       metavar="LR", help="the piecewise schedule's rates, one more than "
                       "the boundaries (default: lr, lr/2, lr/10)")
    train.add_argument("--factor", type=_fraction, default=None,
                       help=f"plateau: multiply the rate by this (default: {FACTOR:g})")
    train.add_argument("--plateau-patience", type=_positive_int, default=None,
                       help="plateau: epochs without improvement of val_loss before a "
                            f"reduction (default: {PLATEAU_PATIENCE})")
    clip = train.add_mutually_exclusive_group()
    clip.add_argument("--clipvalue", type=_positive_float, help="clip each gradient value")
    clip.add_argument("--clipnorm", type=_positive_float, help="clip each tensor's L2 norm")
    clip.add_argument("--global-clipnorm", type=_positive_float, help="clip the global norm")
    train.add_argument("--epochs", type=_positive_int, default=10, help="epochs (default: 10)")
    train.add_argument("--batch-size", type=_positive_int, default=32,
                       help="batch size (default: 32)")
    train.add_argument("--patience", type=_positive_int, default=None,
                       help="early stopping on val_loss after this many epochs, best restored")
    train.add_argument("--checkpoint-dir", default=None,
                       help="save every epoch here; resume if it holds a checkpoint")
    train.add_argument("--seed", type=_natural, default=0, help="random seed (default: 0)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--no-compilation-cache", action="store_true",
                       help="do not read or write compiled programs in the cache directory "
                            "($STABLEJAX_CACHE_DIR, default ~/.cache/stablejax/jax)")
    train.add_argument("--devices", type=_positive_int, default=None, metavar="N",
                       help="train data-parallel on the first N devices (the batch size is "
                            "global, a multiple of N); on the CPU, simulate N with "
                            "XLA_FLAGS=--xla_force_host_platform_device_count=N")
    train.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="join a run of several processes whose process 0 serves the "
                            "coordinator at HOST:PORT (with --num-processes, --process-id); "
                            "every device of every process trains data-parallel")
    train.add_argument("--num-processes", type=_positive_int, default=None, metavar="N",
                       help="processes in the run (with --coordinator)")
    train.add_argument("--process-id", type=_natural, default=None, metavar="I",
                       help="this process's index in [0, N) (with --coordinator)")


def _add_study(commands: Any) -> None:
    """The ``study`` command's options."""
    study = commands.add_parser(
        "study",
        help="measure what each technique does and write a report with figures",
        description="Train the study's configurations (initialisation x activation x "
        "batch norm, clipping, optimizers, schedules, transfer learning) and write "
        "REPORT.md and PNG figures into --out; print the summary.",
    )
    size = study.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="budget", const="quick",
                      help="the default: about 3 minutes on a 2-core CPU with the digits")
    size.add_argument("--full", action="store_const", dest="budget", const="full",
                      help="deeper nets, more seeds and epochs")
    study.set_defaults(budget="quick")
    study.add_argument("--only", type=_sections, default=None, metavar="SECTIONS",
                       help="comma-separated sections to run, from "
                            f"{','.join(STUDY_SECTIONS)} (default: all)")
    study.add_argument("--out", default="study",
                       help="directory for REPORT.md and the figures (default: study)")
    study.add_argument("--data", choices=("digits", "fashion_mnist"), default="digits",
                       help="data set (default: digits, bundled)")
    study.add_argument("--data-dir", default=None,
                       help="directory of the four Fashion-MNIST IDX .gz files "
                            "(only with --data fashion_mnist)")
    study.add_argument("--seed", type=_natural, default=0, help="study seed (default: 0)")
    study.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_diagnose(commands: Any) -> None:
    """The ``diagnose`` command's options."""
    diagnose = commands.add_parser(
        "diagnose",
        help="measure how a fresh network's signal and gradients propagate",
        description="Build a freshly initialised dense network, run one forward and one "
        "backward pass on one batch, and print per-layer statistics and a verdict "
        "(vanishing, exploding or healthy) with the fix.",
    )
    diagnose.add_argument("--data", choices=("digits", "synthetic"), default="digits",
                          help="data set, standardised per feature (default: digits)")
    _add_model_options(diagnose)
    diagnose.add_argument("--batch-size", type=_positive_int, default=256,
                          help="samples in the batch (default: 256)")
    diagnose.add_argument("--seed", type=_natural, default=0, help="random seed (default: 0)")
    diagnose.add_argument("--plot", default=None, metavar="PATH",
                          help="write the forward/backward figure to this PNG file (its "
                               "directory is created if missing)")


def _add_prescribe(commands: Any) -> None:
    """The ``prescribe`` command's options."""
    from stablejax.losses import LOSSES  # the pure core: no Flax, no data

    prescribe = commands.add_parser(
        "prescribe",
        help="measure which of the recipe's remedies makes your own model train",
        description="Diagnose make_model(seed) at initialisation, train it and one "
        "candidate per remedy (matched init, activations, batch norm, clipping, "
        "optimizers at lr_find's rates) over seeds, rank them by validation loss, write "
        "REPORT.md and figures into --out and print the verdict and the winner's code.",
    )
    prescribe.add_argument("--model", required=True, metavar="FILE.py:FUNCTION",
                           help="the function make_model(seed) -> nnx.Module, in a file "
                                "(path/to/file.py:make_model) or a module "
                                "(package.module:make_model)")
    prescribe.add_argument("--data", choices=("digits", "fashion_mnist"), default="digits",
                           help="data set: trains on its train split, validates on its "
                                "valid split (default: digits, bundled)")
    prescribe.add_argument("--data-dir", default=None,
                           help="directory of the four Fashion-MNIST IDX .gz files "
                                "(only with --data fashion_mnist)")
    prescribe.add_argument("--flatten", action="store_true",
                           help="pass images as vectors (64 or 784 features; default: "
                                "as the data set gives them, 8x8 or 28x28)")
    prescribe.add_argument("--loss", choices=tuple(LOSSES),
                           default="sparse_categorical_crossentropy",
                           help="loss of the model's outputs and the labels (default: "
                                "sparse_categorical_crossentropy, for softmax outputs)")
    prescribe.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                           help="your optimizer, the baseline's (default: adam)")
    prescribe.add_argument("--lr", type=_positive_float, default=1e-3,
                           help="its learning rate (default: 1e-3)")
    prescribe.add_argument("--budget", choices=("quick", "full"), default="quick",
                           help="quick: 5 epochs per candidate; full: 20 (default: quick)")
    prescribe.add_argument("--seeds", type=_number(int, lambda v: v >= 2, "an integer >= 2"),
                           default=3, help="model seeds per candidate (default: 3)")
    prescribe.add_argument("--batch-size", type=_positive_int, default=32,
                           help="batch size (default: 32)")
    prescribe.add_argument("--seed", type=_natural, default=0,
                           help="first model seed and shuffling seed (default: 0)")
    prescribe.add_argument("--out", default="prescription",
                           help="directory for REPORT.md and the figures "
                                "(default: prescription)")
    prescribe.add_argument("--quiet", action="store_true",
                           help="print the result only, not what is being measured")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The network's options, shared by ``train`` and ``diagnose``."""
    parser.add_argument("--hidden", type=_positive_int, nargs="+", default=[300, 100],
                        help="hidden layer sizes (default: 300 100)")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="elu",
                        help="hidden activation (default: elu)")
    parser.add_argument("--init", default=None, choices=INITS,
                        help="kernel initialiser (default: matched to the activation; "
                             "normal: N(0, 1))")
    parser.add_argument("--batch-norm", choices=("none", "after", "before"), default="none",
                        help="batch normalisation placement (default: none)")


def _optimizer(args, steps_per_epoch: int):
    from stablejax import plateau, schedules

    s = (args.decay_epochs or DECAY_EPOCHS) * steps_per_epoch
    boundaries = args.boundaries or BOUNDARIES
    values = args.values or [args.lr, args.lr / 2, args.lr / 10]
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"--values needs one rate more than --boundaries: got {len(values)} "
                         f"rates for {len(boundaries)} boundaries")
    schedule = {
        "constant": args.lr,
        "power": lambda: schedules.power_decay(args.lr, s),
        "exponential": lambda: schedules.exponential_decay(args.lr, s),
        "piecewise": lambda: schedules.piecewise_constant(
            [b * steps_per_epoch for b in boundaries], values),
        "plateau": args.lr,
    }[args.schedule]
    schedule = schedule() if callable(schedule) else schedule
    common = dict(clipvalue=args.clipvalue, clipnorm=args.clipnorm,
                  global_clipnorm=args.global_clipnorm)
    if args.schedule == "plateau":
        common["plateau"] = plateau.reduce_on_plateau(
            factor=args.factor or FACTOR, patience=args.plateau_patience or PLATEAU_PATIENCE,
            learning_rate=args.lr)
    return _alias(args.optimizer, schedule, **common)


def _alias(name: str, learning_rate: Any, **common: Any):
    """The ``--optimizer`` choice ``name`` at ``learning_rate``."""
    from stablejax import optimizers

    if name == "momentum":
        return optimizers.sgd(learning_rate, momentum=0.9, **common)
    if name == "nesterov":
        return optimizers.sgd(learning_rate, momentum=0.9, nesterov=True, **common)
    return getattr(optimizers, name)(learning_rate, **common)


def _load(args):
    from stablejax import data

    if args.data == "digits":
        return data.digits(seed=args.seed), (8, 8), 10
    if args.data == "fashion_mnist":
        if args.data_dir is None:
            raise ValueError("--data fashion_mnist needs --data-dir with the four IDX files")
        return data.fashion_mnist(args.data_dir), (28, 28), 10
    splits = data.synthetic_splits(2000, 500, 500, num_classes=4, seed=args.seed)
    return splits, (splits.train.x.shape[1],), 4


def _table(history: dict[str, list[float]]) -> str:
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "skipped")
            if k in history]
    rows = [["epoch", *keys]]
    for i in range(len(history[keys[0]])):
        rows.append([str(i + 1)] + [f"{history[k][i]:.4g}" for k in keys])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True))
                     for r in rows)


def _unused_option(args: argparse.Namespace) -> str | None:
    """The first given option that the chosen settings would ignore, as an error."""
    unused = [
        ("--decay-epochs", args.decay_epochs, "--schedule power or exponential",
         args.schedule in ("power", "exponential")),
        ("--boundaries", args.boundaries, "--schedule piecewise", args.schedule == "piecewise"),
        ("--values", args.values, "--schedule piecewise", args.schedule == "piecewise"),
        ("--factor", args.factor, "--schedule plateau", args.schedule == "plateau"),
        ("--plateau-patience", args.plateau_patience, "--schedule plateau",
         args.schedule == "plateau"),
        ("--data-dir", args.data_dir, "--data fashion_mnist", args.data == "fashion_mnist"),
    ]
    for option, value, needs, applies in unused:
        if value is not None and not applies:
            return f"{option} only applies with {needs}"
    return None


def _short(error: Exception, lines: int = 6) -> str:
    """An error's message cut to its first ``lines`` lines, with a count of the rest."""
    text = str(error).splitlines()
    rest = len(text) - lines
    return "\n".join(text[:lines] + ([f"  ... and {rest} more lines"] if rest > 0 else []))


def _one_line(error: Exception) -> str:
    """An error's message on one line: its first, with ``...`` when more follow."""
    text = str(error).splitlines() or [type(error).__name__]
    return text[0] + (" ..." if len(text) > 1 else "")


def _run_config(args: argparse.Namespace) -> dict:
    """The options that define a run, saved with its checkpoints: a resume must match."""
    ignored = {"command", "epochs", "quiet", "no_compilation_cache", "checkpoint_dir",
               "devices", "coordinator", "num_processes", "process_id"}
    return {key: value for key, value in sorted(vars(args).items()) if key not in ignored}


def train_command(args: argparse.Namespace) -> int:
    """Runs ``stablejax train``; returns the exit status.

    A bad configuration (an option the settings ignore, an argument the library
    rejects, missing data files, scikit-learn missing for the digits, a checkpoint
    directory of another model) is a short error with status 2; a run that diverges
    (``NonFiniteError``) is one line with status 1. A checkpoint directory that already
    holds the run says so and continues it (or prints its history when it is complete).
    """

    from stablejax import checkpoint, train
    from stablejax.compilation_cache import enable

    unused = _unused_option(args)
    if unused is not None:
        print(f"stablejax: error: {unused}", file=sys.stderr)
        return 2
    try:
        mesh = _mesh(args)  # first: joining other processes must precede any computation
    except (ValueError, TimeoutError) as error:
        print(f"stablejax: error: {error}", file=sys.stderr)
        return 2
    if not args.no_compilation_cache:
        enable()  # before the model is built: its initialisers compile too
    try:
        splits, model, tx, callbacks = _setup(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"stablejax: error: {error}", file=sys.stderr)
        return 2
    if args.checkpoint_dir is not None:
        done = checkpoint.latest_epoch(args.checkpoint_dir)
        if done is not None and done >= args.epochs:
            print(f"{args.checkpoint_dir} already holds a complete run ({done} of "
                  f"{args.epochs} epochs): its history follows")
        elif done is not None:
            print(f"resuming from epoch {done + 1} of {args.epochs} in {args.checkpoint_dir}")
    try:
        history = train.fit(
            model,
            tx,
            splits.train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_data=splits.valid,
            loss="sparse_categorical_crossentropy_from_logits",
            callbacks=callbacks,
            checkpoint_dir=args.checkpoint_dir,
            seed=args.seed,
            verbose=0 if args.quiet else 1,
            compilation_cache=not args.no_compilation_cache,
            run_config=_run_config(args),
            mesh=mesh,
        )
    except ValueError as error:  # another run's checkpoint (CheckpointError is one too)
        print(f"stablejax: error: {_short(error)}", file=sys.stderr)
        return 2
    except train.NonFiniteError as error:
        print(f"stablejax: error: {error}", file=sys.stderr)
        return 1
    print(_table(history.history))
    test = train.evaluate(model, history.state, splits.test,
                             loss="sparse_categorical_crossentropy_from_logits")
    print(f"test: loss {test['loss']:.4g}  accuracy {test['accuracy']:.4g}")
    return 0


def _mesh(args: argparse.Namespace) -> Any:
    """The ``--devices`` / ``--coordinator`` mesh, or None; joins the other processes."""
    several = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in several) and any(v is None for v in several):
        raise ValueError("--coordinator, --num-processes and --process-id go together")
    if args.coordinator is None and args.devices is None:
        return None
    from stablejax import distributed

    if args.coordinator is not None:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    import jax

    devices = jax.devices()
    if args.devices is not None and len(devices) < args.devices:
        raise ValueError(
            f"--devices {args.devices} but JAX sees {len(devices)} {devices[0].platform} "
            f"device(s); on the CPU set XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{args.devices} in the environment before starting")
    return distributed.data_mesh(devices[:args.devices])


def _setup(args):

    from stablejax import callbacks as callbacks_
    from stablejax import data, train

    splits, input_shape, classes = _load(args)
    steps_per_epoch = data.num_batches(len(splits.train.x), args.batch_size)
    model = _model(args, input_shape, classes)
    callbacks: list[callbacks_.Callback] = []
    if args.schedule == "plateau":
        callbacks.append(train.ReduceLROnPlateau("val_loss"))
    if args.patience is not None:
        callbacks.append(train.EarlyStopping("val_loss", patience=args.patience,
                                                restore_best_weights=True))
    return splits, model, _optimizer(args, steps_per_epoch), callbacks


def _model(args: argparse.Namespace, input_shape: tuple[int, ...], classes: int):
    """A freshly initialised ``mlp`` from the model options, ending in logits."""
    import jax
    from flax import nnx

    from stablejax import initializers, nn

    kernel_init: initializers.Initializer | None = None
    if args.init == "normal":
        kernel_init = jax.nn.initializers.normal(1.0)
    elif args.init is not None:
        kernel_init = getattr(initializers, args.init)()
    return nn.mlp(
        args.hidden,
        input_shape=input_shape,
        activation=args.activation,
        kernel_init=kernel_init,
        batch_norm=None if args.batch_norm == "none" else args.batch_norm,
        output_size=classes,
        output_activation=None,
        rngs=nnx.Rngs(args.seed),
    )


def _diagnose_batch(args: argparse.Namespace):
    """One standardised batch ``(x, y)``, the input shape and the number of classes."""
    import numpy as np

    from stablejax import data

    input_shape: tuple[int, ...] = (8, 8)
    if args.data == "digits":
        split, classes = data.digits(seed=args.seed).train, 10
        if args.batch_size > len(split.x):
            raise ValueError(f"--batch-size {args.batch_size} exceeds the {len(split.x)} "
                             "digits training images")
    else:
        split = data.synthetic_classification(args.batch_size, num_classes=4, seed=args.seed)
        input_shape, classes = (split.x.shape[1],), 4
    x = split.x[: args.batch_size].reshape(args.batch_size, -1)
    std = x.std(axis=0)
    # Constant features (the digits' blank border pixels) are centred, not scaled.
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return (x.reshape(-1, *input_shape), split.y[: args.batch_size]), input_shape, classes


def diagnose_command(args: argparse.Namespace) -> int:
    """Runs ``stablejax diagnose``; returns the exit status.

    A bad configuration (a batch larger than the data, a ``--plot`` path that is not a
    ``.png`` file in a writable directory, ``--plot`` without matplotlib, the digits
    without scikit-learn) is a one-line error with status 2, before the network is
    built; ``--plot``'s directory is created if missing, as ``train`` and ``study``
    create theirs.
    """
    from stablejax import diagnostics

    try:
        if args.plot is not None:  # before the work, not after the table
            require_extra("matplotlib", "diagnose --plot")
            diagnostics.check_plot_path(args.plot, "--plot")
        batch, input_shape, classes = _diagnose_batch(args)
        model = _model(args, input_shape, classes)
        report = diagnostics.signal_propagation(
            model, batch, loss="sparse_categorical_crossentropy_from_logits")
    except (ValueError, ImportError) as error:
        print(f"stablejax: error: {error}", file=sys.stderr)
        return 2
    print(report.to_markdown())
    if args.plot is not None:
        report.plot(args.plot)
        print(f"figure written to {args.plot}")
    return 0


def study_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Runs ``stablejax study``; returns the exit status.

    A bad configuration (``--data-dir`` without Fashion-MNIST or the reverse, an output
    directory that cannot be written, missing data files, matplotlib or, for the digits,
    scikit-learn missing) is a one-line error with status 2, before any training.
    """
    from stablejax import study
    from stablejax.compilation_cache import enable

    if args.data_dir is not None and args.data != "fashion_mnist":
        print("stablejax: error: --data-dir only applies with --data fashion_mnist",
              file=sys.stderr)
        return 2
    enable()
    try:
        require_extra("matplotlib", "stablejax study")  # its figures, written at the end
        result = study.run(args.out, data=args.data, data_dir=args.data_dir,
                           budget=args.budget, sections=args.only, seed=args.seed,
                           progress=not args.quiet,
                           command=" ".join(["stablejax", *argv]))
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"stablejax: error: {error}", file=sys.stderr)
        return 2
    print(result.summary_table())
    print(f"report written to {result.report} ({result.seconds:.0f} s)")
    return 0


def _prescribe_checks(args: argparse.Namespace) -> None:
    """What can be checked before anything heavy is imported; ValueError if not."""
    from stablejax import model_file

    model_file.split(args.model, "--model")
    if (args.data_dir is None) != (args.data != "fashion_mnist"):
        raise ValueError("--data-dir only applies with --data fashion_mnist"
                         if args.data_dir is not None else
                         "--data fashion_mnist needs --data-dir with the four IDX files")
    path = os.path.abspath(args.out)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ValueError(f"--out {args.out!r} is, or is under, a file: give a directory")


def _prescribe_setup(args: argparse.Namespace) -> tuple[Callable[[int], Any], Any]:
    """The checked ``make_model`` and the data's train and valid splits."""
    from flax import nnx

    from stablejax import model_file
    from stablejax._checks import describe

    make_model = model_file.load(args.model, "--model")
    try:
        model = make_model(0)
    except Exception as error:  # noqa: BLE001 - the user's code: any error is reported
        first = (str(error).splitlines() or [""])[0]
        raise ValueError(f"--model {args.model!r}: make_model(0) raised "
                         f"{type(error).__name__}: {first}") from None
    if not isinstance(model, nnx.Module):
        raise ValueError(f"--model {args.model!r}: make_model(0) must return a "
                         f"flax.nnx.Module, got {describe(model)}")
    splits, _, _ = _load(args)
    if args.flatten:
        splits = type(splits)(*(type(s)(s.x.reshape(len(s.x), -1), s.y) for s in splits))
    return make_model, splits


def prescribe_command(args: argparse.Namespace) -> int:
    """Runs ``stablejax prescribe``; returns the exit status.

    Before any training, a bad configuration is one line ``stablejax prescribe: error:
    ...`` with status 2: a ``--model`` without ``:``, a file that does not exist, a file
    or module that fails to import or defines no such function, a function that raises
    or returns no ``nnx.Module`` (``make_model(0)`` is called once to check), a model
    whose outputs do not fit the labels or the loss (``sj.prescribe``'s own checks), an
    ``--out`` that is or is under a file, missing data files or extras. Then it writes
    ``REPORT.md``, ``lr_find.png`` and ``validation.png`` into ``--out`` and prints the
    verdict, the winner's code and the report's path.
    """
    from stablejax.compilation_cache import enable

    try:
        _prescribe_checks(args)  # before jax is imported
        require_extra("matplotlib", "stablejax prescribe")  # its figures, written at the end
        enable()  # before make_model(0): its initialisers compile too
        make_model, splits = _prescribe_setup(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"stablejax prescribe: error: {_one_line(error)}", file=sys.stderr)
        return 2
    from stablejax import prescription, prescription_report

    if not args.quiet:
        print(f"prescribing for {args.model} on {args.data} ({args.budget} budget, "
              f"{args.seeds} seeds); this trains every candidate", flush=True)
    try:
        p = prescription.prescribe(
            make_model, splits.train, validation_data=splits.valid, loss=args.loss,
            optimizer=_alias(args.optimizer, args.lr), budget=args.budget,
            seeds=args.seeds, batch_size=args.batch_size, seed=args.seed)
    except (ValueError, TypeError) as error:  # raised before training: data vs model
        print(f"stablejax prescribe: error: {_one_line(error)}", file=sys.stderr)
        return 2
    p.plot(args.out)
    report = os.path.join(args.out, "REPORT.md")
    with open(report, "w", encoding="utf-8") as file:
        file.write(p.to_markdown())
    print(prescription_report.summary(p))
    print(f"\n{'your code, unchanged' if p.keep else 'the code'}:\n")
    print("\n".join(f"    {line}" if line else "" for line in p.best.code.splitlines()))
    print(f"\nreport written to {report} ({p.seconds:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stablejax`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "diagnose":
        return diagnose_command(args)
    if args.command == "study":
        return study_command(args, argv)
    if args.command == "prescribe":
        return prescribe_command(args)
    return train_command(args)


if __name__ == "__main__":
    sys.exit(main())
