"""Resolve a user's ``"file.py:function"`` reference to a callable.

Users point microfit at their own model factory and data loader on the command
line. Every way that can go wrong (missing file, import error, missing or
non-callable name) becomes a ModelLoadError naming the file and the function,
because a bare ImportError from deep inside importlib tells a user nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ModelLoadError


def split_spec(spec: str, what: str) -> tuple[str, str]:
    """Split ``"target:name"`` at the last colon (so ``C:\\x.py:f`` still works)."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ModelLoadError(
            f"{what} {spec!r} must look like 'path/to/file.py:function' "
            "(or 'package.module:function')"
        )
    return target, name


def _import_file(path: Path, what: str, spec: str) -> ModuleType:
    if not path.is_file():
        raise ModelLoadError(f"{what} file '{path}' does not exist (from {spec!r})")
    # A name derived from the absolute path keeps two user files that share a
    # stem (e.g. two model.py in different folders) from clobbering each other.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    mod_name = f"microfit_user_{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ModelLoadError(f"{what} file '{path}' cannot be imported as Python (from {spec!r})")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before exec so dataclasses and pickling inside the user's
    # module can find it; the file's folder goes on sys.path so it can import
    # its siblings, as it would when run directly.
    sys.modules[mod_name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise ModelLoadError(
            f"importing {what} file '{path}' failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return module


def load_callable(spec: str, what: str) -> tuple[Callable[..., Any], str]:
    """Return ``(function, "file.py:function")`` for a user reference.

    ``what`` names the thing for error messages ("model factory", "data
    loader"). A target ending in ``.py`` or naming an existing file is loaded
    from that path; anything else is imported as a module name.
    """
    target, name = split_spec(spec, what)
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        module = _import_file(path, what, spec)
        where = f"'{path}'"
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ModelLoadError(
                f"{what} module '{target}' cannot be imported (from {spec!r}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        where = f"module '{target}'"
    if not hasattr(module, name):
        defined = sorted(
            n for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        hint = f"; it defines: {', '.join(defined)}" if defined else ""
        raise ModelLoadError(f"{what} {where} has no function '{name}'{hint}")
    fn = getattr(module, name)
    if not callable(fn):
        raise ModelLoadError(
            f"{what} {where}: '{name}' is a {type(fn).__name__}, not a function"
        )
    return fn, f"{target}:{name}"
