"""Notes section 2 (optimizers): plain gradient descent, momentum and Nesterov momentum."""

import os

from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
data = sj.data.digits()

optimizers = {
    # optimizer = keras.optimizers.SGD(lr=0.001)
    "GD": sj.sgd(learning_rate=0.001),
    # optimizer = keras.optimizers.SGD(lr=0.001, momentum=0.9)
    "momentum": sj.sgd(learning_rate=0.001, momentum=0.9),
    # optimizer = keras.optimizers.SGD(lr=0.001, momentum=0.9, nesterov=True)
    "nesterov": sj.sgd(learning_rate=0.001, momentum=0.9, nesterov=True),
}
for name, tx in optimizers.items():
    model = sj.nn.mlp([100, 100], input_shape=(8, 8), activation="elu", rngs=nnx.Rngs(0))
    history = sj.fit(model, tx, data.train, epochs=epochs, validation_data=data.valid,
                     verbose=0)
    print(f"{name:9s} val_accuracy {history.history['val_accuracy'][-1]:.3f}")
