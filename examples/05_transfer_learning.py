"""Notes section 1.4 (transfer learning): model B on model A, frozen first, then fine-tuned.

Model A classifies the ten digits; model B answers "is the digit >= 5?" with A's layers
and a new sigmoid head.
"""

import os

import numpy as np
from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
data = sj.data.digits()
steps = sj.data.num_batches(len(data.train.x), 32)

# model_A = keras.models.load_model("my_model_A.h5")  (here: trained in place)
model_a = sj.nn.mlp([100, 100], input_shape=(8, 8), activation="elu", rngs=nnx.Rngs(0))
sj.fit(model_a, sj.sgd(), data.train, epochs=epochs, verbose=0)
x_train_b, y_train_b = data.train.x, (data.train.y >= 5).astype(np.float32)
x_valid_b, y_valid_b = data.valid.x, (data.valid.y >= 5).astype(np.float32)

# model_A_clone = keras.models.clone_model(model_A)
# model_A_clone.set_weights(model_A.get_weights())
# model_B_on_A = keras.models.Sequential(model_A_clone.layers[:-1])
# model_B_on_A.add(keras.layers.Dense(1, activation="sigmoid"))
head = sj.nn.Dense(100, 1, activation="sigmoid", rngs=nnx.Rngs(1))
model_b_on_a = sj.transfer.reuse(model_a, head)  # clone=False shares A's layers instead
before = np.asarray(model_a.layers[1].kernel[...]).copy()

# for layer in model_B_on_A.layers[:-1]: layer.trainable = False
# model_B_on_A.compile(loss="binary_crossentropy", optimizer="sgd"); fit(epochs=4)
# for layer in model_B_on_A.layers[:-1]: layer.trainable = True
# optimizer = keras.optimizers.SGD(lr=1e-4); compile(...); fit(epochs=16)
reused = sj.transfer.reused_paths(model_a)
tx = sj.transfer.freeze_then_finetune(
    model_b_on_a, sj.transfer.not_matching(reused), frozen_steps=4 * steps,
    first=sj.sgd(), then=sj.sgd(1e-4),
)
history = sj.fit(model_b_on_a, tx, (x_train_b, y_train_b), epochs=2 * epochs,
                 validation_data=(x_valid_b, y_valid_b), loss="binary_crossentropy",
                 verbose=0)
print(f"model B on A: val_accuracy {history.history['val_accuracy'][-1]:.3f}")
print("model A unchanged by training B:",
      bool(np.array_equal(before, model_a.layers[1].kernel[...])))
