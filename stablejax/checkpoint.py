"""Save and restore a training run's whole state with Orbax.

The state is one pytree (NamedTuples, dicts, lists, `flax.nnx.State`) of arrays:
parameters, batch statistics, optimizer state with its step counts, PRNG keys, epoch.
`save` writes it to a directory, `restore` reads it back into the structure of a
template, and `save_epoch` / `latest_epoch` / `restore_latest` keep the last few epochs of
a run, with its history, so an interrupted run can resume. The epochs are the steps
``epoch_<n>`` of an Orbax `CheckpointManager` (each a `Composite` of the state and a JSON
history); this module adds what Orbax lacks, the manifest below.

Guarantees:

* Bitwise: every leaf is stored in its own dtype (float32, bfloat16, int32, uint32, ...)
  and restored bit for bit; typed PRNG keys are stored as their `jax.random.key_data` and
  re-wrapped with the template's key implementation.
* Atomic: Orbax writes into ``<path>.orbax-checkpoint-tmp`` and renames it to ``<path>``
  only once everything, including our manifest, is on disk. A crash mid-save leaves
  only the temporary directory, which `restore` refuses and `latest_epoch` ignores, and
  which the next `save` of that path, `save_epoch` or `restore_latest` removes; other
  checkpoints are untouched. Deletions rename first (into a trash directory that
  `save_epoch` empties), then delete, so a half-deleted directory never keeps a
  checkpoint's name either (and its leftovers are removed like the temporary ones).
* Checked: the manifest records each leaf's path, shape, dtype and CRC-32. `restore`
  compares it with the template before reading and names the first leaves that differ,
  and verifies the checksums after reading, because Orbax's storage does not detect a
  corrupted data byte on its own; a manifest entry without its checksum fails too. A tree
  whose keys would collide once stored (``'a/b'`` or ``'a.b'`` beside ``'a': {'b': ...}``)
  is refused when saved, naming both leaves.

Every failure to read a checkpoint raises `CheckpointError`, whose message names the path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import uuid
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from stablejax._checks import index, writable_directory

__all__ = [
    "CheckpointError",
    "save",
    "restore",
    "save_epoch",
    "latest_epoch",
    "restore_latest",
    "saved_config",
    "save_model",
    "load_model",
]

_FORMAT = "stablejax.checkpoint/1"
# Orbax's marker for a directory whose save has not finished.
_TMP_MARK = ".orbax-checkpoint-tmp"
# The items of an epoch checkpoint, and where its deletions wait to be emptied.
_STATE, _HISTORY, _CONFIG = "state", "history", "config"
_TRASH = ".stablejax-deleting"
_DELETING = ".deleting-"  # `_remove`'s mark on a directory being deleted
_METADATA_FILE = "_CHECKPOINT_METADATA"
_LEGACY_HISTORY = re.compile(r"history_(\d+)\.json")


class CheckpointError(ValueError):
    """A checkpoint is missing, unfinished, corrupt, or does not match the template.

    Its message is one line of at most about 300 characters (with a path of 60): what is
    wrong, the checkpoint's path, and what to do.
    """


# What to do with a checkpoint that cannot be used.
_ELSEWHERE = "restore an earlier checkpoint or save this one again"


# ---------------------------------------------------------------- pytree <-> named leaves


def _nnx():
    # A flax.nnx.State can only exist once flax.nnx is imported; checking sys.modules
    # keeps this module from importing Flax for callers that never use it.
    return sys.modules.get("flax.nnx")


def _to_pure(tree):
    """Replaces each `nnx.State` in `tree` by its pure dict, so both forms save alike."""
    nnx = _nnx()
    if nnx is None:
        return tree

    def is_state(x):
        return isinstance(x, nnx.State)

    return jax.tree.map(lambda x: nnx.to_pure_dict(x) if is_state(x) else x, tree, is_leaf=is_state)


def _from_pure(like, pure):
    """Inverse of `_to_pure`: puts the values of `pure` back into copies of like's States."""
    nnx = _nnx()
    if nnx is None:
        return pure

    def is_state(x):
        return isinstance(x, nnx.State)

    def rebuild(like_node, pure_node):
        if not is_state(like_node):
            return pure_node
        state = jax.tree.map(lambda v: v, like_node)  # a copy; the template stays intact
        nnx.replace_by_pure_dict(state, pure_node)
        return state

    return jax.tree.map(rebuild, like, pure, is_leaf=is_state)


def _flatten(tree):
    """Returns (names, leaves, treedef); a name is the tuple of path components as strings."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [
        tuple(jax.tree_util.keystr((k,), simple=True) for k in path) or ("state",)
        for path, _ in with_paths
    ]
    # Orbax stores a leaf under its path's components joined by "." (and the manifest by
    # "/"), so keys holding either separator can land on another leaf's name: such a tree
    # would save and then fail to restore.
    seen: dict[str, Any] = {}
    for name, (path, _) in zip(names, with_paths, strict=True):
        stored = "/".join(name).replace(".", "/")
        if stored in seen:
            raise ValueError(
                f"state has two leaves stored under one name, {seen[stored]} and "
                f"{jax.tree_util.keystr(path)}: rename the keys that hold '/' or '.'"
            )
        seen[stored] = jax.tree_util.keystr(path)
    return names, [leaf for _, leaf in with_paths], treedef


def _nest(names, values) -> dict:
    """Builds the nested dict of string keys that Orbax stores."""
    out: dict = {}
    for name, value in zip(names, values, strict=True):
        node = out
        for part in name[:-1]:
            node = node.setdefault(part, {})
        node[name[-1]] = value
    return out


def _lookup(tree: dict, name):
    for part in name:
        tree = tree[part]
    return tree


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _storable(leaf) -> jax.Array:
    if _is_key(leaf):
        return jax.random.key_data(leaf)
    return leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf)


def _expected(leaf) -> jax.ShapeDtypeStruct:
    """The stored shape, dtype and sharding that a template leaf asks for."""
    sharding = getattr(leaf, "sharding", None) or jax.sharding.SingleDeviceSharding(
        jax.devices()[0]
    )
    if _is_key(leaf):
        data = jax.eval_shape(jax.random.key_data, leaf)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    # Python scalars and numpy arrays: the dtype `jnp.asarray` gives them when saved.
    dtype = jax.dtypes.canonicalize_dtype(np.result_type(leaf))
    return jax.ShapeDtypeStruct(np.shape(leaf), dtype, sharding=sharding)


def _crc32(array: jax.Array) -> int | None:
    if not array.is_fully_addressable:  # other hosts hold parts of it
        return None
    host = np.ascontiguousarray(np.asarray(array)).reshape(-1)
    return zlib.crc32(host.view(np.uint8).data)


def _arrays(state) -> tuple[list, list[jax.Array]]:
    """The leaf names of `state` and its leaves as the arrays to store."""
    names, leaves, _ = _flatten(_to_pure(state))
    if not leaves:
        raise ValueError("state must have at least one array leaf, got an empty pytree")
    return names, [_storable(leaf) for leaf in leaves]


def _manifest(names, arrays) -> dict:
    return {
        "format": _FORMAT,
        "leaves": {
            "/".join(name): {
                "shape": list(a.shape),
                "dtype": np.dtype(a.dtype).name,
                "crc32": _crc32(a),
            }
            for name, a in zip(names, arrays, strict=True)
        },
    }


# ---------------------------------------------------------------- directories


def _remove(path: Path) -> None:
    # Rename before deleting so a crash mid-delete never leaves a partial checkpoint under
    # a name that `restore` or `latest_epoch` would accept.
    doomed = path.with_name(f"{path.name}.deleting-{uuid.uuid4().hex}")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


def _remove_leftovers(directory: Path, prefix: str = "") -> None:
    """Deletes the unfinished saves and half-done deletions that a crash left in `directory`.

    Only directories named ``<prefix>...`` holding Orbax's temporary mark or `_remove`'s
    deletion mark: neither is ever a checkpoint (`restore` refuses them).
    """
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        name = entry.name
        if (entry.is_dir() and name.startswith(prefix)
                and (_TMP_MARK in name or _DELETING in name)):
            shutil.rmtree(entry, ignore_errors=True)


# The longest reason (Orbax's or TensorStore's error) a CheckpointError quotes.
_REASON_CHARS = 150


def _reason(error: BaseException) -> str:
    """The first line of an error, without the TensorStore spec that Orbax appends, and
    at most ``_REASON_CHARS`` long: the middle is cut, as TensorStore nests the cause
    (the file that is missing or short) at the end."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    for tail in (" See full TensorStore details", "TensorStore(", " [tensorstore_spec"):
        text = text.split(tail)[0]
    text = text.strip()
    cause = error.__cause__
    if cause is not None and str(cause) and cause is not error:
        text = f"{text} ({_reason(cause)})" if text else _reason(cause)
    text = text or type(error).__name__
    if len(text) > _REASON_CHARS:
        half = (_REASON_CHARS - 5) // 2
        text = f"{text[:half]} ... {text[-half:]}"
    return text


def _open(path: Path) -> tuple[dict, Path]:
    """The manifest of the checkpoint at `path`, and the directory that holds its state.

    `save` writes the state into `path` itself; an epoch checkpoint (a `CheckpointManager`
    step) holds it as its item "state". Both keep the manifest in the step's metadata.
    """
    if _TMP_MARK in path.name:
        raise CheckpointError(f"{path} is an unfinished save (an Orbax temporary "
                              f"directory): {_ELSEWHERE}")
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}: check the path")
    # Checked here rather than left to Orbax, which logs warnings before failing.
    if not (path / _METADATA_FILE).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {path / _METADATA_FILE} is "
                              f"missing; {_ELSEWHERE}")
    try:
        manifest = ocp.metadata.get_step_metadata(path).custom_metadata
    except Exception as e:
        raise CheckpointError(
            f"cannot read the checkpoint metadata {path / _METADATA_FILE}: {_reason(e)}; "
            f"{_ELSEWHERE}"
        ) from e
    if not manifest or manifest.get("format") != _FORMAT:
        raise CheckpointError(
            f"{path} has no stablejax manifest: it is incomplete, corrupt, or was not "
            "written by stablejax.checkpoint.save"
        )
    return manifest, path / _STATE if (path / _STATE).is_dir() else path


def _check_matches(path: Path, recorded: dict, keys: list[str], expected) -> None:
    """Raises naming the first two leaves (and the count of the others) whose names,
    shapes or dtypes differ between the manifest and the template."""
    problems = [f"{k} is not in the checkpoint" for k in keys if k not in recorded]
    wanted = set(keys)
    problems += [f"{k} is in the checkpoint, not expected" for k in recorded if k not in wanted]
    for key, spec in zip(keys, expected, strict=True):
        if key not in recorded:
            continue
        entry = recorded[key]
        if not (isinstance(entry, dict) and {"shape", "dtype", "crc32"} <= set(entry)):
            problems.append(f"the manifest lacks the shape, dtype or CRC-32 of {key}")
            continue
        shape, dtype = tuple(recorded[key]["shape"]), recorded[key]["dtype"]
        if shape != tuple(spec.shape):
            problems.append(f"{key}: shape {shape}, expected {tuple(spec.shape)}")
        elif dtype != np.dtype(spec.dtype).name:
            problems.append(f"{key}: dtype {dtype}, expected {np.dtype(spec.dtype)}")
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise CheckpointError(
            f"checkpoint {path} does not match the state given: "
            f"{'; '.join(problems[:2])}{more}; build it as the saved one was"
        )


# ---------------------------------------------------------------- public API


def save(path: str | os.PathLike, state: Any, *, force: bool = False) -> None:
    """Writes the pytree `state` to the directory `path`, atomically, and waits for it.

    Leaves may be jax arrays, numpy arrays, Python scalars or typed PRNG keys; NamedTuples,
    dicts, lists and `flax.nnx.State` (saved as its pure dict) are the containers. Non-jax
    leaves are converted with `jnp.asarray`, so they are stored in the dtype JAX computes
    with (float64 numpy arrays become float32 unless x64 is enabled). The save is
    synchronous: when `save` returns, the checkpoint is complete.

    Args:
      path: directory to create; its parents are created as needed.
      state: the pytree to save; it must have at least one leaf.
      force: replace an existing checkpoint at `path`. The old one is deleted before the
        new one is written, so a crash in between leaves neither (other paths are never
        touched).

    Raises:
      FileExistsError: `path` exists and `force` is False.
      ValueError: `state` has no leaves, two leaf paths collide as strings, or `path`'s
        parent cannot be created or written (it is under a file, no permission);
        checked before Orbax starts writing.
    """
    path = Path(path).absolute()
    names, arrays = _arrays(state)
    writable_directory(path.parent, f"{path}: its directory")
    _remove_leftovers(path.parent, prefix=f"{path.name}.")
    if path.exists():
        if not force:
            raise FileExistsError(f"{path} already exists; pass force=True to replace it")
        _remove(path)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, _nest(names, arrays), custom_metadata=_manifest(names, arrays))
        checkpointer.wait_until_finished()


def restore(path: str | os.PathLike, like: Any) -> Any:
    """Reads the checkpoint at `path` into the structure, shapes and dtypes of `like`.

    `like` is a template of the saved state: the same pytree with arrays (or
    `jax.ShapeDtypeStruct`s, except for typed PRNG keys, which must be concrete) of the
    expected shapes and dtypes; its values are not used. The result has like's pytree
    type, jax arrays with like's shardings (the default device for non-jax leaves) and the
    saved bits.

    Raises:
      CheckpointError naming `path` if it does not exist, is an unfinished save, lacks the
      manifest, cannot be read, or fails its checksums; and naming the mismatched leaf
      paths (e.g. ``params/layers/0/kernel: shape (64, 300), expected (784, 300)``;
      the first two, and a count of the others) if the checkpoint holds other leaves,
      shapes or dtypes than `like`.
    """
    path = Path(path).absolute()
    manifest, item = _open(path)
    recorded = manifest["leaves"]
    names, leaves, treedef = _flatten(_to_pure(like))
    keys = ["/".join(name) for name in names]
    expected = [_expected(leaf) for leaf in leaves]
    _check_matches(path, recorded, keys, expected)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            tree = checkpointer.restore(item, _nest(names, expected))
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(e)}; "
                              f"{_ELSEWHERE}") from e
    arrays = [_lookup(tree, name) for name in names]
    for key, array in zip(keys, arrays, strict=True):
        saved, now = recorded[key]["crc32"], _crc32(array)
        if now is None:  # other hosts hold parts of it: nothing to compare here
            continue
        if saved is None:
            # Written only for arrays no single host could read whole; here the array is
            # whole, so an absent checksum is a damaged manifest, not a reason to trust it.
            raise CheckpointError(f"checkpoint {path} cannot be verified: the manifest "
                                  f"records no CRC-32 for {key}; {_ELSEWHERE}")
        if saved != now:
            raise CheckpointError(f"checkpoint {path} is corrupt: {key} fails its CRC-32 "
                                  f"check; {_ELSEWHERE}")
    restored = [
        jax.random.wrap_key_data(a, impl=jax.random.key_impl(leaf)) if _is_key(leaf) else a
        for a, leaf in zip(arrays, leaves, strict=True)
    ]
    return _from_pure(like, jax.tree_util.tree_unflatten(treedef, restored))


def _manager(directory: Path, keep: int | None = None) -> ocp.CheckpointManager:
    """Orbax's manager of the ``epoch_<n>`` directories under `directory`."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        step_name_format=ocp.path.step.standard_name_format(step_prefix="epoch"),
        # Deleting renames into the trash first: a half-deleted directory never keeps a
        # checkpoint's name. `save_epoch` empties the trash.
        todelete_subdir=_TRASH,
        enable_async_checkpointing=False,
        save_root_metadata=False,
        create=False,
    )
    return ocp.CheckpointManager(directory, options=options)


def save_epoch(
    directory: str | os.PathLike,
    epoch: int,
    state: Any,
    *,
    history: dict | None = None,
    keep: int | None = 3,
    config: dict | None = None,
) -> Path:
    """Saves `state` (and `history`) as ``directory/epoch_<epoch>``; keeps the last `keep`.

    An Orbax `CheckpointManager` step: the state is the item ``state`` (checked as in
    `save`, with the manifest in the step's metadata) and the JSON-serialisable `history`,
    if given, the item ``history``; the JSON-serialisable `config` (the settings of the
    run, which `stablejax.fit` compares on resume; read it with `saved_config`), if
    given, the item ``config``. The save is atomic (see `save`). Checkpoints of epochs
    after `epoch` are deleted first: they belong to a continuation that this run has
    abandoned by going back to an earlier epoch, and `latest_epoch` must not return them.
    An existing ``epoch_<epoch>`` is replaced. Then all but the `keep` most recent epochs
    are deleted (`keep=None` keeps all). Defaults: ``keep=3``. A `directory` that cannot
    be created or written (under a file, no permission) is a ``ValueError`` naming it,
    before anything is written.

    Returns:
      The path of the new checkpoint.
    """
    epoch = index("epoch", epoch, 0)
    if keep is not None:
        keep = index("keep", keep, 1)
    directory = Path(directory).absolute()
    names, arrays = _arrays(state)
    items = {_STATE: ocp.args.StandardSave(_nest(names, arrays))}
    if history is not None:
        items[_HISTORY] = ocp.args.JsonSave(history)
    if config is not None:
        items[_CONFIG] = ocp.args.JsonSave(config)
    writable_directory(directory, "directory")
    shutil.rmtree(directory / _TRASH, ignore_errors=True)  # left by a crash mid-delete
    _remove_leftovers(directory)
    with _manager(directory, keep) as manager:
        for later in manager.all_steps():
            if later >= epoch:
                manager.delete(later)
        manager.save(
            epoch,
            args=ocp.args.Composite(**items),
            custom_metadata=_manifest(names, arrays),
            force=True,
        )
        kept = set(manager.all_steps())
    shutil.rmtree(directory / _TRASH, ignore_errors=True)
    # History files of 0.1.0 checkpoints live beside the epochs; they go with them.
    for legacy in directory.glob("history_*.json"):
        match = _LEGACY_HISTORY.fullmatch(legacy.name)
        if match and int(match.group(1)) not in kept:
            legacy.unlink()
    return directory / f"epoch_{epoch}"


def latest_epoch(directory: str | os.PathLike) -> int | None:
    """The highest epoch with a finished checkpoint in `directory`, or None.

    Unfinished saves (Orbax temporary directories) and directories being deleted are
    ignored; a missing `directory` gives None.
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def restore_latest(directory: str | os.PathLike, like: Any) -> tuple[int, Any, dict | None] | None:
    """Restores the latest epoch checkpoint in `directory` into `like` (see `restore`).

    Also reads the checkpoints of stablejax 0.1.0, whose history is the file
    ``history_<epoch>.json`` beside ``epoch_<epoch>``.

    Returns:
      ``(epoch, state, history)``, with history None when the checkpoint has none; or None
      when `directory` holds no finished checkpoint.

    Raises:
      CheckpointError if the latest checkpoint is corrupt or does not match `like`; it
      does not silently fall back to an older epoch.
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        return None
    _remove_leftovers(directory)
    with _manager(directory) as manager:
        epoch = manager.latest_step()
        if epoch is None:
            return None
        path = directory / f"epoch_{epoch}"
        state = restore(path, like)
        history = None
        legacy = directory / f"history_{epoch}.json"
        try:
            if (path / _HISTORY).is_dir():
                items = manager.restore(
                    epoch, args=ocp.args.Composite(**{_HISTORY: ocp.args.JsonRestore()})
                )
                history = items[_HISTORY]
            elif legacy.is_file():
                history = json.loads(legacy.read_text())
        except Exception as e:
            raise CheckpointError(
                f"cannot read the history of checkpoint {path}: {_reason(e)}; {_ELSEWHERE}"
            ) from e
    return epoch, state, history


def saved_config(directory: str | os.PathLike, epoch: int) -> dict | None:
    """The run configuration saved with ``directory/epoch_<epoch>`` (`save_epoch`'s
    ``config``), or None when that checkpoint has none (e.g. one of stablejax 0.1).

    Raises:
      CheckpointError naming the checkpoint if its configuration cannot be read.
    """
    epoch = index("epoch", epoch, 0)
    directory = Path(directory).absolute()
    path = directory / f"epoch_{epoch}"
    if not (path / _CONFIG).is_dir():
        return None
    try:
        with _manager(directory) as manager:
            items = manager.restore(
                epoch, args=ocp.args.Composite(**{_CONFIG: ocp.args.JsonRestore()})
            )
    except Exception as e:
        raise CheckpointError(
            f"cannot read the run configuration of checkpoint {path}: {_reason(e)}; "
            f"{_ELSEWHERE}"
        ) from e
    return items[_CONFIG]


def save_model(path: str | os.PathLike, model: Any, *, force: bool = False) -> None:
    """Saves every variable of the ``flax.nnx`` model ``model`` (see `save`).

    The counterpart of Keras's ``model.save``: parameters, batch statistics and RNG state.
    The architecture is code: rebuild the model, then :func:`load_model` into it.
    """
    from flax import nnx

    save(path, nnx.state(model), force=force)


def load_model(path: str | os.PathLike, model: Any) -> Any:
    """Loads a checkpoint written by :func:`save_model` into ``model``, in place; returns it.

    The counterpart of Keras's ``keras.models.load_model``: ``model`` is a freshly built
    model of the same architecture. A mismatched architecture raises `CheckpointError`
    naming the first differing variables.
    """
    from flax import nnx

    nnx.update(model, restore(path, nnx.state(model)))
    return model
