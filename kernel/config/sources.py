"""Reading config files: TOML parsing, ``include`` composition, and where each value came from.

A file may name other files at its top level (``include = "base.toml"`` or
``include = ["a.toml", "b.toml"]``, relative to the including file). Those are
read first, in order, each with its own includes, and then the including file
is merged over them:

* tables deep-merge, key by key, and the later file wins per key;
* arrays of tables (``[[listeners]]``, ``[[routes]]``, or inline arrays whose
  items are all tables) concatenate, earlier files first;
* any other value (scalars, arrays of scalars, an empty array) replaces.

A file included twice is merged twice (its tables merge idempotently, but its
arrays of tables repeat, which the duplicate-name checks then report). An
include cycle is an error that names the cycle.

While merging, every table and value remembers the file it came from, so a
later problem can say ``(in base.toml)``. The result is plain Python data.

May import: stdlib, attrs, tomlkit, sdk.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import tomlkit
from tomlkit.exceptions import TOMLKitError

from sdk._config import ConfigPath, format_path, show_value

__all__ = ["Origins", "Sources", "label_for", "read_sources"]

#: Path of a value -> where it came from (``"in base.toml"``, ``"from TRELLIS_X"``),
#: ``None`` for the main file. Look a path up with :func:`label_for`.
Origins = dict[ConfigPath, str | None]

#: The largest config file (main or included) read; a bigger one is refused.
MAX_CONFIG_BYTES = 16 * 2**20


@attrs.frozen
class Sources:
    """The merged document, its provenance, and every file that went into it."""

    data: dict[str, Any]
    origins: Origins
    #: The main file and the includes as named, not resolved (see ``_Reader.parse``).
    files: tuple[Path, ...]
    #: Finished problem lines; non-empty means ``data`` is not worth structuring.
    problems: list[str]


def label_for(origins: Origins, parts: ConfigPath) -> str | None:
    """The origin of the longest recorded prefix of ``parts``."""
    for end in range(len(parts), -1, -1):
        if parts[:end] in origins:
            return origins[parts[:end]]
    return None


def read_sources(text: str | None, *, main: Path | None, base_dir: Path, source: str) -> Sources:
    """Parse the main document (``text``, or the file ``main`` when ``text`` is None)
    and its includes, and merge them."""
    reader = _Reader(base_dir)
    if main is not None:
        reader.files.append(main)  # as named: the watcher follows its symlinks
    if text is None:
        assert main is not None
        text = reader.read_text(main, parts=(), origin=None, shown=source)
    tree = None
    if text is not None:
        frame = (
            main.resolve() if main is not None else None,
            Path(source).name if main is not None else source,
        )
        tree = reader.parse(text, origin=None, base_dir=base_dir, stack=(frame,))
    origins: Origins = {}
    data = _untag(tree, (), origins) if tree is not None else {}
    return Sources(data, origins, tuple(dict.fromkeys(reader.files)), reader.problems)


# ------------------------------------------------------------------- merging
class _Table(dict[str, Any]):
    """A table that remembers which file defined it first."""

    def __init__(self, origin: str | None) -> None:
        super().__init__()
        self.origin = origin


@attrs.frozen
class _Leaf:
    """Any non-table value (arrays of tables are plain lists of :class:`_Table`)."""

    value: Any
    origin: str | None


def _tag(value: Any, origin: str | None) -> Any:
    if isinstance(value, dict):
        table = _Table(origin)
        for key, item in value.items():
            table[key] = _tag(item, origin)
        return table
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [_tag(v, origin) for v in value]
    return _Leaf(value, origin)


def _merge(dst: _Table, src: _Table) -> None:
    for key, new in src.items():
        old = dst.get(key)
        if isinstance(old, _Table) and isinstance(new, _Table):
            _merge(old, new)
        elif isinstance(old, list) and isinstance(new, list):
            dst[key] = old + new
        else:
            dst[key] = new


def _untag(value: Any, parts: ConfigPath, origins: Origins) -> Any:
    if isinstance(value, _Table):
        origins[parts] = value.origin
        return {k: _untag(v, (*parts, k), origins) for k, v in value.items()}
    if isinstance(value, list):  # array of tables: each table has its own origin
        return [_untag(v, (*parts, i), origins) for i, v in enumerate(value)]
    assert isinstance(value, _Leaf)
    origins[parts] = value.origin
    return value.value


# ------------------------------------------------------------------- reading
_AT_LINE = re.compile(r"\s+at line \d+ col \d+$")


def syntax_problem(exc: Exception) -> str:
    """tomlkit's error as ``TOML syntax error: line L column C: what``."""
    line, col = getattr(exc, "line", None), getattr(exc, "col", None)
    what = _AT_LINE.sub("", str(exc)).rstrip(".")
    if "'\\x00'" in what:  # tomlkit reports running out of input as a NUL character
        what = "unexpected end of input"
    what = what[:1].lower() + what[1:]
    if isinstance(line, int) and isinstance(col, int):
        # tomlkit counts columns from 0; editors count from 1.
        return f"TOML syntax error: line {line} column {col + 1}: {what}"
    return f"TOML syntax error: {what}"


class _Reader:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.files: list[Path] = []
        self.problems: list[str] = []

    def problem(self, parts: ConfigPath, message: str, origin: str | None) -> None:
        suffix = f" ({origin})" if origin else ""
        self.problems.append(f"{format_path(parts)}: {message}{suffix}")

    def shown(self, path: Path) -> str:
        """``path`` relative to the main file's directory when it is under it,
        else whole (``/etc/trellis/base.toml``, not ``../../etc/...``)."""
        try:
            relative = os.path.relpath(path, self.base_dir)
        except ValueError:  # another drive, on Windows
            return str(path)
        return str(path) if relative.startswith(os.pardir) else relative

    def read_text(
        self, path: Path, *, parts: ConfigPath, origin: str | None, shown: str
    ) -> str | None:
        try:
            # A device (``include = "/dev/zero"``) would never end the read.
            # A pipe is read (``kernel check -c <(envsubst < t.toml)``), as
            # any file, up to MAX_CONFIG_BYTES.
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    self.problem(parts, f"cannot read {shown}: a device, not a file", origin)
                    return None
                data = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            self.problem(parts, f"cannot read {shown}: {exc.strerror or exc}", origin)
            return None
        if len(data) > MAX_CONFIG_BYTES:
            limit = MAX_CONFIG_BYTES // 2**20
            self.problem(parts, f"cannot read {shown}: larger than {limit} MiB", origin)
            return None
        try:
            # utf-8-sig: a byte-order mark (Windows editors write one) is
            # dropped; TOML would read it as an empty key.
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.problem(parts, f"cannot read {shown}: not UTF-8 text ({exc.reason})", origin)
            return None
        # As Path.read_text does (universal newlines): "\r\n" and a lone "\r" end lines.
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def parse(
        self,
        text: str,
        *,
        origin: str | None,
        base_dir: Path,
        stack: tuple[tuple[Path | None, str], ...],
    ) -> _Table | None:
        try:
            doc: dict[str, Any] = tomlkit.parse(text).unwrap()
        except (TOMLKitError, ValueError) as exc:
            self.problem((), syntax_problem(exc), origin)
            return None
        merged = _Table(origin)
        for name in self.include_names(doc.pop("include", None), origin):
            named = base_dir / Path(name).expanduser()
            target = named.resolve()
            shown = self.shown(target)
            if any(target == path for path, _ in stack):
                cycle = " -> ".join([*(s for _, s in stack), shown])
                self.problem(("include",), f"include cycle: {cycle}", origin)
                continue
            # As named, symlinks not followed: a symlink switched to another
            # file must still be seen by the watcher (kernel/watch.py).
            self.files.append(named)
            sub_text = self.read_text(target, parts=("include",), origin=origin, shown=shown)
            if sub_text is None:
                continue
            sub = self.parse(
                sub_text,
                origin=f"in {shown}",
                base_dir=target.parent,
                stack=(*stack, (target, shown)),
            )
            if sub is not None:
                _merge(merged, sub)
        _merge(merged, _tag(doc, origin))
        return merged

    def include_names(self, value: Any, origin: str | None) -> Iterator[str]:
        if value is None:
            return
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            msg = f"must be a file name or an array of file names, got {show_value(value)}"
            self.problem(("include",), msg, origin)
            return
        yield from names
