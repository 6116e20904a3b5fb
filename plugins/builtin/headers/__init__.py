"""Remove, set and add request and response header fields.

``[plugins.headers]`` keys: ``request_remove``, ``request_set``,
``request_add`` and the same three for ``response_*``; per phase the order is
remove, then set, then add.

May import: .plugin only (re-export).
"""

from __future__ import annotations

from .plugin import HeadersPlugin

__all__ = ["HeadersPlugin"]
