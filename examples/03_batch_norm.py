"""Notes section 1.3 (batch normalization): BN after each layer, then BN before the activation.

Digits (8x8) replace Fashion-MNIST (28x28), which is not bundled.
"""

import os

from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
data = sj.data.digits()

# model = keras.models.Sequential([Flatten, BatchNormalization,
#     Dense(300, activation="elu", kernel_initializer="he_normal"), BatchNormalization,
#     Dense(100, activation="elu", kernel_initializer="he_normal"), BatchNormalization,
#     Dense(10, activation="softmax")])
model = sj.nn.mlp([300, 100], input_shape=(8, 8), activation="elu", batch_norm="after",
                  rngs=nnx.Rngs(0))
# [(var.name, var.trainable) for var in model.layers[1].variables]
print("layer 1 variables:", sj.nn.variables(model.layers[1]))

# model = keras.models.Sequential([Flatten, BatchNormalization,
#     Dense(300, kernel_initializer="he_normal", use_bias=False), BatchNormalization,
#     Activation("elu"), ..., Dense(10, activation="softmax")])
model_before = sj.nn.mlp([300, 100], input_shape=(8, 8), activation="elu",
                         batch_norm="before", rngs=nnx.Rngs(0))
print("BN-before layers:", [type(layer).__name__ for layer in model_before.layers])

# keras.layers.BatchNormalization(momentum=0.9)
bn = sj.nn.BatchNorm(300, momentum=0.9, rngs=nnx.Rngs(0))
print("BatchNorm momentum:", bn.momentum)

for name, m in [("BN after", model), ("BN before", model_before)]:
    # model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd"); model.fit(...)
    history = sj.fit(m, sj.sgd(), data.train, epochs=epochs, validation_data=data.valid,
                     verbose=0)
    print(f"{name}: val_accuracy {history.history['val_accuracy'][-1]:.3f}")
