"""The plugin host: finds plugins, builds configured instances, registers them.

pluggy does what it is good at here (ARCHITECTURE.md, "Hooks and the
dispatcher"): entry-point discovery under ``trellis.plugins``, blocking,
hookspec validation of every instance at register time, and the lifecycle
hooks. Flow hooks are *not* called through pluggy; :mod:`kernel.dispatch`
compiles them into plain lists.

A plugin is what an entry point (or a ``[kernel.modules]`` reference) names:

- a **class**: instantiated once per configured instance. If it has a
  ``config_class`` attribute (an attrs class), the instance's TOML table is
  structured into it and passed as the only constructor argument;
- any other **object** (a module, an instance): used as is, one instance, no
  configuration.

Instance names: ``NAME`` is the default instance (table ``[plugins.NAME]``);
``NAME.LABEL`` is a named instance (table ``[plugins.NAME.LABEL]``, which
starts from the keys of ``[plugins.NAME]`` and overrides them).

May import: stdlib, pluggy, attrs, sdk, kernel.config.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import pluggy

import sdk
import sdk.hookspecs
from kernel.config.loader import salvage
from kernel.config.model import Settings
from sdk._config import format_path, structure
from sdk._problems import show_value

__all__ = [
    "LoadProblem",
    "PluginHost",
    "PluginInfo",
    "available_plugins",
    "check_plugin_tables",
    "instance_plugin",
    "plugin_references",
    "referenced_plugins",
]


log = logging.getLogger("kernel.plugins")


@attrs.frozen
class PluginInfo:
    """One installed plugin, as ``kernel plugins`` lists it."""

    name: str
    factory: Any
    source: str  # "entry point <dist>" or "module <ref>"
    summary: str
    config_class: type | None


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    if not doc and not inspect.ismodule(obj):
        doc = inspect.getdoc(inspect.getmodule(obj)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _load_ref(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class LoadProblem(str):
    """A plugin that could not be imported: the message, and which plugin.

    ``configured`` is true for ``[kernel.modules]`` entries (the config asked
    for them by path); an installed entry point that fails to import is
    only a problem for configurations that use it.
    """

    plugin: str
    configured: bool

    def __new__(cls, message: str, plugin: str, configured: bool) -> LoadProblem:
        self = super().__new__(cls, message)
        self.plugin = plugin
        self.configured = configured
        return self


def available_plugins(
    modules: Mapping[str, str] | None = None, *, blocked: Iterable[str] = ()
) -> tuple[dict[str, PluginInfo], list[str]]:
    """Every loadable plugin by name, and the problems met while loading.

    Entry points of the ``trellis.plugins`` group come first; ``modules``
    (``[kernel.modules]``: name -> ``"pkg.mod:attr"``) add or override.
    Blocked names are not even imported.
    """
    found: dict[str, PluginInfo] = {}
    problems: list[str] = []
    block = set(blocked)
    for ep in importlib.metadata.entry_points(group=sdk.ENTRY_POINT_GROUP):
        if ep.name in block or ep.name in found:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party plugin must not stop the others
            problems.append(
                LoadProblem(
                    f"plugin {ep.name!r} ({ep.value}) failed to import: {exc!r}", ep.name, False
                )
            )
            continue
        dist = ep.dist.name if ep.dist is not None else "?"
        found[ep.name] = PluginInfo(
            ep.name,
            obj,
            f"entry point in {dist}",
            _summary(obj),
            getattr(obj, "config_class", None),
        )
    for name, ref in (modules or {}).items():
        if name in block:
            continue
        try:
            obj = _load_ref(ref)
        except Exception as exc:
            problems.append(
                LoadProblem(f"$.kernel.modules.{name}: cannot import {ref!r}: {exc!r}", name, True)
            )
            continue
        if name in found:
            log.warning(
                "[kernel.modules] %s = %r replaces the installed plugin %r (%s)",
                name,
                ref,
                name,
                found[name].source,
            )
        found[name] = PluginInfo(
            name, obj, f"module {ref}", _summary(obj), getattr(obj, "config_class", None)
        )
    return found, problems


def instance_plugin(instance: str) -> str:
    """``"ratelimit.strict"`` -> ``"ratelimit"``."""
    return instance.partition(".")[0]


class PluginHost:
    """The plugin instances of one configuration generation, in a pluggy manager.

    Build it with :meth:`build`, which collects *every* problem (unknown
    plugin names in chains, bad tables) into a list instead of stopping at
    the first; the caller turns a non-empty list into a ``ConfigError``.
    """

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(sdk.PROJECT)
        self.pm.add_hookspecs(sdk.hookspecs)
        # Historic: every plugin registered from now on gets it exactly once.
        self.pm.hook.trellis_addhooks.call_historic(kwargs={"pluginmanager": self.pm})
        #: instance name -> plugin object, in the order they were created.
        self.instances: dict[str, object] = {}
        #: Instances whose table had problems, built from the rest of it (the
        #: refused values left out, :func:`kernel.config.loader.salvage`), in
        #: a host of their own: only their ``trellis_config_check`` runs, so its
        #: problems are listed with the table's. Never on a chain.
        self.salvaged: PluginHost | None = None
        #: instance name -> the paths of the values its table had refused.
        self.refused: dict[str, list[str]] = {}

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        available: Mapping[str, PluginInfo],
        extra: Mapping[str, object] | None = None,
        broken: Iterable[str] = (),
    ) -> tuple[PluginHost, list[str]]:
        """Create and register every instance the configuration references.

        ``extra`` maps instance names to ready-made plugin objects (tests,
        bridges); they take precedence over installed plugins of that name.
        ``broken`` names plugins that failed to import: that problem is the
        caller's to report, so their chains and tables add nothing to it.
        """
        host = cls()
        problems: list[str] = []
        wanted = _referenced_instances(settings)
        tables = settings.plugins
        extra = dict(extra or {})
        # A [plugins.X] table for an installed-or-extra plugin nobody references
        # is almost always a typo in a chain: say so.
        blocked = set(settings.kernel.blocked)
        broken = set(broken)
        for name, _table in tables.items():
            # A blocked plugin's table is left alone: blocking is not a typo.
            if name not in available and name not in extra and name not in blocked | broken:
                problems.append(
                    f"{format_path(('plugins', name))}: no plugin named {name!r} is installed"
                    f" (installed: {', '.join(sorted(available)) or 'none'})"
                )
        for inst, path in wanted.items():
            if inst in extra:
                host._register(inst, extra[inst], problems, path)
                continue
            plugin = instance_plugin(inst)
            info = available.get(plugin)
            if info is None and plugin in blocked:
                problems.append(
                    f"{path}: plugin {plugin!r} is blocked ([kernel] blocked or -p no:{plugin});"
                    " take it out of this chain"
                )
                continue
            if info is None:
                if plugin in broken:
                    continue
                problems.append(
                    f"{path}: unknown plugin {plugin!r}"
                    f" (installed: {', '.join(sorted(available)) or 'none'})"
                )
                continue
            table = tables.get(plugin)
            if table is not None and not isinstance(table, Mapping):
                continue  # check_plugin_tables (below) says so
            salvaged: list[tuple[object, list[str]]] = []
            obj = _instantiate(info, inst, table, problems, salvaged)
            if obj is not None:
                host._register(inst, obj, problems, path)
            for obj, refused in salvaged:
                host._salvaged(inst, obj, refused, problems, path)
        # Tables no chain uses yet are checked too: a mistake there would
        # otherwise show only on the reload that puts the plugin on a chain.
        # (A required key may wait for that: an instance may never use it.)
        for problem in check_plugin_tables(tables, available, skip=set(wanted) | set(extra)):
            if not problem.endswith(": required") and problem not in problems:
                problems.append(problem)
        return host, problems

    def _register(self, inst: str, obj: object, problems: list[str], path: str) -> None:
        try:
            self.pm.register(obj, name=inst)
            # A hookimpl whose name matches no hookspec is a typo, not a feature.
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            # pluggy's message is three lines of its own words (and the
            # object's repr); the usual causes, a misspelled parameter or
            # hook name, get one line per hook.
            unknown_hooks = self._unknown_hooks(inst)  # (while it is registered)
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            problems.extend(
                self._unknown_parameters(inst, obj)
                or unknown_hooks
                or [f"{path}: plugin {inst!r} is invalid: {exc}"]
            )
            return
        except ValueError as exc:  # the same object registered twice under two names
            problems.append(f"{path}: {exc}")
            return
        self.instances[inst] = obj

    def _salvaged(
        self, inst: str, obj: object, refused: list[str], problems: list[str], path: str
    ) -> None:
        """Keep ``obj`` (built from a table with problems) for its config check."""
        if self.salvaged is None:
            self.salvaged = PluginHost()
        # Its hooks are checked as any instance's: their problems are real too.
        self.salvaged._register(inst, obj, problems, path)
        if inst in self.salvaged.instances:
            self.refused[inst] = [p.partition(": ")[0] for p in refused]

    def _unknown_hooks(self, inst: str) -> list[str]:
        """One problem per hook implementation of ``inst`` that no hookspec
        names (what ``check_pending`` refuses), with the likeliest meant one."""
        known = [
            name
            for name in dir(self.pm.hook)
            if name.startswith("trellis_") and getattr(self.pm.hook, name).spec is not None
        ]
        out = []
        for name in dir(self.pm.hook):
            caller = getattr(self.pm.hook, name)
            if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
                continue
            if any(impl.plugin_name == inst for impl in caller.get_hookimpls()):
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                out.append(f"$.plugins.{inst}: unknown hook {name}{hint}")
        return out

    def _unknown_parameters(self, inst: str, obj: object) -> list[str]:
        """One problem per hook implementation of ``obj`` that takes a parameter
        its hookspec does not offer (what pluggy refuses at registration)."""
        out = []
        for attr in dir(obj):
            opts = self.pm.parse_hookimpl_opts(obj, attr)
            if opts is None:
                continue
            hook = opts.get("specname") or attr
            caller = getattr(self.pm.hook, hook, None)
            spec = caller.spec if caller is not None else None
            if spec is None:
                continue  # no such hook: check_pending's problem
            accepted = (*spec.argnames, *spec.kwargnames)
            try:
                params = inspect.signature(getattr(obj, attr)).parameters.values()
            except (TypeError, ValueError):
                continue
            # As pluggy counts them: positional parameters without a default.
            unknown = [
                p.name
                for p in params
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty
                and p.name not in accepted
            ]
            if unknown:
                out.append(
                    f"$.plugins.{inst}: hook {hook} has unknown"
                    f" parameter{'s' if len(unknown) > 1 else ''}"
                    f" {', '.join(repr(u) for u in unknown)}"
                    f" (accepted: {', '.join(accepted) or 'none'})"
                )
        return out


def referenced_plugins(settings: Settings) -> set[str]:
    """Plugin names the configuration uses: in a chain, as a strategy, or with a table."""
    return set(plugin_references(settings))


def plugin_references(settings: Settings) -> dict[str, str]:
    """Plugin name -> the config path of its first use (a chain, a strategy, a table)."""
    out: dict[str, str] = {}
    for inst, path in _referenced_instances(settings).items():
        out.setdefault(instance_plugin(inst), path)
    for name in settings.plugins:
        out.setdefault(name, format_path(("plugins", name)))
    return out


def _referenced_instances(settings: Settings) -> dict[str, str]:
    """Instance name -> the config path of its first reference."""
    out: dict[str, str] = {}
    for i, name in enumerate(settings.kernel.plugins):
        out.setdefault(name, f"$.kernel.plugins[{i}]")
    for li, lst in enumerate(settings.listeners):
        for i, name in enumerate(lst.plugins):
            out.setdefault(name, f"$.listeners[{li}].plugins[{i}]")
    for ri, route in enumerate(settings.routes):
        for i, name in enumerate(route.plugins):
            out.setdefault(name, f"$.routes[{ri}].plugins[{i}]")
    # A group's strategy is an instance too, though on no chain.
    for gi, group in enumerate(settings.groups):
        out.setdefault(group.strategy, f"$.groups[{gi}].strategy")
    return out


def _instantiate(
    info: PluginInfo,
    inst: str,
    table: Any,
    problems: list[str],
    salvaged: list[tuple[object, list[str]]] | None = None,
) -> object | None:
    """Build one instance of ``info`` for instance name ``inst``.

    When the table has problems, the instance is built once more from what
    is left with the refused values taken out, if that structures and the
    plugin accepts it: it goes to ``salvaged``, with the problems, so that
    the plugin's ``trellis_config_check`` can still run on the rest.
    """
    _, _, label = inst.partition(".")
    factory: Callable[..., object] = info.factory
    make = factory  # kept un-narrowed: isclass() below narrows ``factory`` to type[object]
    config_cls: type[Any] | None = info.config_class
    base_path = format_path(("plugins", info.name))
    if not inspect.isclass(factory):
        if label:
            problems.append(
                f"{base_path}.{label}: plugin {info.name!r} has no configuration and"
                " cannot be instantiated under several names"
            )
            return None
        if table:
            problems.append(f"{base_path}: plugin {info.name!r} takes no configuration")
            return None
        return factory
    if config_cls is None:
        if table:
            problems.append(f"{base_path}: plugin {info.name!r} takes no configuration")
            return None
        try:
            return factory()
        except Exception as exc:
            problems.append(f"{base_path}: plugin {info.name!r} failed to start: {exc!r}")
            return None
    data = _instance_table(table, label, config_cls)
    if data is None:
        problems.append(
            f"{base_path}.{label}: no table [plugins.{info.name}.{label}] for instance {inst!r}"
        )
        return None
    path = f"{base_path}.{label}" if label else base_path
    try:
        config: object = structure(data, config_cls, path=path)
    except sdk.ConfigError as exc:
        problems.extend(exc.problems)
        rest = salvage(data, config_cls) if salvaged is not None else None
        if rest is not None and salvaged is not None:
            try:
                salvaged.append((make(rest), exc.problems))
            except Exception:
                pass  # refused the rest too: no check then; the table's problems stand
        return None
    try:
        return make(config)
    except sdk.ConfigError as exc:
        # As trellis_config_check's: without a "$" path, the table's.
        problems.extend(p if p.startswith("$") else f"{path}.{p}" for p in exc.problems)
    except Exception as exc:
        problems.append(f"{path}: plugin {info.name!r} refused its configuration: {exc!r}")
    return None


def _instance_table(table: Any, label: str, config_cls: type) -> dict[str, Any] | None:
    """The table for one instance: ``[plugins.X]`` minus named-instance subtables.

    A key of ``[plugins.X]`` whose value is a table and which is not a field
    of the config class is a named instance ``X.<key>``.
    """
    table = dict(table or {})
    fields = {a.name for a in attrs.fields(config_cls)} if attrs.has(config_cls) else set()
    subtables = {k for k, v in table.items() if isinstance(v, dict) and k not in fields}
    base = {k: v for k, v in table.items() if k not in subtables}
    if label:
        if label not in subtables:
            return None
        # A named instance starts from the plugin's base table and overrides it.
        return {**base, **table[label]}
    return base


def check_plugin_tables(
    tables: Any, available: Mapping[str, PluginInfo], *, skip: Iterable[str] = ()
) -> list[str]:
    """Structure every ``[plugins.*]`` table (and named-instance subtable) alone.

    Used when the kernel's own settings failed, so a user still sees the plugin
    tables' problems in the same pass, and for the tables of instances no chain
    uses. Instances named in ``skip`` are left out, and so is a base table
    one of whose named instances is in ``skip`` (its problems show there),
    unless a named instance in ``skip`` has no table: that instance was never
    structured, so the base's problems would show nowhere.
    """
    skip = set(skip)
    if not isinstance(tables, Mapping):
        return []
    problems: list[str] = []
    for name, table in tables.items():
        info = available.get(name)
        if info is not None and not isinstance(table, Mapping):
            # (``plugins.router = 5``: whether on a chain or not, never structured.)
            problems.append(
                f"{format_path(('plugins', name))}: must be a table, got {show_value(table)}"
            )
            continue
        if info is None or info.config_class is None:
            continue
        cls = info.config_class
        fields = {a.name for a in attrs.fields(cls)} if attrs.has(cls) else set()
        labels = [k for k, v in table.items() if isinstance(v, Mapping) and k not in fields]
        named = {s.partition(".")[2] for s in skip if instance_plugin(s) == name and "." in s}
        # The base's problems show under a named instance built from it, if
        # every named instance in use has its table.
        base_shown = bool(named) and named <= set(labels)
        for label in ["", *labels]:
            inst = f"{name}.{label}" if label else name
            if inst in skip or (not label and base_shown):
                continue
            data = _instance_table(dict(table), label, cls) or {}
            path = format_path(("plugins", name, label) if label else ("plugins", name))
            try:
                structure(data, cls, path=path)
            except sdk.ConfigError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
    return problems
