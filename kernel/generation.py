"""A configuration generation: everything a flow needs, built once per (re)load.

:func:`build_generation` validates the whole configuration - settings,
plugin instances, chains - and either returns a complete
:class:`Generation` or raises one :class:`~sdk.ConfigError` listing every
problem. Nothing in a generation changes after it is built, except its
reference count: each flow holds its generation until it ends, and a
retired generation is shut down (``trellis_shutdown``) after its last flow.

TLS is part of a generation: each TLS listener's :class:`~kernel.tls.ServerTls`
(certificates read from disk now, so a reload re-reads them; a bad one is a
config problem and keeps the old generation serving) and, per route, the
client context for https upstreams, one per distinct TLS setting.

May import: stdlib, attrs, trio, pluggy, sdk, kernel.config, kernel.protocol,
kernel.pluginhost, kernel.dispatch, kernel.lifecycle, kernel.routes, kernel.tls.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import attrs
import trio

from kernel import lifecycle
from kernel.config import Document, load_config, load_document
from kernel.config.loader import salvage_settings
from kernel.config.model import H2Section, RouteConfig, Settings, parse_bind
from kernel.dispatch import (
    Chain,
    certificate_provider,
    collect_impls,
    compile_chain,
    error_reporter,
)
from kernel.groups import GroupRuntime, build_groups
from kernel.pluginhost import (
    LoadProblem,
    PluginHost,
    PluginInfo,
    available_plugins,
    check_plugin_tables,
    plugin_references,
)
from kernel.protocol.forwarding import ForwardingPolicy
from kernel.protocol.http1 import Limits, resolve_kind
from kernel.routes import ClientContexts, RouteRuntime, route_runtime, target_runtime
from kernel.tls import ServerTls, build_server_tls
from sdk import ConfigError

__all__ = [
    "Generation",
    "ListenerRuntime",
    "RouteRuntime",
    "build_generation",
    "load_generation",
]

log = logging.getLogger("kernel.generation")


@attrs.frozen
class ListenerRuntime:
    """A listener's effective protocol settings (``[server]`` plus its overrides)."""

    name: str
    bind: str
    http1: str
    limits: Limits
    request_head_timeout_s: float
    keepalive_timeout_s: float
    body_timeout_s: float
    default_route: str
    #: Seconds a client may take no bytes while a write to it waits.
    send_timeout_s: float = 60.0
    #: ``h2`` by ALPN (TLS) and h2c prior knowledge (cleartext) are accepted.
    http2: bool = True
    h2: H2Section = attrs.field(factory=H2Section)
    #: TLS contexts when the listener terminates TLS; ``None`` for cleartext.
    tls: ServerTls | None = None


@attrs.define(eq=False)
class Generation:
    """One validated configuration, with its plugin instances and chains."""

    number: int
    settings: Settings
    files: tuple[Path, ...]
    host: PluginHost
    routes: dict[str, RouteRuntime]
    listeners: dict[str, ListenerRuntime]
    #: listener name -> chain used for ``trellis_route_select``.
    pre_route: dict[str, Chain]
    #: (listener name, route name) -> the full chain.
    chains: dict[tuple[str, str], Chain]
    forwarding: ForwardingPolicy
    upstream_http1: str
    #: Upstream groups by name (objects shared with the previous generation
    #: when unchanged).
    groups: dict[str, GroupRuntime] = attrs.field(factory=dict)
    #: Per group, each target's transport for health probes (``[upstream]``
    #: under the target's overrides; no route's).
    probes: dict[str, tuple[RouteRuntime, ...]] = attrs.field(factory=dict)
    #: What the config files said (kept by :func:`load_generation`; a worker
    #: shares it with its set: kernel/snapshot.py).
    document: Document | None = None
    #: Flows currently using this generation.
    active: int = 0
    retired: bool = False
    idle: trio.Event = attrs.field(factory=trio.Event)

    def listener_for(self, accepted_by: ListenerRuntime) -> ListenerRuntime | None:
        """What serves a connection accepted by ``accepted_by`` in this generation.

        The listener of the same name; else, after a rename, the one that took
        over its address (a real port: ``:0`` binds anew); else None, when a
        reload removed it, and with it its chains.
        """
        now = self.listeners.get(accepted_by.name)
        if now is not None:
            return now
        address = parse_bind(accepted_by.bind)  # as the reload compared them
        if address[1] == 0:
            return None
        return next((n for n in self.listeners.values() if parse_bind(n.bind) == address), None)

    def acquire(self) -> None:
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        if self.active == 0 and self.retired:
            self.idle.set()

    def retire(self) -> None:
        self.retired = True
        if self.active == 0:
            self.idle.set()


def build_generation(
    settings: Settings,
    *,
    number: int = 1,
    files: tuple[Path, ...] = (),
    source: str = "",
    available: Mapping[str, PluginInfo] | None = None,
    modules: Mapping[str, str] | None = None,
    extra_plugins: Mapping[str, object] | None = None,
    previous_groups: Mapping[str, GroupRuntime] | None = None,
) -> Generation:
    """Validate ``settings`` against the installed plugins and compile it.

    ``previous_groups`` are the live generation's groups: an unchanged group
    is kept as it is (balancer state and target health survive a reload).
    """
    problems: list[str] = []
    broken: set[str] = set()
    if available is None:
        available, load_problems = available_plugins(modules, blocked=settings.kernel.blocked)
        used = plugin_references(settings)
        broken = {p.plugin for p in load_problems if isinstance(p, LoadProblem)}
        for problem in load_problems:
            if not isinstance(problem, LoadProblem) or problem.configured:
                problems.append(problem)
            elif problem.plugin in used:  # an installed one: where the config uses it
                problems.append(f"{used[problem.plugin]}: {problem}")
            else:
                log.warning("%s (this configuration does not use it)", problem)
    blocked = set(settings.kernel.blocked)
    available = {k: v for k, v in available.items() if k not in blocked}
    host, host_problems = PluginHost.build(
        settings, available=available, extra=extra_plugins, broken=broken
    )
    problems.extend(host_problems)

    srv, ups = settings.server, settings.upstream
    routes: dict[str, RouteRuntime] = {}
    client_tls = ClientContexts(problems)
    client_tls.note(ups.tls, "$.upstream.tls")
    for i, rc in enumerate(settings.routes):
        routes[rc.name], route_problems = route_runtime(i, rc, ups, srv.max_body_bytes, client_tls)
        problems.extend(route_problems)
    if not routes:
        # No [[routes]]: one implicit route so that the global chain still runs.
        implicit = RouteConfig(name="default")
        routes["default"], _ = route_runtime(-1, implicit, ups, srv.max_body_bytes, client_tls)
    groups = build_groups(settings, host, previous_groups or {}, problems)
    _attach_groups(settings, routes, groups, client_tls, problems)
    probe_rc = RouteConfig(name="health-check")
    probe_route, _ = route_runtime(-1, probe_rc, ups, 0, client_tls)
    group_index = {gc.name: gi for gi, gc in enumerate(settings.groups)}
    probes = {
        name: tuple(
            target_runtime(
                -1,
                probe_route,
                probe_rc,
                ups,
                group.configs[t.index],
                t.origin,
                f"$.groups[{group_index[name]}].targets[{t.index}]",
                client_tls,
            )
            for t in group.targets
        )
        for name, group in groups.items()
    }
    client_tls.check_unused()

    # The codec checks the body limit before routing, so it gets the largest
    # limit any route allows (0 = none); each route's own limit is then
    # enforced by the exchange.
    route_limits = [r.max_body_bytes for r in routes.values()]
    codec_body_limit = 0 if 0 in route_limits else max(route_limits)

    listeners: dict[str, ListenerRuntime] = {}
    for i, lc in enumerate(settings.listeners):
        default_route = lc.default_route or next(iter(routes))
        if default_route not in routes:
            problems.append(f"$.listeners[{i}].default_route: no route named {default_route!r}")
        try:
            kind = resolve_kind(lc.http1 or srv.http1)
        except Exception as exc:
            problems.append(f"$.listeners[{i}].http1: {exc}")
            kind = "h11"
        http2 = srv.http2 if lc.http2 is None else lc.http2
        server_tls: ServerTls | None = None
        if lc.tls is not None:
            server_tls, tls_problems = build_server_tls(
                lc.tls, f"$.listeners[{i}].tls", http2=http2
            )
            problems.extend(tls_problems)
        listeners[lc.name] = ListenerRuntime(
            name=lc.name,
            bind=lc.bind,
            http1=kind,
            limits=Limits(
                max_request_line=srv.max_request_line,
                max_header_bytes=srv.max_header_bytes,
                max_header_count=srv.max_header_count,
                max_body_bytes=codec_body_limit,
            ),
            request_head_timeout_s=lc.request_head_timeout_s or srv.request_head_timeout_s,
            keepalive_timeout_s=lc.keepalive_timeout_s or srv.keepalive_timeout_s,
            body_timeout_s=srv.body_timeout_s,
            send_timeout_s=srv.send_timeout_s,
            default_route=default_route,
            http2=http2,
            h2=srv.h2,
            tls=server_tls,
        )

    route_names = tuple(routes)
    known = {
        "routes": route_names,
        "groups": tuple(gc.name for gc in settings.groups),
        "listeners": tuple(lc.name for lc in settings.listeners),
    }
    problems.extend(lifecycle.async_problems(host.pm))
    checks = list(host.pm.hook.trellis_config_check.get_hookimpls())
    if host.salvaged is not None:
        # Instances whose tables had problems, built from the rest (see
        # PluginHost.salvaged): their checks run too, but say nothing at,
        # under or above a value their table refused (the default that stood
        # in for it is no news).
        problems.extend(lifecycle.async_problems(host.salvaged.pm))
        checks += host.salvaged.pm.hook.trellis_config_check.get_hookimpls()
    for impl in checks:
        if inspect.iscoroutinefunction(impl.function):
            continue  # listed above: calling it would only make a coroutine
        check = cast(Callable[..., list[str] | None], impl.function)
        table = "$.plugins." + impl.plugin_name
        refused = host.refused.get(impl.plugin_name, [])  # only salvaged instances have any
        problems.extend(
            p
            for p in _config_check(check, {a: known[a] for a in impl.argnames}, table)
            if not any(_within(p.partition(": ")[0], r) for r in refused)
        )

    for name in settings.kernel.policy:
        # A plugin's entry covers its named instances ("name.label") too.
        if name not in host.instances and not any(i.startswith(name + ".") for i in host.instances):
            problems.append(f"$.kernel.policy.{name}: no plugin instance {name!r} in any chain")

    impls = collect_impls(host.pm)
    report = error_reporter(host.pm)
    pre_route: dict[str, Chain] = {}
    chains: dict[tuple[str, str], Chain] = {}
    global_chain = list(settings.kernel.plugins)
    rc_by_name = {rc.name: rc for rc in settings.routes}
    for i, lc in enumerate(settings.listeners):
        names = global_chain + list(lc.plugins)
        pre_route[lc.name] = pre = compile_chain(names, impls, settings, problems, report)
        if lc.tls is not None and lc.tls.passthrough and not pre.tls_passthrough:
            problems.append(
                f"$.listeners[{i}].tls.passthrough: no plugin in the global or listener chain"
                " implements trellis_tls_passthrough"
            )
        server_tls = listeners[lc.name].tls
        if server_tls is not None:
            server_tls.set_certificate_provider(certificate_provider(pre.tls_certificate))
        for rname in routes:
            route_cfg = rc_by_name.get(rname)
            full = names + (list(route_cfg.plugins) if route_cfg else [])
            chains[(lc.name, rname)] = compile_chain(full, impls, settings, problems, report)
    if problems:
        raise ConfigError(problems, source=source)
    return Generation(
        number=number,
        settings=settings,
        files=files,
        host=host,
        routes=routes,
        listeners=listeners,
        pre_route=pre_route,
        chains=chains,
        forwarding=ForwardingPolicy.build(
            via=srv.via,
            x_forwarded=srv.x_forwarded,
            forwarded=srv.forwarded,
            trusted=srv.trusted_proxies,
            trace=srv.trace,
        ),
        upstream_http1=resolve_kind(ups.http1),
        groups=groups,
        probes=probes,
    )


def _attach_groups(
    settings: Settings,
    routes: dict[str, RouteRuntime],
    groups: Mapping[str, GroupRuntime],
    tls: ClientContexts,
    problems: list[str],
) -> None:
    """Check each route's ``group`` and give every route its per-target transports.

    Every route gets them for every group, since a plugin may send a flow
    to another group than its route's (``flow.group``).
    """
    names = {gc.name for gc in settings.groups}
    index = {gc.name: gi for gi, gc in enumerate(settings.groups)}
    for i, rc in enumerate(settings.routes):
        if rc.group and rc.group not in names:
            problems.append(
                f"$.routes[{i}].group: no group named {rc.group!r}"
                f" (groups: {', '.join(sorted(names)) or 'none'})"
            )
        route = routes[rc.name]
        per_target: dict[str, tuple[RouteRuntime, ...]] = {}
        for name, group in groups.items():
            per_target[name] = tuple(
                target_runtime(
                    i,
                    route,
                    rc,
                    settings.upstream,
                    group.configs[t.index],
                    t.origin,
                    f"$.groups[{index[name]}].targets[{t.index}]",
                    tls,
                )
                for t in group.targets
            )
        routes[rc.name] = attrs.evolve(route, per_target=per_target)


def load_generation(
    path: str | Path,
    *,
    number: int = 1,
    environ: Mapping[str, str] | None = None,
    plugins: list[str] | None = None,
    blocked: list[str] | None = None,
    extra_plugins: Mapping[str, object] | None = None,
    previous_groups: Mapping[str, GroupRuntime] | None = None,
    document: Document | None = None,
) -> Generation:
    """Read ``path`` and build a generation: what ``kernel run`` and ``kernel check`` do.

    ``plugins`` replaces the global chain and ``blocked`` adds blocked plugin
    names (the ``--plugins`` and ``-p no:NAME`` flags). When the kernel's own
    settings are wrong, the plugin tables are still checked, so one
    :class:`~sdk.ConfigError` lists every problem. With a ``document`` (what
    an earlier load read), that is loaded instead of the files.
    """
    source = str(path) if document is None else document.source
    try:
        if document is None:
            loaded = load_config(path, environ=environ)
        else:
            loaded = load_document(document, environ=environ)
    except ConfigError as exc:
        if exc.raw is None:
            raise
        raise ConfigError(
            [*exc.problems, *_second_round(exc, plugins, blocked)], source=exc.source
        ) from None
    settings = _flags(loaded.settings, plugins, blocked)
    try:
        gen = build_generation(
            settings,
            number=number,
            files=loaded.files,
            source=source,
            modules=settings.kernel.modules,
            extra_plugins=extra_plugins,
            previous_groups=previous_groups,
        )
    except ConfigError as exc:
        if plugins is None:
            raise
        # The global chain came from the command line, not the file.
        problems = [
            f"{p} (from --plugins)" if p.startswith("$.kernel.plugins[") else p
            for p in exc.problems
        ]
        raise ConfigError(problems, source=exc.source) from None
    gen.document = loaded.document
    return gen


def _flags(settings: Settings, plugins: list[str] | None, blocked: list[str] | None) -> Settings:
    """``--plugins`` and ``-p no:NAME`` applied to the settings."""
    kernel = settings.kernel
    if plugins is not None:
        kernel = attrs.evolve(kernel, plugins=list(plugins))
    if blocked:
        kernel = attrs.evolve(kernel, blocked=[*kernel.blocked, *blocked])
    return attrs.evolve(settings, kernel=kernel)


def _second_round(
    exc: ConfigError, plugins: list[str] | None, blocked: list[str] | None
) -> list[str]:
    """The problems the generation's checks find in what the loader's left.

    With the refused values left out (:func:`salvage_settings`), the plugins,
    routes and groups are checked too, so one pass lists every problem; a
    problem at or under a path already reported is a consequence, not news.
    """
    assert exc.raw is not None
    settings = salvage_settings(exc.raw)
    if settings is None:  # at least the plugin tables
        raw_kernel = exc.raw.get("kernel")
        modules = raw_kernel.get("modules") if isinstance(raw_kernel, Mapping) else None
        found, _ = available_plugins(modules if isinstance(modules, Mapping) else None)
        return check_plugin_tables(exc.raw.get("plugins"), found)
    try:
        settings = _flags(settings, plugins, blocked)
        build_generation(settings, modules=settings.kernel.modules)
    except ConfigError as more:
        seen = [p.partition(": ")[0] for p in exc.problems]
        return [
            p
            for p in more.problems
            if p not in exc.problems and not any(_within(p.partition(": ")[0], s) for s in seen)
        ]
    return []


def _within(path: str, other: str) -> bool:
    """Whether ``path`` is ``other`` or lies under it (or the reverse)."""
    a, b = (path, other) if len(path) >= len(other) else (other, path)
    return a == b or (a.startswith(b) and a[len(b)] in ".[")


def _config_check(check: Callable[..., object], kwargs: dict[str, Any], table: str) -> list[str]:
    """One ``trellis_config_check``'s problems, each with its path.

    A problem that starts with ``$`` has its own path; any other is the
    instance's table's (``$.plugins.NAME.<problem>``). What is not a list of
    strings is the plugin's own fault, reported as such.
    """
    try:
        found = check(**kwargs)
    except BaseException as exc:  # a plugin must not end the check
        return [f"{table}: trellis_config_check failed: {lifecycle.describe(exc, as_repr=True)}"]
    if found is None:
        return []
    if isinstance(found, str) or not isinstance(found, list | tuple):
        return [
            f"{table}: trellis_config_check returned {type(found).__name__},"
            f" not a list of problems: {lifecycle.describe(found, as_repr=True):.200}"
        ]
    out = []
    for p in found:
        if not isinstance(p, str):
            out.append(f"{table}: trellis_config_check returned a {type(p).__name__}: {p!r:.200}")
        else:
            out.append(p if p.startswith("$") else f"{table}.{p}")
    return out
