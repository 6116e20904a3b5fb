"""Bound sockets and their accept loops: one task per connection.

Binding is separate from serving so that the app can bind every listener of
a new generation first (and report a bind failure with exit code 2) before
it starts serving or closes anything.

May import: stdlib, attrs, trio, sdk, kernel.io, kernel.generation, kernel.config,
kernel.tls, kernel.lograte.
"""

from __future__ import annotations

import errno
import logging
import math
import socket

import attrs
import trio

from kernel import lograte
from kernel.config.model import parse_bind
from kernel.generation import ListenerRuntime
from kernel.io.connection import Http1Connection
from kernel.io.h2connection import H2Connection
from kernel.io.passthrough import intercept
from kernel.io.state import ServerState
from kernel.io.tlsstream import TLSStream
from kernel.tls import peer_subject
from sdk import ClientInfo

__all__ = ["BindError", "BoundListener", "bind", "sockets_to_keep"]

log = logging.getLogger("kernel.listeners")

#: A listener out of file descriptors (EMFILE) logs at most this often.
ACCEPT_LOG_EVERY_S = 10.0


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
        logged_at = -math.inf
        paused = 0
        while True:
            try:
                stream = await self.listener.accept()
            except OSError as exc:
                # EMFILE and friends: back off instead of spinning, and say so
                # once per ACCEPT_LOG_EVERY_S, not at every pause.
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    paused += 1
                    now = trio.current_time()
                    if now - logged_at >= ACCEPT_LOG_EVERY_S:
                        log.error(
                            "accept on %s failed: %s; pausing 100 ms at a time (%d pauses)",
                            self.bind,
                            exc,
                            paused,
                        )
                        logged_at, paused = now, 0
                    await trio.sleep(0.1)
                    continue
                raise
            listener = state.generation.listeners.get(self.name)
            client = _client_info(stream, state, self.name)
            if listener is None or client is None:
                # Removed by a reload between accept and here, or already reset.
                stream.socket.close()
            elif listener.tls is not None:
                nursery.start_soon(serve_tls, stream, state, listener, client)
            else:
                # conn.serve directly, not through a wrapper coroutine: the
                # idle wait of every connection keeps this stack alive.
                nursery.start_soon(Http1Connection(stream, state, listener, client).serve)


def _client_info(stream: trio.SocketStream, state: ServerState, name: str) -> ClientInfo | None:
    try:
        peer = stream.socket.getpeername()
    except OSError:  # already reset by the peer
        return None
    return ClientInfo(
        address=str(peer[0]),
        port=int(peer[1]),
        listener=name,
        connection_id=next(state.connection_ids),
    )


async def serve_tls(
    stream: trio.SocketStream, state: ServerState, listener: ListenerRuntime, client: ClientInfo
) -> None:
    """:func:`_serve_tls`, where a kernel bug ends this connection, never the process."""
    try:
        await _serve_tls(stream, state, listener, client)
    except Exception:
        log.exception("TLS connection from %s:%d failed", client.address, client.port)
        stream.socket.close()


async def _serve_tls(
    stream: trio.SocketStream, state: ServerState, listener: ListenerRuntime, client: ClientInfo
) -> None:
    """Terminate TLS on an accepted connection, then serve HTTP/2 or HTTP/1.1 by ALPN.

    The handshake must complete within the listener's request-head timeout.
    A failed handshake (no shared version or cipher, an unknown or missing
    client certificate when one is required, a scanner) is logged at info
    level and the connection closed.
    """
    tls = listener.tls
    assert tls is not None
    hello = b""
    if tls.passthrough:
        # Relayed (or closed) by SNI, or handed back with the ClientHello to replay.
        read = await intercept(stream, state, listener, client)
        if read is None:
            return
        hello = read
    tls_stream = TLSStream(stream, tls.context, server_side=True, initial=hello)
    try:
        with trio.move_on_after(listener.request_head_timeout_s) as scope:
            await tls_stream.do_handshake()
        if scope.cancelled_caught:
            raise trio.BrokenResourceError("TLS handshake timed out")
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__ or exc
        lograte.log(
            log, logging.INFO, (listener.name, "TLS handshake", type(cause).__name__),
            "TLS handshake with %s:%d failed: %s", client.address, client.port, cause,
        )  # fmt: skip
        # OpenSSL's alert (protocol version, certificate required, ...) is left
        # in the outgoing buffer: the handshake stops at the error. Send it, so the
        # client learns why instead of seeing the connection just drop; then
        # half-close and drop what the client still sends for a moment (a TLS
        # 1.3 client may already have sent its request), since closing with
        # unread input would reset the connection and destroy the alert.
        alert = tls_stream.pending_output()
        if alert and not scope.cancelled_caught:
            with trio.move_on_after(0.5):
                try:
                    await stream.send_all(alert)
                    await stream.send_eof()
                    budget = 65536
                    while budget > 0 and (data := await stream.receive_some(16384)):
                        budget -= len(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        stream.socket.close()
        return
    # The SNI name was recorded against the SSLObject by the context's sni_callback.
    ssl_object = tls_stream.ssl_object
    alpn = tls_stream.selected_alpn_protocol() or ""
    client = attrs.evolve(
        client,
        tls=True,
        tls_version=tls_stream.version() or "",
        alpn=alpn,
        sni=tls.sni_of(ssl_object),
        client_cert_subject=peer_subject(tls_stream),
    )
    if alpn == "h2" and listener.http2:
        await H2Connection(tls_stream, state, listener, client).serve()
    else:
        await Http1Connection(tls_stream, state, listener, client).serve()


def sockets_to_keep(binds: dict[str, str], bound: dict[str, BoundListener]) -> dict[str, str]:
    """On a reload, which new listener (name -> bind address) keeps which
    bound socket: new name -> the old listener's name.

    A listener keeps its socket when its address did not change; so does one
    renamed, or two that swapped ports, when the port is a real one: binding
    it again would collide with the socket we hold (``:0`` asks for a new
    port, so it is bound anew).
    """
    keep: dict[str, str] = {}
    for name, addr in binds.items():
        if name in bound and bound[name].same_address(addr):
            keep[name] = name
    for name, addr in binds.items():
        if name in keep or parse_bind(addr)[1] == 0:
            continue
        taken = set(keep.values())
        for old_name, b in bound.items():
            if old_name not in taken and b.same_address(addr):
                keep[name] = old_name
                break
    return keep


async def bind(name: str, bind_addr: str, *, reuse_port: bool = False) -> BoundListener:
    """Bind one listener; failures become :class:`BindError`.

    ``reuse_port`` sets ``SO_REUSEPORT`` so that several worker processes
    (``[server] workers``) bind the same address and the kernel spreads new
    connections over them.
    """
    host, port = parse_bind(bind_addr)
    try:
        if reuse_port:
            listener = await _bind_reuse_port(host, port)
        else:
            listeners = await trio.open_tcp_listeners(port, host=host, backlog=1024)
            listener = listeners[0]
            for extra in listeners[1:]:
                await extra.aclose()
    except OSError as exc:
        raise BindError(
            f"cannot bind listener {name!r} to {bind_addr}: {exc.strerror or exc}"
        ) from exc
    return BoundListener(name, bind_addr, listener)


async def _bind_reuse_port(host: str, port: int) -> trio.SocketListener:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)
