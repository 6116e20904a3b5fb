"""Upstream path rewriting: base-path joining, ``strip_prefix`` and ``replace_path``.

Paths are origin-form request targets with their query (``/a/b?x=1``). The
rules, with base ``/v1`` and prefix ``/api``:

============================  ==================  ===================
action                        ``/api/x?q=1``      ``/api``
============================  ==================  ===================
join (default)                ``/v1/api/x?q=1``   ``/v1/api``
``strip_prefix``              ``/v1/x?q=1``       ``/v1/``
``replace_path``              ``/v1?q=1``         ``/v1``
============================  ==================  ===================

Joining is plain concatenation, as the kernel does for a route's own base
path and as Go's ``httputil`` reverse proxy does (``/`` under ``/v1`` is
``/v1/``). A result is never empty: it is at least ``/``.

May import: stdlib, attrs.
"""

from __future__ import annotations

from typing import final

import attrs

__all__ = ["PathRewrite", "join_base", "replace_path", "strip_prefix"]


def join_base(base: str, path: str) -> str:
    """``base`` (``""`` or ``/v1``, no trailing slash) in front of ``path``."""
    return base + path


def strip_prefix(path: str, prefix: str) -> str:
    """Remove ``prefix`` (normalised: no trailing slash) that ``path`` starts with.

    The caller has checked the segment-boundary match; what is left keeps its
    query, and an empty remainder becomes ``/``.
    """
    rest = path[len(prefix) :]
    if not rest or rest[0] == "?":
        return "/" + rest
    return rest


def replace_path(base: str, path: str) -> str:
    """``base`` (or ``/``) with ``path``'s query, if any."""
    _, q, query = path.partition("?")
    return (base or "/") + q + query


@final
@attrs.frozen(slots=True)
class PathRewrite:
    """One rule's path action, compiled from its config."""

    #: The upstream URL's path, without trailing slash (``""`` for none).
    base: str = ""
    #: The normalised ``path_prefix`` to remove (``""``: remove nothing).
    strip: str = ""
    #: Replace the whole path by :attr:`base` (query kept).
    replace: bool = False

    @property
    def is_identity(self) -> bool:
        """True when :meth:`apply` would never change a path (so it need not run)."""
        return not self.base and not self.strip and not self.replace

    def apply(self, path: str) -> str:
        """The upstream path for request path ``path``."""
        if not path.startswith("/"):
            return path  # asterisk-form (OPTIONS *): nothing to join or strip
        if self.replace:
            return replace_path(self.base, path)
        if self.strip:
            path = strip_prefix(path, self.strip)
        return self.base + path
