"""Data parallelism through JAX's own partitioner: one mesh axis ``"data"``.

``fit`` and ``make_train_step`` take ``mesh=``; each global batch is then sharded along the
mesh's ``"data"`` axis while parameters, batch statistics and (by default) the optimizer
state are replicated, and ``jax.jit`` partitions the one compiled program (GSPMD): every
device runs the step on its slice of the batch, and the reductions over the batch (the
loss's mean, the gradients' sum, batch norm's mean and variance) become all-reduces. So
batch-norm statistics are those of the global batch, as on one device, and the numbers
equal a one-device run up to float32 rounding of the reordered sums. No communication
is written here: this module builds the mesh and says where each array lives::

    >>> import stablejax as sj
    >>> mesh = sj.distributed.data_mesh()       # every device, one axis "data"
    >>> mesh.axis_names
    ('data',)

Several processes (hosts) run the same program after :func:`initialize`; the mesh then
spans every process's devices. Each process passes the same whole data, and ``fit``
feeds its own devices their rows of every global batch (:func:`gather_rows`: each epoch,
a device receives its ``1/n`` of the full batches' samples). Two exceptions: an epoch's
partial last batch, when its size does not divide over the devices, is sent whole to
each of them (and run whole on each, the same numbers); and validation data sit whole on
every device (each evaluation batch is then split like a training batch).
"""

from __future__ import annotations

import math
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stablejax._checks import index

__all__ = [
    "AXIS",
    "initialize",
    "data_mesh",
    "check_mesh",
    "size",
    "check_batch_size",
    "state_shardings",
    "place",
    "place_state",
    "replicate",
    "batch_sharding",
    "shard_batch",
    "gather_rows",
    "constrain_batch",
    "constrain_state",
    "constrain_replicated",
    "per_device_bytes",
]

AXIS = "data"  # the mesh axis the batch is sharded along


def initialize(
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    *,
    timeout: int = 300,
) -> None:
    """Joins this process to a run of ``num_processes`` processes (``jax.distributed``).

    A thin wrapper over ``jax.distributed.initialize``; it first selects the gloo
    collectives for the CPU (``jax_cpu_collectives_implementation="gloo"``), without
    which CPU processes cannot reduce across each other (GPUs and TPUs use their own).
    Call it before anything else uses JAX; afterwards ``jax.devices()`` and
    :func:`data_mesh` span every process's devices.

    Args:
      coordinator_address: ``"host:port"`` of process 0, which serves the coordinator.
      num_processes: processes in the run, >= 1.
      process_id: this process's index in ``[0, num_processes)``.
      timeout: seconds to wait for every process to join, >= 1 (default 300, JAX's).

    Raises:
      ValueError: a bad argument, naming it.
      TimeoutError: (processes other than 0) no coordinator answered at the address
        within ``timeout`` seconds; the message names the address and what to check.

    Warning: process 0 serves the coordinator; if the other processes do not all join
    within ``timeout`` seconds, jaxlib ends process 0 itself with a fatal
    ``DEADLINE_EXCEEDED ... RegisterTask`` log rather than an exception (no Python
    handler can run); just before, this function prints to stderr a line saying why
    and what to check.
    """
    if not isinstance(coordinator_address, str) or not _is_host_port(coordinator_address):
        raise ValueError(f"coordinator_address must be 'host:port', got {coordinator_address!r}")
    num_processes = index("num_processes", num_processes, 1)
    process_id = index("process_id", process_id, 0)
    if process_id >= num_processes:
        raise ValueError(f"process_id must be in [0, num_processes={num_processes}), got "
                         f"{process_id}")
    timeout = index("timeout", timeout, 1)
    if process_id != 0:
        # jaxlib ends the process (a fatal log, no exception) when the coordinator does
        # not answer in time; wait for its port here so that case is a Python error.
        _wait_for(coordinator_address, timeout, process_id, num_processes)
    # The CPU backend's collectives; GPU and TPU backends do not read this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    joined = threading.Event()
    if process_id == 0 and num_processes > 1:
        # Process 0 cannot tell early that others will not come, and jaxlib ends it
        # without an exception at the deadline: say why, just before.
        def explain() -> None:
            if not joined.wait(max(timeout - 0.5, 0.1)):
                print(f"stablejax: process 0 waited timeout={timeout} s at "
                      f"{coordinator_address} for the other {num_processes - 1} process(es) "
                      "to join; jaxlib ends this process when the time is up: start every "
                      "process with the same coordinator_address and num_processes, or "
                      "raise timeout", file=sys.stderr, flush=True)

        threading.Thread(target=explain, daemon=True).start()
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=timeout)
    finally:
        joined.set()


def _wait_for(address: str, timeout: float, process_id: int, num_processes: int) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"process {process_id} of {num_processes} found no coordinator at "
                    f"{address} within timeout={timeout} s ({error.strerror or error}): "
                    "start process 0 with the same coordinator_address and num_processes, "
                    "check the host and port are reachable from here, or raise timeout"
                ) from None
            time.sleep(0.2)


def _is_host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(host) and bool(sep) and port.isdigit() and 0 < int(port) < 65536


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh, ``"data"``, over ``devices`` (default: ``jax.devices()``, which
    after :func:`initialize` holds every process's devices).

    Raises:
      ValueError: ``devices`` is empty or repeats a device.
    """
    chosen = list(jax.devices() if devices is None else devices)
    if not chosen:
        raise ValueError("devices must hold at least one device, got none")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"devices must not repeat a device, got {chosen}")
    return Mesh(np.array(chosen, dtype=object), (AXIS,))


def check_mesh(mesh: Any) -> Mesh:
    """Returns ``mesh`` after checking it is a ``jax.sharding.Mesh`` with a ``"data"`` axis.

    Raises:
      TypeError: not a Mesh.
      ValueError: the mesh has no ``"data"`` axis (naming its axes).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh such as sj.distributed.data_mesh(), "
                        f"got {type(mesh).__name__}")
    if AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {AXIS!r} to shard the batch along, got "
                         f"axes {tuple(mesh.axis_names)}; build it with "
                         "sj.distributed.data_mesh() or name one axis 'data'")
    return mesh


def size(mesh: Mesh) -> int:
    """The number of devices along the mesh's ``"data"`` axis (the batch's shards)."""
    return int(mesh.shape[AXIS])


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    """Raises ``ValueError`` naming both numbers unless ``batch_size`` divides evenly over
    the mesh's ``"data"`` devices."""
    batch_size = index(name, batch_size, 1)
    n = size(mesh)
    if batch_size % n:
        lower, upper = batch_size // n * n, -(-batch_size // n) * n
        hint = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"{name}={batch_size} is not divisible by the {n} devices of the mesh's "
            f"'{AXIS}' axis: each device takes an equal part of the global batch; use "
            f"{name}={hint}, or a mesh of a divisor of {batch_size} devices"
        )


def _splits(shape: tuple[int, ...], n: int) -> bool:
    return len(shape) >= 1 and shape[0] >= n and shape[0] % n == 0


def state_shardings(state: Any, mesh: Mesh, shard_optimizer_state: bool = False) -> Any:
    """Where each leaf of a :class:`~stablejax.steps.TrainState` lives on ``mesh``.

    Every leaf is replicated (``P()``), except with ``shard_optimizer_state`` the leaves of
    ``state.opt_state`` whose leading dimension is a multiple of the ``"data"`` devices
    (Adam's ``m`` and ``v`` of most kernels and biases): those are split along it
    (``P("data")``), each device keeping ``1/n`` of them. Scalars (counts, learning
    rates) and buffers whose leading dimension does not divide stay replicated.
    """
    replicated = NamedSharding(mesh, P())
    split = NamedSharding(mesh, P(AXIS))
    n = size(mesh)
    shardings = jax.tree.map(lambda _: replicated, state)
    if shard_optimizer_state:
        opt = jax.tree.map(lambda a: split if _splits(np.shape(a), n) else replicated,
                           state.opt_state)
        shardings = shardings._replace(opt_state=opt)
    return shardings


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put(value: Any, sharding: NamedSharding) -> jax.Array:
    """``value`` on ``sharding``; across processes each one gives the whole value and keeps
    its own devices' parts (``jax.device_put`` cannot reach other processes' devices)."""
    if isinstance(value, jax.Array) and value.sharding == sharding:
        return value
    if jax.process_count() == 1 or (isinstance(value, jax.Array)
                                    and not value.is_fully_addressable):
        return jax.device_put(value, sharding)  # within one process, or global to global
    if _is_key(value):
        data = _put(jax.random.key_data(value), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda where: host[where])


def place(tree: Any, shardings: Any) -> Any:
    """Every leaf of ``tree`` on the matching sharding of ``shardings`` (same structure);
    leaves already there are kept as they are."""
    return jax.tree.map(_put, tree, shardings)


def place_state(state: Any, mesh: Mesh, shard_optimizer_state: bool = False) -> Any:
    """The :class:`~stablejax.steps.TrainState` on ``mesh`` as :func:`state_shardings`
    lays it out (its callbacks' state, host values, is left as it is)."""
    own = state.callbacks
    state = state._replace(callbacks={})
    placed = place(state, state_shardings(state, mesh, shard_optimizer_state))
    return placed._replace(callbacks=own)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` whole on every device of ``mesh``."""
    replicated = NamedSharding(mesh, P())
    return jax.tree.map(lambda a: _put(a, replicated), tree)


def batch_sharding(rows: int, mesh: Mesh) -> NamedSharding:
    """How a batch of ``rows`` samples is laid out: split along ``"data"`` when ``rows``
    divides over its devices, else whole on every device (the same numbers, computed
    on each device: fit's partial last batch)."""
    return NamedSharding(mesh, P(AXIS) if rows % size(mesh) == 0 else P())


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """A global batch (a pytree of arrays sharing their leading, sample axis) on ``mesh``
    as :func:`batch_sharding` lays it out. Across processes every process passes the
    same whole batch and its devices keep their rows."""
    rows = {np.shape(a)[0] if np.ndim(a) else -1 for a in jax.tree.leaves(batch)}
    if len(rows) != 1 or -1 in rows:
        raise ValueError(f"the batch's arrays must share a leading (sample) axis, got leading "
                         f"sizes {sorted(rows)} (-1: a scalar)")
    sharding = batch_sharding(rows.pop(), mesh)
    return jax.tree.map(lambda a: _put(a, sharding), batch)


def gather_rows(data: np.ndarray, rows: np.ndarray, mesh: Mesh) -> jax.Array:
    """``data[rows]`` on ``mesh``, built by each device from the host's ``data``.

    ``rows`` holds sample indices: ``(batch,)`` for one batch or ``(steps, batch)`` for an
    epoch's batches. The batch axis (the last of ``rows``) is split along ``"data"`` when
    it divides over the devices (else each device holds it whole, see
    :func:`batch_sharding`), and each device gathers only its own rows from ``data``;
    across processes, every process holds the same ``data`` and ``rows`` and feeds only
    its own devices.
    """
    data, rows = np.asarray(data), np.asarray(rows)
    if rows.ndim not in (1, 2) or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"rows must be integer sample indices of shape (batch,) or (steps, "
                         f"batch), got dtype {rows.dtype} and shape {rows.shape}")
    spec = batch_sharding(rows.shape[-1], mesh).spec
    sharding = NamedSharding(mesh, P(*([None] * (rows.ndim - 1)), *spec))
    shape = rows.shape + data.shape[1:]

    def part(where: Any) -> np.ndarray:
        picked = data[rows[where[: rows.ndim]]]
        return picked[(slice(None),) * rows.ndim + tuple(where[rows.ndim:])]

    return jax.make_array_from_callback(shape, sharding, part)


def constrain_batch(batch: Any, mesh: Mesh) -> Any:
    """Inside a traced function: the batch laid out as :func:`batch_sharding` says."""
    return jax.tree.map(
        lambda a: jax.lax.with_sharding_constraint(a, batch_sharding(a.shape[0], mesh)), batch)


def constrain_state(state: Any, mesh: Mesh, shard_optimizer_state: bool = False) -> Any:
    """Inside a traced function: the state laid out as :func:`state_shardings` says."""
    own = state.callbacks
    state = state._replace(callbacks={})
    shardings = state_shardings(state, mesh, shard_optimizer_state)
    return jax.lax.with_sharding_constraint(state, shardings)._replace(callbacks=own)


def per_device_bytes(tree: Any) -> int:
    """The most bytes of ``tree``'s arrays that any one of this process's devices holds.

    A replicated array counts whole on each device, one split ``n`` ways ``1/n`` of it.
    """
    held: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, jax.Array):
            continue
        if _is_key(leaf):
            leaf = jax.random.key_data(leaf)
        for shard in leaf.addressable_shards:
            count = math.prod(shard.data.shape) * leaf.dtype.itemsize
            held[shard.device] = held.get(shard.device, 0) + count
    return max(held.values(), default=0)


def constrain_replicated(tree: Any, mesh: Mesh) -> Any:
    """Inside a traced function: every leaf whole on every device of ``mesh``."""
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P()))
