"""One table of every transform and alias, run through the Optax/Flax contract.

Each row is ``(id, make, kwargs)`` with ``make(**kwargs)`` a complete optimizer (transforms
are chained with a learning rate), so the same row also serves
``optax.inject_hyperparams(make)(**kwargs)`` and the convergence checks.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from flax import nnx

from stablejax import clipping, diagnostics, guard, optimizers, transforms
from stablejax.plateau import reduce_on_plateau

lr = optax.scale_by_learning_rate


def clipped_momentum(clip, learning_rate):
    return optax.chain(clip, lr(learning_rate), transforms.scale_by_momentum(0.9))


CASES = [
    ("scale_by_momentum",
     lambda momentum, learning_rate: optax.chain(
         lr(learning_rate), transforms.scale_by_momentum(momentum)),
     dict(momentum=0.9, learning_rate=1e-3)),
    ("scale_by_momentum-nesterov",
     lambda momentum, learning_rate: optax.chain(
         lr(learning_rate), transforms.scale_by_momentum(momentum, nesterov=True)),
     dict(momentum=0.9, learning_rate=1e-3)),
    ("scale_by_adagrad",
     lambda initial_accumulator_value, learning_rate: optax.chain(
         transforms.scale_by_adagrad(initial_accumulator_value), lr(learning_rate)),
     dict(initial_accumulator_value=0.1, learning_rate=0.5)),
    ("scale_by_rmsprop-centered",
     lambda rho, learning_rate: optax.chain(
         transforms.scale_by_rmsprop(rho, centered=True), lr(learning_rate)),
     dict(rho=0.9, learning_rate=0.01)),
    ("scale_by_adam-amsgrad",
     lambda beta_1, beta_2, learning_rate: optax.chain(
         transforms.scale_by_adam(beta_1, beta_2, amsgrad=True), lr(learning_rate)),
     dict(beta_1=0.9, beta_2=0.999, learning_rate=0.02)),
    ("scale_by_nadam",
     lambda beta_1, momentum_decay, learning_rate: optax.chain(
         transforms.scale_by_nadam(beta_1, momentum_decay=momentum_decay), lr(learning_rate)),
     dict(beta_1=0.9, momentum_decay=1.0, learning_rate=0.02)),
    ("clip_by_value",
     lambda clipvalue, learning_rate: clipped_momentum(
         clipping.clip_by_value(clipvalue), learning_rate),
     dict(clipvalue=1.0, learning_rate=1e-3)),
    ("clip_by_norm",
     lambda clipnorm, learning_rate: clipped_momentum(
         clipping.clip_by_norm(clipnorm), learning_rate),
     dict(clipnorm=1.0, learning_rate=1e-3)),
    ("clip_by_global_norm",
     lambda global_clipnorm, learning_rate: clipped_momentum(
         clipping.clip_by_global_norm(global_clipnorm), learning_rate),
     dict(global_clipnorm=1.0, learning_rate=1e-3)),
    ("skip_nonfinite(adam)",
     lambda learning_rate: guard.skip_nonfinite(optimizers.adam(learning_rate)),
     dict(learning_rate=0.02)),
    ("sgd", optimizers.sgd, dict(learning_rate=1e-3)),
    ("sgd-nesterov", optimizers.sgd, dict(learning_rate=1e-3, momentum=0.9, nesterov=True)),
    ("sgd-decay", optimizers.sgd, dict(learning_rate=1e-3, momentum=0.9, decay=1e-4)),
    ("sgd-clipvalue", optimizers.sgd, dict(learning_rate=1e-3, momentum=0.9, clipvalue=1.0)),
    ("adagrad", optimizers.adagrad, dict(learning_rate=0.5)),
    ("rmsprop-momentum-centered", optimizers.rmsprop,
     dict(learning_rate=0.01, momentum=0.9, centered=True)),
    ("adam-amsgrad", optimizers.adam, dict(learning_rate=0.02, amsgrad=True)),
    ("adam-schedule", optimizers.adam, dict(learning_rate=lambda s: 0.02 / (1 + 1e-3 * s))),
    ("adam-clipnorm", optimizers.adam, dict(learning_rate=0.02, clipnorm=1.0)),
    ("nadam", optimizers.nadam, dict(learning_rate=0.02)),
    ("record_gradient_stats(adam)",
     lambda learning_rate: optax.chain(diagnostics.record_gradient_stats(),
                                       optimizers.adam(learning_rate)),
     dict(learning_rate=0.02)),
    ("nadam-global_clipnorm-plateau", optimizers.nadam,
     dict(learning_rate=0.02, global_clipnorm=10.0, plateau=reduce_on_plateau(patience=2))),
]
IDS = [c[0] for c in CASES]
table = pytest.mark.parametrize("name, make, kwargs", CASES, ids=IDS)


def nested_params(dtype):
    """Nested dicts, a list and None leaves."""
    return {
        "dense": {"kernel": jnp.linspace(-1, 1, 6, dtype=dtype).reshape(3, 2),
                  "bias": jnp.zeros(2, dtype)},
        "blocks": [{"w": jnp.full((2,), 0.5, dtype)}, None, jnp.arange(3, dtype=dtype)],
        "frozen": None,
    }


def gradients(params, salt=0.0):
    return jax.tree.map(
        lambda p: jnp.sin(jnp.arange(p.size, dtype=jnp.float32) + 1 + salt)
        .reshape(p.shape).astype(p.dtype),
        params,
    )


def dtypes(tree):
    return jax.tree.map(lambda x: (jnp.asarray(x).dtype, jnp.shape(x)), tree)


def assert_trees_close(actual, expected, rtol=1e-6, atol=1e-7):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol),
                 actual, expected)


@table
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_jit_compiles_once_and_keeps_dtypes(name, make, kwargs, dtype):
    tx = make(**kwargs)
    params = nested_params(dtype)
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(gradients(params), state, params)
        return updates, optax.apply_updates(params, updates), state

    updates, new_params, new_state = step(params, state)
    updates, new_params, new_state = step(new_params, new_state)
    assert len(traces) == 1
    assert dtypes(updates) == dtypes(params)  # None leaves stay None
    assert dtypes(new_params) == dtypes(params)
    assert dtypes(new_state) == dtypes(state)
    assert not jnp.allclose(new_params["dense"]["kernel"], params["dense"]["kernel"])


def one_step(tx, params, grads):
    return tx.update(grads, tx.init(params), params)[0]


@table
def test_in_optax_chain(name, make, kwargs):
    params = nested_params(jnp.float32)
    grads = gradients(params)
    alone = one_step(make(**kwargs), params, grads)
    chained = one_step(optax.chain(optax.identity(), make(**kwargs), optax.scale(2.0)),
                       params, grads)
    assert_trees_close(chained, jax.tree.map(lambda u: 2 * u, alone))


@table
def test_inject_hyperparams(name, make, kwargs):
    # In float64, so that hyperparameters turned into arrays round as the Python floats.
    with jax.enable_x64(True):
        params = nested_params(jnp.float64)
        direct, injected = make(**kwargs), optax.inject_hyperparams(make)(**kwargs)
        states = direct.init(params), injected.init(params)
        for salt in range(3):
            grads = gradients(params, salt)
            expected, states_0 = direct.update(grads, states[0], params)
            actual, states_1 = injected.update(grads, states[1], params)
            states = states_0, states_1
            assert_trees_close(actual, expected, rtol=1e-10, atol=0)


@table
def test_multisteps_averages_the_micro_batches(name, make, kwargs):
    params = nested_params(jnp.float32)
    g1, g2 = gradients(params, 0.0), gradients(params, 1.0)
    tx = optax.MultiSteps(make(**kwargs), every_k_schedule=2)
    update = jax.jit(tx.update)  # compiled once: eager `lax.cond` would compile every call
    state = tx.init(params)
    first, state = update(g1, state, params)
    second, state = update(g2, state, params)
    assert_trees_close(first, jax.tree.map(jnp.zeros_like, params), atol=0)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    assert_trees_close(second, one_step(make(**kwargs), params, mean))


@table
def test_apply_if_finite(name, make, kwargs):
    params = nested_params(jnp.float32)
    grads = gradients(params)
    tx = optax.apply_if_finite(make(**kwargs), max_consecutive_errors=3)
    update = jax.jit(tx.update)
    state = tx.init(params)
    bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grads)
    skipped, state = update(bad, state, params)
    assert_trees_close(skipped, jax.tree.map(jnp.zeros_like, params), atol=0)
    assert int(state.total_notfinite) == 1
    applied, _ = update(grads, state, params)
    assert_trees_close(applied, one_step(make(**kwargs), params, grads))


@table
def test_flax_nnx_optimizer(name, make, kwargs):
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((4, 3))) ** 2))(model)
    # Computed first: the optimizer updates the model's variables in place.
    params = nnx.state(model, nnx.Param)
    expected = optax.apply_updates(params, one_step(make(**kwargs), params, grads))
    optimizer = nnx.Optimizer(model, make(**kwargs), wrt=nnx.Param)
    optimizer.update(model, grads)
    assert_trees_close(nnx.state(model, nnx.Param), expected)


def three_steps(update, tx, params):
    """Params, the last updates and the state after three updates by ``update``."""
    state = tx.init(params)
    for salt in range(3):
        updates, state = update(gradients(params, salt), state, params)
        params = optax.apply_updates(params, updates)
    return params, updates, state


class TestCompiledAndNot(chex.TestCase):
    """Every row gives the numbers of its interpreted run (``jax.disable_jit``), run by
    Chex's variants with and without ``jax.jit``, as Optax's own tests do."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*CASES)
    def test_same_numbers(self, make, kwargs):
        tx = make(**kwargs)
        with jax.disable_jit():
            expected = three_steps(tx.update, tx, nested_params(jnp.float32))
        actual = three_steps(self.variant(tx.update), tx, nested_params(jnp.float32))
        chex.assert_trees_all_equal_structs(actual, expected)
        chex.assert_trees_all_close(actual, expected, rtol=1e-6, atol=1e-7)
        assert not np.allclose(actual[0]["dense"]["kernel"],
                               nested_params(jnp.float32)["dense"]["kernel"])


A = jnp.array([0.5, 1.0, 2.0, 4.0])
CENTRE = jnp.array([1.0, -2.0, 0.5, 3.0])


def losses(params):
    quadratic = jnp.sum(A * (params["quadratic"] - CENTRE) ** 2)
    x, y = params["rosenbrock"]
    return quadratic, (1 - x) ** 2 + 100 * (y - x**2) ** 2


@table
def test_converges_on_a_quadratic_and_on_rosenbrock(name, make, kwargs):
    tx = make(**kwargs)

    def step(_, carry):
        params, state = carry
        grads = jax.grad(lambda p: sum(losses(p)))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    @jax.jit
    def train(params):
        return jax.lax.fori_loop(0, 2000, step, (params, tx.init(params)))[0]

    start = {"quadratic": jnp.zeros(4), "rosenbrock": jnp.array([-1.2, 1.0])}
    assert [float(v) for v in losses(start)] == pytest.approx([41.0, 24.2])
    quadratic, rosenbrock = losses(train(start))
    assert quadratic < 0.05
    assert rosenbrock < 0.1


INF, NAN = float("inf"), float("nan")
BAD = [
    (optimizers.sgd, dict(learning_rate=-0.1), r"learning_rate=-0\.1 .*\[0, inf\)"),
    (optimizers.adam, dict(learning_rate=NAN), r"learning_rate=nan .*\[0, inf\)"),
    (optimizers.adam, dict(learning_rate=INF), r"learning_rate=inf .*\[0, inf\)"),
    (optimizers.sgd, dict(momentum=1.5), r"momentum=1\.5 .*\[0, 1\]"),
    (optimizers.sgd, dict(momentum=-0.1), r"momentum=-0\.1 .*\[0, 1\]"),
    (optimizers.rmsprop, dict(momentum=2.0), r"momentum=2\.0 .*\[0, 1\]"),
    (optimizers.rmsprop, dict(rho=1.1), r"rho=1\.1 .*\[0, 1\]"),
    (optimizers.adam, dict(beta_1=1.0), r"beta_1=1\.0 .*\[0, 1\)"),
    (optimizers.adam, dict(beta_2=-0.1), r"beta_2=-0\.1 .*\[0, 1\)"),
    (optimizers.nadam, dict(beta_1=1.0), r"beta_1=1\.0 .*\[0, 1\)"),
    (optimizers.adam, dict(epsilon=0.0), r"epsilon=0\.0 .*\(0, inf\)"),
    (optimizers.adagrad, dict(epsilon=-1e-7), r"epsilon=-1e-07 .*\(0, inf\)"),
    (optimizers.adagrad, dict(initial_accumulator_value=-0.1),
     r"initial_accumulator_value=-0\.1 .*\[0, inf\)"),
    (optimizers.nadam, dict(momentum_decay=-1.0), r"momentum_decay=-1\.0 .*\[0, inf\]"),
    (optimizers.sgd, dict(clipnorm=0.0), r"clipnorm=0\.0 .*\(0, inf\)"),
    (optimizers.sgd, dict(clipvalue=-1.0), r"clipvalue=-1\.0 .*\(0, inf\)"),
    (optimizers.adam, dict(global_clipnorm=INF), r"global_clipnorm=inf .*\(0, inf\)"),
    (optimizers.adam, dict(clipnorm=1.0, clipvalue=1.0),
     r"at most one of clipvalue, clipnorm, global_clipnorm.*'clipvalue': 1\.0, 'clipnorm': 1\.0"),
    (optimizers.sgd, dict(nesterov=True), r"nesterov=True needs momentum in \(0, 1\].*=0\.0"),
    (optimizers.sgd, dict(decay=-0.5), r"decay=-0\.5 .*\[0, inf\)"),
    (transforms.scale_by_momentum, dict(momentum=1.5), r"momentum=1\.5 .*\[0, 1\]"),
    (transforms.scale_by_momentum, dict(momentum=0, nesterov=True), r"nesterov=True .*=0$"),
    (transforms.scale_by_adagrad, dict(epsilon=0.0), r"epsilon=0\.0 .*\(0, inf\)"),
    (transforms.scale_by_rmsprop, dict(rho=-0.5), r"rho=-0\.5 .*\[0, 1\]"),
    (transforms.scale_by_adam, dict(beta_2=1.0), r"beta_2=1\.0 .*\[0, 1\)"),
    (transforms.scale_by_nadam, dict(epsilon=NAN), r"epsilon=nan .*\(0, inf\)"),
    (clipping.clip_by_value, dict(clipvalue=0.0), r"clipvalue=0\.0 .*\(0, inf\)"),
    (clipping.clip_by_norm, dict(clipnorm=INF), r"clipnorm=inf .*\(0, inf\)"),
    (clipping.clip_by_global_norm, dict(global_clipnorm=-1.0),
     r"global_clipnorm=-1\.0 .*\(0, inf\)"),
]


@pytest.mark.parametrize("factory, kwargs, message", BAD,
                         ids=[f"{f.__name__}-{'-'.join(k)}" for f, k, _ in BAD])
def test_bad_hyperparameters_raise_at_construction(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


@pytest.mark.parametrize(
    "make",
    [optimizers.adam, optimizers.nadam, optimizers.adagrad, optimizers.rmsprop,
     lambda: optimizers.sgd(momentum=0.9)],
    ids=["adam", "nadam", "adagrad", "rmsprop", "sgd-momentum"],
)
def test_a_state_for_another_tree_names_the_path(make):
    tx = make()
    state = tx.init({"encoder": [jnp.ones(2), jnp.ones(3)]})
    with pytest.raises(ValueError, match=r"\['encoder'\]\[2\]"):
        tx.update({"encoder": [jnp.ones(2), jnp.ones(3), jnp.ones(1)]}, state)
