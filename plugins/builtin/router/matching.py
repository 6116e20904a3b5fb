"""Request matching for the router: compiled :class:`Rule` objects and the :class:`RuleTable`.

Everything that can be prepared is prepared once, in :func:`compile_rules`
(regexes compiled, hosts and methods normalised, header names as wire bytes,
the decision note formatted), because :meth:`RuleTable.select` runs for every
request. A request pays for what the rules use: the host is parsed only if
some rule has a ``host``, the path split only if some rule looks at it.

Matching rules:

- ``host``: exact and case-insensitive, port and trailing dot ignored;
  ``*.example.com`` matches any name ending in ``.example.com`` (dot
  boundary), never ``example.com`` itself nor ``badexample.com``.
- ``path_prefix``: on a segment boundary, against the path without query:
  ``/api`` matches ``/api``, ``/api/``, ``/api/x``, not ``/apix``. Paths are
  compared as received (case-sensitive, still percent-encoded).
- ``path_regex``: ``re.search`` in the path without query.
- ``methods``: any of them, case-insensitive.
- ``headers``: every listed name present with exactly that value (any of its
  fields, after the usual whitespace trim), or just present for ``"*"``.

May import: stdlib, attrs, sdk, .config, .rewrite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import final

import attrs

import sdk

from .config import RuleConfig, host_pattern, normalize_prefix, parse_upstream
from .rewrite import PathRewrite

__all__ = ["Rule", "RuleTable", "compile_rule", "compile_rules", "host_of", "prefix_matches"]

Fields = list[tuple[bytes, bytes]]


#: The SDK's, shared with the other plugins that name hosts.
host_of = sdk.host_of


def prefix_matches(path: str, prefix: str) -> bool:
    """Whether ``path`` starts with the normalised ``prefix`` on a segment boundary."""
    n = len(prefix)
    return path.startswith(prefix) and (len(path) == n or path[n] in "/?")


@final
@attrs.frozen(slots=True)
class Rule:
    """One compiled rule. Empty criteria match anything."""

    #: Position in ``rules`` (0-based, as in config paths ``rules[2]``).
    index: int
    route: str
    #: The note recorded on the flow, formatted once: ``"router: rule 2 -> api"``.
    decision: str
    #: Upper-case methods; empty for any.
    methods: frozenset[str] = frozenset()
    #: Exact host, or the domain of a wildcard; ``""`` for any.
    host: str = ""
    #: :attr:`host` is ``*.host`` (names below it, on a dot boundary).
    wildcard: bool = False
    #: Normalised path prefix (``""`` is ``/``), or ``None`` for any.
    prefix: str | None = None
    regex: re.Pattern[str] | None = None
    #: (lower-case name, exact value or ``None`` for "present") as wire bytes.
    headers: tuple[tuple[bytes, bytes | None], ...] = ()
    #: Where to send a matching request instead of the route's upstream.
    upstream: sdk.Origin | None = None
    #: The path action, or ``None`` when the path stays as it is.
    rewrite: PathRewrite | None = None

    def matches(self, method: str, host: str, path: str, fields: Fields) -> bool:
        """All criteria hold for a request with this (upper-case) method, host, bare path."""
        if self.methods and method not in self.methods:
            return False
        if self.host and not sdk.host_matches(host, self.host, self.wildcard):
            return False
        if self.prefix is not None and not prefix_matches(path, self.prefix):
            return False
        for name, want in self.headers:
            for n, v in fields:
                if n == name and (want is None or v == want):
                    break
            else:
                return False
        return self.regex is None or self.regex.search(path) is not None


@final
class RuleTable:
    """Rules in order; :meth:`select` returns the first that matches."""

    __slots__ = ("_hosts", "_methods", "_paths", "rules")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        # Which request parts any rule looks at: the rest is never computed.
        self._methods = any(r.methods for r in self.rules)
        self._hosts = any(r.host for r in self.rules)
        self._paths = any(r.prefix is not None or r.regex is not None for r in self.rules)

    def select(self, request: sdk.Request) -> Rule | None:
        """The first rule matching ``request``, or ``None``."""
        if not self.rules:
            return None
        method = request.method.upper() if self._methods else ""
        host = host_of(request.authority) if self._hosts else ""
        path = request.path.partition("?")[0] if self._paths else ""
        fields = request.headers.fields
        for rule in self.rules:
            if rule.matches(method, host, path, fields):
                return rule
        return None


def compile_rule(index: int, cfg: RuleConfig) -> Rule:
    """A :class:`Rule` from a validated :class:`RuleConfig`."""
    host, wildcard = host_pattern(cfg.host) if cfg.host else ("", False)
    prefix = normalize_prefix(cfg.path_prefix) if cfg.path_prefix else None
    upstream, base = parse_upstream(cfg.upstream) if cfg.upstream else (None, "")
    rewrite = PathRewrite(
        base=base,
        strip=(prefix or "") if cfg.strip_prefix else "",
        replace=cfg.replace_path,
    )
    headers = tuple(
        (
            name.lower().encode("latin-1"),
            None if want == "*" else want.strip(" \t").encode("latin-1"),
        )
        for name, want in cfg.headers.items()
    )
    return Rule(
        index=index,
        route=cfg.route,
        decision=f"router: rule {index} -> {cfg.route}",
        methods=frozenset(m.upper() for m in cfg.methods),
        host=host,
        wildcard=wildcard,
        prefix=prefix,
        regex=re.compile(cfg.path_regex) if cfg.path_regex else None,
        headers=headers,
        upstream=upstream,
        rewrite=None if rewrite.is_identity else rewrite,
    )


def compile_rules(rules: Sequence[RuleConfig]) -> RuleTable:
    """The :class:`RuleTable` for a validated rule list."""
    return RuleTable([compile_rule(i, cfg) for i, cfg in enumerate(rules)])
