"""Each route's effective upstream settings: :class:`RouteRuntime`, from ``[[routes]]``.

A route's values are ``[upstream]``'s with its overrides applied: the
route's own ``connect_timeout_s``/``response_timeout_s`` (the older
spelling) or any key of ``[routes.transport]`` (setting a timeout in both
places is refused by the model). Its TLS table is ``[routes.transport.tls]``
when present (as a whole, not key by key), else ``[upstream.tls]``.

Client TLS contexts are built here, through :class:`ClientContexts`: one per
distinct (TLS table, ALPN list), and only for routes whose upstream is
``https``. A table no https route uses has its files checked all the same,
so a wrong path is reported whether or not it is in use yet.

May import: stdlib, attrs, sdk, kernel.config, kernel.tls.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import attrs

from kernel.config.model import (
    RetryConfig,
    RouteConfig,
    TargetConfig,
    TransportConfig,
    UpstreamSection,
    UpstreamTls,
)
from kernel.tls import build_client_tls, check_client_tls
from sdk import Origin

__all__ = [
    "ClientContexts",
    "RetryBudget",
    "RouteRuntime",
    "route_runtime",
    "target_runtime",
    "upstream_alpn",
]


@attrs.frozen
class RouteRuntime:
    """A route, resolved: its default origin, per-route limits and effective transport.

    The transport values are ``[upstream]`` with the route's overrides
    (``connect_timeout_s``/``response_timeout_s`` on the route, or anything
    in ``[routes.transport]``) applied.
    """

    name: str
    upstream: Origin | None
    base_path: str
    connect_timeout_s: float
    response_timeout_s: float
    read_timeout_s: float
    max_body_bytes: int
    send_timeout_s: float = 60.0
    max_idle_per_host: int = 128
    idle_timeout_s: float = 60.0
    #: Offer h2 by ALPN to https upstreams.
    http2: bool = False
    #: Always HTTP/2: ALPN ``h2`` only for https, h2c prior knowledge for http.
    force_http2: bool = False
    #: The context for this route's https upstream (verification, client
    #: certificate, ALPN); ``None`` when the route's upstream is not https.
    client_tls: ssl.SSLContext | None = None
    #: The name to send by SNI and verify; ``""`` means the origin's host.
    tls_server_name: str = ""
    #: WebSocket upgrades pass through (``[[routes]] websocket``).
    websocket: bool = False
    #: Idle limit of a WebSocket tunnel (``[upstream] websocket_idle_timeout_s``).
    websocket_idle_timeout_s: float = 300.0
    #: When a failed request is sent again (``[upstream.retry]`` or the route's).
    retry: RetryConfig = attrs.field(factory=RetryConfig)
    #: The route's retry budget (mutable: shared by the route's flows).
    retry_budget: RetryBudget = attrs.field(factory=lambda: RetryBudget(0.2), eq=False)
    #: The ``[[groups]]`` entry this route sends to (``""``: none).
    group: str = ""
    #: Per group name, this route as it sends to each target of that group
    #: (index = target index): the targets' transport overrides applied.
    per_target: Mapping[str, tuple[RouteRuntime, ...]] = attrs.field(
        factory=dict, eq=False, repr=False
    )


class ClientContexts:
    """Client TLS contexts for https routes: one per distinct (TLS table, ALPN) pair.

    Tables no https route uses get their files checked only: loading the
    system's CA store costs tens of milliseconds per context.
    """

    def __init__(self, problems: list[str]) -> None:
        self._problems = problems
        self._built: dict[tuple[UpstreamTls, tuple[str, ...]], ssl.SSLContext | None] = {}
        self._failed: set[UpstreamTls] = set()
        self._unused: dict[UpstreamTls, str] = {}  # table -> first path naming it

    def get(self, cfg: UpstreamTls, path: str, alpn: tuple[str, ...]) -> ssl.SSLContext | None:
        key = (cfg, alpn)
        if key not in self._built and cfg not in self._failed:
            ctx, found = build_client_tls(cfg, path, alpn=alpn)
            if found:
                self._failed.add(cfg)
                self._problems.extend(found)
            self._built[key] = ctx
        return self._built.get(key)

    def note(self, cfg: UpstreamTls, path: str) -> None:
        self._unused.setdefault(cfg, path)

    def check_unused(self) -> None:
        built = {cfg for cfg, _ in self._built} | self._failed
        for cfg, path in self._unused.items():
            if cfg not in built:
                self._problems.extend(check_client_tls(cfg, path))


class RetryBudget:
    """Retries may add at most ``ratio`` of a route's requests, plus a reserve.

    A token bucket: every request adds ``ratio`` of a token, every retry
    takes one; it starts with (and never holds more than) ``RESERVE``
    tokens, so a burst of failures after a quiet spell gets a few retries
    and a failing upstream is not hit by ``attempts`` times its load.
    """

    RESERVE = 10.0

    __slots__ = ("ratio", "tokens")

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self.tokens = self.RESERVE

    def request(self) -> None:
        self.tokens = min(self.RESERVE, self.tokens + self.ratio)

    def take(self) -> bool:
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def upstream_alpn(http2: bool, force: bool) -> tuple[str, ...]:
    """The ALPN list offered to an https upstream."""
    return ("h2",) if force else ("h2", "http/1.1") if http2 else ("http/1.1",)


def route_runtime(
    i: int, rc: RouteConfig, ups: UpstreamSection, srv_body: int, tls: ClientContexts
) -> tuple[RouteRuntime, list[str]]:
    """``[[routes]]`` entry ``i`` with ``[upstream]`` under its overrides."""
    problems: list[str] = []
    origin: Origin | None = None
    base = ""
    if rc.upstream and rc.group:
        problems.append(f"$.routes[{i}]: set either upstream or group, not both")
    if rc.upstream:
        try:
            origin, base = Origin.parse(rc.upstream)
        except ValueError as exc:
            problems.append(f"$.routes[{i}].upstream: {exc}")
    t = rc.transport or TransportConfig()
    tls_path = f"$.routes[{i}].transport.tls" if t.tls else ""
    route = _resolve(rc, ups, t, None, origin, tls, tls_path)
    retry = t.retry or ups.retry
    return attrs.evolve(
        route,
        upstream=origin,
        base_path=base,
        max_body_bytes=srv_body if rc.max_body_bytes is None else rc.max_body_bytes,
        group=rc.group,
        retry=retry,
        retry_budget=RetryBudget(retry.budget_ratio),
    ), problems


def target_runtime(
    i: int,
    route: RouteRuntime,
    rc: RouteConfig,
    ups: UpstreamSection,
    target: TargetConfig,
    origin: Origin,
    path: str,
    tls: ClientContexts,
) -> RouteRuntime:
    """Route ``i`` as it sends to one group target: the target's transport overrides applied.

    The order is ``[upstream]``, then the route's, then the target's; the
    retry policy and its budget stay the route's.
    """
    tls_path = f"{path}.transport.tls" if target.transport and target.transport.tls else ""
    if not tls_path and rc.transport and rc.transport.tls:
        tls_path = f"$.routes[{i}].transport.tls"
    resolved = _resolve(
        rc, ups, rc.transport or TransportConfig(), target.transport, origin, tls, tls_path
    )
    return attrs.evolve(
        route,
        connect_timeout_s=resolved.connect_timeout_s,
        response_timeout_s=resolved.response_timeout_s,
        read_timeout_s=resolved.read_timeout_s,
        send_timeout_s=resolved.send_timeout_s,
        max_idle_per_host=resolved.max_idle_per_host,
        idle_timeout_s=resolved.idle_timeout_s,
        http2=resolved.http2,
        force_http2=resolved.force_http2,
        client_tls=resolved.client_tls,
        tls_server_name=resolved.tls_server_name,
    )


def _resolve(
    rc: RouteConfig,
    ups: UpstreamSection,
    t: TransportConfig,
    top: TransportConfig | None,
    origin: Origin | None,
    tls: ClientContexts,
    tls_path: str,
) -> RouteRuntime:
    """The effective transport: ``top`` (a target's) over ``t`` (the route's) over ``ups``."""
    top = top or TransportConfig()

    def pick(key: str) -> Any:
        for layer in (top, t):
            value = getattr(layer, key)
            if value is not None:
                return value
        legacy = getattr(rc, key, None)
        return legacy if legacy is not None else getattr(ups, key)

    http2 = bool(pick("http2"))
    force = bool(pick("force_http2"))
    tls_cfg = top.tls or t.tls or ups.tls
    ctx: ssl.SSLContext | None = None
    if origin is not None and origin.scheme == "https":
        ctx = tls.get(tls_cfg, tls_path or "$.upstream.tls", upstream_alpn(http2, force))
    elif tls_path:
        tls.note(tls_cfg, tls_path)
    return RouteRuntime(
        name=rc.name,
        upstream=origin,
        base_path="",
        connect_timeout_s=pick("connect_timeout_s"),
        response_timeout_s=pick("response_timeout_s"),
        read_timeout_s=pick("read_timeout_s"),
        send_timeout_s=pick("send_timeout_s"),
        max_body_bytes=0,
        max_idle_per_host=pick("max_idle_per_host"),
        idle_timeout_s=pick("idle_timeout_s"),
        http2=http2,
        force_http2=force,
        client_tls=ctx,
        tls_server_name=tls_cfg.server_name,
        websocket=rc.websocket,
        websocket_idle_timeout_s=ups.websocket_idle_timeout_s,
    )
