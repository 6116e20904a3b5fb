"""Compiled builds of the sans-IO protocol modules, used only when they match the source.

Every module of :mod:`kernel.protocol` is plain Python and stays the one
source. ``make accel`` (``tools/build_accel.py``) also compiles each of them,
unchanged, with Cython into ``.accel/`` at the top of the checkout, and
writes there a manifest of the SHA-256 of every source it compiled. The
finder installed here (by :mod:`kernel`'s ``__init__``, before any protocol
module is imported) loads the compiled module in place of the source only
when the source's digest is still the one in the manifest: a module edited
since the last build runs as Python until it is built again, never as stale
C. Nothing else changes: same names, same behaviour, same tests.

``TRELLIS_ACCEL`` chooses:

- ``auto`` (the default): the compiled module wherever a current one exists;
- ``off`` (or ``0``): never, every module runs as Python;
- ``require`` (or ``1``): every protocol module must load compiled, or its
  import fails and says why. ``make test`` and the benchmarks set it, so they
  know what they measure.

Only :mod:`kernel.protocol` is compiled: it is where a request spends most of
its own Python (parsing, validating, building and writing heads), it never
touches trio (a compiled coroutine is not a Python coroutine, and trio
inspects those), and its tests run in both forms.

May import: stdlib.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Final, Literal

__all__ = [
    "MANIFEST",
    "PACKAGE",
    "AccelFinder",
    "Mode",
    "compiled_modules",
    "default_root",
    "install",
    "mode_from_env",
    "source_digest",
    "suffix",
]

#: The package whose modules are compiled.
PACKAGE: Final = "kernel.protocol"
#: The manifest's file name in the build directory.
MANIFEST: Final = "manifest.json"

Mode = Literal["auto", "off", "require"]

_MODES: Final[dict[str, Mode]] = {
    "": "auto",
    "auto": "auto",
    "off": "off",
    "0": "off",
    "require": "require",
    "1": "require",
}


def mode_from_env(value: str | None) -> Mode:
    """``TRELLIS_ACCEL``'s value as a mode; ValueError names the ones allowed."""
    mode = _MODES.get((value or "").strip().lower())
    if mode is None:
        raise ValueError(f"TRELLIS_ACCEL={value!r}: expected auto, off or require")
    return mode


def default_root() -> Path:
    """``.accel/`` beside the ``kernel`` package (the top of the checkout)."""
    return Path(__file__).resolve().parent.parent / ".accel"


def source_digest(path: Path) -> str:
    """The SHA-256 of a source file, as the manifest records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class AccelFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled build of a :data:`PACKAGE` module whose source it matches.

    ``root`` holds the manifest and the extension modules it names (paths
    relative to ``root``). Only builds for this interpreter's extension
    suffix count. Returns None (so the ordinary finder loads the source)
    when there is no current build, except in ``require`` mode, where that
    is an ImportError.
    """

    def __init__(self, root: Path, mode: Mode) -> None:
        self.root = root
        self.mode = mode
        self._modules = self._read_manifest()

    def _read_manifest(self) -> dict[str, tuple[str, str]]:
        try:
            data = json.loads((self.root / MANIFEST).read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("suffix") != suffix():
            return {}
        modules = data.get("modules")
        if not isinstance(modules, dict):
            return {}
        return {
            name: (entry["sha256"], entry["file"])
            for name, entry in modules.items()
            if isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("file"), str)
        }

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        package, _, leaf = fullname.rpartition(".")
        if package != PACKAGE or not path or self.mode == "off":
            return None
        source = Path(path[0]) / f"{leaf}.py"
        if not source.is_file():
            return None  # a subpackage, or no such module: not ours to say
        why = self._why_not(fullname, source)
        if why is None:
            built = self.root / self._modules[fullname][1]
            loader = importlib.machinery.ExtensionFileLoader(fullname, str(built))
            return importlib.util.spec_from_file_location(fullname, built, loader=loader)
        if self.mode == "require":
            raise ImportError(
                f"{fullname}: {why} (TRELLIS_ACCEL=require; `make accel` builds it)",
                name=fullname,
            )
        return None

    def _why_not(self, fullname: str, source: Path) -> str | None:
        entry = self._modules.get(fullname)
        if entry is None:
            return f"no compiled build in {self.root}"
        digest, file = entry
        if not (self.root / file).is_file():
            return f"the manifest names {file}, which is missing"
        if source_digest(source) != digest:
            return f"{source} changed since it was compiled"
        return None


def suffix() -> str:
    """This interpreter's extension-module suffix (builds for another do not count)."""
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def install(root: Path | None = None, mode: Mode | None = None) -> AccelFinder | None:
    """Put an :class:`AccelFinder` first on :data:`sys.meta_path` (once).

    ``mode`` defaults to ``TRELLIS_ACCEL``'s; in ``off`` mode nothing is
    installed and None comes back.
    """
    for finder in sys.meta_path:
        if isinstance(finder, AccelFinder):
            return finder
    if mode is None:
        mode = mode_from_env(os.environ.get("TRELLIS_ACCEL"))
    if mode == "off":
        return None
    finder = AccelFinder(root or default_root(), mode)
    sys.meta_path.insert(0, finder)
    return finder


def compiled_modules() -> list[str]:
    """The loaded :data:`PACKAGE` modules that run compiled, sorted."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith(PACKAGE + ".")
        and isinstance(
            getattr(getattr(module, "__spec__", None), "loader", None),
            importlib.machinery.ExtensionFileLoader,
        )
    )
