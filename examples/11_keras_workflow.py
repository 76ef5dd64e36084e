"""A Keras workflow, line for line: fit with Keras's arguments and callbacks, a .keras file
saved at the best epoch, then evaluate, predict and continue from that file.

Each stablejax line has the Keras line it replaces above it. The .keras files are Keras 3's
own format: keras.models.load_model opens them, optimizer state included.
"""

import os
import tempfile

import numpy as np
from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
data = sj.data.digits()
x, y = data.train
out = tempfile.mkdtemp()

# model = keras.Sequential([keras.layers.Flatten(input_shape=[8, 8]),
#     keras.layers.Dense(100, activation="elu", kernel_initializer="he_normal"),
#     keras.layers.Dense(10, activation="softmax")])
model = sj.nn.mlp([100], input_shape=(8, 8), activation="elu", rngs=nnx.Rngs(0))
# model.compile(loss="sparse_categorical_crossentropy",
#               optimizer=keras.optimizers.Adam(learning_rate=1e-3), metrics=["accuracy"])
tx = sj.keras_format.optimizer("Adam", learning_rate=1e-3)  # sj.adam(1e-3), describable
# history = model.fit(x, y, epochs=10, validation_split=0.2, class_weight={3: 2.0},
#                     callbacks=[keras.callbacks.EarlyStopping(patience=3,
#                                                              restore_best_weights=True),
#                                keras.callbacks.ModelCheckpoint("best.keras",
#                                                                save_best_only=True),
#                                keras.callbacks.CSVLogger("log.csv")])
best = os.path.join(out, "best.keras")
history = sj.fit(model, tx, (x, y), epochs=epochs, validation_split=0.2,
                 class_weight={3: 2.0}, metrics=["accuracy"], verbose=0,
                 callbacks=[sj.train.EarlyStopping(patience=3, restore_best_weights=True),
                            sj.train.ModelCheckpoint(best, save_best_only=True),
                            sj.train.CSVLogger(os.path.join(out, "log.csv"))])
print(f"epochs {history.epoch}, val_accuracy {history.history['val_accuracy'][-1]:.3f}")

# model.evaluate(x_test, y_test, return_dict=True); model.predict(x_test[:5])
print("test", sj.train.evaluate(model, *data.test))
print("predicted", np.argmax(sj.train.predict(model, data.test.x[:5]), axis=1),
      "labels", data.test.y[:5])

# model = keras.models.load_model("best.keras"); model.fit(x, y, epochs=1)
restored, tx, state = sj.keras_format.load(best)
print("restored test", sj.train.evaluate(restored, *data.test))
more = sj.fit(restored, tx, (x, y), epochs=1, state=state, verbose=0)
print(f"one more epoch from best.keras: loss {more.history['loss'][0]:.4f}")
