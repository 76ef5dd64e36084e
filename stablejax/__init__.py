"""stablejax: the classic recipe for training deep networks stably, in pure JAX.

Initialisers matched to the activation, non-saturating activations, a Keras-semantics
batch norm, gradient clipping, Keras-exact optimizers and learning-rate schedules as
plain Optax transforms, performance scheduling, transfer learning and a ``fit`` loop::

    import optax, stablejax as sj
    tx = optax.chain(sj.clip_by_global_norm(1.0), sj.nadam(1e-3))
"""

from stablejax import (
    activations,
    checkpoint,
    clipping,
    data,
    initializers,
    losses,
    nn,
    optimizers,
    plateau,
    schedules,
    train,
    transfer,
    transforms,
)
from stablejax.clipping import clip_by_global_norm, clip_by_norm, clip_by_value
from stablejax.combine import switch
from stablejax.guard import SkipNonfiniteState, all_finite, skip_nonfinite
from stablejax.optimizers import (
    adagrad,
    adam,
    current_learning_rate,
    nadam,
    rmsprop,
    set_learning_rate,
    sgd,
)
from stablejax.plateau import (
    EarlyStoppingState,
    ReduceOnPlateauState,
    early_stopping,
    observe,
    plateau_scale,
    reduce_on_plateau,
)
from stablejax.schedules import (
    exponential_decay,
    one_cycle,
    per_epoch,
    piecewise_constant,
    power_decay,
    warmup,
)
from stablejax.train import fit
from stablejax.transforms import (
    ScaleByAdagradState,
    ScaleByAdamState,
    ScaleByMomentumState,
    ScaleByNadamState,
    ScaleByRmspropState,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_momentum,
    scale_by_nadam,
    scale_by_rmsprop,
)

__version__ = "0.1.0"

__all__ = [
    "activations",
    "checkpoint",
    "clipping",
    "data",
    "initializers",
    "losses",
    "nn",
    "optimizers",
    "plateau",
    "schedules",
    "train",
    "transfer",
    "transforms",
    "SkipNonfiniteState",
    "all_finite",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "skip_nonfinite",
    "adagrad",
    "adam",
    "current_learning_rate",
    "nadam",
    "rmsprop",
    "set_learning_rate",
    "sgd",
    "switch",
    "EarlyStoppingState",
    "ReduceOnPlateauState",
    "early_stopping",
    "observe",
    "plateau_scale",
    "reduce_on_plateau",
    "exponential_decay",
    "one_cycle",
    "per_epoch",
    "piecewise_constant",
    "power_decay",
    "warmup",
    "fit",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByMomentumState",
    "ScaleByNadamState",
    "ScaleByRmspropState",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_momentum",
    "scale_by_nadam",
    "scale_by_rmsprop",
    "__version__",
]
