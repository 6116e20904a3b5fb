"""The kernel's own configuration tables, as frozen attrs classes.

One TOML file (plus its includes) structures into :class:`Settings`. Each
plugin's ``[plugins.<name>]`` table is *not* described here: plugins declare
their own attrs class and the plugin host structures those tables. Defaults
here are the documented defaults; ``config/default.toml`` is kept equal to them
by a test. The nested TLS, HTTP/2 and transport tables live in
:mod:`kernel.config.transport` and are re-exported here.

May import: stdlib, attrs, kernel.config.transport.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

import attrs

from kernel.config.checks import non_negative, positive
from kernel.config.groups import (
    GroupConfig,
    HealthCheckConfig,
    PassiveHealthConfig,
    StickyConfig,
    TargetConfig,
    upstream_url,
    valid_name,
)
from kernel.config.transport import (
    CertificateConfig,
    H2Section,
    ListenerTls,
    RetryConfig,
    TransportConfig,
    UpstreamTls,
)

__all__ = [
    "CertificateConfig",
    "GroupConfig",
    "H2Section",
    "HealthCheckConfig",
    "KernelSection",
    "ListenerConfig",
    "ListenerTls",
    "PassiveHealthConfig",
    "PluginPolicy",
    "RetryConfig",
    "RouteConfig",
    "ServerSection",
    "Settings",
    "StickyConfig",
    "TargetConfig",
    "TransportConfig",
    "UpstreamSection",
    "UpstreamTls",
    "parse_bind",
]

Http1Codec = Literal["auto", "h11", "httptools"]
OnError = Literal["fail_closed", "fail_open"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["console", "json"]


def parse_bind(value: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` into a host and a port number."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f"{value!r} has no host")
    return host, port


def _bind(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    parse_bind(value)


def _cidr(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    # One item of a list (deep_iterable): each bad one is listed at its index.
    ipaddress.ip_network(value, strict=False)


#: RFC 9110 §7.6.3: received-by is a pseudonym (a token) or host[:port].
_VIA_BY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?::[0-9]+)?")


def _via(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and _VIA_BY.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a pseudonym (a token such as 'edge-1', or host:port)")


def _one_timeout_place(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    for key in ("connect_timeout_s", "response_timeout_s"):
        if getattr(inst, key) is not None and getattr(value, key) is not None:
            raise ValueError(f"{key} is set both here and on the route: keep one")


@attrs.frozen(kw_only=True)
class KernelSection:
    """``[kernel]``: the plugin chain and process behaviour."""

    #: The global plugin chain, by instance name; runs before every route's chain.
    #: ``kernel run --plugins a,b`` replaces it.
    plugins: list[str] = attrs.field(factory=list)
    #: Plugin names never to load (``kernel run -p no:NAME`` adds to it).
    blocked: list[str] = attrs.field(factory=list)
    #: Plugins that are not installed as entry points, by name:
    #: ``name = "package.module:Object"`` (development, examples, benchmarks).
    modules: dict[str, str] = attrs.field(factory=dict)
    #: Log level for the root logger (``-v`` and ``TRELLIS_LOG`` win).
    log_level: LogLevel = "info"
    #: ``console`` (one readable line per record) or ``json`` (one JSON object
    #: per line, for log shippers); ``TRELLIS_LOG_FORMAT`` wins.
    log_format: LogFormat = "console"
    #: Seconds between SIGTERM/SIGINT and the drain (a "lame duck" period):
    #: every listener keeps serving while ``/ready`` says 503 (draining), so a
    #: load balancer can take the instance out first; a second signal ends it.
    #: 0: the listeners close at once.
    shutdown_delay_s: float = attrs.field(default=0.0, validator=non_negative)
    #: Seconds in-flight flows get to finish on SIGTERM/SIGINT before being cancelled.
    shutdown_grace_s: float = attrs.field(default=10.0, validator=non_negative)
    #: Seconds what was cancelled then (flows, plugin tasks) gets to end; the
    #: process then logs what did not and exits with code 4 anyway.
    shutdown_abort_s: float = attrs.field(default=5.0, validator=positive)
    #: Reload when the config file (or an include) changes on disk.
    watch_config: bool = True
    #: Default deadline for one awaited plugin hook call, in seconds.
    plugin_deadline_s: float = attrs.field(default=5.0, validator=positive)
    #: What a plugin failure does to its flow: ``fail_closed`` ends it with 502,
    #: ``fail_open`` logs and carries on as if the plugin had returned nothing.
    plugin_on_error: OnError = "fail_closed"
    #: Seconds the event loop may go without turning (a plain ``def`` hook
    #: that blocks) before a warning names what runs; 0 turns the watch off.
    stall_warning_s: float = attrs.field(default=1.0, validator=non_negative)
    #: Per-instance overrides of ``plugin_deadline_s`` / ``plugin_on_error``.
    policy: dict[str, PluginPolicy] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class PluginPolicy:
    """``[kernel.policy.<instance>]``: fault-boundary settings for one plugin instance."""

    deadline_s: float | None = attrs.field(default=None, validator=positive)
    on_error: OnError | None = None


@attrs.frozen(kw_only=True)
class ServerSection:
    """``[server]``: downstream HTTP/1.1 settings; each listener may override them."""

    #: HTTP/1.1 codec: ``httptools`` (llhttp, fast), ``h11`` (pure Python, the
    #: reference) or ``auto`` (httptools when importable).
    http1: Http1Codec = "auto"
    #: Seconds a client has to send a complete request head (then 408).
    request_head_timeout_s: float = attrs.field(default=10.0, validator=positive)
    #: Seconds an idle keep-alive connection is kept open.
    keepalive_timeout_s: float = attrs.field(default=10.0, validator=positive)
    #: Seconds between two reads of a request body before giving up (408).
    body_timeout_s: float = attrs.field(default=30.0, validator=positive)
    #: Seconds a client may take to accept any of a response's bytes while a
    #: write waits for room (then the flow ends and the connection closes).
    send_timeout_s: float = attrs.field(default=60.0, validator=positive)
    #: Longest accepted request line, in bytes (then 414).
    max_request_line: int = attrs.field(default=8192, validator=positive)
    #: Largest accepted header block, in bytes (then 431).
    max_header_bytes: int = attrs.field(default=65536, validator=positive)
    #: Most header fields in one request (then 431).
    max_header_count: int = attrs.field(default=100, validator=positive)
    #: Largest accepted request body in bytes; 0 means no limit (then 413).
    max_body_bytes: int = attrs.field(default=0, validator=non_negative)
    #: Clients (CIDRs) whose X-Forwarded-For / Forwarded headers are kept and
    #: appended to; from anyone else they are replaced.
    trusted_proxies: list[str] = attrs.field(
        factory=list, validator=attrs.validators.deep_iterable(_cidr)
    )
    #: Add ``X-Forwarded-For``/``-Proto``/``-Host`` to upstream requests.
    x_forwarded: bool = True
    #: Add an RFC 7239 ``Forwarded`` header to upstream requests.
    forwarded: bool = True
    #: The pseudonym in the ``Via`` header we add; empty to add none.
    via: str = attrs.field(default="trellis", validator=_via)
    #: Serve TRACE requests (off: 501). A TRACE with ``Max-Forwards: 0`` is
    #: answered here with the request as received, less its credentials and
    #: cookies; otherwise it is forwarded, as any request.
    trace: bool = False
    #: Offer ``h2`` by ALPN on TLS listeners and accept h2c prior knowledge on
    #: cleartext ones.
    http2: bool = True
    #: HTTP/2 settings offered to clients.
    h2: H2Section = attrs.field(factory=H2Section)
    #: Worker processes sharing the listeners (SO_REUSEPORT) under a small
    #: supervisor that restarts a crashed one; 1 runs everything in-process.
    workers: int = attrs.field(default=1, validator=positive)


@attrs.frozen(kw_only=True)
class UpstreamSection:
    """``[upstream]``: how the proxy talks to upstream servers."""

    #: Seconds to establish a TCP connection (then 504).
    connect_timeout_s: float = attrs.field(default=5.0, validator=positive)
    #: Seconds from the end of the request to the response head (then 504).
    response_timeout_s: float = attrs.field(default=30.0, validator=positive)
    #: Seconds between two reads of a response body before giving up.
    read_timeout_s: float = attrs.field(default=60.0, validator=positive)
    #: Seconds the upstream may take no byte of a request body while a write
    #: waits for room (then 504); a slow upstream that keeps reading goes on.
    send_timeout_s: float = attrs.field(default=60.0, validator=positive)
    #: Idle connections kept per origin.
    max_idle_per_host: int = attrs.field(default=128, validator=non_negative)
    #: Seconds an idle pooled connection may wait for reuse.
    idle_timeout_s: float = attrs.field(default=60.0, validator=positive)
    #: HTTP/1.1 codec for upstream connections (as ``[server] http1``).
    http1: Http1Codec = "auto"
    #: Offer ``h2`` by ALPN to https upstreams (HTTP/1.1 when they decline).
    http2: bool = False
    #: Always speak HTTP/2 upstream: h2c prior knowledge for http:// upstreams.
    force_http2: bool = False
    #: Seconds a WebSocket tunnel may carry no bytes either way before both
    #: sides are closed (routes with ``websocket = true``).
    websocket_idle_timeout_s: float = attrs.field(default=300.0, validator=positive)
    #: How https upstreams are verified, and the client certificate shown to them.
    tls: UpstreamTls = attrs.field(factory=UpstreamTls)
    #: When a failed request is sent to the upstream again.
    retry: RetryConfig = attrs.field(factory=RetryConfig)


@attrs.frozen(kw_only=True)
class ListenerConfig:
    """``[[listeners]]``: one bound socket and how it speaks."""

    name: str = attrs.field(default="main", validator=valid_name)
    #: ``host:port`` (``[::1]:8080`` for IPv6).
    bind: str = attrs.field(default="127.0.0.1:8080", validator=_bind)
    #: Instance names run after the global chain and before the route's chain.
    plugins: list[str] = attrs.field(factory=list)
    #: Per-listener overrides of ``[server]`` (unset keys inherit).
    http1: Http1Codec | None = None
    request_head_timeout_s: float | None = attrs.field(default=None, validator=positive)
    keepalive_timeout_s: float | None = attrs.field(default=None, validator=positive)
    #: Per-listener override of ``[server] http2``.
    http2: bool | None = None
    #: Route used when no plugin picks one; empty means the first route.
    default_route: str = ""
    #: Terminate TLS here (absent: cleartext).
    tls: ListenerTls | None = None


@attrs.frozen(kw_only=True)
class RouteConfig:
    """``[[routes]]``: a named plugin chain plus where requests go by default."""

    name: str = attrs.field(validator=valid_name)
    #: Instance names of this route's chain, after the global and listener chains.
    plugins: list[str] = attrs.field(factory=list)
    #: Default upstream (``http(s)://host:port[/base]``); a plugin may pick another.
    upstream: str = attrs.field(default="", validator=upstream_url)
    #: Or: the ``[[groups]]`` entry whose targets serve this route (not both).
    group: str = ""
    #: Per-route overrides of ``[upstream]`` timeouts (unset keys inherit); the
    #: same keys in ``transport`` are the newer spelling, and setting both is refused.
    connect_timeout_s: float | None = attrs.field(default=None, validator=positive)
    response_timeout_s: float | None = attrs.field(default=None, validator=positive)
    #: Per-route body limit override (bytes; 0 = none).
    max_body_bytes: int | None = attrs.field(default=None, validator=non_negative)
    #: Pass WebSocket upgrades through to the upstream (after the route's
    #: access and request plugins have run); off: the upgrade is not asked for.
    websocket: bool = False
    #: Per-route overrides of ``[upstream]`` (timeouts, pool, HTTP/2, TLS).
    transport: TransportConfig | None = attrs.field(default=None, validator=_one_timeout_place)


@attrs.frozen(kw_only=True)
class Settings:
    """The whole kernel configuration (the file minus ``[plugins.*]``)."""

    kernel: KernelSection = attrs.field(factory=KernelSection)
    server: ServerSection = attrs.field(factory=ServerSection)
    upstream: UpstreamSection = attrs.field(factory=UpstreamSection)
    listeners: list[ListenerConfig] = attrs.field(factory=lambda: [ListenerConfig()])
    routes: list[RouteConfig] = attrs.field(factory=list)
    groups: list[GroupConfig] = attrs.field(factory=list)
    #: Raw ``[plugins.*]`` tables, structured later by the plugin host.
    plugins: dict[str, Any] = attrs.field(factory=dict)
