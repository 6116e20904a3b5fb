"""Canary split: :class:`CanaryPlugin` and its table send a share of requests to a canary.

``[plugins.canary]`` (or a named instance ``[plugins.canary.LABEL]``), on a route::

    [plugins.canary]
    upstream = "http://10.0.0.7:8080"        # the canary: a URL, or
    # group = "app-canary"                   # a [[groups]] entry (one of the two)
    percent = 5                              # share of the other requests, 0..100
    by = "client"                            # or "random"
    header = { name = "x-canary", value = "1" }       # always the canary
    cookie = { name = "canary", value = "*" }         # always the canary
    exclude_header = { name = "x-stable", value = "*" }  # never the canary

The decision, in ``trellis_upstream_select``, in this order:

1. ``exclude_header`` matches: the stable side (the route's upstream).
2. ``header`` or ``cookie`` matches: the canary, whatever ``percent`` is.
3. Otherwise ``percent`` of the requests go to the canary. ``by = "client"``
   (the default) puts each client address in one of 10,000 buckets with a
   stable hash (BLAKE2b, not Python's per-process salted ``hash()``), so one
   client stays on one side across requests, restarts and processes;
   ``by = "random"`` draws per request. ``0`` never and ``100`` always sends
   to the canary.

Matching: ``value = "*"`` means present with any value; otherwise the value
must be equal (case-sensitive). Header names are case-insensitive and any of
a repeated header's values may match. Cookies are read from every ``Cookie``
field (``a=1; b=2``); names are case-sensitive, a value in double quotes is
compared without them.

Stable side means declining (``None``): the route's ``upstream`` (or
``group``) is used as usual, with its base path. With ``group``, choosing the
canary sets ``flow.group`` and declines, so the kernel sends to one of that
group's targets, balanced and health-checked like any group: a split between
two groups. With ``upstream``, the kernel does not add
the route's base path; the canary URL's own base path
(``http://host/base``) is put in front of the request path instead, as the
kernel does for a route's. The hook only runs when no earlier plugin set
``flow.upstream`` (a router rule with its own ``upstream``), and, being first
result, the canary only decides when no earlier ``trellis_upstream_select``
did. The client address is the TCP peer: behind another proxy every request
shares one address, use ``by = "random"`` or a header there.

Every decision is recorded (``"canary: header 'x-canary' matched ->
http://10.0.0.7:8080"``, ``"canary: 5% client bucket 37.12 -> stable"``).

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Literal

import attrs

import sdk

__all__ = ["BUCKETS", "CanaryConfig", "CanaryPlugin", "CookieMatch", "Match", "bucket_of"]

#: Client buckets; ``percent`` has a resolution of 100 / BUCKETS = 0.01.
BUCKETS = 10_000
ANY = "*"


def bucket_of(address: str) -> int:
    """The client's bucket in ``[0, BUCKETS)``: the same in every process (no salt)."""
    digest = hashlib.blake2b(address.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


# -------------------------------------------------------------- validators
def _name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not sdk.is_token(value):
        raise ValueError(f"must be a header or cookie name (a token), got {value!r}")


_FIELD_VALUE = sdk.header_value_validator()


def _value(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    # A value that no received field can have would never match: refused.
    # Received values are ISO-8859-1 without control characters but tab,
    # and trimmed, hence the SDK's untrimmed rule.
    if not value:
        raise ValueError("must not be empty (use '*' for any value)")
    _FIELD_VALUE(_, attribute, value)


def _cookie_value(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    # A cookie value is what lies between '=' and ';', without its quotes.
    _value(_, attribute, value)
    if value == ANY:
        return
    if ";" in value:
        raise ValueError(f"a cookie value never contains ';', got {value!r}")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        raise ValueError(f"a cookie value is compared without its double quotes, got {value!r}")


def _upstream(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        return
    try:
        sdk.Origin.parse(value)
    except ValueError as exc:
        raise ValueError(f"must be an http(s) URL such as 'http://10.0.0.7:8080': {exc}") from None


def _percent(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 100.0:  # also refuses nan
        raise ValueError(f"must be between 0 and 100, got {value!r}")


@attrs.frozen(kw_only=True)
class Match:
    """A ``{ name = ..., value = ... }`` table: a header or cookie to look for."""

    #: Header name (case-insensitive) or cookie name (case-sensitive).
    name: str = attrs.field(validator=_name)
    #: The exact value, or ``"*"``: present with any value.
    value: str = attrs.field(validator=_value)


@attrs.frozen(kw_only=True)
class CookieMatch:
    """A ``{ name = ..., value = ... }`` table: a cookie to look for."""

    #: Cookie name (case-sensitive).
    name: str = attrs.field(validator=_name)
    #: The exact value (without double quotes), or ``"*"``: present with any value.
    value: str = attrs.field(validator=_cookie_value)


@attrs.frozen(kw_only=True)
class CanaryConfig:
    """The ``[plugins.canary]`` table: the canary origin and who is sent there."""

    #: The canary: ``http(s)://host[:port][/base]``; or set ``group``.
    upstream: str = attrs.field(default="", validator=_upstream)
    #: The canary as an upstream group (``[[groups]]`` name), balanced and
    #: health-checked by the kernel; or set ``upstream``.
    group: str = ""
    #: Share of the requests not forced by a match that go to the canary, 0..100.
    percent: float = attrs.field(default=0.0, validator=_percent)
    #: ``"client"``: a stable hash of the client address (sticky); ``"random"``: per request.
    by: Literal["random", "client"] = "client"
    #: A request with this header always goes to the canary.
    header: Match | None = None
    #: A request with this cookie always goes to the canary.
    cookie: CookieMatch | None = None
    #: A request with this header never goes to the canary (wins over the others).
    exclude_header: Match | None = None

    def __attrs_post_init__(self) -> None:
        if bool(self.upstream) == bool(self.group):
            raise ValueError("set exactly one of upstream (a URL) and group (a [[groups]] name)")


def _header_matches(headers: sdk.Headers, match: Match) -> bool:
    values = headers.get_all(match.name)
    return bool(values) if match.value == ANY else match.value in values


class CanaryPlugin:
    """Send a percentage of requests, or those with a header or cookie, to a canary upstream."""

    config_class = CanaryConfig

    def __init__(self, config: CanaryConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.origin: sdk.Origin | None = None
        self.base_path = ""
        if config.upstream:
            self.origin, self.base_path = sdk.Origin.parse(config.upstream)
            self._target = f"{self.origin}{self.base_path}"
        else:
            self._target = f"group {config.group}"
        self._threshold = round(config.percent * BUCKETS / 100)
        self._rng = rng if rng is not None else random.Random()

    def decide(self, flow: sdk.Flow) -> tuple[bool, str]:
        """Whether ``flow`` goes to the canary, and the reason (without the target)."""
        c, headers = self.config, flow.request.headers
        if c.exclude_header is not None and _header_matches(headers, c.exclude_header):
            return False, f"exclude_header {c.exclude_header.name!r} matched"
        if c.header is not None and _header_matches(headers, c.header):
            return True, f"header {c.header.name!r} matched"
        if c.cookie is not None:
            jar = headers.cookies()
            if c.cookie.name in jar and c.cookie.value in (ANY, jar[c.cookie.name]):
                return True, f"cookie {c.cookie.name!r} matched"
        if self._threshold <= 0:
            return False, f"{c.percent:g}%"
        if self._threshold >= BUCKETS:
            return True, f"{c.percent:g}%"
        if c.by == "client":
            bucket = bucket_of(flow.client.address)
            label = "client bucket"
        else:
            bucket = self._rng.randrange(BUCKETS)
            label = "random"
        return bucket < self._threshold, f"{c.percent:g}% {label} {bucket / 100:.2f}"

    @sdk.hookimpl
    def trellis_config_check(self, groups: tuple[str, ...]) -> list[str] | None:
        group = self.config.group
        if group and group not in groups:
            return [f"group: no group named {group!r} (groups: {', '.join(groups) or 'none'})"]
        return None

    @sdk.hookimpl
    def trellis_upstream_select(self, flow: sdk.Flow) -> sdk.Origin | None:
        canary, why = self.decide(flow)
        if not canary:
            flow.record(f"canary: {why} -> stable")
            return None
        flow.record(f"canary: {why} -> {self._target}")
        if self.origin is None:
            flow.group = self.config.group  # the kernel picks one of its targets
            return None
        request = flow.request
        if self.base_path and request.path.startswith("/"):
            request.path = self.base_path + request.path
        return self.origin
