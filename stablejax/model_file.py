"""A model-building function named on the command line: ``FILE.py:FUNCTION`` or
``package.module:FUNCTION`` (``stablejax prescribe --model``)."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["load", "split"]

_count = itertools.count()


def split(spec: str, name: str = "spec") -> tuple[str, str]:
    """``(where, function)`` of ``spec``, checked without importing anything: a ``where``
    that names a file (ends in ``.py`` or holds a path separator) must exist.

    Raises:
      ValueError: no ``:``, an empty side, or a file that does not exist.
    """
    where, colon, function = spec.rpartition(":")
    if not colon or not where or not function.isidentifier():
        raise ValueError(f"{name} {spec!r} must be FILE.py:FUNCTION or "
                         "package.module:FUNCTION, e.g. model.py:make_model")
    if _is_file(where) and not os.path.isfile(where):
        raise ValueError(f"{name} {spec!r}: no file {where!r}")
    return where, function


def load(spec: str, name: str = "spec") -> Callable[..., Any]:
    """The function ``spec`` names: ``FILE.py:FUNCTION`` (the file is imported by its
    path, as a module of a new unique name, so two files may share a name; its directory
    is not put on ``sys.path``) or ``package.module:FUNCTION`` (imported as usual).

    The function is returned, not called: what it returns cannot be checked here.

    Raises:
      ValueError: ``spec`` malformed, the file or module missing, importing it raised
        (the error's type, message and, for a file, its line), or it defines no callable
        ``FUNCTION``; ``name`` (e.g. ``"--model"``) starts each message.
    """
    where, function = split(spec, name)
    try:
        module = _import_file(where) if _is_file(where) else importlib.import_module(where)
    except Exception as error:  # noqa: BLE001 - the user's code: any error is reported
        raise ValueError(f"{name} {spec!r}: importing {where!r} raised "
                         f"{_one_line(error, where)}") from None
    found = getattr(module, function, None)
    if not callable(found):
        defined = sorted(k for k, v in vars(module).items()
                         if callable(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise ValueError(f"{name} {spec!r}: {where!r} defines no function {function!r} "
                         f"(it defines: {', '.join(defined) or 'none'})")
    return found


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _import_file(path: str) -> ModuleType:
    """The module run from ``path``, registered under a unique name while it runs (as
    dataclasses and pickling look a module up by its name)."""
    module_name = f"stablejax_model_file_{next(_count)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path!r} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _one_line(error: BaseException, path: str) -> str:
    """``Type: message (line N)``: the first line of the message, and the line of
    ``path`` where it was raised when that file is in the traceback."""
    if isinstance(error, SyntaxError):  # its str() holds the file and line already
        message, line = error.msg, error.lineno
    else:
        message, line = (str(error).splitlines() or [""])[0], None
    for frame in traceback.extract_tb(error.__traceback__):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            line = frame.lineno
    where = f" (line {line})" if line else ""
    return f"{type(error).__name__}: {message}{where}"
