"""Notes section 3 (learning rate scheduling): power, exponential, piecewise constant and
performance scheduling, each training the same network on digits."""

import os

from flax import nnx

import stablejax as sj

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
data = sj.data.digits()
steps = sj.data.num_batches(len(data.train.x), 32)


# def exponential_decay(lr0, s):
#     def exponential_decay_fn(epoch):
#         return lr0 * 0.1**(epoch / s)
#     return exponential_decay_fn
def exponential_decay(lr0, s):
    def exponential_decay_fn(epoch):
        return lr0 * 0.1 ** (epoch / s)
    return exponential_decay_fn


# exponential_decay_fn = exponential_decay(lr0=0.01, s=20)
exponential_decay_fn = exponential_decay(lr0=0.01, s=20)

runs = {
    # optimizer = keras.optimizers.SGD(lr=0.01, decay=1e-4)
    "power": (sj.sgd(0.01, decay=1e-4), []),  # = sj.sgd(sj.power_decay(0.01, s=1e4))
    # lr_scheduler = keras.callbacks.LearningRateScheduler(exponential_decay_fn)
    "exponential": (sj.sgd(0.01), [sj.train.LearningRateScheduler(exponential_decay_fn)]),
    # (no snippet in the notes)
    # keras.optimizers.schedules.PiecewiseConstantDecay([5 * steps], [0.01, 0.005])
    # lr0 for the first 5 epochs, then lr1, switching at epoch 5 as in the notes
    "piecewise": (sj.sgd(sj.piecewise_constant([5 * steps], [0.01, 0.005], inclusive="left")),
                  []),
    # (no snippet in the notes) keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=5)
    "performance": (sj.sgd(0.01, plateau=sj.reduce_on_plateau(factor=0.5, patience=5)),
                    [sj.train.ReduceLROnPlateau()]),
}
for name, (tx, callbacks) in runs.items():
    model = sj.nn.mlp([100, 100], input_shape=(8, 8), activation="elu", rngs=nnx.Rngs(0))
    # history = model.fit(X_train_scaled, y_train, [...], callbacks=[lr_scheduler])
    history = sj.fit(model, tx, data.train, epochs=epochs, validation_data=data.valid,
                     callbacks=callbacks, verbose=0)
    lrs = ", ".join(f"{lr:.5f}" for lr in history.history["lr"])
    accuracy = history.history["val_accuracy"][-1]
    print(f"{name:11s} val_accuracy {accuracy:.3f}  lr per epoch [{lrs}]")
