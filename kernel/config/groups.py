"""The ``[[groups]]`` tables: upstream groups, their targets, health checks and stickiness.

A route with ``group = "NAME"`` sends to one target of that group, chosen
by the group's ``strategy`` (a plugin instance implementing
``trellis_balancer``). Only values are checked here; names are resolved
against routes and plugins when a generation is built (:mod:`kernel.groups`).

Also home to the two validators every table naming things or URLs shares
(:func:`valid_name`, :func:`upstream_url`).

May import: stdlib, attrs, sdk, kernel.config.checks, kernel.config.transport.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import attrs

from kernel.config.checks import non_negative, positive
from kernel.config.transport import TransportConfig
from sdk import is_token

__all__ = [
    "GroupConfig",
    "HealthCheckConfig",
    "PassiveHealthConfig",
    "StickyConfig",
    "TargetConfig",
    "split_urls",
    "upstream_url",
    "valid_name",
]

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: Target names may also be ``host:port`` (the default) or ``[v6]:port``.
_TARGET_NAME_RE = re.compile(r"[A-Za-z0-9_\[][A-Za-z0-9_.:\[\]-]*")
_URL_RE = re.compile(r"(https?)://([^/?#\s]+)(/[^?#\s]*)?")


def valid_name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name (letters, digits, '_', '-', '.')")


def _target_name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not _TARGET_NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid target name (letters, digits, '_', '-', '.', ':')"
        )


def upstream_url(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not _URL_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an http(s)://host[:port][/path] URL")


def _status(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    # One item of a list (deep_iterable): each bad one is listed at its index.
    if not 100 <= value <= 599:
        raise ValueError(f"{value!r} is not an HTTP status")


def _probe_path(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and (not value.startswith("/") or any(c in value for c in " \r\n\0#")):
        raise ValueError(f"{value!r} is not a request path such as '/health'")


def _token(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not is_token(value):
        raise ValueError(f"{value!r} is not a token (letters, digits and !#$%&'*+.^_`|~-)")


def split_urls(text: str) -> list[str]:
    """``"http://a:1, http://b:2"`` -> ``["http://a:1", "http://b:2"]`` (commas or spaces)."""
    return [part for part in re.split(r"[,\s]+", text) if part]


def _urls(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    for url in split_urls(value):
        if not _URL_RE.fullmatch(url):
            raise ValueError(f"{url!r} is not an http(s)://host[:port][/path] URL")


@attrs.frozen(kw_only=True)
class TargetConfig:
    """``[[groups.targets]]``: one server of a group."""

    #: ``http(s)://host:port[/base]``.
    url: str = attrs.field(validator=upstream_url)
    #: Unique in the group; defaults to the URL's ``host:port``. Used in logs,
    #: metrics labels and the sticky cookie.
    name: str = attrs.field(default="", validator=_target_name)
    #: Relative share of the traffic for weight-aware strategies; ``0`` drains
    #: the target (no new requests, health still checked).
    weight: float = attrs.field(default=1.0, validator=non_negative)
    #: Overrides of the route's and ``[upstream]``'s transport for this target
    #: (timeouts, pool, HTTP/2, TLS); ``retry`` stays per route.
    transport: TransportConfig | None = None

    def __attrs_post_init__(self) -> None:
        if self.transport is not None and self.transport.retry is not None:
            raise ValueError("transport.retry: retries are set per route, not per target")


@attrs.frozen(kw_only=True)
class HealthCheckConfig:
    """``[groups.health]``: active checks; every target is probed on its own schedule.

    A target goes down after ``unhealthy_threshold`` failed probes in a row
    and comes back after ``healthy_threshold`` good ones. Targets start up,
    and the first probe runs as soon as the group goes live.
    """

    #: The request path; empty tries Dispa's ``/health``, ``/healthz``, ``/ping``
    #: and ``/`` in turn, a ``404`` moving on to the next.
    path: str = attrs.field(default="", validator=_probe_path)
    method: str = attrs.field(default="GET", validator=_token)
    #: Statuses that mean healthy; empty means any 2xx or 3xx.
    expect: list[int] = attrs.field(factory=list, validator=attrs.validators.deep_iterable(_status))
    #: ``Host`` of the probe; empty: the target's ``host:port``.
    host: str = ""
    #: Seconds between the end of a probe and the next.
    interval_s: float = attrs.field(default=5.0, validator=positive)
    #: Seconds a probe (connect, request, response head) may take.
    timeout_s: float = attrs.field(default=2.0, validator=positive)
    healthy_threshold: int = attrs.field(default=2, validator=positive)
    unhealthy_threshold: int = attrs.field(default=3, validator=positive)


@attrs.frozen(kw_only=True)
class PassiveHealthConfig:
    """``[groups.passive]``: eject a target that fails real requests.

    ``failures`` consecutive failed requests (connect error, timeout, a
    broken connection, or a status in ``statuses``) eject the target for
    ``cooldown_s``; then it is tried again, and one more failure ejects it
    again. ``failures = 0`` turns passive checks off.
    """

    failures: int = attrs.field(default=5, validator=non_negative)
    #: Response statuses that count as failures.
    statuses: list[int] = attrs.field(
        factory=lambda: [502, 503, 504], validator=attrs.validators.deep_iterable(_status)
    )
    cooldown_s: float = attrs.field(default=30.0, validator=positive)


@attrs.frozen(kw_only=True)
class StickyConfig:
    """``[groups.sticky]``: keep a client on one target with a cookie the proxy sets.

    A request carrying the cookie goes to its target while that target is
    available; otherwise the strategy picks one and the response sets the
    cookie. The value is a digest of the group, target name and URL, never
    the address itself.
    """

    cookie: str = attrs.field(validator=_token)
    #: Cookie lifetime (``Max-Age``); 0 makes it a session cookie.
    max_age_s: int = attrs.field(default=0, validator=non_negative)
    path: str = "/"
    #: ``HttpOnly``; ``Secure`` is added when the client used TLS.
    http_only: bool = True
    same_site: Literal["Lax", "Strict", "None", ""] = "Lax"


@attrs.frozen(kw_only=True)
class GroupConfig:
    """``[[groups]]``: a named set of targets a route can send to."""

    name: str = attrs.field(validator=valid_name)
    #: The plugin instance that balances this group (``trellis_balancer``):
    #: ``roundrobin``, ``weighted``, ``random``, ``leastconn``, ``p2c``,
    #: ``hash`` (or a named instance such as ``hash.byuser``, or a third party's).
    strategy: str = attrs.field(default="roundrobin", validator=valid_name)
    #: The targets, in order.
    targets: list[TargetConfig] = attrs.field(factory=list)
    #: Shorthand: more targets as URLs separated by commas or spaces (weight 1,
    #: named ``host:port``); handy with ``${TRELLIS_UPSTREAMS}``.
    urls: str = attrs.field(default="", validator=_urls)
    #: Active health checks (absent: none).
    health: HealthCheckConfig | None = None
    passive: PassiveHealthConfig = attrs.field(factory=PassiveHealthConfig)
    sticky: StickyConfig | None = None
    #: No target available: ``"refuse"`` answers 503 with ``Retry-After``;
    #: ``"panic"`` ignores health and tries every target.
    when_none_available: Literal["refuse", "panic"] = "refuse"
    #: ``Retry-After`` seconds of that 503.
    retry_after_s: int = attrs.field(default=5, validator=non_negative)
