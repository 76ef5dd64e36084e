"""How the sections train: the study's data, a context that runs and times the sweeps,
and the plain MLPs they share."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from stablejax import data as sj_data
from stablejax import initializers, loop, nn, sweep
from stablejax.study._common import LOGITS, Budget
from stablejax.sweep import SweepRun


@dataclass
class Data:
    """The study's data set, flattened and standardised."""

    name: str
    train: sj_data.Split
    valid: sj_data.Split
    test: sj_data.Split
    classes: int
    description: str


def load_data(data: str, data_dir: str | os.PathLike | None, budget: Budget,
              seed: int) -> Data:
    """The data set, flattened, capped to ``budget.max_train`` and standardised with the
    training set's per-feature mean and standard deviation (1 where it is 0)."""
    if data == "digits":
        splits = sj_data.digits(seed=seed, flatten=True)
        source = "scikit-learn's digits (8x8, bundled)"
    else:
        assert data_dir is not None
        full = sj_data.fashion_mnist(data_dir)
        splits = sj_data.Splits(*(sj_data.Split(s.x.reshape(len(s.x), -1), s.y)
                                  for s in full))
        source = f"Fashion-MNIST (28x28) from {os.fspath(data_dir)}"
    train = splits.train
    if budget.max_train is not None and len(train.x) > budget.max_train:
        train = sj_data.Split(train.x[: budget.max_train], train.y[: budget.max_train])
    mean = train.x.mean(axis=0)
    std = train.x.std(axis=0)
    std[std == 0] = 1.0

    def standardise(split: sj_data.Split) -> sj_data.Split:
        return sj_data.Split(((split.x - mean) / std).astype(np.float32), split.y)

    train, valid, test = (standardise(s) for s in (train, splits.valid, splits.test))
    return Data(data, train, valid, test, int(max(train.y.max(), valid.y.max()) + 1),
                f"{source}: {len(train.x)} training, {len(valid.x)} validation and "
                f"{len(test.x)} test images, inputs standardised per feature")


@dataclass
class Context:
    """What a section trains with: the data, the budget, the study's seed, the directory
    its figures go to and the progress bar's ``tick``; it records every sweep's size and
    time, and once per study one sweep member trained alone."""

    data: Data
    budget: Budget
    seed: int
    out: str
    tick: Callable[[str], None]
    sweeps: list[tuple[int, float]] = field(default_factory=list)  # (members, seconds)
    solo: tuple[str, int, float, float] | None = None  # (what, members, sweep s, solo s)

    @property
    def seeds(self) -> list[int]:
        """The initialisation seeds of a configuration: ``seed, seed + 1, ...``."""
        return [self.seed + i for i in range(self.budget.seeds)]

    @property
    def steps(self) -> int:
        """Updates per epoch on the training set at the budget's batch size."""
        return sj_data.num_batches(len(self.data.train.x), self.budget.batch_size)

    def sweep(self, what: str, make: Callable[[int], nnx.Module],
              tx: optax.GradientTransformation, seeds: Sequence[int], *,
              train: sj_data.Split | None = None, valid: sj_data.Split | None = None,
              loss: str = LOGITS, epochs: int | None = None,
              batch_size: int | None = None,
              learning_rates: Sequence[float] | None = None) -> list[SweepRun]:
        """Trains ``make(seed)`` for each seed as one program; times it."""
        train = self.data.train if train is None else train
        valid = self.data.valid if valid is None else valid
        epochs = self.budget.epochs if epochs is None else epochs
        batch_size = self.budget.batch_size if batch_size is None else batch_size
        start = time.perf_counter()
        runs = sweep.run(make, tx, train, seeds=seeds, epochs=epochs,
                         batch_size=batch_size, validation_data=valid, loss=loss,
                         data_seed=self.seed, learning_rates=learning_rates)
        seconds = time.perf_counter() - start
        self.sweeps.append((len(runs), seconds))
        if (self.solo is None and learning_rates is None and len(runs) > 1
                and len(self.sweeps) > 1):
            # Once per study (not on the first program, which pays JAX's start-up): the
            # same first member trained alone by fit, compile included.
            start = time.perf_counter()
            loop.fit(make(seeds[0]), tx, train, epochs=epochs, batch_size=batch_size,
                     validation_data=valid, loss=loss, seed=self.seed, verbose=0)
            self.solo = (what, len(runs), seconds, time.perf_counter() - start)
        self.tick(what)
        return runs


def initializer(name: str) -> Any:
    """The initialiser of :mod:`stablejax.initializers` of that name, or N(0, 1) for
    ``"normal"``."""
    if name == "normal":
        return jax.nn.initializers.normal(1.0)
    return getattr(initializers, name)()


def deep_mlp(ctx: Context, activation: str, init: str | None, batch_norm: str | None,
             depth: int | None = None) -> Callable[[int], nnx.Module]:
    """``seed -> mlp`` of ``depth`` (default the budget's) hidden layers, logits out."""
    depth = ctx.budget.depth if depth is None else depth
    width, features = ctx.budget.width, ctx.data.train.x.shape[1]
    kernel_init = None if init is None else initializer(init)

    def make(seed: int) -> nnx.Module:
        return nn.mlp([width] * depth, input_shape=(features,), activation=activation,
                      kernel_init=kernel_init, batch_norm=batch_norm,
                      output_size=ctx.data.classes, output_activation=None,
                      scan_layers=depth > 2, rngs=nnx.Rngs(seed))

    return make


def final(runs: list[SweepRun], key: str) -> list[float]:
    """Each run's last value of the history ``key``."""
    return [r.history[key][-1] for r in runs]


def mean_curve(runs: list[SweepRun], key: str) -> np.ndarray:
    """The history ``key`` per epoch, averaged over the runs."""
    return np.mean([r.history[key] for r in runs], axis=0)
