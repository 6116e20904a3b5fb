"""What lifecycle hooks receive: :class:`StartupContext`.

May import: stdlib, attrs, sdk._balance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

import attrs

from sdk._balance import Group

__all__ = ["ServerInfo", "StartupContext"]


def _none() -> int:
    return 0


def _empty() -> Mapping[str, Any]:
    return {}


@final
@attrs.frozen(slots=True)
class ServerInfo:
    """Live, read-only numbers about the running process, for metrics and health plugins.

    Each attribute is a function, read when called (a scrape, a readiness
    probe): the values change all the time, the object does not.
    """

    #: Client connections open now (HTTP/1.1 and HTTP/2, TLS or not).
    active_connections: Callable[[], int] = _none
    #: Flows (requests) in progress now.
    active_flows: Callable[[], int] = _none
    #: Bound listeners: name -> ``host:port`` actually bound.
    listeners: Callable[[], Mapping[str, str]] = _empty
    #: Plugin failures caught by the fault boundary since start, by instance.
    plugin_errors: Callable[[], Mapping[str, int]] = _empty
    #: Whether the process is draining (SIGTERM): not ready for new work.
    draining: Callable[[], bool] = bool
    #: Worker number (0 without ``[server] workers``) and the number of workers.
    worker: int = 0
    workers: int = 1


@final
@attrs.frozen(slots=True)
class StartupContext:
    """Handed to ``trellis_startup``: the generation going live.

    ``start_soon(async_fn, *args)`` starts a background task that runs until
    the generation is retired (then it is cancelled). An exception escaping
    such a task is logged and does not stop the proxy.
    """

    #: Generation number (1 for the first configuration, +1 per reload that
    #: goes live: a refused one's number is used again by the next).
    generation: int
    _start_soon: Callable[[Callable[..., Awaitable[Any]], tuple[Any, ...]], None] = attrs.field(
        alias="start_soon_impl", repr=False
    )
    #: The upstream groups of this generation by name, with their targets'
    #: live state (read-only for plugins: metrics, health pages, mirroring).
    groups: Mapping[str, Group] = attrs.field(factory=dict, repr=False)
    #: Live numbers about the process (connections, flows, listeners).
    server: ServerInfo = attrs.field(factory=ServerInfo, repr=False)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``await fn(*args)`` in the background for the generation's lifetime."""
        self._start_soon(fn, args)
