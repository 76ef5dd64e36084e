"""JAX's persistent compilation cache, turned on for ``fit`` and the command.

Compiling the train call is most of a short run's time (about 1.5-3 s for the guide's
model on a 2-core CPU, against milliseconds per epoch of digits). With the cache on, XLA
writes every compiled program to disk and the next process that compiles the same
program (same model, optimizer, shapes, JAX version and device) loads it instead.

Where the cache lives, first match wins:

1. the directory passed to :func:`enable`;
2. ``$STABLEJAX_CACHE_DIR``;
3. a directory the user already gave JAX (``jax_compilation_cache_dir``), left as is;
4. ``$XDG_CACHE_HOME/stablejax/jax``, else ``~/.cache/stablejax/jax``.

Turn it off with ``STABLEJAX_CACHE_DIR=off`` (or ``0``, ``false``, ``no``, empty),
``fit(..., compilation_cache=False)`` or ``stablejax train --no-compilation-cache``.
Deleting the directory is always safe.

Example (``fit`` and the command call :func:`enable` themselves)::

    >>> from stablejax import compilation_cache
    >>> compilation_cache.enable()  # doctest: +SKIP
    PosixPath('/home/me/.cache/stablejax/jax')
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache as cc

__all__ = ["enable", "default_directory", "MIN_COMPILE_TIME_SECS", "ENV"]

ENV = "STABLEJAX_CACHE_DIR"
# Programs that compile faster than this are not written (JAX's default is 1 s, which
# would leave out the eager initialiser ops and the evaluation program of small models,
# together about a second of a short run).
MIN_COMPILE_TIME_SECS = 0.05
_OFF = ("", "0", "off", "false", "no")


def default_directory() -> Path | None:
    """The cache directory :func:`enable` uses without an argument; None when turned off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    configured = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stablejax" / "jax"


def enable(directory: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache; returns its directory, or None.

    Args:
      directory: where to keep compiled programs; default :func:`default_directory`.
        Returns None, changing nothing, when the default is turned off through
        ``$STABLEJAX_CACHE_DIR`` or the directory cannot be created (a read-only home,
        say): the cache only saves time, so it never stops a run.

    Sets ``jax_compilation_cache_dir`` and lowers
    ``jax_persistent_cache_min_compile_time_secs`` to :data:`MIN_COMPILE_TIME_SECS`.
    """
    path = Path(directory).expanduser() if directory is not None else default_directory()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if jax.config.jax_compilation_cache_dir != str(path):  # type: ignore[attr-defined]
        cc.set_cache_dir(str(path))
        cc.reset_cache()  # a cache opened on another directory reopens on this one
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    return path
