"""Writes ``checkpoint_v0_1/``: a checkpoint directory as stablejax 0.1.0 wrote it.

Two epochs of a tiny batch-norm + RReLU model (RNG state in the checkpoint) trained by
Adam with plateau scheduling and early stopping (callback state in the checkpoint).
``checkpoint_v0_1_epoch_2.npz`` holds the epoch-2 state as 0.1.0 itself restored it.
``tests/test_checkpoint.py`` restores the directory and compares with that record, then
resumes it for a third epoch. Run from the repository root with stablejax 0.1.0.
"""

import shutil

from flax import nnx

import stablejax as sj


def setup():
    """The model, optimizer, data and callbacks of the fixture run."""
    model = sj.nn.mlp([8], input_shape=(4,), activation="rrelu", batch_norm="after",
                      output_size=3, rngs=nnx.Rngs(0))
    tx = sj.adam(1e-2, plateau=sj.reduce_on_plateau(patience=1))
    data = sj.data.synthetic_classification(40, num_features=4, num_classes=3, seed=0)
    callbacks = [sj.train.ReduceLROnPlateau(monitor="loss"),
                 sj.train.EarlyStopping(monitor="loss", patience=5)]
    return model, tx, data, callbacks


if __name__ == "__main__":
    out = "tests/data/checkpoint_v0_1"
    shutil.rmtree(out, ignore_errors=True)
    model, tx, data, callbacks = setup()
    sj.fit(model, tx, data, epochs=2, batch_size=16, callbacks=callbacks,
           checkpoint_dir=out, verbose=0)
