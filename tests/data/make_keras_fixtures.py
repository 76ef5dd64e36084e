"""Writes the Keras fixtures of tests/test_keras_format.py (needs Keras; the tests do not).

Made with Keras 3.15.1 on the JAX backend (jax/jaxlib 0.10.2), Python 3.11, CPU. To rerun,
from the repository root, in a virtual environment that has Keras as well as stablejax's
own dependencies::

    python3.11 -m venv /tmp/kerasvenv
    /tmp/kerasvenv/bin/pip install keras==3.15.1 jax==0.10.2 jaxlib==0.10.2 h5py numpy \
        flax optax chex orbax-checkpoint tqdm scikit-learn matplotlib
    KERAS_BACKEND=jax PYTHONPATH=. /tmp/kerasvenv/bin/python tests/data/make_keras_fixtures.py

The data, ``keras_digits.npz``: the first 256 training images of
``stablejax.data.digits()`` as their 0..16 pixel values (``x = pixels / 16``) and their
labels. For each case (a small digits model and a Keras optimizer), trained on them in
batches of 32 (8 updates per epoch), unshuffled:

- ``keras_<case>.keras``: Keras trains the model 2 epochs from its own initial weights
  and saves it; then it trains a 3rd epoch, whose weights and optimizer variables are
  recorded in ``keras_<case>.npz`` under ``keras/epoch3/...``.
- ``stablejax_<case>.keras``: stablejax trains the same architecture 2 epochs from the
  initial weights recorded under ``stablejax/init/...`` and saves it with
  ``stablejax.keras_format.save``; Keras loads that file and trains a 3rd epoch, whose
  weights and optimizer variables are recorded under ``stablejax/epoch3/...``.

Two more files test how models are read: ``keras_functional.keras``, a functional chain
(Flatten, Dense 4 ELU, Dense 10 softmax) trained one epoch by RMSprop with momentum, and
``keras_branch.keras``, an uncompiled functional model whose two Dense layers both read
the input (not a chain).

``keras_weighted.keras`` and ``keras_weighted.npz`` test fit's Keras arguments: a
Flatten, Dense 16 ELU, Dense 10 softmax model compiled with Adam(0.01), the sparse
cross-entropy and ``metrics=["accuracy"]``, saved untrained; then, from that file, Keras's
``fit`` for 2 epochs in batches of 40 (192 training samples: 4 full batches and one of
32; 64 validation samples: one of 40 and one of 24), unshuffled, in two cases: ``sample``, with
``sample_weight=linspace(0.2, 2, 256)`` and ``validation_split=0.25``; ``class``, with
``class_weight={0: 3, 3: 0.2, 9: 2}`` on the first 192 samples and
``validation_data=(the last 64, their labels, their linspace weights)``. Recorded:
``<case>/history/<key>`` (one value per epoch), ``<case>/<layer>/<weight>`` after training,
and, for ``sample``, ``sample/evaluate/<key>`` (``evaluate`` on the last 64 samples with
their weights) and ``sample/predict`` (``predict`` on the first 40, ``batch_size=16``).
Rerun only these with ``... make_keras_fixtures.py weighted``.

Weights are keyed ``<layer index>/<weight index>`` in Keras's order (``model.layers``,
which leaves out the input layer; ``layer.weights``), optimizer variables
``optimizer/<index>`` in the order of ``optimizer.variables``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

import stablejax as sj
from stablejax import keras_format

HERE = Path(__file__).resolve().parent
SAMPLES, BATCH = 256, 32
WEIGHTED_BATCH = 40  # keras_weighted: every set ends in a shorter batch

# case -> (Keras layers after the input, as (class name, arguments); the optimizer's
# Keras description). Keras is imported only by main(): pytest imports this file.
CASES: dict[str, tuple[list[tuple[str, dict[str, Any]]], tuple[str, dict[str, Any]]]] = {
    "adam": (
        [("Flatten", {}), ("Dense", {"units": 16, "activation": "elu"}),
         ("BatchNormalization", {}), ("Dense", {"units": 10, "activation": "softmax"})],
        ("Adam", {"learning_rate": 0.01, "clipnorm": 1.0}),
    ),
    "nadam": (
        [("Flatten", {}), ("Dense", {"units": 16, "activation": "selu"}),
         ("BatchNormalization", {}), ("PReLU", {}),
         ("Dense", {"units": 10, "activation": "softmax"})],
        ("Nadam", {"learning_rate": 0.005}),
    ),
    "sgd": (
        [("Flatten", {}), ("Dense", {"units": 16}), ("BatchNormalization", {}),
         ("LeakyReLU", {"negative_slope": 0.1}),
         ("Dense", {"units": 10, "activation": "softmax"})],
        ("SGD", {
            "learning_rate": {"class_name": "ExponentialDecay", "config": {
                "initial_learning_rate": 0.05, "decay_steps": 8, "decay_rate": 0.8,
                "staircase": False}},
            "momentum": 0.9, "nesterov": True, "global_clipnorm": 2.0,
        }),
    ),
}


def data() -> tuple[np.ndarray, np.ndarray]:
    train = sj.data.digits().train
    pixels = np.rint(np.asarray(train.x[:SAMPLES]) * 16).astype(np.uint8)
    return pixels, np.asarray(train.y[:SAMPLES]).astype(np.uint8)


def keras_optimizer(keras: Any, class_name: str, config: dict[str, Any]) -> Any:
    config = dict(config)
    lr = config.pop("learning_rate")
    if isinstance(lr, dict):
        lr = getattr(keras.optimizers.schedules, lr["class_name"])(**lr["config"])
    return getattr(keras.optimizers, class_name)(learning_rate=lr, **config)


def record(model: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    for i, layer in enumerate(model.layers):
        for k, weight in enumerate(layer.weights):
            out[f"{prefix}/{i}/{k}"] = np.asarray(weight.numpy())
    for k, variable in enumerate(model.optimizer.variables):
        out[f"{prefix}/optimizer/{k}"] = np.asarray(variable.numpy())


def stablejax_twin(keras_model: Any) -> nnx.Sequential:
    """The stablejax model of the same architecture, from its own initialisers."""
    path = HERE / "_architecture.keras"
    keras_model.save(path)
    model, _, _ = keras_format.load(path)
    path.unlink()
    fresh = []
    rngs = nnx.Rngs(0)
    for layer in model.layers:
        if isinstance(layer, sj.nn.Dense):
            name = next(n for n in keras_format.ACTIVATIONS
                        if layer.activation.fn is sj.activations.get(n))
            layer = sj.nn.Dense(layer.in_features, layer.out_features, activation=name,
                                rngs=rngs)
        elif isinstance(layer, sj.nn.BatchNorm):
            layer = sj.nn.BatchNorm(layer.num_features, rngs=rngs)
        elif isinstance(layer, sj.nn.PReLU):
            layer = sj.nn.PReLU(layer.alpha.shape, alpha_init=0.1)
        fresh.append(layer)
    return nnx.Sequential(*fresh)


def functional_files(keras: Any, x: np.ndarray, y: np.ndarray) -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8))
    hidden = keras.layers.Dense(4, activation="elu")(keras.layers.Flatten()(inputs))
    chain = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    chain.compile(optimizer=keras.optimizers.RMSprop(0.01, momentum=0.5),
                  loss="sparse_categorical_crossentropy")
    chain.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    chain.save(HERE / "keras_functional.keras")
    inputs = keras.Input((4,))
    branches = keras.layers.Add()([keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)])
    keras.Model(inputs, branches).save(HERE / "keras_branch.keras")


def weighted_files(keras: Any, x: np.ndarray, y: np.ndarray) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="elu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path = HERE / "keras_weighted.keras"
    model.save(path)
    w = np.linspace(0.2, 2.0, SAMPLES).astype(np.float32)
    cases = {
        "sample": {"x": x, "y": y, "sample_weight": w, "validation_split": 0.25},
        "class": {"x": x[:192], "y": y[:192], "class_weight": {0: 3.0, 3: 0.2, 9: 2.0},
                  "validation_data": (x[192:], y[192:], w[192:])},
    }
    out: dict[str, np.ndarray] = {}
    for case, kwargs in cases.items():
        trained = keras.models.load_model(path)
        history = trained.fit(batch_size=WEIGHTED_BATCH, epochs=2, shuffle=False, verbose=0,
                              **kwargs)
        for key, values in history.history.items():
            out[f"{case}/history/{key}"] = np.asarray(values, np.float64)
        for i, layer in enumerate(trained.layers):
            for k, weight in enumerate(layer.weights):
                out[f"{case}/{i}/{k}"] = np.asarray(weight.numpy())
        if case == "sample":
            scores = trained.evaluate(x[192:], y[192:], sample_weight=w[192:], verbose=0,
                                      return_dict=True)
            for key, value in scores.items():
                out[f"sample/evaluate/{key}"] = np.asarray(value, np.float64)
            out["sample/predict"] = trained.predict(x[:40], batch_size=16, verbose=0)
    np.savez_compressed(HERE / "keras_weighted.npz", **out)
    print("weighted written", file=sys.stderr)


def main() -> None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    pixels, labels = data()
    x, y = pixels.astype(np.float32) / 16, labels.astype(np.int32)
    if sys.argv[1:] == ["weighted"]:
        weighted_files(keras, x, y)
        return
    weighted_files(keras, x, y)
    np.savez_compressed(HERE / "keras_digits.npz", pixels=pixels, labels=labels)
    functional_files(keras, x, y)
    for case, (layers, (class_name, config)) in CASES.items():
        out: dict[str, np.ndarray] = {}

        # Keras -> stablejax
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8, 8))] + [
            getattr(keras.layers, name)(**kwargs) for name, kwargs in layers])
        model.compile(optimizer=keras_optimizer(keras, class_name, config),
                      loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
        model.save(HERE / f"keras_{case}.keras")
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        record(model, "keras/epoch3", out)

        # stablejax -> Keras
        twin = stablejax_twin(model)
        for i, layer in enumerate(twin.layers):
            for name, value in nnx.to_flat_state(nnx.state(layer)):
                out[f"stablejax/init/{i}/{sj.nn.path_name(name)}"] = np.asarray(value[...])
        tx = keras_format.optimizer(class_name, **config)
        history = sj.fit(twin, tx, (x, y), epochs=2, batch_size=BATCH, shuffle=False,
                         verbose=0, compilation_cache=False)
        keras_format.save(HERE / f"stablejax_{case}.keras", twin, history.state, tx,
                          input_shape=(8, 8))
        loaded = keras.models.load_model(HERE / f"stablejax_{case}.keras")
        loaded.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        record(loaded, "stablejax/epoch3", out)

        np.savez_compressed(HERE / f"keras_{case}.npz", **out)
        print(case, "written", file=sys.stderr)


if __name__ == "__main__":
    main()
