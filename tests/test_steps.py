"""The run state and the compiled steps: against a hand-written NNX + Optax step."""

import jax
import numpy as np
import pytest
from conftest import small_mlp, tree_equal
from flax import nnx

import stablejax as sj
from stablejax import train


def test_train_step_matches_hand_written_nnx_optax_step(digits):
    x, y = digits.train.x[:32], digits.train.y[:32]
    ours = small_mlp(output=None)
    reference = small_mlp(output=None)
    tx = sj.adam(1e-2)
    state = train.init_state(ours, tx)
    step = train.make_train_step(ours, tx, "sparse_categorical_crossentropy_from_logits")

    optimizer = nnx.Optimizer(reference, sj.adam(1e-2), wrt=nnx.Param)

    def loss_fn(model):
        return sj.losses.sparse_categorical_crossentropy_from_logits(model(x), y)

    for _ in range(3):
        state, metrics = step(state, (x, y))
        loss, grads = nnx.value_and_grad(loss_fn)(reference)
        optimizer.update(reference, grads)
        assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-6)
    _, ref_params, ref_rest = nnx.split(reference, nnx.Param, ...)
    # The reference runs op by op, ours compiled: gradients agree to float32 rounding
    # (~1e-7 of the largest), but Adam divides each component by its own magnitude, so a
    # component 1e-3 of the largest turns that into a ~1e-4 relative error of its update
    # (size lr = 1e-2): up to ~1e-6 absolute after 3 steps (measured 2e-7).
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state.rest), jax.tree.leaves(ref_rest), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # batch statistics


def test_train_step_compiles_once(digits):
    model = small_mlp()
    tx = sj.sgd(0.01, momentum=0.9)
    state = train.init_state(model, tx)
    step = train.make_train_step(model, tx)
    batch = (digits.train.x[:16], digits.train.y[:16])
    for _ in range(3):
        state, _ = step(state, batch)
    assert step._cache_size() == 1


def test_eval_step_uses_moving_statistics(digits):
    model = small_mlp(output="softmax")
    tx = sj.sgd(0.1)
    state = train.init_state(model, tx)
    step = train.make_train_step(model, tx)
    batch = (digits.train.x[:64], digits.train.y[:64])
    state, _ = step(state, batch)
    metrics = train.make_eval_step(model)(state, batch)
    train.update_model(model, state)
    model.eval()
    expected = sj.losses.sparse_categorical_crossentropy(model(batch[0]), batch[1])
    assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-6)
    model.train()
    assert float(sj.losses.sparse_categorical_crossentropy(model(batch[0]), batch[1])) != (
        pytest.approx(float(expected), rel=1e-3)
    )


def test_non_finite_batch_is_skipped_and_counted(digits):
    model = small_mlp()
    tx = sj.adam(1e-3)
    state = train.init_state(model, tx)
    step = train.make_train_step(model, tx, donate=False)
    x = np.array(digits.train.x[:16])
    x[3, 2, 2] = np.nan
    new, metrics = step(state, (x, digits.train.y[:16]))
    assert int(metrics["skipped"]) == 1
    assert int(new.skips) == 1 and int(new.step) == 1
    for field in ("params", "rest", "opt_state"):
        assert tree_equal(getattr(new, field), getattr(state, field)), field
    good, metrics = step(new, (digits.train.x[:16], digits.train.y[:16]))
    assert int(metrics["skipped"]) == 0 and int(good.skips) == 0


@pytest.mark.parametrize("scan_layers", [False, True])
def test_eval_scan_equals_eval_step_per_batch_with_stacked_batch_norm(scan_layers):
    # A stacked batch-norm model once failed inside the scan over batches (its blocks
    # wrote their statistics back across traces).
    model = sj.nn.mlp([8] * 4, input_shape=(4,), output_size=3, batch_norm="after",
                      scan_layers=scan_layers, rngs=nnx.Rngs(0))
    state = train.init_state(model, sj.sgd(0.1))
    x = jax.random.normal(jax.random.key(1), (10, 4))
    y = jax.numpy.arange(10, dtype=jax.numpy.int32) % 3
    outs = sj.steps.make_eval_scan(model, batch_size=4)(state, x, y)
    step = train.make_eval_step(model)
    expected = [float(step(state, (x[i:i + 4], y[i:i + 4]))["loss"]) for i in (0, 4, 8)]
    np.testing.assert_allclose(np.asarray(outs["loss"]), expected, rtol=1e-6)
