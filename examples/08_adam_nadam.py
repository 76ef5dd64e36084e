"""Notes section 2 (optimizers): Adam (momentum + RMSProp) and Nadam (with Nesterov)."""

import os

from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
data = sj.data.digits()

optimizers = {
    # optimizer = keras.optimizers.Adam(lr=0.001, beta_1=0.9, beta_2=0.999)
    "Adam": sj.adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999),
    # optimizer = keras.optimizers.Nadam(lr=0.001, beta_1=0.9, beta_2=0.999)
    "Nadam": sj.nadam(learning_rate=0.001, beta_1=0.9, beta_2=0.999),
}
for name, tx in optimizers.items():
    model = sj.nn.mlp([100, 100], input_shape=(8, 8), activation="elu", rngs=nnx.Rngs(0))
    history = sj.fit(model, tx, data.train, epochs=epochs, validation_data=data.valid,
                     verbose=0)
    print(f"{name:6s} val_accuracy {history.history['val_accuracy'][-1]:.3f}")
