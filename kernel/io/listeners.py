"""Bound sockets and their accept loops: one task per connection.

Binding is separate from serving so that the app can bind every listener of
a new generation first (and report a bind failure with exit code 2) before
it starts serving or closes anything.

May import: stdlib, trio, sdk, kernel.io, kernel.generation, kernel.config.
"""

from __future__ import annotations

import errno
import logging

import trio

from kernel.config.model import parse_bind
from kernel.io.connection import Http1Connection
from kernel.io.state import ServerState
from sdk import ClientInfo

__all__ = ["BindError", "BoundListener", "bind"]

log = logging.getLogger("kernel.listeners")


class BindError(Exception):
    """A listener could not be bound (address in use, no permission, ...)."""


class BoundListener:
    """A listening socket plus the cancel scope of its accept loop."""

    def __init__(self, name: str, bind_addr: str, listener: trio.SocketListener) -> None:
        self.name = name
        self.bind = bind_addr
        self.listener = listener
        self.scope = trio.CancelScope()

    @property
    def port(self) -> int:
        return int(self.listener.socket.getsockname()[1])

    def same_address(self, bind_addr: str) -> bool:
        """Whether ``bind_addr`` names this socket (``:0`` or the port it got)."""
        if bind_addr == self.bind:
            return True
        host, port = parse_bind(bind_addr)
        return (host, port) == (parse_bind(self.bind)[0], self.port)

    async def serve(self, state: ServerState, nursery: trio.Nursery) -> None:
        """Accept until cancelled; each connection runs in ``nursery``."""
        try:
            with self.scope:
                await self._accept_loop(state, nursery)
        finally:
            with trio.CancelScope(shield=True):
                await self.listener.aclose()

    async def _accept_loop(self, state: ServerState, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await self.listener.accept()
            except OSError as exc:
                # EMFILE and friends: back off instead of spinning.
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept on %s failed: %s; pausing 100 ms", self.bind, exc)
                    await trio.sleep(0.1)
                    continue
                raise
            conn = _new_connection(stream, state, self.name)
            if conn is None:
                stream.socket.close()
            else:
                # conn.serve directly, not through a wrapper coroutine: the
                # idle wait of every connection keeps this stack alive.
                nursery.start_soon(conn.serve)


def _new_connection(
    stream: trio.SocketStream, state: ServerState, name: str
) -> Http1Connection | None:
    """The connection object for an accepted stream (no I/O), or None to drop it."""
    listener = state.generation.listeners.get(name)
    if listener is None:  # removed by a reload between accept and here
        return None
    try:
        peer = stream.socket.getpeername()
    except OSError:  # already reset by the peer
        return None
    client = ClientInfo(
        address=str(peer[0]),
        port=int(peer[1]),
        listener=name,
        connection_id=next(state.connection_ids),
    )
    return Http1Connection(stream, state, listener, client)


async def bind(name: str, bind_addr: str) -> BoundListener:
    """Bind one listener; failures become :class:`BindError`."""
    host, port = parse_bind(bind_addr)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=1024)
    except OSError as exc:
        raise BindError(
            f"cannot bind listener {name!r} to {bind_addr}: {exc.strerror or exc}"
        ) from exc
    listener = listeners[0]
    for extra in listeners[1:]:
        await extra.aclose()
    return BoundListener(name, bind_addr, listener)
