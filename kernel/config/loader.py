"""Loading the kernel's configuration: one TOML file (plus includes) -> :class:`Settings`.

The order of processing, each step's rules in the module that implements it:

1. **Parse** the file with tomlkit (:mod:`kernel.config.sources`). A syntax
   error is ``$: TOML syntax error: line L column C: ...``; a missing file is
   ``$: cannot read FILE: No such file or directory``.
2. **Include** the files named by a top-level ``include`` (relative to the
   including file), recursively, and merge the including file over them:
   tables deep-merge, arrays of tables concatenate, other values replace.
   Steps 1-2 stop the load when they fail: a document with holes in it
   would only produce misleading follow-up problems.
3. **Substitute** ``${VAR}`` / ``${VAR:-default}`` in string values
   (:mod:`kernel.config.envsubst`); ``$${`` is a literal ``${``.
4. **Override** from ``TRELLIS_<SECTION>_<KEY>`` variables for ``[kernel]``,
   ``[server]`` and ``[upstream]``.
5. **Structure** into :class:`Settings` with the one strict converter
   (:mod:`sdk._config`), then **cross-check** what one table cannot see alone:
   duplicate listener names and binds, duplicate route names, and a listener's
   ``default_route`` that names no route. ``[plugins.*]`` tables stay raw
   (plain values) for the plugin host; ``[kernel.policy.*]`` names are not
   checked here either (``[kernel.policy.NAME.LABEL]`` is first made the
   entry ``"NAME.LABEL"``, a named instance's).

Problems from steps 3-5 are all reported together, never just the first.
What steps 1-2 made, the :class:`Document`, comes with the result: a worker of
``[server] workers`` shares it with its set (kernel/snapshot.py), and
:func:`load_document` runs steps 3-5 on it again, without the files.
Each line starts with the value's path (``$.routes[2].upstream: ...``) and,
when the value came from an included file or an override variable, ends
with ``(in base.toml)`` / ``(from TRELLIS_SERVER_HTTP1)``.

May import: stdlib, attrs, cattrs, sdk, kernel.config.
"""

from __future__ import annotations

import copy
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from kernel.config.envsubst import apply_overrides, substitute
from kernel.config.model import ListenerConfig, PluginPolicy, Settings, parse_bind
from kernel.config.sources import Sources, label_for, read_sources
from sdk._config import STRUCTURE_ERRORS, ConfigPath, collect_problems, format_path, make_converter
from sdk._errors import ConfigError

__all__ = [
    "Document",
    "LoadedConfig",
    "load_config",
    "load_document",
    "loads_config",
    "salvage",
    "salvage_settings",
]

T = TypeVar("T")

_CONVERTER = make_converter()


@attrs.frozen
class Document:
    """A configuration as read: the main file merged with its includes
    (steps 1-2), before ``${VAR}`` substitution and ``TRELLIS_*`` overrides,
    which each load applies from its own environment."""

    #: Plain data, as TOML gives it (the top-level ``include`` gone).
    data: Mapping[str, Any]
    #: The files it was read from (:attr:`LoadedConfig.files`).
    files: tuple[Path, ...]
    #: The main file's path as given, for messages.
    source: str


@attrs.frozen
class LoadedConfig:
    """A structured configuration and the files it was read from."""

    settings: Settings
    #: The main file and every include, absolute but as named, symlinks not
    #: followed (the kernel watches these, and every symlink they go through).
    files: tuple[Path, ...]
    #: The main file's path as given (or ``"<string>"``), for messages.
    source: str
    #: What the files said (None: not kept).
    document: Document | None = attrs.field(default=None, eq=False, repr=False)


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Load the config file at ``path``; raise :class:`ConfigError` listing every problem."""
    source = os.fspath(path)
    main = Path(path).absolute()
    sources = read_sources(None, main=main, base_dir=main.resolve().parent, source=source)
    return _finish(sources, environ, source)


def loads_config(
    text: str,
    *,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
    source: str = "<string>",
) -> LoadedConfig:
    """Load a config from ``text``; includes are relative to ``base_dir``."""
    sources = read_sources(text, main=None, base_dir=Path(base_dir).resolve(), source=source)
    return _finish(sources, environ, source)


def load_document(document: Document, *, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load ``document`` as :func:`load_config` loads its files (steps 3-5).

    No file is read. Problems carry no ``(in base.toml)``: where each value
    came from is not part of a document.
    """
    data = copy.deepcopy(dict(document.data))
    sources = Sources(data, {}, document.files, [])
    return _finish(sources, environ, document.source)


def _finish(sources: Sources, environ: Mapping[str, str] | None, source: str) -> LoadedConfig:
    if sources.problems:
        raise ConfigError(sources.problems, source=source)
    env = os.environ if environ is None else environ
    origins = dict(sources.origins)
    problems: list[str] = []

    def report(found: list[tuple[ConfigPath, str]]) -> None:
        for parts, message in found:
            origin = label_for(origins, parts)
            problems.append(f"{format_path(parts)}: {message}" + (f" ({origin})" if origin else ""))

    data, unexpanded = substitute(sources.data, env)
    report(unexpanded)
    problems.extend(apply_overrides(data, env, origins))
    _nested_policies(data)

    settings: Settings | None = None
    try:
        settings = _CONVERTER.structure(data, Settings)
    except STRUCTURE_ERRORS as exc:
        # A string whose placeholder failed is still "${...}"; its type error would be noise.
        failed = {parts for parts, _ in unexpanded}
        report(
            [
                (parts, msg)
                for parts, msg in collect_problems(exc)
                if not any(parts[:n] in failed for n in range(len(parts) + 1))
            ]
        )
    report(cross_check(data))

    if problems or settings is None:
        raise ConfigError(problems, source=source, raw=data)
    # (substitute made a new tree: sources.data is still as read)
    document = Document(sources.data, sources.files, source)
    return LoadedConfig(settings=settings, files=sources.files, source=source, document=document)


def salvage_settings(data: Mapping[str, Any]) -> Settings | None:
    """``data`` structured with every value structuring refused left out.

    For a second round of checks (plugins, routes, groups) when the first
    found problems, so that one pass lists them all. See :func:`salvage`.
    """
    return salvage(data, Settings)


def salvage(data: Mapping[str, Any], cls: type[T]) -> T | None:
    """``data`` structured into ``cls`` with every value structuring refused left out.

    Only table keys are left out (an entry of a table of values too), never
    list items (later indices would shift and the later checks' paths would
    be wrong): when a problem's path ends at a list item (``methods[1]``,
    refused by its type or by a member validator), a required key is
    missing, or leaving keys out does not help, there is nothing to salvage
    (None).
    """
    work: Any = copy.deepcopy(dict(data))
    for _ in range(4):
        try:
            return _CONVERTER.structure(work, cls)
        except STRUCTURE_ERRORS as exc:
            # Once each: a path may carry two problems (a value's type and its key's).
            found = list(dict.fromkeys(parts for parts, _ in collect_problems(exc)))
        if not found or not all(_drop(work, parts) for parts in found):
            return None
    return None


def _drop(data: Any, parts: ConfigPath) -> bool:
    """Delete the table key at ``parts``; False when that is not possible."""
    if not parts or not isinstance(parts[-1], str):
        return False
    node = data
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    if not isinstance(node, dict) or parts[-1] not in node:
        return False  # "required": nothing there to leave out
    del node[parts[-1]]
    return True


def _nested_policies(data: Any) -> None:
    """``[kernel.policy.NAME.LABEL]`` becomes the entry ``"NAME.LABEL"``.

    A named instance's policy may be written as its ``[plugins.NAME.LABEL]``
    table is (the dotted name quoted works too). Its settings are taken
    over from ``NAME``'s entry where it has none when chains are compiled
    (``kernel.dispatch.compile_chain``), not here.
    """
    kernel = data.get("kernel") if isinstance(data, dict) else None
    policy = kernel.get("policy") if isinstance(kernel, dict) else None
    if not isinstance(policy, dict):
        return
    own_keys = {a.name for a in attrs.fields(PluginPolicy)}
    for name, table in list(policy.items()):
        if not isinstance(table, dict):
            continue
        labels = [k for k, v in table.items() if k not in own_keys and isinstance(v, Mapping)]
        for label in labels:
            nested = table.pop(label)
            key = f"{name}.{label}"
            quoted = policy.get(key)
            # Both spellings at once: the nested table's keys win.
            policy[key] = {**quoted, **nested} if isinstance(quoted, Mapping) else nested


# -------------------------------------------------------------- cross-checks
def _port_zero_with_workers(data: Mapping[str, Any], workers: int) -> list[tuple[ConfigPath, str]]:
    """Workers share each listener's port: port 0 would give each its own."""
    problems: list[tuple[ConfigPath, str]] = []
    for i, item in _items(data, "listeners"):
        bind = _text(item, "bind", None)
        try:
            zero = bind is not None and _bind_key(bind)[1] == 0
        except ValueError:
            continue  # not HOST:PORT; the field's validator says so
        if zero:
            problems.append(
                (
                    ("listeners", i, "bind"),
                    f"port 0 cannot be shared by [server] workers = {workers}"
                    " (each worker would get a port of its own): give a fixed port",
                )
            )
    return problems


def _items(data: Mapping[str, Any], key: str) -> list[tuple[int, Mapping[str, Any]]]:
    value = data.get(key)
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, Mapping)]


def _text(item: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = item.get(key, default)
    return str(value) if isinstance(value, str) else None


def cross_check(data: Mapping[str, Any]) -> list[tuple[ConfigPath, str]]:
    """Problems between tables, found on the raw data so they come with the rest.

    Values of the wrong type are skipped: structuring reports those.
    """
    problems: list[tuple[ConfigPath, str]] = []

    def unique(key: str, field: str, what: str, default: str | None) -> list[str]:
        """Report repeats of ``[[key]] field``; return the distinct values in order."""
        seen: dict[object, int] = {}
        for i, item in _items(data, key):
            value = _text(item, field, default)
            if value is None:
                continue
            try:
                # Binds compare as (host, port): "h:08080" is "h:8080".
                norm = _bind_key(value) if field == "bind" else value
            except ValueError:
                continue  # not HOST:PORT; the field's validator says so
            if field == "bind" and isinstance(norm, tuple) and norm[1] == 0:
                continue  # port 0: each listener gets a port of its own
            if norm in seen:
                first = format_path((key, seen[norm]))
                problems.append(((key, i, field), f"duplicate {what} {value!r} (first at {first})"))
            else:
                seen[norm] = i
        return [v for v in seen if isinstance(v, str)]

    defaults = ListenerConfig()
    unique("listeners", "name", "listener name", defaults.name)
    unique("listeners", "bind", "bind", defaults.bind)
    server = data.get("server")
    workers = server.get("workers") if isinstance(server, Mapping) else None
    if not isinstance(workers, int) or workers <= 1:
        problems.extend(_wildcard_clashes(data, defaults.bind))
    else:  # (SO_REUSEPORT, with workers, lets them share)
        problems.extend(_port_zero_with_workers(data, workers))
    routes = unique("routes", "name", "route name", None)
    for i, item in _items(data, "listeners"):
        wanted = _text(item, "default_route", defaults.default_route)
        if wanted and wanted not in routes:
            known = f"routes: {', '.join(routes)}" if routes else "no routes are defined"
            problems.append(
                (("listeners", i, "default_route"), f"no route named {wanted!r} ({known})")
            )
    return problems


def _wildcard_clashes(data: Mapping[str, Any], default: str) -> list[tuple[ConfigPath, str]]:
    """Binds that cannot both be bound: a port on every address of a family
    (``0.0.0.0``, ``::``) and the same port on one address of it."""
    binds: list[tuple[int, str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
    for i, item in _items(data, "listeners"):
        value = _text(item, "bind", default)
        try:
            host, port = _bind_key(value or "")
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue  # a name (resolved at bind time) or not HOST:PORT
        if port:
            binds.append((i, value or "", ip, port))
    problems: list[tuple[ConfigPath, str]] = []
    for n, (i, value, ip, port) in enumerate(binds):
        for j, other, other_ip, other_port in binds[:n]:
            if (
                port == other_port
                and ip.version == other_ip.version
                and ip != other_ip
                and (ip.is_unspecified or other_ip.is_unspecified)
            ):
                first = format_path(("listeners", j))
                problems.append(
                    (
                        ("listeners", i, "bind"),
                        f"{value!r} and {other!r} (at {first}) cannot both be bound:"
                        f" the unspecified address takes port {port} on every address",
                    )
                )
                break
    return problems


def _bind_key(bind: str) -> tuple[str, int]:
    host, port = parse_bind(bind)
    return host.lower(), port
