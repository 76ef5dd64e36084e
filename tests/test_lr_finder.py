"""sj.lr_find: its suggestion against the standard of benchmarks/lr_find.py, its curves
against closed forms and SGD done by hand, and SweepRun.step_losses against the same."""

import math

import numpy as np
import optax
import pytest
from flax import nnx
from matplotlib.figure import Figure

import stablejax as sj
from stablejax.lr_finder import LRFinder

# float32 training against float64 by hand: relative error per value (the runs below
# are a few dozen SGD updates of a linear model; measured about 1e-6).
BY_HAND_RTOL = 1e-5
# the range test's documented constants (Lightning's, fastai's)
SMOOTHING, DIVERGENCE = 0.98, 4.0

# ---------------------------------------------------------------------------------------
# The standard (benchmarks/lr_find.py): train at each rate of a log grid for a few epochs;
# a suggestion passes when its validation loss is within 2x of the grid's best.

SPLITS = sj.data.digits(flatten=True)
REFERENCE = np.geomspace(1e-4, 3.0, 12)
EPOCHS = 3
FINDER = {"num": 7, "min_lr": 1e-4}  # lr_find's grid: geomspace(1e-4, 1, 7), 2 epochs


def digits_mlp(activation):
    return lambda seed: sj.nn.mlp([32, 32], input_shape=(64,), activation=activation,
                                  rngs=nnx.Rngs(seed))


CASES = {
    "relu SGD": (digits_mlp("relu"), sj.sgd),
    "selu momentum 0.9": (digits_mlp("selu"), lambda lr: sj.sgd(lr, momentum=0.9)),
    "tanh Adam": (digits_mlp("tanh"), sj.adam),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_grid_suggestion_is_within_2x_of_the_reference_grid_best(case):
    make, optimizer = CASES[case]
    finder = sj.lr_find(make, optimizer, SPLITS.train, validation_data=SPLITS.valid,
                        **FINDER)
    assert finder.suggestion in finder.learning_rates
    # the reference grid and the suggestion, each from make(0) for EPOCHS epochs, in one sweep
    rates = [*REFERENCE, finder.suggestion]
    runs = sj.sweep.run(make, optimizer(1e-3), SPLITS.train, seeds=[0] * len(rates),
                        epochs=EPOCHS, validation_data=SPLITS.valid, data_seed=0,
                        learning_rates=[float(r) for r in rates])
    val = np.array([run.history["val_loss"][-1] for run in runs])
    val[~np.isfinite(val)] = np.inf
    best, got = val[:-1].min(), val[-1]
    assert np.isfinite(best)
    assert got <= 2 * best, (finder.suggestion, got, best)


# ---------------------------------------------------------------------------------------
# A linear model on least squares, trained by SGD: everything can be done by hand.

W_TRUE = np.array([[1.0], [-2.0], [0.5], [3.0]])


def regression(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = x @ W_TRUE + 0.1 * rng.normal(size=(n, 1))
    return x.astype(np.float32), y.astype(np.float32)


TRAIN = regression(256, 0)
VALID = regression(64, 1)


def linear(seed):
    return sj.nn.mlp([], input_shape=(4,), output_size=1, output_activation=None,
                     rngs=nnx.Rngs(seed))


def sgd_by_hand(seed, x, y, rates, batch_size, data_seed):
    """The batch mean squared error before each update of ``w <- w - rate * grad`` on
    ``linear(seed)``, one update per rate, in float64, with the sweep's batches
    (``epoch_order`` cut into full batches and the partial last one); then the final
    ``predict(x) = x @ w + b``."""
    dense = linear(seed).layers[-1]
    w = np.asarray(dense.kernel[...], np.float64)
    b = np.asarray(dense.bias[...], np.float64)
    x, y = x.astype(np.float64), y.astype(np.float64)
    losses = []
    for epoch in range(math.ceil(len(rates) / math.ceil(len(x) / batch_size))):
        order = sj.data.epoch_order(len(x), shuffle=True, seed=data_seed, epoch=epoch)
        for start in range(0, len(x), batch_size):
            if len(losses) == len(rates):
                break
            rows = order[start:start + batch_size]
            residual = x[rows] @ w + b - y[rows]
            rate = rates[len(losses)]
            losses.append(np.mean(residual**2))
            w = w - rate * 2 * x[rows].T @ residual / len(rows)
            b = b - rate * 2 * residual.mean(axis=0)
    return np.array(losses), lambda x: x.astype(np.float64) @ w + b


def ema(values):
    """The bias-corrected exponential moving average, in closed form:
    ``sum_k (1 - s) s**(t - k) v_k / (1 - s**(t + 1))``."""
    t = np.arange(len(values))
    weights = (1 - SMOOTHING) * SMOOTHING ** (t[:, None] - t[None, :]) * (t[:, None] >= t)
    return weights @ values / (1 - SMOOTHING ** (t + 1))


def test_step_losses_are_every_updates_batch_loss():
    x, y = regression(80, 1)  # 2 full batches of 32 and one of 16 per epoch
    runs = sj.sweep.run(linear, sj.sgd(0.05), (x, y), seeds=[0, 0], epochs=2,
                        batch_size=32, loss="mse", data_seed=3,
                        learning_rates=[0.05, 1e6])
    sane, blown = runs
    assert sane.step_losses.shape == blown.step_losses.shape == (6,)
    np.testing.assert_allclose(sane.step_losses,
                               sgd_by_hand(0, x, y, [0.05] * 6, 32, data_seed=3)[0],
                               rtol=BY_HAND_RTOL)
    assert sum(sane.history["skipped"]) == 0
    # a rate of 1e6 overflows float32: its skipped steps are NaN, the others finite
    assert sum(blown.history["skipped"]) > 0
    assert np.isnan(blown.step_losses).sum() == sum(blown.history["skipped"])
    assert np.isfinite(blown.step_losses[0])


@pytest.mark.parametrize("validation", [False, True])
def test_grid_curve_is_each_rates_final_loss_and_inf_where_it_diverged(validation):
    x, y = TRAIN
    # SGD on least squares diverges for rates above 2 / (the largest eigenvalue of the
    # loss's Hessian): about 0.7 here, between the grid's 0.1 and 10.
    features = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    threshold = 2 / np.linalg.eigvalsh(2 * features.T @ features / len(x)).max()
    assert 0.1 < threshold < 10
    finder = sj.lr_find(linear, sj.sgd, TRAIN, loss="mse", min_lr=1e-3, max_lr=1e3, num=4,
                        validation_data=VALID if validation else None)
    assert finder.method == "grid"
    np.testing.assert_allclose(finder.learning_rates, np.geomspace(1e-3, 1e3, 4),
                               rtol=1e-12)
    for rate, got in zip(finder.learning_rates[:2], finder.losses[:2], strict=True):
        losses, predict = sgd_by_hand(0, x, y, [rate] * 16, 32, data_seed=0)  # 2 epochs
        # the validation loss at the end, or the last epoch's mean training loss
        expected = (np.mean((predict(VALID[0]) - VALID[1]) ** 2) if validation
                    else losses[8:].mean())
        np.testing.assert_allclose(got, expected, rtol=BY_HAND_RTOL)
    np.testing.assert_array_equal(finder.losses[2:], [np.inf, np.inf])
    assert finder.suggestion == finder.learning_rates[np.argmin(finder.losses)] == 0.1


def test_range_test_curve_is_the_smoothed_loss_cut_before_the_blow_up():
    x, y = TRAIN
    steps, low, high = 30, 1e-4, 100.0
    finder = sj.lr_find(linear, sj.sgd, TRAIN, loss="mse", method="range", min_lr=low,
                        max_lr=high, steps=steps)
    assert finder.method == "range"
    rates = low * (high / low) ** (np.arange(steps) / (steps - 1))
    smoothed = ema(sgd_by_hand(0, x, y, rates, 32, data_seed=0)[0])
    end = len(finder.learning_rates)
    assert 2 < end < steps  # rates up to 100 must blow SGD up (see the grid test above)
    np.testing.assert_allclose(finder.learning_rates, rates[:end], rtol=1e-12)
    np.testing.assert_allclose(finder.losses, smoothed[:end], rtol=BY_HAND_RTOL)
    # every kept point is within 4x of the lowest so far; the next one is not
    assert np.all(finder.losses <= DIVERGENCE * np.minimum.accumulate(finder.losses))
    assert smoothed[end] > DIVERGENCE * smoothed[:end].min()
    # the suggestion: the steepest fall against log(rate), the first 10% aside
    assert finder.suggestion in finder.learning_rates
    skip = end // 10
    slopes = np.gradient(smoothed[skip:end], np.log(rates[skip:end]))
    assert finder.suggestion == rates[skip + np.argmin(slopes)]


# ---------------------------------------------------------------------------------------
# Bad input: refused before any model is built.

BAD_VALUES = [
    ({"method": "foo"}, r"method .*'foo'"),
    ({"method": "Grid"}, r"method .*'Grid'"),
    ({"min_lr": 0.0}, r"min_lr=0.0 .*\(0, inf\)"),
    ({"min_lr": -1e-3}, r"min_lr=-0.001 .*\(0, inf\)"),
    ({"min_lr": 1.0, "max_lr": 1.0}, r"min_lr must be below max_lr.*min_lr=1.0, max_lr=1.0"),
    ({"min_lr": 2.0, "max_lr": 1.0}, r"min_lr must be below max_lr.*min_lr=2.0, max_lr=1.0"),
    ({"max_lr": math.inf}, r"max_lr=inf .*\(0, inf\)"),
    ({"max_lr": math.nan}, r"max_lr=nan"),
    ({"num": 1}, r"num must be an integer >= 2, got 1"),
    ({"num": 3.0}, r"num must be an integer >= 2, got 3.0"),
    ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
    ({"steps": 5}, r"steps must be an integer >= 10, got 5"),
    ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
    ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
    ({"optimizer": optax.adam}, r"optimizer\(0.0001\) must inject .*inject_hyperparams"),
]
BAD_KINDS = [
    ({"optimizer": 3}, r"optimizer must be a callable .*got 3"),
    ({"optimizer": "adam"}, r"optimizer must be a callable .*got 'adam'"),
    ({"optimizer": optax.adam(1e-3)}, r"optimizer must be a callable"),
]


def checked_before_any_model(kwargs, error, match):
    built = []

    def make(seed):
        built.append(seed)
        return linear(seed)

    kwargs = {"optimizer": sj.sgd, "min_lr": 1e-4} | kwargs
    with pytest.raises(error, match=match):
        sj.lr_find(make, kwargs.pop("optimizer"), TRAIN, loss="mse", **kwargs)
    assert built == []


@pytest.mark.parametrize(("kwargs", "match"), BAD_VALUES)
def test_bad_values_raise_value_error_before_training(kwargs, match):
    checked_before_any_model(kwargs, ValueError, match)


@pytest.mark.parametrize(("kwargs", "match"), BAD_KINDS)
def test_bad_optimizer_kinds_raise_type_error_before_training(kwargs, match):
    checked_before_any_model(kwargs, TypeError, match)


# ---------------------------------------------------------------------------------------
# plot

FINDER_TO_DRAW = LRFinder(np.geomspace(1e-3, 1.0, 4), np.array([2.0, 1.0, 0.5, np.inf]),
                          0.1, "grid")


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "plots" / "lr.png"
    FINDER_TO_DRAW.plot(path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert path.stat().st_size > 1000


def test_plot_draws_the_finite_curve_into_an_axes():
    ax = Figure().subplots()
    FINDER_TO_DRAW.plot(ax)
    curve = ax.lines[0]
    np.testing.assert_array_equal(curve.get_xdata(), FINDER_TO_DRAW.learning_rates[:3])
    np.testing.assert_array_equal(curve.get_ydata(), [2.0, 1.0, 0.5])
    assert ax.get_xscale() == "log"
    assert any(np.all(np.asarray(line.get_xdata()) == 0.1) for line in ax.lines[1:])


@pytest.mark.parametrize(("target", "error", "match"), [
    (3, TypeError, r"path_or_ax must be .*got int"),
    (None, TypeError, r"path_or_ax must be .*got NoneType"),
    ([], TypeError, r"path_or_ax must be .*got list"),
    ("curve.txt", ValueError, r"path_or_ax 'curve.txt' must be a file path ending in .png"),
])
def test_plot_rejects_bad_targets(target, error, match):
    with pytest.raises(error, match=match):
        FINDER_TO_DRAW.plot(target)
