"""The diagnostics' thresholds, all on one scale: an order of magnitude.

See :func:`stablejax.diagnostics.signal_propagation` for why these values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax

__all__ = ["ORDER_OF_MAGNITUDE", "SATURATED_DERIVATIVE", "MAJORITY", "VARIANCE_TOLERANCE",
           "SATURATING"]

# A signal (activation std, kernel-gradient std) that changes by more than this factor
# between the first and the last hidden layer is vanishing or exploding.
ORDER_OF_MAGNITUDE = 10.0
# A sigmoid or tanh unit is saturated on a sample when its derivative there is below this
# fraction of the activation's peak derivative.
SATURATED_DERIVATIVE = 0.1
# A layer fails when more than this fraction of its outputs are saturated or its units dead.
MAJORITY = 0.5
# recommend: a kernel variance within this factor of the table's scale / fan is ok.
VARIANCE_TOLERANCE = math.sqrt(2.0)

# Peak derivative of each saturating activation, and its derivative written in its output.
SATURATING: dict[str, tuple[float, Callable[[jax.Array], jax.Array]]] = {
    "sigmoid": (0.25, lambda s: s * (1.0 - s)),
    "tanh": (1.0, lambda t: 1.0 - t * t),
}
