"""Keras's optimizer variables <-> the state of a stablejax alias.

Keras saves an optimizer as a flat list (``iterations``, the learning rate unless a
schedule sets it, then each slot per trainable variable, Nadam's ``u_product`` last);
an alias keeps the same numbers in its Optax sub-states. :func:`layout` names Keras's
list, :func:`read_opt_state` takes the slots out of an alias's state and
:func:`fill_opt_state` puts them in.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from stablejax import transforms


def _slot_groups(class_name: str, cfg: dict[str, Any]) -> list[tuple[str, ...]]:
    """Keras's optimizer variables after ``iterations`` (and the rate): groups of slots,
    each group interleaved over the trainable variables (``m0, v0, m1, v1, ...``)."""
    if class_name == "SGD":
        return [("momentum",)] if cfg["momentum"] else []
    if class_name == "Adagrad":
        return [("accumulator",)]
    if class_name == "RMSprop":
        groups: list[tuple[str, ...]] = [("velocity",)]
        return (groups + ([("momentum",)] if cfg["momentum"] > 0 else [])
                + ([("average_gradient",)] if cfg["centered"] else []))
    if class_name == "Adam":
        return [("momentum", "velocity")] + ([("velocity_hat",)] if cfg["amsgrad"] else [])
    return [("momentum", "velocity")]  # Nadam, then its u_product


def layout(class_name: str, cfg: dict[str, Any], count: int) -> list[tuple[str, int | None]]:
    """``(slot, trainable index or None)`` for each of Keras's optimizer variables."""
    variables: list[tuple[str, int | None]] = [("iterations", None)]
    if not isinstance(cfg["learning_rate"], dict):
        variables.append(("learning_rate", None))
    for group in _slot_groups(class_name, cfg):
        variables += [(slot, i) for i in range(count) for slot in group]
    if class_name == "Nadam":
        variables.append(("u_product", None))
    return variables


_STATE_TYPES = (
    optax.InjectStatefulHyperparamsState,
    transforms.ScaleByAdamState,
    transforms.ScaleByNadamState,
    transforms.ScaleByAdagradState,
    transforms.ScaleByRmspropState,
    transforms.ScaleByMomentumState,
)


def states(opt_state: optax.OptState) -> dict[type, Any]:
    """The optimizer's sub-states by type (one of each in an alias's state)."""
    found: dict[type, Any] = {}

    def visit(node: Any) -> None:
        if isinstance(node, _STATE_TYPES):
            found.setdefault(type(node), node)
            if isinstance(node, optax.InjectStatefulHyperparamsState):
                visit(node.inner_state)
        elif isinstance(node, tuple):
            for child in node:
                visit(child)

    visit(opt_state)
    return found


def fill_opt_state(
    opt_state: optax.OptState,
    class_name: str,
    cfg: dict[str, Any],
    slots: dict[str, Any],
    schedule: optax.Schedule | None,
) -> optax.OptState:
    """``opt_state`` (an alias's fresh state) holding Keras's optimizer variables."""
    iterations = jnp.asarray(slots["iterations"], jnp.int32)
    # Keras's RMSprop keeps +lr * g / sqrt(...) in its momentum, ours the update's sign.
    sign = -1.0 if class_name == "RMSprop" else 1.0

    def fill(node: Any) -> Any:
        if isinstance(node, optax.InjectStatefulHyperparamsState):
            hyper = dict(node.hyperparams)
            old = hyper["learning_rate"]
            if schedule is None:
                hyper["learning_rate"] = jnp.asarray(slots["learning_rate"], old.dtype)
            else:  # the rate of the last update, as after that update here
                last = max(int(slots["iterations"]) - 1, 0)
                hyper["learning_rate"] = jnp.asarray(schedule(last), old.dtype)
            hyper_states = {
                key: state._replace(count=iterations) for key, state in
                node.hyperparams_states.items()
            }
            return node._replace(
                count=iterations, hyperparams=hyper, hyperparams_states=hyper_states,
                inner_state=fill(node.inner_state),
            )
        if isinstance(node, transforms.ScaleByAdamState):
            return node._replace(
                count=iterations, mu=slots["momentum"], nu=slots["velocity"],
                nu_max=slots["velocity_hat"] if cfg["amsgrad"] else None,
            )
        if isinstance(node, transforms.ScaleByNadamState):
            return node._replace(
                count=iterations, mu=slots["momentum"], nu=slots["velocity"],
                mu_product=jnp.asarray(slots["u_product"], node.mu_product.dtype),
            )
        if isinstance(node, transforms.ScaleByAdagradState):
            return node._replace(accumulator=slots["accumulator"])
        if isinstance(node, transforms.ScaleByRmspropState):
            return node._replace(
                mean_square=slots["velocity"],
                mean_gradient=slots["average_gradient"] if cfg["centered"] else None,
            )
        if isinstance(node, transforms.ScaleByMomentumState):
            return node._replace(velocity=jax.tree.map(lambda v: sign * v, slots["momentum"]))
        if isinstance(node, tuple) and not hasattr(node, "_fields"):
            return tuple(fill(child) for child in node)
        return node

    return fill(opt_state)


def read_opt_state(
    opt_state: optax.OptState, class_name: str, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Keras's optimizer variables held by an alias's state: slot name -> value or tree."""
    found = states(opt_state)
    inject = found.get(optax.InjectStatefulHyperparamsState)
    if inject is None:
        raise ValueError("the optimizer state holds no injected learning rate: it is not the "
                         "state of a stablejax optimizer")
    slots: dict[str, Any] = {
        "iterations": inject.count, "learning_rate": inject.hyperparams["learning_rate"],
    }
    sign = -1.0 if class_name == "RMSprop" else 1.0
    for kind, state in found.items():
        if kind in (transforms.ScaleByAdamState, transforms.ScaleByNadamState):
            slots.update(momentum=state.mu, velocity=state.nu)
            if kind is transforms.ScaleByAdamState and cfg["amsgrad"]:
                slots["velocity_hat"] = state.nu_max
            if kind is transforms.ScaleByNadamState:
                slots["u_product"] = state.mu_product
        elif kind is transforms.ScaleByAdagradState:
            slots["accumulator"] = state.accumulator
        elif kind is transforms.ScaleByRmspropState:
            slots["velocity"] = state.mean_square
            if cfg["centered"]:
                slots["average_gradient"] = state.mean_gradient
        elif kind is transforms.ScaleByMomentumState:
            slots["momentum"] = jax.tree.map(lambda v: sign * v, state.velocity)
    return slots
