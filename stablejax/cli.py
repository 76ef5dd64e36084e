"""The ``stablejax`` command: train a dense network on a bundled or local data set.

Example::

    stablejax train --data digits --hidden 300 100 --activation selu --batch-norm after \\
        --optimizer nadam --lr 1e-3 --schedule exponential --epochs 10 --checkpoint-dir runs/x
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "nadam")
SCHEDULES = ("constant", "power", "exponential", "piecewise", "plateau")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "rrelu", "prelu", "elu", "selu")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (``stablejax --help``)."""
    parser = _Parser(
        prog="stablejax",
        description="Train deep networks stably in pure JAX: matched initialisation, "
        "non-saturating activations, batch norm, clipping, Keras-exact optimizers and "
        "learning-rate schedules.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = commands.add_parser(
        "train",
        help="train a dense network and print its per-epoch history",
        description="Train a dense network (the notes' Fashion-MNIST model family) and "
        "print a progress bar per epoch and a final table.",
    )
    train.add_argument("--data", choices=("digits", "fashion_mnist", "synthetic"),
                       default="digits", help="data set (default: digits, bundled)")
    train.add_argument("--data-dir", default=None,
                       help="directory of the four Fashion-MNIST IDX .gz files")
    train.add_argument("--hidden", type=_positive_int, nargs="+", default=[300, 100],
                       help="hidden layer sizes (default: 300 100)")
    train.add_argument("--activation", choices=ACTIVATIONS, default="elu",
                       help="hidden activation (default: elu)")
    train.add_argument("--init", default=None,
                       choices=("glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
                                "lecun_uniform", "lecun_normal"),
                       help="kernel initialiser (default: matched to the activation)")
    train.add_argument("--batch-norm", choices=("none", "after", "before"), default="none",
                       help="batch normalisation placement (default: none)")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="nadam",
                       help="optimizer (default: nadam)")
    train.add_argument("--lr", type=_positive_float, default=1e-3,
                       help="initial learning rate (default: 1e-3)")
    train.add_argument("--schedule", choices=SCHEDULES, default="constant",
                       help="learning-rate schedule (default: constant)")
    train.add_argument("--decay-epochs", type=_positive_float, default=20.0,
                       help="s of the power/exponential schedules, in epochs (default: 20)")
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
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--no-compilation-cache", action="store_true",
                       help="do not read or write compiled programs in the cache directory "
                            "($STABLEJAX_CACHE_DIR, default ~/.cache/stablejax/jax)")
    return parser


def _optimizer(args, steps_per_epoch: int):
    import stablejax as sj

    s = args.decay_epochs * steps_per_epoch
    schedule = {
        "constant": args.lr,
        "power": sj.power_decay(args.lr, s),
        "exponential": sj.exponential_decay(args.lr, s),
        "piecewise": sj.piecewise_constant(
            [5 * steps_per_epoch, 15 * steps_per_epoch], [args.lr, args.lr / 2, args.lr / 10]
        ),
        "plateau": args.lr,
    }[args.schedule]
    common = dict(clipvalue=args.clipvalue, clipnorm=args.clipnorm,
                  global_clipnorm=args.global_clipnorm)
    if args.schedule == "plateau":
        common["plateau"] = sj.reduce_on_plateau(factor=0.5, patience=2, learning_rate=args.lr)
    if args.optimizer == "momentum":
        return sj.sgd(schedule, momentum=0.9, **common)
    if args.optimizer == "nesterov":
        return sj.sgd(schedule, momentum=0.9, nesterov=True, **common)
    return getattr(sj, args.optimizer)(schedule, **common)


def _load(args):
    from stablejax import data

    if args.data == "digits":
        return data.digits(seed=args.seed), (8, 8), 10
    if args.data == "fashion_mnist":
        if args.data_dir is None:
            raise ValueError("--data fashion_mnist needs --data-dir with the four IDX files")
        return data.fashion_mnist(args.data_dir), (28, 28), 10
    train = data.synthetic_classification(2000, num_classes=4, seed=args.seed)
    valid = data.synthetic_classification(500, num_classes=4, seed=args.seed + 1)
    return data.Splits(train, valid, valid), (train.x.shape[1],), 4


def _table(history: dict[str, list[float]]) -> str:
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "skipped")
            if k in history]
    rows = [["epoch", *keys]]
    for i in range(len(history[keys[0]])):
        rows.append([str(i + 1)] + [f"{history[k][i]:.4g}" for k in keys])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True))
                     for r in rows)


def train_command(args: argparse.Namespace) -> int:
    """Runs ``stablejax train``; returns the exit status.

    A bad configuration (an argument the library rejects, missing data files, a
    checkpoint directory of another model) is a one-line error with status 2; any other
    error during training propagates.
    """

    import stablejax as sj
    from stablejax.compilation_cache import enable

    if not args.no_compilation_cache:
        enable()  # before the model is built: its initialisers compile too
    try:
        splits, model, tx, callbacks = _setup(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"stablejax: error: {error}", file=sys.stderr)
        return 2
    try:
        history = sj.train.fit(
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
        )
    except sj.checkpoint.CheckpointError as error:  # e.g. another model's checkpoint dir
        print(f"stablejax: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    print(_table(history.history))
    test = sj.train.evaluate(model, history.state, splits.test,
                             loss="sparse_categorical_crossentropy_from_logits")
    print(f"test: loss {test['loss']:.4g}  accuracy {test['accuracy']:.4g}")
    return 0


def _setup(args):
    from flax import nnx

    import stablejax as sj

    splits, input_shape, classes = _load(args)
    steps_per_epoch = sj.data.num_batches(len(splits.train.x), args.batch_size)
    model = sj.nn.mlp(
        args.hidden,
        input_shape=input_shape,
        activation=args.activation,
        kernel_init=None if args.init is None else getattr(sj.initializers, args.init)(),
        batch_norm=None if args.batch_norm == "none" else args.batch_norm,
        output_size=classes,
        output_activation=None,
        rngs=nnx.Rngs(args.seed),
    )
    callbacks: list[sj.callbacks.Callback] = []
    if args.schedule == "plateau":
        callbacks.append(sj.train.ReduceLROnPlateau("val_loss"))
    if args.patience is not None:
        callbacks.append(sj.train.EarlyStopping("val_loss", args.patience, restore_best=True))
    return splits, model, _optimizer(args, steps_per_epoch), callbacks


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stablejax`` console script."""
    args = build_parser().parse_args(argv)
    return train_command(args)


if __name__ == "__main__":
    sys.exit(main())
