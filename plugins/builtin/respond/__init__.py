"""Answer every request that reaches it with a fixed status, headers and body.

``[plugins.respond]`` keys: ``status``, ``content_type``, ``body``,
``headers``. Put it last in a route's chain (for a health check, a
maintenance page, a redirect) or in a named instance per route.

May import: .plugin only (re-export).
"""

from __future__ import annotations

from .plugin import RespondPlugin

__all__ = ["RespondPlugin"]
