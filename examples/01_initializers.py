"""Notes section 1.1 (weight initialisation): the std of the weights matched to the activation.

Builds a ten-layer network four ways (the historical N(0, 1) with sigmoid, Glorot,
He, LeCun) and measures, on one batch of digits, how the signal and the gradient
travel through it with ``sj.diagnostics.signal_propagation``.
"""

import os

from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))  # no training here
data = sj.data.digits()
batch = (data.train.x[:256], data.train.y[:256])

cases = {
    # keras.initializers.RandomNormal(stddev=1.0), activation="sigmoid"
    "N(0, 1) + sigmoid": ("sigmoid", sj.initializers.variance_scaling(1.0, "fan_in", "normal")),
    # kernel_initializer="glorot_uniform", activation="tanh"
    "Glorot + tanh": ("tanh", sj.initializers.glorot_uniform()),
    # kernel_initializer="he_normal", activation="relu"
    "He + relu": ("relu", sj.initializers.he_normal()),
    # kernel_initializer="lecun_normal", activation="selu"
    "LeCun + selu": ("selu", sj.initializers.lecun_normal()),
}
for name, (activation, init) in cases.items():
    model = sj.nn.mlp([100] * 10, input_shape=(8, 8), activation=activation,
                      kernel_init=init, rngs=nnx.Rngs(0))
    report = sj.diagnostics.signal_propagation(model, batch)
    print(f"{name:18s} grad ratio {report.grad_ratio:9.3g}  forward ratio "
          f"{report.forward_ratio:9.3g}  -> {report.verdict}")
