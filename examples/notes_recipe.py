"""The notes' recipe end to end: batch-norm model, Nadam, exponential schedule, transfer.

Uses Fashion-MNIST when its four IDX files are in ``--data-dir``; otherwise the digits
bundled with scikit-learn (8x8 images), so it runs anywhere::

    python examples/notes_recipe.py                      # digits
    python examples/notes_recipe.py --data-dir ~/fashion # the notes' data set
"""

from __future__ import annotations

import argparse

import numpy as np
from flax import nnx

import stablejax as sj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of model A")
    parser.add_argument("--epochs-b", type=int, default=8, help="epochs of model B")
    args = parser.parse_args()
    if args.data_dir:
        data, shape = sj.data.fashion_mnist(args.data_dir), (28, 28)
    else:
        data, shape = sj.data.digits(), (8, 8)
    steps = sj.data.num_batches(len(data.train.x), 32)

    # Model A: the notes' first model (BN after each layer, ELU, He init, softmax).
    model_a = sj.nn.mlp([300, 100], input_shape=shape, activation="elu", batch_norm="after",
                        rngs=nnx.Rngs(0))
    tx = sj.nadam(sj.exponential_decay(1e-3, s=20 * steps), clipnorm=1.0)
    history = sj.fit(model_a, tx, data.train, epochs=args.epochs, batch_size=32,
                     validation_data=data.valid)
    print("model A val_accuracy:", history.history["val_accuracy"][-1])

    # Model B on A: is the class >= 5? Reused layers frozen for 4 epochs, then fine-tuned.
    binary = [(split.x, (split.y >= 5).astype(np.float32)) for split in data]
    head = sj.nn.Dense(100, 1, activation="sigmoid", rngs=nnx.Rngs(1))
    model_b = sj.transfer.reuse(model_a, head)  # a clone: training B leaves A alone
    reused = sj.transfer.reused_paths(model_a)
    tx_b = sj.transfer.freeze_then_finetune(
        model_b, sj.transfer.not_matching(reused), frozen_steps=4 * steps,
        first=sj.sgd(), then=sj.sgd(1e-4),  # Keras 3: "sgd" means learning rate 0.01
    )
    history_b = sj.fit(model_b, tx_b, binary[0], epochs=args.epochs_b, batch_size=32,
                       validation_data=binary[1], loss="binary_crossentropy")
    print("model B val_accuracy:", history_b.history["val_accuracy"][-1])


if __name__ == "__main__":
    main()
