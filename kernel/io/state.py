"""State shared by every connection of the process: the current generation,
the upstream pool, and what graceful shutdown needs.

May import: stdlib, trio, kernel.generation, kernel.io.upstream, kernel.io.timers.
"""

from __future__ import annotations

import itertools

import trio

from kernel.generation import Generation
from kernel.io.timers import Timers
from kernel.io.upstream import UpstreamPool

__all__ = ["ServerState"]


class ServerState:
    """Mutable process state; connections read ``generation`` per flow."""

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        self.pool = UpstreamPool()
        #: Hot-path timeouts (idle, head, upstream response); App runs the sweeper.
        self.timers = Timers()
        #: True once shutdown began, its ``shutdown_delay_s`` included: not
        #: ready (``/ready``), HTTP/1.1 responses say ``Connection: close`` and
        #: end their connection, HTTP/2 connections get a first GOAWAY.
        self.draining = False
        #: True once the listeners stopped accepting (the drain proper, after
        #: any delay): idle connections close, HTTP/2 refuses new streams.
        self.closing = False
        #: Cancel scopes of connections idle between requests (cancelled on drain).
        self.idle_scopes: set[trio.CancelScope] = set()
        #: Connections currently open.
        self.connections = 0
        self.connection_ids = itertools.count(1)
        #: Flows in progress, across generations.
        self.active_flows = 0
        self.no_active_flows = trio.Event()
        self.no_active_flows.set()

    def flow_started(self) -> None:
        self.active_flows += 1
        if self.active_flows == 1:
            self.no_active_flows = trio.Event()

    def flow_ended(self) -> None:
        self.active_flows -= 1
        if self.active_flows == 0:
            self.no_active_flows.set()

    def begin_delay(self) -> None:
        """Shutdown began, but the listeners keep serving (``shutdown_delay_s``):
        report not ready, and move clients off their connections as they
        finish what they are doing (idle connections are left alone)."""
        self.draining = True

    def begin_drain(self) -> None:
        """The listeners stopped: close the idle connections, let the rest finish."""
        self.draining = True
        self.closing = True
        for scope in list(self.idle_scopes):
            scope.cancel()
