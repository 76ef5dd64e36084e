"""The initialisation table of docs/guide.md applied to a built model: is each kernel's
variance the one its activation wants?"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
from flax import nnx

from stablejax import initializers
from stablejax.diagnostics._probes import check_model, expected_variance, instrument
from stablejax.diagnostics.thresholds import VARIANCE_TOLERANCE

__all__ = ["Recommendation", "recommend"]



@dataclass(frozen=True)
class Recommendation:
    """One kernel layer checked against the table (see :func:`recommend`)."""

    name: str  # the layer's path, as in stablejax.nn.variables
    activation: str  # the activation that decides its initialiser
    fan_in: int
    variance: float  # the kernel's actual variance
    expected: float | None  # scale / fan of the matched initialiser (None: no entry)
    ok: bool
    suggestion: str  # one line; "" when ok


def recommend(model: nnx.Module) -> list[Recommendation]:
    """The initialisation table of docs/guide.md §1.1 applied to every kernel layer.

    For each layer with a kernel (``Dense``, ``nnx.Linear``, ...; a ``Stack``'s blocks
    one by one) its activation (its own, or for a layer without one the activation that
    follows it in its ``nnx.Sequential``), the kernel's variance, and the variance
    ``scale / fan`` of ``stablejax.initializers.for_activation(activation)``: Glorot
    ``1 / fan_avg`` (none, tanh, sigmoid, softmax), He ``2 / fan_in`` (ReLU and its
    variants, ELU), LeCun ``1 / fan_in`` (SELU). The layer is ok when the two agree
    within a factor ``VARIANCE_TOLERANCE = sqrt(2)``: halfway (on a log scale) between
    the table's entries, which differ by a factor of 2 (He against LeCun, or Glorot
    with equal fans), so an ok layer is nearer its own entry than any other. The
    variance is measured from the kernel's entries; with few of them (say under 100)
    its sampling error, a relative ``sqrt(2 / n)``, nears that tolerance. An
    activation without a table entry (e.g. gelu) is reported ok, ``expected`` None;
    a kernel holding NaN or infinite values never is.

    Raises ``TypeError`` unless ``model`` is an ``nnx.Module``, and ``ValueError`` when
    it has no kernel layer.

    Example::

        >>> from flax import nnx
        >>> from stablejax.nn import mlp
        >>> from stablejax.diagnostics import recommend
        >>> rows = recommend(mlp([300, 100], activation="elu", rngs=nnx.Rngs(0)))
        >>> [(r.name, r.activation, r.fan_in, r.ok) for r in rows]
        [('layers/1', 'elu', 784, True), ('layers/2', 'elu', 300, True),
         ('layers/3', 'softmax', 100, True)]
    """
    check_model(model)
    _, sites = instrument(model)
    rows = []
    for site in sites:
        kernel = site.kernel
        if kernel is None:
            continue
        fan_in = int(initializers.compute_fans(kernel.shape)[0])
        variance = float(jnp.var(kernel.astype(jnp.float32)))
        init, target = expected_variance(site.feeds, kernel.shape) or (None, None)
        if not math.isfinite(variance):
            ok, problem = False, "kernel holds NaN or infinite values"
        elif target is None:
            ok, problem = True, ""
        else:
            ok = 1 / VARIANCE_TOLERANCE <= variance / target <= VARIANCE_TOLERANCE
            problem = (f"kernel variance {variance:.3g} is {variance / target:.3g}x the "
                       f"{target:.3g} that {site.feeds} wants")
        fix = f"use kernel_init=stablejax.initializers.{init}()" if init else "re-initialise it"
        suggestion = "" if ok else f"{site.name}: {problem}; {fix}"
        rows.append(Recommendation(site.name, site.feeds, fan_in, variance, target, ok,
                                   suggestion))
    return rows

