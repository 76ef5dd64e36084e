"""Notes section 1.3.1 (gradient clipping): SGD with clipvalue, then with clipnorm.

The clipping is the optimizer's first transform, on the raw gradients. The task is a
regression of the digit's value with the mse loss, as in the notes' ``compile``.
"""

import os

import numpy as np
from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
data = sj.data.digits()
train = (data.train.x, data.train.y.astype(np.float32)[:, None])
valid = (data.valid.x, data.valid.y.astype(np.float32)[:, None])

optimizers = {
    # optimizer = keras.optimizers.SGD(clipvalue=1.0)
    "clipvalue=1.0": sj.sgd(clipvalue=1.0),
    # optimizer = keras.optimizers.SGD(clipnorm=1.0)
    "clipnorm=1.0": sj.sgd(clipnorm=1.0),
}
for name, tx in optimizers.items():
    model = sj.nn.mlp([100, 100], input_shape=(8, 8), activation="relu", output_size=1,
                      output_activation=None, rngs=nnx.Rngs(0))
    # model.compile(loss="mse", optimizer=optimizer)
    history = sj.fit(model, tx, train, epochs=epochs, validation_data=valid, loss="mse",
                     verbose=0)
    print(f"SGD({name}): val_loss {history.history['val_loss'][-1]:.4f}")
