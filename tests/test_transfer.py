"""Transfer learning: the notes' recipe step by step, on the digits data set."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import stablejax as sj
from stablejax import checkpoint, train, transfer


@pytest.fixture(scope="module")
def digits():
    return sj.data.digits(seed=0)


@pytest.fixture(scope="module")
def task_b(digits):
    """Model B's task: is the digit >= 5 (binary)."""
    split = digits.train
    return split.x, (split.y >= 5).astype(np.float32)


def _model_a(seed=0):
    return sj.nn.mlp([32, 16], input_shape=(8, 8), activation="elu", batch_norm="after",
                     rngs=nnx.Rngs(seed))


def _head(seed=1):
    return sj.nn.Dense(16, 1, activation="sigmoid", rngs=nnx.Rngs(seed))


def _params(model):
    return jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _stats(model):
    return jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))


def _equal(a, b):
    return all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def trained_a(digits, tmp_path_factory):
    """Model A trained briefly on the 10 classes and saved (the notes' my_model_A)."""
    model = _model_a()
    sj.fit(model, sj.adam(1e-2), digits.train, epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("a") / "model_a"
    checkpoint.save_model(path, model)
    return path, _params(model)


def test_load_model_then_reuse_all_but_the_last_layer(trained_a):
    path, saved = trained_a
    model_a = checkpoint.load_model(path, _model_a(seed=42))  # other init, then loaded
    assert _equal(_params(model_a), saved)
    model_b = transfer.reuse(model_a, _head())
    assert len(model_b.layers) == len(model_a.layers)
    np.testing.assert_array_equal(model_b.layers[2].kernel[...], saved["layers"][2]["kernel"])
    assert model_b(jnp.ones((3, 8, 8))).shape == (3, 1)


def test_load_model_into_another_architecture_names_the_leaf(trained_a):
    path, _ = trained_a
    other = sj.nn.mlp([64, 16], input_shape=(8, 8), batch_norm="after", rngs=nnx.Rngs(0))
    with pytest.raises(checkpoint.CheckpointError, match="layers/2/kernel"):
        checkpoint.load_model(path, other)


@pytest.mark.slow
def test_training_b_never_changes_a_when_cloned(trained_a, task_b):
    path, saved = trained_a
    model_a = checkpoint.load_model(path, _model_a())
    model_b = transfer.reuse(model_a, _head())
    sj.fit(model_b, sj.sgd(0.05), task_b, epochs=1, batch_size=64, verbose=0,
           loss="binary_crossentropy")
    assert _equal(_params(model_a), saved)
    assert not np.array_equal(model_b.layers[2].kernel[...], saved["layers"][2]["kernel"])


@pytest.mark.slow
def test_shared_layers_change_a_too_without_clone(trained_a, task_b):
    # The notes' warning: Sequential(model_A.layers[:-1]) shares the layers.
    path, saved = trained_a
    model_a = checkpoint.load_model(path, _model_a())
    model_b = transfer.reuse(model_a, _head(), clone=False)
    sj.fit(model_b, sj.sgd(0.05), task_b, epochs=1, batch_size=64, verbose=0,
           loss="binary_crossentropy")
    assert not np.array_equal(model_a.layers[2].kernel[...], saved["layers"][2]["kernel"])


@pytest.mark.slow
def test_freeze_keeps_reused_layers_bitwise_and_trains_the_head(trained_a, task_b):
    path, saved = trained_a
    model_a = checkpoint.load_model(path, _model_a())
    reused = transfer.reused_paths(model_a)
    model_b = transfer.reuse(model_a, _head())
    head_before = np.array(model_b.layers[-1].kernel[...])
    stats_before = _stats(model_b)
    tx = transfer.freeze(sj.sgd(0.05), model_b, trainable=transfer.not_matching(reused))
    history = sj.fit(model_b, tx, task_b, epochs=2, batch_size=64, verbose=0,
                     loss="binary_crossentropy")
    after = _params(model_b)
    for layer in (1, 2, 3, 4, 5):
        assert _equal(after["layers"][layer], saved["layers"][layer]), layer
    assert not np.array_equal(model_b.layers[-1].kernel[...], head_before)
    # frozen batch norm runs in inference mode: its moving statistics never move
    assert _equal(_stats(model_b), stats_before)
    assert all(not layer.trainable for layer in model_b.layers
               if isinstance(layer, sj.nn.BatchNorm))
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_plain_masked_would_not_freeze():
    # docs/parity.md section 7: optax.masked passes masked-out gradients through unchanged.
    params = {"frozen": jnp.ones(2), "head": jnp.ones(2)}
    grads = {"frozen": jnp.full(2, 0.5), "head": jnp.full(2, 0.5)}
    masked = optax.masked(optax.sgd(1.0), {"frozen": False, "head": True})
    updates, _ = masked.update(grads, masked.init(params), params)
    np.testing.assert_array_equal(updates["frozen"], [0.5, 0.5])
    model = nnx.Dict(frozen=nnx.Param(jnp.ones(2)), head=nnx.Param(jnp.ones(2)))
    frozen = transfer.freeze(optax.sgd(1.0), model, trainable="head")
    _, p, _ = nnx.split(model, nnx.Param, ...)
    g = jax.tree.map(lambda x: jnp.full_like(x, 0.5), p)
    updates, _ = frozen.update(g, frozen.init(p), p)
    np.testing.assert_array_equal(updates["frozen"][...], [0.0, 0.0])
    np.testing.assert_array_equal(updates["head"][...], [-0.5, -0.5])


@pytest.mark.slow
def test_freeze_then_finetune_switches_inside_one_fit(trained_a, task_b):
    path, saved = trained_a
    model_a = checkpoint.load_model(path, _model_a())
    reused = transfer.reused_paths(model_a)
    model_b = transfer.reuse(model_a, _head())
    steps = sj.data.num_batches(len(task_b[0]), 64)
    tx = transfer.freeze_then_finetune(
        model_b, transfer.not_matching(reused), frozen_steps=2 * steps,
        first=sj.sgd(1e-2), then=sj.sgd(1e-4),
    )
    state = train.init_state(model_b, tx)
    step = train.make_train_step(model_b, tx, "binary_crossentropy")
    x, y = task_b
    stats_before = np.array(state.rest["layers"][3]["mean"][...])
    kernels, means = [], []
    full = len(x) // 64  # whole batches only: one shape, one compiled program
    for i in range(2 * steps + 3):
        batch = slice((i % full) * 64, (i % full) * 64 + 64)
        state, _ = step(state, (x[batch], y[batch]))
        kernels.append(np.array(state.params["layers"][2]["kernel"][...]))
        means.append(np.array(state.rest["layers"][3]["mean"][...]))
    assert step._cache_size() == 1  # one program for both phases
    for k, m in zip(kernels[: 2 * steps], means[: 2 * steps], strict=True):
        np.testing.assert_array_equal(k, saved["layers"][2]["kernel"])
        # reused batch norm runs in inference mode while frozen, as Keras's
        np.testing.assert_array_equal(m, stats_before)
    assert not np.array_equal(means[-1], stats_before)  # and trains after the switch
    assert not np.array_equal(kernels[-1], saved["layers"][2]["kernel"])
    # the fine-tuning phase moves the reused weights by lr 1e-4 steps: small changes
    assert np.abs(kernels[-1] - saved["layers"][2]["kernel"]).max() < 1e-2


def _values(model):
    """Every variable of ``model`` in the unrolled layout, as numpy arrays by path."""
    flat = nnx.to_flat_state(nnx.state(sj.nn.unroll(model)))
    return {path: np.array(jax.random.key_data(v[...]) if jnp.issubdtype(
        v[...].dtype, jax.dtypes.prng_key) else v[...]) for path, v in flat}


def test_freeze_then_finetune_on_a_scanned_model_matches_the_unrolled_one():
    # A stack is frozen as a whole (its parameters have one path for all its blocks) and
    # its batch norms share one frozen-call counter: the same run as the unrolled model.
    x = jax.random.normal(jax.random.key(0), (16, 8))
    y = jnp.arange(16) % 3
    runs = {}
    for scan in (False, True):
        model_a = sj.nn.mlp([16] * 4, input_shape=(8,), batch_norm="after", scan_layers=scan,
                            rngs=nnx.Rngs(0))
        model_b = transfer.reuse(model_a, sj.nn.Dense(16, 3, activation="softmax",
                                                      rngs=nnx.Rngs(1)))
        if scan:
            assert "layers/4/blocks/layers/0/kernel" in transfer.reused_paths(model_a)
        tx = transfer.freeze_then_finetune(
            model_b, transfer.not_matching(transfer.reused_paths(model_a)), frozen_steps=2,
            first=sj.sgd(0.1), then=sj.sgd(0.05))
        state = sj.steps.init_state(model_b, tx)
        step = sj.steps.make_train_step(model_b, tx)
        runs[scan] = [_values(model_b)]
        for _ in range(4):
            state, _ = step(state, (x, y))
            sj.steps.update_model(model_b, state)
            runs[scan].append(_values(model_b))
    for unrolled, scanned in zip(runs[False], runs[True], strict=True):
        assert unrolled.keys() == scanned.keys()
        for path in unrolled:  # measured bitwise equal on CPU
            np.testing.assert_array_equal(unrolled[path], scanned[path], err_msg=str(path))
    first, frozen, trained = runs[True][0], runs[True][2], runs[True][3]
    stack_kernel = ("layers", 6, "kernel")  # the second stacked block, unrolled
    assert np.array_equal(first[stack_kernel], frozen[stack_kernel])
    assert not np.array_equal(frozen[stack_kernel], trained[stack_kernel])


def test_switch_matches_two_separate_optimizers():
    params = {"w": jnp.asarray([1.0, -2.0])}
    grads = {"w": jnp.asarray([0.5, 0.25])}
    tx = transfer.switch(optax.sgd(0.1, momentum=0.9), optax.sgd(0.01, momentum=0.9), 2)
    first, then = optax.sgd(0.1, momentum=0.9), optax.sgd(0.01, momentum=0.9)
    s, s1, s2 = tx.init(params), first.init(params), then.init(params)
    for i in range(4):
        u, s = tx.update(grads, s, params)
        if i < 2:
            ref, s1 = first.update(grads, s1, params)
        else:
            ref, s2 = then.update(grads, s2, params)  # fresh state at the switch, as Keras
        np.testing.assert_allclose(u["w"], ref["w"], rtol=1e-7)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: transfer.freeze(optax.sgd(1.0), m, trainable="nothing-matches"), "trainable"),
        (lambda m: transfer.switch(optax.sgd(1.0), optax.sgd(1.0), -1), "boundary"),
        (lambda m: transfer.reuse(m.layers[1], _head()), "model_a"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(_model_a())


def test_freeze_then_finetune_clips_the_whole_tree_after_the_switch():
    model = nnx.Dict(reused=nnx.Param(jnp.ones(3)), head=nnx.Param(jnp.ones(1)))
    tx = transfer.freeze_then_finetune(model, "head", frozen_steps=1, first=sj.sgd(1.0),
                                       then=sj.sgd(1.0, global_clipnorm=1.0))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    grads = jax.tree.map(lambda x: jnp.full_like(x, 3.0), params)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)  # phase 1: head only, unclipped
    np.testing.assert_array_equal(updates["reused"][...], jnp.zeros(3))
    np.testing.assert_allclose(updates["head"][...], [-3.0])
    updates, state = tx.update(grads, state, params)  # phase 2: one global norm of 1
    norm = jnp.sqrt(sum(jnp.sum(u**2) for u in jax.tree.leaves(updates)))
    np.testing.assert_allclose(norm, 1.0, rtol=1e-6)


@pytest.mark.slow
def test_fit_history_reports_the_rate_of_each_phase(trained_a, task_b):
    path, _ = trained_a
    model_a = checkpoint.load_model(path, _model_a())
    model_b = transfer.reuse(model_a, _head())
    steps = sj.data.num_batches(len(task_b[0]), 128)
    tx = transfer.freeze_then_finetune(
        model_b, transfer.not_matching(transfer.reused_paths(model_a)),
        frozen_steps=2 * steps, first=sj.sgd(1e-2), then=sj.sgd(1e-4),
    )
    history = sj.fit(model_b, tx, task_b, epochs=4, batch_size=128, verbose=0,
                     loss="binary_crossentropy")
    np.testing.assert_allclose(history.history["lr"], [1e-2, 1e-2, 1e-4, 1e-4], rtol=1e-6)
