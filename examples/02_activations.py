"""Notes section 1.2 (activations) and its four Keras snippets (1.2.3, choice).

Each snippet's layer is built with ``sj.nn.Dense``; then the activations of the notes'
ranking (SELU > ELU > leaky ReLU and variants > tanh > logistic) each train the same
small network on digits.
"""

import functools
import os

import jax.numpy as jnp
from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
rngs = nnx.Rngs(0)
x = jnp.ones((4, 64))

# he_avg_init = keras.initializers.VarianceScaling(scale=2., mode='fan_avg', distribution='uniform')
he_avg_init = sj.initializers.variance_scaling(scale=2.0, mode="fan_avg", distribution="uniform")
# keras.layers.Dense(10, activation="sigmoid", kernel_initializer=he_avg_init)
layer_1 = sj.nn.Dense(64, 10, activation="sigmoid", kernel_init=he_avg_init, rngs=rngs)
# keras.layers.Dense(10, activation="relu", kernel_initializer="he_normal")
layer_2 = sj.nn.Dense(64, 10, activation="relu", kernel_init=sj.initializers.he_normal(),
                      rngs=rngs)
# leaky_relu = keras.layers.LeakyReLU(alpha=0.2)
leaky_relu = functools.partial(sj.activations.leaky_relu, negative_slope=0.2)
# layer = keras.layers.Dense(10, activation=leaky_relu, kernel_initializer="he_normal")
layer_3 = sj.nn.Dense(64, 10, activation=leaky_relu, kernel_init=sj.initializers.he_normal(),
                      rngs=rngs)
# layer = keras.layers.Dense(10, activation="selu", kernel_initializer="lecun_normal")
layer_4 = sj.nn.Dense(64, 10, activation="selu", kernel_init=sj.initializers.lecun_normal(),
                      rngs=rngs)
for i, layer in enumerate([layer_1, layer_2, layer_3, layer_4], 1):
    print(f"snippet {i}: output shape {layer(x).shape}")

data = sj.data.digits()
for activation in ["selu", "elu", "leaky_relu", "tanh", "sigmoid"]:
    # Dense(..., activation=a): the initialiser matched to a (He, LeCun or Glorot)
    model = sj.nn.mlp([100, 100], input_shape=(8, 8), activation=activation,
                      rngs=nnx.Rngs(0))
    history = sj.fit(model, sj.sgd(0.01), data.train, epochs=epochs,
                     validation_data=data.valid, verbose=0)
    print(f"{activation:10s} val_accuracy {history.history['val_accuracy'][-1]:.3f}")
