"""The study behind ``stablejax study``: each technique of docs/guide.md, measured.

Five sections, each trained on real data (scikit-learn's bundled digits by default, or
Fashion-MNIST), each a table, one or two PNG figures and a verdict written from the
numbers of the run that wrote them:

- ``init``: initialisation x activation x batch norm on a deep plain MLP: the signal at
  initialisation (:func:`stablejax.diagnostics.signal_propagation`) and the validation
  accuracy after a fixed budget; whether the guide's ordering SELU > ELU > leaky ReLU
  (and variants) > ReLU > tanh > logistic held.
- ``clip``: a deep ReLU net at a learning rate that makes it explode, without clipping
  and with ``clipvalue``, ``clipnorm`` and ``global_clipnorm``.
- ``optimizers``: SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam and Nadam at their
  Keras default rate and at a tenth and ten times it.
- ``schedules``: constant, power, exponential, piecewise, performance (plateau) and
  1cycle learning rates.
- ``transfer``: the model A / model B experiment: B from scratch against B on A's
  layers, frozen first and then fine-tuned.

Runs of one architecture train together as one compiled program
(:func:`stablejax.sweep.run`); the report says how much time that saved. Every input is
standardised with the training set's per-feature mean and standard deviation (SELU's
self-normalisation assumes it; the other activations lose nothing by it). The same
``seed`` gives the same numbers (wall times aside)::

    result = stablejax.study.run("study", budget="quick", sections=["init", "clip"])
    print(result.report)          # study/REPORT.md
    print(result.summary_table())

The package: :mod:`._common` (budgets, section names, results' types, the ordering
check), :mod:`._training` (the data, the context that runs and times the sweeps, the
shared nets), one module per section that measures (:mod:`.init_section`,
:mod:`.clip_section`, :mod:`.optimizers_section`, :mod:`.schedules_section`,
:mod:`.transfer_section`), :mod:`.plots` (the figures; matplotlib on first use),
:mod:`.markdown` (the report's words) and :mod:`.runner` (:func:`run`, composing them).
"""

from __future__ import annotations

# The constants of each section stay importable from here (``X as X``: re-exported).
from stablejax.study._common import (
           FULL,
           QUICK,
           SECTIONS,
           Budget,
           PairCheck,
           Result,
           Section,
           check_ordering,
)
from stablejax.study._common import LOGITS as LOGITS
from stablejax.study.clip_section import CLIP_LEARNING_RATE as CLIP_LEARNING_RATE
from stablejax.study.clip_section import CLIP_VARIANTS as CLIP_VARIANTS
from stablejax.study.init_section import INIT_CONFIGS as INIT_CONFIGS
from stablejax.study.init_section import INIT_OPTIMIZER as INIT_OPTIMIZER
from stablejax.study.init_section import ORDERING as ORDERING
from stablejax.study.optimizers_section import RATE_FACTORS as RATE_FACTORS
from stablejax.study.optimizers_section import SHALLOW_DEPTH as SHALLOW_DEPTH
from stablejax.study.runner import run
from stablejax.study.schedules_section import SCHEDULE_LR0 as SCHEDULE_LR0
from stablejax.study.schedules_section import SCHEDULES as SCHEDULES
from stablejax.study.transfer_section import TRANSFER_HIDDEN as TRANSFER_HIDDEN
from stablejax.study.transfer_section import TRANSFER_PAIRS as TRANSFER_PAIRS
from stablejax.study.transfer_section import TRANSFER_RATES as TRANSFER_RATES

__all__ = ["SECTIONS", "Budget", "QUICK", "FULL", "Section", "Result", "PairCheck",
           "check_ordering", "run"]
