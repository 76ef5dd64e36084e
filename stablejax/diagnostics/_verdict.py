"""The verdict of :func:`~stablejax.diagnostics.signal_propagation` on its measured rows,
and the fix of docs/guide.md it names (see that function for the checks and their order).
"""

from __future__ import annotations

import math

from stablejax import initializers
from stablejax.diagnostics.report import LayerStats, fmt
from stablejax.diagnostics.thresholds import (
    MAJORITY,
    ORDER_OF_MAGNITUDE,
    SATURATING,
    VARIANCE_TOLERANCE,
)

_FAMILY = {"glorot_uniform": "Glorot", "he_normal": "He", "lecun_normal": "LeCun"}


def fix(layers: list[LayerStats], hidden: list[int], direction: str) -> str:
    """The guide's fix: the matched initialiser, else a non-saturating activation or BN."""
    for i in hidden:
        r = layers[i]
        if r.kernel_std is None or r.table_std is None or r.fan_in is None:
            continue
        ratio = (r.kernel_std / r.table_std) ** 2
        if not 1 / VARIANCE_TOLERANCE <= ratio <= VARIANCE_TOLERANCE:
            entry = initializers.table_entry(r.activation)
            return (f"use {_FAMILY[entry.initializer]} initialisation with {r.activation} "
                    f"(variance {entry.scale:g} / {entry.mode}; {r.name}'s kernel variance is "
                    f"{ratio:.3g}x that)")
    activations = {layers[i].activation for i in hidden}
    if activations & set(SATURATING):
        act = sorted(activations & set(SATURATING))[0]
        remedy = (f"replace {act} with a non-saturating activation (SELU > ELU > leaky ReLU, "
                  "each with its matched initialisation) or add batch norm")
    elif activations & {"relu"} and direction == "dead":
        remedy = "use leaky ReLU, ELU or SELU (they do not die) with He/LeCun initialisation"
    else:
        remedy = "add batch norm"
    return remedy + (" and clip gradients" if direction == "exploding" else "")


def verdict(layers: list[LayerStats], kernel_rows: list[int], act_rows: list[int],
            hidden: list[int], loss: float, grad_ratio: float, forward_ratio: float,
            ) -> tuple[str, str]:
    """The verdict (``"vanishing"``, ``"exploding"``, ``"healthy"``) and its reason.

    ``kernel_rows``: the rows of kernel layers; ``act_rows``: the activation row of each
    hidden kernel layer; ``hidden``: every row before the output layer's.
    """
    band = ORDER_OF_MAGNITUDE
    depth = max(1, len(kernel_rows) - 2)  # layer-to-layer steps between first and last hidden

    def per_layer(ratio: float) -> str:
        return f"{ratio ** (1 / depth):.3g} per layer" if ratio > 0 else "0 per layer"

    first, last = kernel_rows[0], kernel_rows[max(0, len(kernel_rows) - 2)]
    if not math.isfinite(loss):
        return "exploding", (f"the loss is {loss}: the signal overflowed; "
                             f"{fix(layers, hidden, 'exploding')}")
    a_first, a_last = layers[act_rows[0]], layers[act_rows[-1]]
    if not forward_ratio >= 1 / band or forward_ratio > band:  # NaN counts as collapsed
        kind = "exploding" if forward_ratio > band else "vanishing"
        how = "grows" if kind == "exploding" else "collapses"
        return kind, (
            f"the forward signal {how}: the activation std goes from {fmt(a_first.act_std)} "
            f"({a_first.name}) to {fmt(a_last.act_std)} ({a_last.name}), a factor "
            f"{fmt(forward_ratio)} ({per_layer(forward_ratio)}); {fix(layers, hidden, kind)}"
        )
    g_first, g_last = layers[first].kernel_grad_std, layers[last].kernel_grad_std
    if math.isnan(grad_ratio) or not 1 / band <= grad_ratio <= band:
        kind = "exploding" if grad_ratio > band else "vanishing"
        if math.isnan(grad_ratio):
            evidence = "no gradient reaches the hidden kernels (their gradients are all 0)"
        else:
            evidence = (
                f"the kernel gradient std of {layers[first].name} ({fmt(g_first)}) is "
                f"{fmt(grad_ratio)} times that of {layers[last].name} ({fmt(g_last)}), "
                f"{per_layer(grad_ratio)} toward the input"
            )
        return kind, f"{evidence}; {fix(layers, hidden, kind)}"
    for attr, what in (("saturated", "outputs of {} are saturated"),
                       ("dead", "units of {} are dead")):
        values = [(getattr(layers[i], attr), i) for i in hidden
                  if getattr(layers[i], attr) is not None]
        if values and max(values)[0] > MAJORITY:
            value, i = max(values)
            name = f"{layers[i].name} ({layers[i].activation})"
            return "vanishing", (
                f"{value:.0%} of the {what.format(name)}, and such units pass back almost "
                "no gradient; "
                f"{fix(layers, hidden, 'dead' if attr == 'dead' else 'vanishing')}"
            )
    return "healthy", (
        f"the kernel gradient std changes by a factor {fmt(grad_ratio)} from "
        f"{layers[first].name} to {layers[last].name} and the activation std by "
        f"{fmt(forward_ratio)}, both within an order of magnitude, and no hidden layer "
        f"is mostly saturated or dead; nothing to fix"
    )
