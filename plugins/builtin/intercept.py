"""Domain interception (Dispa's ``intercept_domains``): :class:`InterceptPlugin` and its table.

The proxy serves only the hosts it intercepts; every other host gets the
configured ``action``::

    [plugins.intercept]
    intercept_domains = ["example.com", "*.example.com"]
    exclude_domains = ["admin.example.com"]
    action = "reject"          # or "pass", or "route:NAME"
    reject_status = 403

Matching, on the request's host (the authority / ``Host`` without its port,
case-insensitive, trailing dot ignored, IPv6 literals without brackets):

- ``example.com`` matches exactly that host.
- ``*.example.com`` matches any name ending in ``.example.com`` on a dot
  boundary (``a.example.com``, ``a.b.example.com``), never ``example.com``
  itself nor ``badexample.com``. Dispa's bare suffix test matched both (seed
  inventory §1.3, §9); list ``example.com`` as well to intercept the apex.
- A host is intercepted when it matches ``intercept_domains`` and does not
  match ``exclude_domains``: exclusion wins, exact or wildcard, in either list.
- A request without a host is never intercepted.

Actions for hosts that are not intercepted:

- ``"reject"``: answer ``reject_status`` (403 by default) with a short
  text body naming the host, in ``trellis_request_access``; the upstream is
  never contacted. Works in any chain.
- ``"pass"``: let the flow continue untouched (only the decision is recorded).
- ``"route:NAME"``: pick the route ``NAME`` in ``trellis_route_select``
  (intercepted hosts decline, so a later router or the default route picks
  theirs). Route selection runs on the global and listener chains only, so
  the plugin must be in one of those for this action.

Every flow gets a note in ``flow.decisions`` (``"intercept: ..."``).

The host parsing and the ``*.domain`` semantics are the SDK's
(:func:`sdk.host_of`, :func:`sdk.parse_host_pattern`), as for the router.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, final

import attrs

import sdk

__all__ = ["InterceptConfig", "InterceptPlugin", "host_of", "parse_domain"]

_ROUTE_PREFIX = "route:"


# ------------------------------------------------------------- normalisers
#: The SDK's host rules, shared with the router and passthrough.
host_of = sdk.host_of


def parse_domain(text: str) -> tuple[str, bool]:
    """``"*.Example.com."`` -> ``("example.com", True)``; ``"[::1]"`` -> ``("::1", False)``.

    :func:`sdk.parse_host_pattern`, with messages that say "domain".
    """
    return sdk.parse_host_pattern(text, noun="domain")


# -------------------------------------------------------------- validators
def _domain(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    # One item, in a deep_iterable: each bad domain is listed at its own index
    # (``exclude_domains[1]``), even beside one that is no string.
    parse_domain(value)


def _once_each(_: object, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    # A check of the whole list: it runs once every item is a valid domain.
    seen: dict[tuple[str, bool], str] = {}
    problems = []
    for i, text in enumerate(value):
        key = parse_domain(text)
        if key in seen:
            problems.append(f"[{i}]: {text!r} is listed twice (as {seen[key]!r})")
        else:
            seen[key] = text
    if problems:
        raise ValueError("; ".join(problems))


def _at_least_one(_: object, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    if not value:
        # Dispa only warned here ("proxy will handle all traffic") and then
        # refused every host: an empty list is a mistake, said so.
        raise ValueError("must list at least one domain (nothing would be intercepted)")


_DOMAINS = attrs.validators.and_(attrs.validators.deep_iterable(_domain), _once_each)


def _action(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value in ("reject", "pass"):
        return
    if value.startswith(_ROUTE_PREFIX):
        if not value[len(_ROUTE_PREFIX) :].strip():
            raise ValueError("'route:' must name a route ('route:NAME')")
        return
    raise ValueError(f"must be 'reject', 'pass' or 'route:NAME', got {value!r}")


def _status(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 400 <= value <= 599:
        raise ValueError(f"must be an error status between 400 and 599, got {value}")


@attrs.frozen(kw_only=True)
class InterceptConfig:
    """The ``[plugins.intercept]`` table: which hosts are served, and what the others get."""

    # Hosts served: "example.com" (exact) or "*.example.com" (any subdomain, on a dot
    # boundary; not example.com itself). Required, at least one.
    intercept_domains: list[str] = attrs.field(validator=[_at_least_one, _DOMAINS])
    # Hosts never intercepted, even when intercept_domains matches them (exclusion wins).
    exclude_domains: list[str] = attrs.field(factory=list, validator=_DOMAINS)
    # For hosts not intercepted: "reject" (answer reject_status), "pass" (continue
    # untouched) or "route:NAME" (pick route NAME; global or listener chain only).
    action: str = attrs.field(default="reject", validator=_action)
    # Status of the "reject" answer (400..599).
    reject_status: int = attrs.field(default=403, validator=_status)


# ----------------------------------------------------------------- matching
@final
class _DomainSet:
    """Exact names and ``*.domain`` wildcards, compiled once per generation."""

    __slots__ = ("exact", "suffixes")

    def __init__(self, patterns: Sequence[str]) -> None:
        #: exact name -> the pattern as configured (for the decision note)
        self.exact: dict[str, str] = {}
        #: (domain, pattern), longest first so the note names the most specific one
        suffixes: list[tuple[str, str]] = []
        for text in patterns:
            name, wildcard = parse_domain(text)
            if wildcard:
                suffixes.append((name, text))
            else:
                self.exact[name] = text
        self.suffixes = tuple(sorted(suffixes, key=lambda s: -len(s[0])))

    def match(self, host: str) -> str | None:
        """The configured pattern matching ``host`` (normalised), or ``None``."""
        if not host:
            return None
        found = self.exact.get(host)
        if found is not None:
            return found
        for domain, text in self.suffixes:
            if sdk.host_matches(host, domain, True):
                return text
        return None


class InterceptPlugin:
    """Serve only the intercepted domains; reject, pass or re-route the other hosts."""

    config_class = InterceptConfig

    def __init__(self, config: InterceptConfig) -> None:
        self.config = config
        self._intercept = _DomainSet(config.intercept_domains)
        self._exclude = _DomainSet(config.exclude_domains)
        action = config.action
        self._route = (
            action[len(_ROUTE_PREFIX) :].strip() if action.startswith(_ROUTE_PREFIX) else ""
        )

    def check(self, authority: str) -> tuple[bool, str]:
        """Whether the host of ``authority`` is intercepted, and why (the decision note)."""
        host = host_of(authority)
        shown = repr(host) if host else "(no host)"
        excluded = self._exclude.match(host)
        if excluded is not None:
            return False, f"intercept: {shown} excluded by {excluded!r}"
        included = self._intercept.match(host)
        if included is not None:
            return True, f"intercept: {shown} intercepted by {included!r}"
        return False, f"intercept: {shown} not intercepted"

    @sdk.hookimpl
    def trellis_config_check(self, routes: tuple[str, ...]) -> list[str] | None:
        if self._route and self._route not in routes:
            listed = ", ".join(routes) if routes else "none configured"
            return [f"action: no route named {self._route!r} (routes: {listed})"]
        return None

    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> str | None:
        if not self._route:
            return None
        intercepted, note = self.check(flow.request.authority)
        if intercepted:
            flow.record(note)
            return None
        flow.record(f"{note} -> route {self._route!r}")
        return self._route

    @sdk.hookimpl
    def trellis_request_access(self, flow: sdk.Flow) -> sdk.Response | None:
        if self._route:
            return None  # decided (and recorded) in trellis_route_select
        intercepted, note = self.check(flow.request.authority)
        if intercepted:
            flow.record(note)
            return None
        if self.config.action == "pass":
            flow.record(f"{note} -> pass")
            return None
        status = self.config.reject_status
        flow.record(f"{note} -> {status}")
        host = host_of(flow.request.authority)
        shown = host if host else "(no host)"
        return sdk.Response.make(status, f"{status} host not served by this proxy: {shown}\n")
