"""Pick a route by host, path, method and headers; the first matching rule wins.

``[[plugins.router.rules]]`` entries name a ``[[routes]]`` entry and may send
the request to another upstream, rewriting its path (``strip_prefix``,
``replace_path``); see docs/routing-basics.md.

May import: .plugin only (re-export).
"""

from __future__ import annotations

from .plugin import RouterPlugin

__all__ = ["RouterPlugin"]
