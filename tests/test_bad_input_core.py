"""Bad input to the pure core, as one table: each case names the argument it breaks.

A hyperparameter is a number whether it is a Python number, a NumPy scalar or a concrete
0-d array, so each is checked alike; bools, strings and None are not numbers. Integer
dtypes are refused where the result would be truncated. Each case asserts the exception
type and that the message names the argument (a traced value, inside ``jit``, is the one
thing not checked: see the last tests).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import stablejax as sj
from stablejax import (
    activations,
    clipping,
    combine,
    guard,
    initializers,
    losses,
    plateau,
    schedules,
    transforms,
)

KEY = jax.random.key(0)
X = jnp.arange(-3.0, 3.0)
INTS = jnp.arange(-3, 3)
NAN, INF = float("nan"), float("inf")


def state_of(tx):
    return tx.init(jnp.zeros(3))


# (id, call, exception, text the message must contain)
CASES = [
    # 1. Hyperparameters as arrays, NumPy scalars, non-numbers and bools.
    ("adam-jnp-negative", lambda: sj.adam(jnp.array(-1e-3)), ValueError, "learning_rate"),
    ("adam-np-negative", lambda: sj.adam(np.array(-1e-3)), ValueError, "learning_rate"),
    ("adam-np-scalar-negative", lambda: sj.adam(np.float32(-1e-3)), ValueError, "learning_rate"),
    ("adam-nan", lambda: sj.adam(NAN), ValueError, "learning_rate"),
    ("adam-inf", lambda: sj.adam(INF), ValueError, "learning_rate"),
    ("adam-string", lambda: sj.adam("1e-3"), ValueError, "learning_rate"),
    ("adam-none", lambda: sj.adam(None), ValueError, "learning_rate"),
    ("adam-bool", lambda: sj.adam(True), ValueError, "learning_rate"),
    ("adam-vector", lambda: sj.adam(jnp.ones(2)), ValueError, "learning_rate"),
    ("adam-beta_1-jnp", lambda: sj.adam(beta_1=jnp.array(1.0)), ValueError, "beta_1"),
    ("adam-beta_2-np", lambda: sj.adam(beta_2=np.float64(-0.1)), ValueError, "beta_2"),
    ("adam-epsilon-jnp", lambda: sj.adam(epsilon=jnp.array(0.0)), ValueError, "epsilon"),
    ("adam-decay-np", lambda: sj.adam(decay=np.float32(-1)), ValueError, "decay"),
    ("nadam-momentum_decay-nan", lambda: sj.nadam(momentum_decay=NAN), ValueError,
     "momentum_decay"),
    ("sgd-momentum-jnp", lambda: sj.sgd(0.1, momentum=jnp.array(1.5)), ValueError, "momentum"),
    ("sgd-momentum-string", lambda: sj.sgd(0.1, momentum="0.9"), ValueError, "momentum"),
    ("sgd-nesterov-np-zero", lambda: sj.sgd(0.1, momentum=np.float32(0), nesterov=True),
     ValueError, "momentum"),
    ("rmsprop-rho-jnp", lambda: sj.rmsprop(rho=jnp.array(1.1)), ValueError, "rho"),
    ("adagrad-initial-np", lambda: sj.adagrad(initial_accumulator_value=np.array(-1.0)),
     ValueError, "initial_accumulator_value"),
    ("scale_by_adam-epsilon-inf", lambda: transforms.scale_by_adam(epsilon=INF), ValueError,
     "epsilon"),
    ("clip_by_norm-jnp", lambda: clipping.clip_by_norm(jnp.array(-1.0)), ValueError,
     "clipnorm"),
    ("clip_by_global_norm-np", lambda: clipping.clip_by_global_norm(np.float32(0)), ValueError,
     "global_clipnorm"),
    ("clip_by_value-nan", lambda: clipping.clip_by_value(NAN), ValueError, "clipvalue"),
    ("adam-clipnorm-jnp", lambda: sj.adam(clipnorm=jnp.array(-1.0)), ValueError, "clipnorm"),
    ("elu-alpha-np", lambda: activations.elu(X, alpha=np.float32(-1)), ValueError, "alpha"),
    ("elu-alpha-jnp", lambda: activations.elu(X, alpha=jnp.array(-1.0)), ValueError, "alpha"),
    ("leaky_relu-slope-nan", lambda: activations.leaky_relu(X, NAN), ValueError,
     "negative_slope"),
    ("rrelu-lower-jnp", lambda: activations.rrelu(X, lower=jnp.array(-0.1)), ValueError,
     "lower"),
    ("rrelu-lower-above-upper-np", lambda: activations.rrelu(X, None, np.float32(0.5), 0.25),
     ValueError, "lower"),
    ("set_learning_rate-negative", lambda: sj.set_learning_rate(state_of(sj.sgd(0.1)), -1.0),
     ValueError, "learning_rate"),
    ("set_learning_rate-nan", lambda: sj.set_learning_rate(state_of(sj.sgd(0.1)), NAN),
     ValueError, "learning_rate"),
    ("set_learning_rate-jnp", lambda: sj.set_learning_rate(state_of(sj.sgd(0.1)),
                                                           jnp.array(-1.0)),
     ValueError, "learning_rate"),
    ("plateau-factor-jnp", lambda: plateau.reduce_on_plateau(factor=jnp.array(1.0)), ValueError,
     "factor"),
    ("plateau-patience-bool", lambda: plateau.reduce_on_plateau(patience=True), ValueError,
     "patience"),
    ("plateau-min_lr-inf", lambda: plateau.reduce_on_plateau(min_lr=INF), ValueError, "min_lr"),
    ("power_decay-lr0-inf", lambda: schedules.power_decay(INF, 10), ValueError, "lr0"),
    ("power_decay-s-jnp", lambda: schedules.power_decay(0.1, jnp.array(-1.0)), ValueError, "s"),
    ("exponential_decay-s-inf", lambda: schedules.exponential_decay(0.1, s=INF), ValueError,
     "s"),
    ("exponential_decay-rate-nan", lambda: schedules.exponential_decay(0.1, 10, NAN),
     ValueError, "rate"),
    ("piecewise-negative-value", lambda: schedules.piecewise_constant([2], [0.1, -0.1]),
     ValueError, "values[1]"),
    ("piecewise-nan-value", lambda: schedules.piecewise_constant([2], [NAN, 0.1]), ValueError,
     "values[0]"),
    ("piecewise-inf-boundary", lambda: schedules.piecewise_constant([INF], [0.1, 0.1]),
     ValueError, "boundaries[0]"),
    ("one_cycle-max_lr-np", lambda: schedules.one_cycle(np.float32(-1), 10), ValueError,
     "max_lr"),
    ("one_cycle-total_steps-bool", lambda: schedules.one_cycle(0.1, True), ValueError,
     "total_steps"),
    ("warmup-value-inf", lambda: schedules.warmup(INF, 2), ValueError, "schedule_or_value"),
    ("warmup-init_value-jnp", lambda: schedules.warmup(0.1, 2, jnp.array(-1.0)), ValueError,
     "init_value"),
    ("per_epoch-steps-bool", lambda: schedules.per_epoch(lambda e: 0.1, True), ValueError,
     "steps_per_epoch"),
    ("per_epoch-table-nan", lambda: schedules.per_epoch(lambda e: NAN, 2, num_epochs=2),
     ValueError, "schedule(0)"),
    ("schedule-negative-step", lambda: schedules.power_decay(0.1, 10)(-1), ValueError, "step"),
    ("schedule-negative-array-step",
     lambda: schedules.exponential_decay(0.1, 10)(jnp.array([0, -2])), ValueError, "step"),
    ("piecewise-negative-step", lambda: schedules.piecewise_constant([2], [1.0, 0.1])(-1),
     ValueError, "step"),
    ("one_cycle-negative-step", lambda: schedules.one_cycle(0.1, 10)(np.int64(-1)), ValueError,
     "step"),
    ("warmup-negative-step", lambda: schedules.warmup(0.1, 2)(-3), ValueError, "step"),
    ("switch-boundary-bool", lambda: combine.switch(optax.sgd(1.0), optax.sgd(0.1), True),
     ValueError, "boundary"),
    ("switch-boundary-float", lambda: combine.switch(optax.sgd(1.0), optax.sgd(0.1), 1.5),
     ValueError, "boundary"),
    ("switch-boundary-negative", lambda: combine.switch(optax.sgd(1.0), optax.sgd(0.1), -1),
     ValueError, "boundary"),
    ("variance_scaling-scale-jnp", lambda: initializers.variance_scaling(jnp.array(-2.0)),
     ValueError, "scale"),
    ("variance_scaling-scale-string", lambda: initializers.variance_scaling("2"), ValueError,
     "scale"),
    ("compute_fans-bool-dim", lambda: initializers.compute_fans((True, 3)), ValueError,
     "shape[0]"),
    ("compute_fans-float-dim", lambda: initializers.compute_fans((2.5, 3)), ValueError,
     "shape[0]"),
    ("binary_accuracy-threshold-nan",
     lambda: losses.binary_accuracy(jnp.ones(2), jnp.ones(2), NAN), ValueError, "threshold"),
    ("skip_nonfinite-not-a-transform", lambda: guard.skip_nonfinite(0.1), TypeError, "inner"),
    # 2. Integer dtypes where floats are meant.
    *[
        (f"{name}-int-dtype", lambda name=name: getattr(initializers, name)()(KEY, (3, 2),
                                                                              jnp.int32),
         ValueError, "dtype")
        for name in ("glorot_uniform", "he_normal", "lecun_normal")
    ],
    ("variance_scaling-bool-dtype",
     lambda: initializers.variance_scaling()(KEY, (3, 2), jnp.bool_), ValueError, "dtype"),
    *[
        (f"{name}-int-input", lambda name=name: activations.get(name)(INTS), ValueError, "x")
        for name in ("sigmoid", "tanh", "leaky_relu", "rrelu", "elu", "selu", "softmax")
    ],
    ("prelu-int-input", lambda: activations.prelu(INTS, 0.25), ValueError, "x"),
    ("elu-int-input-under-jit", lambda: jax.jit(activations.elu)(INTS), ValueError, "x"),
]


@pytest.mark.parametrize("call, error, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_the_argument(call, error, text):
    with pytest.raises(error) as raised:
        call()
    assert text in str(raised.value)


def updates_of(tx, steps=3, **extra):
    """The updates of ``tx`` over ``steps`` calls on fixed gradients, stacked."""
    grads, state, out = jnp.array([1.0, -2.0, 0.5]), tx.init(jnp.zeros(3)), []
    for _ in range(steps):
        updates, state = tx.update(grads, state, jnp.zeros(3), **extra)
        out.append(updates)
    return jnp.stack(out)


STEPS = jnp.arange(12)

# Numbers in every accepted form: NumPy scalars and integers, concrete 0-d arrays. Each
# form must give what the same plain Python number gives (or the closed form):
# (id, the odd form's result, the reference's result).
GOOD = [
    ("adam-np-scalar", lambda: updates_of(sj.adam(np.float32(1e-3))),
     lambda: updates_of(sj.adam(1e-3))),
    ("adam-jnp-scalar", lambda: updates_of(sj.adam(jnp.array(1e-3))),
     lambda: updates_of(sj.adam(1e-3))),
    ("adam-int", lambda: updates_of(sj.adam(1)), lambda: updates_of(sj.adam(1.0))),
    ("sgd-np-zero-momentum", lambda: updates_of(sj.sgd(0.1, momentum=np.float64(0.0))),
     lambda: updates_of(sj.sgd(0.1, momentum=0.0))),
    ("switch-np-int",
     lambda: updates_of(combine.switch(optax.sgd(1.0), optax.sgd(0.1), np.int64(4)), 6),
     lambda: updates_of(combine.switch(optax.sgd(1.0), optax.sgd(0.1), 4), 6)),
    ("per_epoch-np-int", lambda: jax.vmap(schedules.per_epoch(lambda e: 0.1 / (e + 1),
                                                              np.int64(4)))(STEPS),
     lambda: jax.vmap(schedules.per_epoch(lambda e: 0.1 / (e + 1), 4))(STEPS)),
    ("one_cycle-np-int", lambda: jax.vmap(schedules.one_cycle(0.1, np.int64(10)))(STEPS),
     lambda: jax.vmap(schedules.one_cycle(0.1, 10))(STEPS)),
    ("warmup-np-int", lambda: jax.vmap(schedules.warmup(0.1, np.int32(4)))(STEPS),
     lambda: jax.vmap(schedules.warmup(0.1, 4))(STEPS)),
    ("plateau-np-int",
     lambda: updates_of(plateau.reduce_on_plateau(patience=np.int64(3)), 6, value=1.0),
     lambda: updates_of(plateau.reduce_on_plateau(patience=3), 6, value=1.0)),
    ("compute_fans-np-int", lambda: initializers.compute_fans((np.int64(3), 4)),
     lambda: (3.0, 4.0)),
    ("relu-int-input", lambda: activations.relu(INTS), lambda: np.maximum(np.asarray(INTS), 0)),
    ("linear-int-input", lambda: activations.linear(INTS), lambda: np.asarray(INTS)),
]


@pytest.mark.parametrize("odd, plain", [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_numbers_in_every_form_are_accepted_and_give_the_same_numbers(odd, plain):
    got, expected = odd(), plain()
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, got, expected)


def test_relu_of_integers_is_exact_and_keeps_the_dtype():
    out = activations.relu(INTS)
    assert out.dtype == INTS.dtype
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, 2])


def test_a_numpy_zero_momentum_builds_the_same_state_as_the_python_zero():
    params = jnp.zeros(3)
    same = jax.tree.structure(sj.sgd(0.1, momentum=0.0).init(params))
    assert jax.tree.structure(sj.sgd(0.1, momentum=np.float64(0.0)).init(params)) == same


def test_traced_hyperparameters_are_not_checked():
    # Inside jit the value is unknown: the factory builds, the numbers are what they are.
    @jax.jit
    def first_update(learning_rate):
        tx = sj.sgd(learning_rate)
        return tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]

    np.testing.assert_allclose(first_update(-0.5), [0.5, 0.5])
    np.testing.assert_allclose(jax.jit(schedules.power_decay(0.1, 10))(-5), 0.2, rtol=1e-6)


def test_inject_hyperparams_with_array_values_is_checked_outside_jit():
    tx = optax.inject_hyperparams(sj.adam)(learning_rate=-0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        tx.init(jnp.zeros(2))
    assert math.isclose(float(sj.current_learning_rate(
        optax.inject_hyperparams(sj.adam)(learning_rate=0.1).init(jnp.zeros(2)))), 0.1,
        rel_tol=1e-7)
