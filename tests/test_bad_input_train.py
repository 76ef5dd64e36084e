"""Bad input on the training side: each case raises one clear error naming the argument.

Every case is checked for its exception type and for the argument (or file) named in
the message; the fit cases also check that nothing was compiled or trained.
"""

import json
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_data import fake_fashion, idx_bytes, write

import stablejax as sj
from stablejax import checkpoint, train
from stablejax.checkpoint import CheckpointError

DATA = sj.data.synthetic_classification(40, num_features=4, num_classes=3, seed=1)


def model(**kwargs):
    return sj.nn.mlp([8], input_shape=(4,), output_size=3, batch_norm="after",
                     rngs=nnx.Rngs(0), **kwargs)


def labels(*changes):
    y = DATA.y.copy()
    for i, v in changes:
        y[i] = v
    return y


class Stats(train.Callback):
    """A callback reporting constant step statistics."""

    def __init__(self, stats):
        self.stats = stats

    def step_stats(self, grads, params):
        return {k: jnp.float32(v) for k, v in self.stats.items()}


def fit(m=None, tx=None, data=DATA, **kwargs):
    kwargs = {"epochs": 1, "batch_size": 8, "verbose": 0, **kwargs}
    return sj.fit(model() if m is None else m, sj.sgd(0.1) if tx is None else tx, data,
                  **kwargs)


# ---------------------------------------------------------------- fit: one table

FIT_CASES = [
    # 1. labels, checked against the model's output width (3 classes)
    ("label -1", lambda: fit(data=(DATA.x, labels((5, -1)))), ValueError,
     r"train_data: label -1 at index 5 is outside \[0, 3\)"),
    ("label == classes", lambda: fit(data=(DATA.x, labels((7, 3)))), ValueError,
     r"train_data: label 3 at index 7"),
    ("float labels", lambda: fit(data=(DATA.x, DATA.y.astype(np.float32) + 0.5)), ValueError,
     "train_data: .*integer class labels, got y of dtype float32"),
    ("one-hot targets", lambda: fit(data=(DATA.x, np.eye(3, dtype=np.float32)[DATA.y])),
     ValueError, r"train_data: .*shape \(40, 3\).*argmax"),
    ("validation label", lambda: fit(validation_data=(DATA.x[:8], labels((2, 9))[:8])),
     ValueError, r"validation_data: label 9 at index 2"),
    ("logits loss label", lambda: fit(
        m=model(output_activation=None), loss="sparse_categorical_crossentropy_from_logits",
        data=(DATA.x, labels((0, -2)))), ValueError, "train_data: label -2 at index 0"),
    # 2. shapes
    ("width 5 for 4", lambda: fit(data=(np.ones((40, 5), np.float32), DATA.y)), ValueError,
     r"train_data: .*shape \(5,\).*takes 4 features"),
    ("1-D x", lambda: fit(data=(DATA.x[:, 0], DATA.y)), ValueError,
     r"train_data: x must have shape \(samples, features...\), got shape \(40,\)"),
    ("validation width", lambda: fit(validation_data=(np.ones((8, 6), np.float32), DATA.y[:8])),
     ValueError, r"validation_data: .*shape \(6,\)"),
    ("x and y lengths", lambda: fit(data=(DATA.x, DATA.y[:30])), ValueError,
     r"train_data: inputs and targets differ in length"),
    # 3. types
    ("rate as tx", lambda: fit(tx=0.01), TypeError, "tx must be an optax.GradientTransformation"),
    ("model None", lambda: sj.fit(None, sj.sgd(0.1), DATA, epochs=1), TypeError,
     "model must be a flax.nnx.Module"),
    ("no labels", lambda: fit(data=DATA.x), TypeError, r"train_data must be a pair \(x, y\)"),
    ("weights in train_data", lambda: fit(data=(DATA.x, DATA.y, np.ones(40))), ValueError,
     r"train_data must be a pair \(x, y\).*3 items \(fit takes sample weights as sample_weight=\)"),
    ("sample_weight length", lambda: fit(sample_weight=np.ones(39)), ValueError,
     r"sample_weight must have shape \(40,\)"),
    ("validation weights", lambda: fit(validation_data=(DATA.x, DATA.y, -np.ones(40))),
     ValueError, "validation_data's sample weights must be finite and >= 0"),
    ("both weights", lambda: fit(sample_weight=np.ones(40), class_weight={0: 2.0}), ValueError,
     "class_weight and sample_weight cannot both be given"),
    ("validation_split", lambda: fit(validation_split=1), ValueError,
     r"validation_split=1 is outside its accepted range \[0, 1\)"),
    ("unknown metric", lambda: fit(metrics=["f1"]), ValueError, r"metrics\[0\]='f1'"),
    ("accuracy of mse", lambda: fit(metrics=["accuracy"], loss="mse",
                                    data=(DATA.x, np.eye(3, dtype=np.float32)[DATA.y])),
     ValueError, r"metrics\[0\]: 'accuracy' is the accuracy of a named"),
    ("metric not callable", lambda: fit(metrics={"acc": 3}), TypeError, r"metrics\['acc'\]"),
    ("print as callback", lambda: fit(callbacks=[print]), TypeError,
     r"callbacks\[0\] must be a stablejax.callbacks.Callback instance"),
    ("one callback", lambda: fit(callbacks=train.EarlyStopping()), TypeError,
     "callbacks must be a list"),
    ("run_config list", lambda: fit(run_config=[1]), TypeError, "run_config must be a dict"),
    # 4. empty sets
    ("empty training set", lambda: fit(data=(DATA.x[:0], DATA.y[:0])), ValueError,
     "train_data is empty"),
    ("empty validation set", lambda: fit(validation_data=(DATA.x[:0], DATA.y[:0])), ValueError,
     "validation_data is empty"),
    # evaluate checks its data the same way
    ("evaluate label", lambda: train.evaluate(model(), train.init_state(model(), sj.sgd(0.1)),
                                              (DATA.x, labels((3, 7)))),
     ValueError, r"data_split: label 7 at index 3"),
    ("evaluate width", lambda: train.evaluate(model(), train.init_state(model(), sj.sgd(0.1)),
                                              (np.ones((4, 2), np.float32), DATA.y[:4])),
     ValueError, r"data_split: .*shape \(2,\)"),
    ("evaluate x, y label", lambda: train.evaluate(model(), DATA.x, labels((3, 7))),
     ValueError, r"evaluate: label 7 at index 3"),
    ("predict width", lambda: train.predict(model(), np.ones((4, 2), np.float32)),
     ValueError, r"x: the model does not accept samples of shape \(2,\)"),
    ("predict a pair", lambda: train.predict(model(), (DATA.x, DATA.y)), ValueError,
     r"x must be one array of samples.*\(40, 4\), \(40,\).*not a pair \(x, y\)"),
    # 5. names that would replace a logged value
    ("metric 'loss'", lambda: fit(metrics={"loss": sj.losses.sparse_categorical_accuracy}),
     ValueError, "metrics name 'loss' is reserved"),
    ("metric 'lr'", lambda: fit(metrics={"lr": sj.losses.sparse_categorical_accuracy}),
     ValueError, "metrics name 'lr' is reserved"),
    ("metric 'skipped'", lambda: fit(metrics={"skipped": sj.losses.sparse_categorical_accuracy}),
     ValueError, "metrics name 'skipped' is reserved"),
    ("metric 'val_acc'", lambda: fit(metrics={"val_acc": sj.losses.sparse_categorical_accuracy}),
     ValueError, "metrics name 'val_acc' is reserved"),
    ("metric name 3", lambda: fit(metrics={3: sj.losses.sparse_categorical_accuracy}),
     ValueError, "metrics names must be non-empty strings, got 3"),
    ("two lambdas", lambda: fit(metrics=[lambda o, y: o.mean(), lambda o, y: o.max()]),
     ValueError, r"metrics\[1\] name '<lambda>' is given twice"),
    ("step_stats 'loss'", lambda: fit(callbacks=[Stats({"loss": 0.0})]), ValueError,
     "Stats.step_stats name 'loss' is reserved"),
    ("step_stats 'val_x'", lambda: fit(callbacks=[Stats({"val_x": 0.0})]), ValueError,
     "Stats.step_stats name 'val_x' is reserved"),
    ("step_stats as metric", lambda: fit(callbacks=[Stats({"accuracy": 0.0})]), ValueError,
     "step_stats name 'accuracy' is given twice"),
    ("two callbacks' stats", lambda: fit(callbacks=[Stats({"g": 0.0}), Stats({"g": 1.0})]),
     ValueError, "Stats.step_stats name 'g' is given twice"),
    # 6. class weights of classes the model does not have (3 outputs)
    ("class_weight 99", lambda: fit(class_weight={99: 5.0}), ValueError,
     r"class_weight key 99 is not a class: the model's outputs have 3 classes, \[0, 3\)"),
    ("class_weight -1", lambda: fit(class_weight={-1: 2.0}), ValueError,
     "class_weight key -1 is not a class"),
    ("class_weight == classes", lambda: fit(class_weight={0: 1.0, 3: 2.0}), ValueError,
     "class_weight key 3 is not a class"),
    ("binary class_weight 2", lambda: fit(
        m=sj.nn.mlp([8], input_shape=(4,), output_size=1, output_activation="sigmoid",
                    rngs=nnx.Rngs(0)),
        data=(DATA.x, (DATA.y > 0).astype(np.float32)), loss="binary_crossentropy",
        class_weight={2: 3.0}), ValueError, r"class_weight key 2 is not a class.*\[0, 2\)"),
]


@pytest.mark.parametrize("case, call, error, match", FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_fit_rejects_bad_input_before_compiling(case, call, error, match, caplog):
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(error, match=match):
            call()
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if "Compiling jit(run)" in r.getMessage()]
    assert not compiled, case


def test_keras_metric_names_give_the_loss_accuracy():
    plain = fit(epochs=2)
    named = fit(epochs=2, metrics=["accuracy", "acc"])
    assert named.history["accuracy"] == plain.history["accuracy"]
    assert named.history["acc"] == plain.history["accuracy"]
    assert named.history["loss"] == plain.history["loss"]


# ---------------------------------------------------------------- layers

LAYER_CASES = [
    ("hidden int", lambda: sj.nn.mlp(hidden=300, rngs=nnx.Rngs(0)), TypeError, "hidden"),
    ("hidden bool", lambda: sj.nn.mlp([True], rngs=nnx.Rngs(0)), ValueError, "hidden"),
    ("Dense bool", lambda: sj.nn.Dense(True, 10, rngs=nnx.Rngs(0)), ValueError, "in_features"),
    ("Dense float", lambda: sj.nn.Dense(4, 2.0, rngs=nnx.Rngs(0)), ValueError, "out_features"),
    ("BatchNorm bool", lambda: sj.nn.BatchNorm(False, rngs=nnx.Rngs(0)), ValueError,
     "num_features"),
    ("output_size bool", lambda: sj.nn.mlp([4], output_size=True, rngs=nnx.Rngs(0)),
     ValueError, "output_size"),
    ("PReLU bool", lambda: sj.nn.PReLU((True,)), ValueError, "shape"),
    ("BatchNorm(4) on width 5", lambda: sj.nn.BatchNorm(4, rngs=nnx.Rngs(0))(jnp.ones((2, 5))),
     ValueError, r"num_features=4.*\(2, 5\)"),
    ("Dense(4, 2) on width 3", lambda: sj.nn.Dense(4, 2, rngs=nnx.Rngs(0))(jnp.ones((2, 3))),
     ValueError, r"in_features=4.*\(2, 3\)"),
]


@pytest.mark.parametrize("case, call, error, match", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layers_reject_bad_sizes(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_numpy_ints_are_sizes():
    layer = sj.nn.Dense(np.int64(4), np.int32(2), rngs=nnx.Rngs(0))
    assert layer.kernel.shape == (4, 2) and type(layer.in_features) is int
    assert sj.nn.BatchNorm(np.int64(3), rngs=nnx.Rngs(0)).scale.shape == (3,)
    net = sj.nn.mlp(np.array([5, 3]), input_shape=(np.int64(4),), output_size=np.int16(2),
                    rngs=nnx.Rngs(0))
    assert net(jnp.ones((2, 4))).shape == (2, 2)


# ---------------------------------------------------------------- Fashion-MNIST files

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"


def swap(directory):
    a, b = directory / TRAIN_IMAGES, directory / TRAIN_LABELS
    tmp = directory / "tmp"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def replace(name, array, code=0x08):
    return lambda d: write(d / name, idx_bytes(array, code), True)


FASHION_CASES = [
    ("swapped files", swap, TRAIN_IMAGES + r": .*shape \(n, 28, 28\).*labels file"),
    ("32x32 images", replace(TRAIN_IMAGES, np.zeros((12, 32, 32), np.uint8)),
     TRAIN_IMAGES + r": .*\(12, 32, 32\)"),
    ("label 10", replace(TRAIN_LABELS, np.array([0] * 11 + [10], np.uint8)),
     TRAIN_LABELS + ": .*10 at index 11"),
    ("labels (n, 2)", replace(TRAIN_LABELS, np.zeros((12, 2), np.uint8)),
     TRAIN_LABELS + r": .*shape \(12, 2\)"),
    ("float images", replace(TRAIN_IMAGES, np.zeros((12, 28, 28), np.float32), 0x0D),
     TRAIN_IMAGES + ": .*float32"),
    ("int32 labels", replace(TRAIN_LABELS, np.zeros(12, np.int32), 0x0C),
     TRAIN_LABELS + ": .*int32"),
]


@pytest.mark.parametrize("case, damage, match", FASHION_CASES, ids=[c[0] for c in FASHION_CASES])
def test_fashion_mnist_checks_each_file(tmp_path, case, damage, match):
    fake_fashion(tmp_path, n_train=12)
    damage(tmp_path)
    with pytest.raises(ValueError, match=match):
        sj.data.fashion_mnist(tmp_path, validation=3)


# ---------------------------------------------------------------- checkpoints


def small_tree(seed=0):
    return {"w": jnp.arange(6.0).reshape(2, 3) + seed, "n": jnp.int32(seed)}


def test_colliding_keys_are_refused_at_save_naming_both(tmp_path):
    for i, tree in enumerate([{"a/b": jnp.ones(1), "a": {"b": jnp.zeros(1)}},
                              {"a.b": jnp.ones(1), "a": {"b": jnp.zeros(1)}}]):
        key = next(k for k in tree if k != "a")
        with pytest.raises(ValueError, match=rf"\['a'\]\['b'\] and \['{key}'\]"):
            checkpoint.save(tmp_path / f"c{i}", tree)
        assert not (tmp_path / f"c{i}").exists()
    # Alone, such a key does not collide and round-trips.
    checkpoint.save(tmp_path / "alone", {"a.b": jnp.ones(1)})
    assert float(checkpoint.restore(tmp_path / "alone", {"a.b": jnp.zeros(1)})["a.b"][0]) == 1


def edit_manifest(path, edit):
    meta = path / "_CHECKPOINT_METADATA"
    content = json.loads(meta.read_text())
    edit(content["custom_metadata"]["leaves"]["w"])
    meta.write_text(json.dumps(content))


@pytest.mark.parametrize("edit", [lambda e: e.pop("crc32"), lambda e: e.update(crc32=None)],
                         ids=["absent", "null"])
def test_a_missing_checksum_fails_verification(tmp_path, edit):
    path = tmp_path / "c"
    checkpoint.save(path, small_tree())
    edit_manifest(path, edit)
    with pytest.raises(CheckpointError, match=f"(?s){path}.*CRC-32.*w"):
        checkpoint.restore(path, small_tree())


def test_missing_metadata_is_one_clean_line(tmp_path, caplog):
    path = tmp_path / "c"
    checkpoint.save(path, small_tree())
    (path / "_CHECKPOINT_METADATA").unlink()
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError) as info:
        checkpoint.restore(path, small_tree())
    message = str(info.value)
    assert "\n" not in message and str(path / "_CHECKPOINT_METADATA") in message
    assert not [r for r in caplog.records if "Metadata" in r.getMessage()]


def test_unreadable_data_names_no_tensorstore_spec(tmp_path):
    path = tmp_path / "c"
    checkpoint.save(path, {"w": jnp.arange(20000.0)})
    for f in path.rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError) as info:
        checkpoint.restore(path, {"w": jnp.zeros(20000)})
    message = str(info.value)
    assert str(path) in message and "TensorStore" not in message and "\n" not in message


def test_leftovers_of_interrupted_saves_are_removed(tmp_path):
    checkpoint.save_epoch(tmp_path, 1, small_tree(1))
    leftovers = [tmp_path / name for name in ("epoch_2.orbax-checkpoint-tmp-1234",
                                              "epoch_3.orbax-checkpoint-tmp",
                                              "epoch_0.deleting-abcd")]
    for d in leftovers:
        (d / "d").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("kept")
    assert checkpoint.restore_latest(tmp_path, small_tree())[0] == 1
    assert not any(d.exists() for d in leftovers)
    for d in leftovers:
        d.mkdir()
    checkpoint.save_epoch(tmp_path, 2, small_tree(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1", "epoch_2", "notes.txt"]
    # save() removes those of its own path only.
    (tmp_path / "one.orbax-checkpoint-tmp-9").mkdir()
    (tmp_path / "other.deleting-1").mkdir()
    checkpoint.save(tmp_path / "one", small_tree())
    assert not (tmp_path / "one.orbax-checkpoint-tmp-9").exists()
    assert (tmp_path / "other.deleting-1").exists()


# ---------------------------------------------------------------- run configuration


def resume(tmp_path, epochs=1, tx=None, **kwargs):
    return fit(tx=tx or sj.sgd(0.1), epochs=epochs, checkpoint_dir=tmp_path / "run", **kwargs)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"batch_size": 4}, "batch_size: 8 in the checkpoint, 4 now"),
        ({"seed": 1}, "seed: 0 in the checkpoint, 1 now"),
        ({"shuffle": False}, "shuffle: True in the checkpoint, False now"),
        ({"tx": sj.sgd(0.2)}, r"optimizer/learning_rate: 0.10000000149011612 in the checkpoint, "
                              r"0.20000000298023224 now"),
        ({"tx": sj.sgd(sj.exponential_decay(0.3, 10))}, "optimizer/learning_rate"),
        ({"run_config": {"width": 8}}, r"run_config/width: '\(absent\)' in the checkpoint, 8 now"),
    ],
)
def test_resume_refuses_another_configuration(tmp_path, change, match):
    resume(tmp_path)
    with pytest.raises(ValueError, match=match):
        resume(tmp_path, epochs=2, **change)
    assert checkpoint.latest_epoch(tmp_path / "run") == 1  # nothing lost


def test_resume_of_another_architecture_lists_five_differences_and_a_count(tmp_path):
    resume(tmp_path)
    wider = sj.nn.mlp([16, 16, 16], input_shape=(4,), output_size=3, batch_norm="after",
                      rngs=nnx.Rngs(0))
    with pytest.raises(ValueError) as error:
        resume(tmp_path, epochs=2, m=wider, batch_size=4)
    lines = str(error.value).splitlines()
    assert lines[1] == "  batch_size: 8 in the checkpoint, 4 now"
    assert sum(line.startswith("  parameters/") for line in lines) == 4  # 5 shown in all
    assert lines[-2].startswith("  ... and ") and lines[-2].endswith(" more differences")
    assert len(str(error.value)) < 600


def test_resume_with_the_same_configuration_continues(tmp_path):
    config = {"width": 8, "name": "a", "path": object()}  # the object is not saved
    resume(tmp_path, run_config=config)
    saved = checkpoint.saved_config(tmp_path / "run", 1)
    assert saved["run_config/width"] == 8 and "run_config/path" not in saved
    assert saved["parameters/layers/2/kernel"] == [4, 8]
    assert saved["loss"] == "sparse_categorical_crossentropy"
    history = resume(tmp_path, epochs=2, run_config={"width": 8, "name": "a"})
    assert len(history.history["loss"]) == 2
    with pytest.raises(ValueError, match="run_config/name: 'a' in the checkpoint, 'b' now"):
        resume(tmp_path, epochs=3, run_config={"width": 8, "name": "b"})


def test_checkpoint_without_configuration_resumes(tmp_path):
    resume(tmp_path)
    run = tmp_path / "run" / "epoch_1"
    shutil.rmtree(run / "config")
    assert checkpoint.saved_config(tmp_path / "run", 1) is None
    assert len(resume(tmp_path, epochs=2, batch_size=4).history["loss"]) == 2


# ---------------------------------------------------------------- the non-finite guard


@pytest.mark.parametrize("clip", [{"global_clipnorm": 1.0}, {"clipnorm": 1.0}])
def test_huge_finite_gradients_are_clipped_to_a_finite_update(clip):
    # Gradients of about 1e20: the sum of their squares overflows float32, so the clipping
    # norm used to be inf and the update NaN (global) or 0 (per tensor). Clipped to norm 1,
    # the update is finite, applied, and not skipped.
    m = sj.nn.mlp([], input_shape=(4,), output_size=3, output_activation=None,
                  rngs=nnx.Rngs(0))
    tx = sj.sgd(1.0, **clip)
    state = train.init_state(m, tx)
    loss = "sparse_categorical_crossentropy_from_logits"
    step = train.make_train_step(m, tx, loss, donate=False)
    x = DATA.x[:8] * 1e21
    new, out = step(state, (x, DATA.y[:8]))
    grads = nnx.grad(lambda mm: sj.losses.get(loss)(mm(x), DATA.y[:8]))(m)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert not np.isfinite(float(optax.tree.norm(grads)))  # a plain norm overflows
    assert int(out["skipped"]) == 0
    moved = [np.asarray(a, np.float64) - np.asarray(b, np.float64)
             for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params),
                             strict=True)]
    assert all(np.isfinite(d).all() for d in moved)
    norms = [np.linalg.norm(d) for d in moved]
    if "global_clipnorm" in clip:
        assert np.sqrt(sum(n**2 for n in norms)) == pytest.approx(1.0, rel=1e-4)
    else:
        assert max(norms) == pytest.approx(1.0, rel=1e-4)


# ---------------------------------------------------------------- callbacks' paths

PATH_CASES = [
    # (case, callback from (a directory, a file in it), the message)
    ("ModelCheckpoint under a file", lambda d, f: train.ModelCheckpoint(f"{f}/m.keras"),
     r"ModelCheckpoint filepath '.*afile/m.keras': its directory '.*afile' is, or is under, "
     "a file"),
    ("checkpoint directory is a file", lambda d, f: train.ModelCheckpoint(f),
     r"ModelCheckpoint filepath '.*afile' is a file: give a directory path"),
    ("ModelCheckpoint .keras is a directory", lambda d, f: train.ModelCheckpoint(
        f"{d}/sub.keras"), r"ModelCheckpoint filepath '.*sub.keras' is a directory"),
    ("weights under a file", lambda d, f: train.ModelCheckpoint(
        f"{f}/w-{{epoch}}", save_weights_only=True), "its directory '.*afile' is, or is under"),
    ("CSVLogger onto a directory", lambda d, f: train.CSVLogger(d),
     r"CSVLogger filename '.*' is a directory: give a file path"),
    ("CSVLogger under a file", lambda d, f: train.CSVLogger(f"{f}/log.csv"),
     r"CSVLogger filename '.*afile/log.csv': its directory '.*afile' is, or is under, a file"),
]


@pytest.mark.parametrize("case, callback, match", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_callback_paths_are_checked_before_training(tmp_path, case, callback, match):
    (tmp_path / "afile").write_text("")
    (tmp_path / "sub.keras").mkdir()
    m = model()
    before = jax.tree.map(np.copy, nnx.state(m))
    with pytest.raises(ValueError, match=match):
        fit(m, callbacks=[callback(str(tmp_path), str(tmp_path / "afile"))])
    assert jax.tree.all(jax.tree.map(np.array_equal, before, nnx.state(m))), case


def test_callback_directories_are_created(tmp_path):
    log, best = tmp_path / "logs" / "run.csv", tmp_path / "models" / "best.keras"
    fit(callbacks=[train.CSVLogger(log), train.ModelCheckpoint(best, save_weights_only=True)])
    assert log.read_text().startswith("epoch,") and best.is_file()
