"""The ``[plugins.router]`` table: :class:`RouterConfig` and its ``[[plugins.router.rules]]``.

Every value is checked here, at config time, so a bad rule is reported with
its path (``$.plugins.router.rules[1].path_regex: ...``) and the hot path
never meets one. The small normalisers the validators use
(:func:`host_pattern`, :func:`normalize_prefix`, :func:`parse_upstream`) are
also what :mod:`.matching` compiles with, so both agree by construction.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

import sdk

__all__ = [
    "RouterConfig",
    "RuleConfig",
    "host_pattern",
    "normalize_prefix",
    "parse_upstream",
]


# ------------------------------------------------------------- normalisers
def host_pattern(text: str) -> tuple[str, bool]:
    """``"*.Example.COM."`` -> ``("example.com", True)``: :func:`sdk.parse_host_pattern`."""
    return sdk.parse_host_pattern(text)


def normalize_prefix(prefix: str) -> str:
    """``"/api/"`` -> ``"/api"``; ``"/"`` -> ``""`` (matches every path).

    Prefixes match on a segment boundary, so a trailing slash adds nothing.
    """
    if not prefix.startswith("/"):
        raise ValueError(f"must start with '/', got {prefix!r}")
    if "?" in prefix or "#" in prefix:
        raise ValueError(f"must be a path without query or fragment, got {prefix!r}")
    return prefix.rstrip("/")


def parse_upstream(url: str) -> tuple[sdk.Origin, str]:
    """``http://host:port[/base]`` -> ``(Origin, "/base")`` (base without trailing slash).

    :meth:`sdk.Origin.parse` does the checking (host, port range, no query);
    only ``http`` is accepted, as for the kernel's ``[[routes]] upstream``.
    """
    if not url.startswith("http://"):
        raise ValueError(f"{url!r} is not an http://host[:port][/path] URL")
    return sdk.Origin.parse(url)


# -------------------------------------------------------------- validators
def _route(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError("must name a route")


def _host(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value:
        host_pattern(value)


def _prefix(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value:
        normalize_prefix(value)


def _regex(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


def _upstream(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value:
        parse_upstream(value)


def _replace_path(inst: Any, attribute: attrs.Attribute[Any], value: bool) -> None:
    if value and not inst.upstream:
        raise ValueError("needs 'upstream': the new path is that URL's path")
    if value and inst.strip_prefix:
        raise ValueError("cannot be combined with strip_prefix")


def _strip_prefix(inst: Any, attribute: attrs.Attribute[Any], value: bool) -> None:
    if value and not inst.path_prefix:
        raise ValueError("needs 'path_prefix': that is the prefix removed")


# ------------------------------------------------------------------ tables
@attrs.frozen(kw_only=True)
class RuleConfig:
    """One ``[[plugins.router.rules]]`` entry: criteria (all must match) and actions."""

    # The [[routes]] entry that serves a matching request (required).
    route: str = attrs.field(validator=_route)
    # -- criteria; an empty/omitted criterion matches anything --
    # Host (port ignored, case-insensitive), or "*.example.com" for any subdomain
    # (a.example.com, a.b.example.com; not example.com itself).
    host: str = attrs.field(default="", validator=_host)
    # Path prefix matched on a segment boundary: "/api" matches /api, /api/x, /api?q; not /apix.
    path_prefix: str = attrs.field(default="", validator=_prefix)
    # Python regular expression searched in the path (without the query).
    path_regex: str = attrs.field(default="", validator=_regex)
    # (methods and headers: the sdk's validators as the members of deep_iterable /
    # deep_mapping, so each bad item is listed at its own path, ``methods[2]``,
    # ``headers.x-a``, even beside an item of the wrong type.)
    # Methods, any of which matches (case-insensitive).
    methods: list[str] = attrs.field(
        factory=list, validator=attrs.validators.deep_iterable(sdk.method_validator())
    )
    # Header name -> exact value (names case-insensitive); "*" means "present".
    # A value is one a request can carry: no control character, nothing
    # outside ISO-8859-1 (whitespace at the ends is trimmed, as in received values).
    headers: dict[str, str] = attrs.field(
        factory=dict,
        validator=attrs.validators.deep_mapping(
            sdk.header_name_validator(), sdk.header_value_validator(trimmed=True)
        ),
    )
    # -- actions --
    # Send to this origin instead of the route's upstream: http://host[:port][/base];
    # the base path is prefixed to the request path.
    upstream: str = attrs.field(default="", validator=_upstream)
    # The upstream path becomes exactly the upstream URL's path (query kept). Needs upstream.
    replace_path: bool = attrs.field(default=False, validator=_replace_path)
    # Remove the matched path_prefix before joining with the base path ("/" if nothing is left).
    strip_prefix: bool = attrs.field(default=False, validator=_strip_prefix)


@attrs.frozen(kw_only=True)
class RouterConfig:
    """The ``[plugins.router]`` table: rules checked in order, the first match wins."""

    # The rules, in order; when none matches, the listener's default route is used.
    rules: list[RuleConfig] = attrs.field(factory=list)
