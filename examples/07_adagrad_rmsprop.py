"""Notes section 2 (optimizers): AdaGrad, and RMSProp, its decaying-average successor."""

import os

from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
data = sj.data.digits()

optimizers = {
    # optimizer = keras.optimizers.Adagrad(lr=0.001)
    "AdaGrad": sj.adagrad(learning_rate=0.001),
    # optimizer = keras.optimizers.RMSprop(lr=0.001, rho=0.9)
    "RMSProp": sj.rmsprop(learning_rate=0.001, rho=0.9),
}
for name, tx in optimizers.items():
    model = sj.nn.mlp([100, 100], input_shape=(8, 8), activation="elu", rngs=nnx.Rngs(0))
    history = sj.fit(model, tx, data.train, epochs=epochs, validation_data=data.valid,
                     verbose=0)
    print(f"{name:8s} val_accuracy {history.history['val_accuracy'][-1]:.3f}")
