"""TLS passthrough by SNI: read the ClientHello, then relay the raw connection or hand it back.

On a listener with ``passthrough = true`` in ``[listeners.tls]``,
:func:`kernel.io.listeners.serve_tls` calls :func:`intercept` before any
handshake. It reads the first bytes (at most :data:`PEEK_LIMIT`, within the
listener's ``request_head_timeout_s``) until
:func:`kernel.protocol.clienthello.parse_client_hello` has the whole
ClientHello, and asks ``trellis_tls_passthrough(server_name, client)`` on the
listener's routing chain (global + listener plugins). Then:

* an :class:`~sdk.Origin`: connect to it (``[upstream] connect_timeout_s``)
  and relay bytes unchanged both ways, the bytes already read first, until
  both sides have closed. Each direction is half-closed on its own (EOF from
  one side becomes ``send_eof`` on the other), moves at most :data:`CHUNK`
  bytes at a time with back-pressure, and has no timeout: TCP keep-alive is
  switched on, and on shutdown a tunnel counts as a flow in flight, so the
  drain waits for it up to ``shutdown_grace_s`` and then cancels it.
  Unreachable origin: the client connection is closed (warning).
* ``None``: :func:`intercept` returns the bytes it read, and the caller
  terminates TLS as usual with them replayed first
  (:class:`kernel.io.tlsstream.TLSStream`'s ``initial``).
* not a ClientHello (info), a client that sends nothing in time or closes,
  or a failing plugin (``fail_closed``; the dispatcher logs it): the
  connection is closed.

May import: stdlib, attrs, trio, sdk, kernel.protocol, kernel.dispatch,
kernel.generation, kernel.io.state, kernel.io.tunnel, kernel.lograte.
"""

from __future__ import annotations

import logging
import socket

import attrs
import trio

from kernel import dispatch, lograte
from kernel.generation import ListenerRuntime
from kernel.io.state import ServerState
from kernel.io.tunnel import CHUNK, splice
from kernel.protocol.clienthello import NEED_MORE, ClientHelloError, parse_client_hello
from sdk import ClientInfo, Origin, PluginError

__all__ = ["CHUNK", "PEEK_LIMIT", "intercept", "relay"]

log = logging.getLogger("kernel.passthrough")

#: Most bytes read while waiting for the whole ClientHello.
PEEK_LIMIT = 16 * 1024

_HOOK = "trellis_tls_passthrough"


async def intercept(
    stream: trio.SocketStream, state: ServerState, listener: ListenerRuntime, client: ClientInfo
) -> bytes | None:
    """Relay the connection if a plugin says so; else the ClientHello bytes read.

    Returns ``None`` when the connection was dealt with here (relayed, or
    closed); ``stream`` is closed then. Otherwise the caller terminates TLS
    on ``stream``, the returned bytes first. Never raises for what a client,
    an origin or a plugin does.
    """
    gen = state.generation
    pre = gen.pre_route.get(listener.name)
    handed_back = False
    state.connections += 1
    try:
        data = await _read_hello(stream, listener, client)
        if data is None:
            return None
        prefix, server_name = data
        if pre is None or not pre.tls_passthrough:
            handed_back = True  # the listener went away in a reload: terminate as usual
            return prefix
        asking = attrs.evolve(client, tls=True, sni=server_name)
        gen.acquire()  # the generation's plugins stay up while they are asked
        try:
            origin = await dispatch.connection_first_result(
                pre.tls_passthrough, _HOOK, server_name, asking
            )
        except PluginError:
            return None  # fail_closed, logged by the dispatcher: close
        finally:
            gen.release()
        if origin is None:
            handed_back = True
            return prefix
        if not isinstance(origin, Origin):
            log.error(
                "%s returned %s, not sdk.Origin: closing %s:%d",
                _HOOK,
                type(origin).__name__,
                client.address,
                client.port,
            )
            return None
        upstream = await _connect(origin, gen.settings.upstream.connect_timeout_s, client)
        if upstream is None:
            return None
        log.debug(
            "relaying %s:%d (SNI %r) to %s:%d",
            client.address,
            client.port,
            server_name,
            origin.host,
            origin.port,
        )
        state.flow_started()  # a drain waits for tunnels up to shutdown_grace_s
        try:
            sent, received = await relay(stream, upstream, prefix)
        finally:
            state.flow_ended()
            with trio.CancelScope(shield=True):
                await upstream.aclose()
        log.debug(
            "relay %s:%d to %s:%d done: %d bytes up, %d down",
            client.address,
            client.port,
            origin.host,
            origin.port,
            sent,
            received,
        )
        return None
    except Exception:
        # A kernel bug: it ends this connection, never the process.
        log.exception("passthrough for %s:%d failed", client.address, client.port)
        return None
    finally:
        state.connections -= 1
        if not handed_back:
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def _read_hello(
    stream: trio.SocketStream, listener: ListenerRuntime, client: ClientInfo
) -> tuple[bytes, str] | None:
    """(bytes read, SNI name or ``""``), or ``None`` (logged) when there is no ClientHello."""
    buf = bytearray()
    with trio.move_on_after(listener.request_head_timeout_s):
        while True:
            try:
                chunk = await stream.receive_some(PEEK_LIMIT - len(buf))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not chunk:
                log.debug("%s:%d closed before its ClientHello", client.address, client.port)
                return None
            buf += chunk
            try:
                hello = parse_client_hello(bytes(buf))
            except ClientHelloError as exc:
                lograte.log(
                    log, logging.INFO, (listener.name, "no ClientHello"),
                    "no TLS ClientHello from %s:%d: %s", client.address, client.port, exc,
                )  # fmt: skip
                return None
            if hello is not NEED_MORE:
                return bytes(buf), hello.server_name or ""
            if len(buf) >= PEEK_LIMIT:
                lograte.log(
                    log,
                    logging.INFO,
                    (listener.name, "no ClientHello"),
                    "no TLS ClientHello from %s:%d within %d bytes",
                    client.address,
                    client.port,
                    PEEK_LIMIT,
                )
                return None
    log.debug("%s:%d sent no ClientHello in time", client.address, client.port)
    return None


async def _connect(origin: Origin, timeout: float, client: ClientInfo) -> trio.SocketStream | None:
    try:
        with trio.fail_after(timeout):
            upstream = await trio.open_tcp_stream(origin.host, origin.port)
    except (OSError, trio.TooSlowError) as exc:
        reason = "timed out" if isinstance(exc, trio.TooSlowError) else exc.strerror or str(exc)
        lograte.log(
            log,
            logging.WARNING,
            (f"{origin.host}:{origin.port}", reason),
            "passthrough to %s:%d for %s:%d failed: %s; closing the client connection",
            origin.host,
            origin.port,
            client.address,
            client.port,
            reason,
        )
        return None
    return upstream


async def relay(
    client: trio.SocketStream, upstream: trio.SocketStream, prefix: bytes = b""
) -> tuple[int, int]:
    """Copy bytes both ways until both directions ended; (bytes to upstream, bytes to client).

    ``prefix`` goes to ``upstream`` first. An EOF is passed on with
    ``send_eof``; a reset or error on either side ends both directions.
    Neither stream is closed here. No idle timeout: TCP keep-alive is on.
    """
    for s in (client, upstream):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            pass  # already reset: the copy notices
    return await splice(client, upstream, to_b_first=prefix)
