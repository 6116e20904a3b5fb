"""Rewrite the request path and the Host field before the request goes upstream.

``[plugins.rewrite]`` (or a named instance ``[plugins.rewrite.LABEL]``)::

    [plugins.rewrite.api]
    strip_prefix = "/api"            # /api/users?page=2 -> /users?page=2
    regex = '^/users/([0-9]+)$'      # -> /people/42 (Python re.sub, \\1 groups)
    replacement = '/people/\\1'
    add_prefix = "/v2"               # -> /v2/people/42?page=2
    host = "preserve"                # or "upstream", or a literal "api.internal:8080"

The path operations run in ``trellis_request``, always in this order:
``strip_prefix``, then ``regex``/``replacement``, then ``add_prefix``;
``replace_path`` (Dito's ``replace_path``: the path becomes exactly that
path) replaces all three and cannot be combined with them. Every operation
works on the path without its query, on the raw (still percent-encoded)
text; the query is kept as it came. A result that is empty becomes ``/``,
one that does not start with ``/`` gets one. Targets that are not paths
(``OPTIONS *``) are left alone.

The operations run before the kernel joins a route's own base path
(``upstream = "http://host/base"``) to the request path.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

import sdk

__all__ = ["RewriteConfig", "RewritePlugin", "normalise"]

PRESERVE = "preserve"
UPSTREAM = "upstream"


def normalise(path: str) -> str:
    """A path that is never empty and always starts with ``/``."""
    return path if path.startswith("/") else "/" + path


def _path(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not value.startswith("/"):
        raise ValueError(f"must start with '/', got {value!r}")
    if "?" in value or "#" in value:
        raise ValueError(f"must be a path without query or fragment, got {value!r}")


def _regex(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


def _replacement(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not inst.regex:
        if value:
            raise ValueError("needs 'regex': it replaces what that pattern matches")
        return
    try:
        pattern = re.compile(inst.regex)
    except re.error:
        return  # reported on 'regex'
    try:
        # Parses the template (group references) even when nothing matches.
        pattern.sub(value, "")
    except (re.error, IndexError) as exc:
        raise ValueError(f"invalid replacement {value!r} for {inst.regex!r}: {exc}") from None


def _replace_path(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    _path(inst, attribute, value)
    if value:
        others = [k for k in ("strip_prefix", "regex", "add_prefix") if getattr(inst, k)]
        if others:
            raise ValueError(
                f"replaces the whole path: cannot be combined with {', '.join(others)}"
            )


def _host(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value in (PRESERVE, UPSTREAM):
        return
    try:
        sdk.Origin.parse(f"http://{value}")
        ok = "/" not in value
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"must be 'preserve', 'upstream' or a host[:port] such as"
            f" 'api.internal:8080', got {value!r}"
        )


@attrs.frozen(kw_only=True)
class RewriteConfig:
    """The ``[plugins.rewrite]`` table. Path: strip, then regex, then add."""

    #: Prefix removed on a segment boundary (``/api`` strips ``/api`` and
    #: ``/api/x``, not ``/apix``); ``""``: none.
    strip_prefix: str = attrs.field(default="", validator=_path)
    #: Python regular expression applied with ``re.sub`` to the path (all matches).
    regex: str = attrs.field(default="", validator=_regex)
    #: The ``re.sub`` replacement (``\\1``, ``\\g<name>``); ``""`` deletes the matches.
    replacement: str = attrs.field(default="", validator=_replacement)
    #: Prefix put in front of the path; ``""``: none.
    add_prefix: str = attrs.field(default="", validator=_path)
    #: Dito's ``replace_path``: the path becomes exactly this (query kept); ``""``: off.
    replace_path: str = attrs.field(default="", validator=_replace_path)
    #: ``"preserve"`` the client's Host, set it to the ``"upstream"``'s
    #: authority, or set it to this literal ``host[:port]``.
    host: str = attrs.field(default=PRESERVE, validator=_host)


class RewritePlugin:
    """Rewrite the request path (strip, regex, add, replace) and the Host field."""

    config_class = RewriteConfig

    def __init__(self, config: RewriteConfig | None = None) -> None:
        self.config = c = config if config is not None else RewriteConfig()
        # Compiled once per configuration generation; rewrite_path() only reads them.
        self._strip = c.strip_prefix.rstrip("/")
        self._add = c.add_prefix.rstrip("/")
        self._regex = re.compile(c.regex) if c.regex else None
        self._replace = c.replace_path

    def rewrite_path(self, path: str) -> str:
        """The new request target for ``path`` (with its query, which is kept)."""
        if not path.startswith("/"):
            return path  # asterisk-form (OPTIONS *): not a path
        only, q, query = path.partition("?")
        if self._replace:
            return self._replace + q + query
        if self._strip and (only == self._strip or only.startswith(self._strip + "/")):
            only = normalise(only[len(self._strip) :])
        if self._regex is not None:
            only = normalise(self._regex.sub(self.config.replacement, only))
        if self._add:
            only = self._add + only
        return only + q + query

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        request = flow.request
        path = self.rewrite_path(request.path)
        if path != request.path:
            flow.record(f"rewrite: path {request.path} -> {path}")
            request.path = path
        host = self.config.host
        if host == PRESERVE:
            return
        if host == UPSTREAM:
            if flow.upstream is None:
                # The route's own upstream is chosen by the kernel after the
                # request phase, with no hook in between: it is unknown here.
                flow.record("rewrite: host kept, the upstream is not chosen yet")
                return
            host = flow.upstream.authority
        if request.headers.get("host") != host:
            request.headers["host"] = host
            flow.record(f"rewrite: host -> {host}")
