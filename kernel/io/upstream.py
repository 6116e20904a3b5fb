"""Upstream connections and the per-origin keep-alive pool.

Bookkeeping is synchronous and separate from I/O (httpcore's "decide, then
do I/O"): :meth:`UpstreamPool.take_idle` and :meth:`UpstreamPool.put_idle`
never await; only :func:`connect` does. The pool is shared by every
generation, so upstream keep-alive survives a reload.

May import: stdlib, trio, attrs, sdk, kernel.protocol, kernel.io.h2upstream,
kernel.io.sockio, kernel.io.tlsstream, kernel.io.wakeup.
"""

from __future__ import annotations

import math
import select
import ssl
from collections.abc import Awaitable, Callable

import attrs
import trio

from kernel.io import sockio
from kernel.io.h2upstream import H2Upstream
from kernel.io.sockio import FastIO
from kernel.io.tlsstream import TLSStream
from kernel.io.wakeup import Wakeup
from kernel.protocol.events import NEED_DATA, Data, EndOfMessage
from kernel.protocol.h2_common import H2Limits
from kernel.protocol.http1 import ClientCodec, make_client_codec
from sdk import Origin, RemoteProtocolError, UpstreamConnectError, UpstreamTimeout

__all__ = ["PoolStatistics", "UpstreamConnection", "UpstreamPool", "connect"]

#: How an https upstream is reached: the client context and the SNI name.
TlsTarget = tuple[ssl.SSLContext, str]
_PoolKey = tuple[Origin, str, "TlsTarget | None"]


class UpstreamConnection:
    """One connection to an upstream (TCP, or TLS over it) plus its HTTP/1.1 client codec."""

    __slots__ = (
        "codec", "idle_since", "idle_timeout", "io", "key", "kind", "origin", "requests",
        "socket", "stream",
    )  # fmt: skip

    def __init__(
        self,
        stream: trio.SocketStream | TLSStream,
        origin: Origin,
        kind: str,
        tls: TlsTarget | None = None,
    ) -> None:
        self.stream = stream
        #: Reads and writes: kernel/io/sockio.py's on plain TCP, else
        #: TLSStream's own, which likewise yield only to wait.
        self.io: FastIO = sockio.fast_io(stream)
        #: The TCP socket underneath (for closing without a checkpoint, probing).
        self.socket = self.io.socket
        self.origin = origin
        self.kind = kind
        self.key: _PoolKey = (origin, kind, tls)
        self.codec: ClientCodec = make_client_codec(kind)  # type: ignore[arg-type]
        self.idle_since = 0.0
        #: How long it may stay idle in the pool: the route's that put it
        #: there (``[routes.transport] idle_timeout_s``); 0: the reaper's own.
        self.idle_timeout = 0.0
        #: Requests sent on this connection so far.
        self.requests = 0

    async def send(self, data: bytes) -> None:
        if data:
            await self.io.send(data)

    async def send_until_answered(
        self, data: bytes | memoryview, timeout: float = math.inf
    ) -> memoryview | None:
        """Send ``data``; None when all of it went, else the part not sent
        because the upstream sent something while the write waited for room.

        Over plain TCP (:meth:`kernel.io.sockio.SocketIO.send_until_answered`);
        over TLS the write is not interrupted, and an answer is seen between
        writes only. A wait for room in which the upstream took no byte for
        ``timeout`` seconds raises :class:`trio.TooSlowError`: the deadline
        measures progress, not whole writes.
        """
        io = self.io
        try:
            if isinstance(io, sockio.SocketIO):
                return await io.send_until_answered(data, timeout)
            io.limit_writes(timeout)  # each wait of the ciphertext's writes
            try:
                await io.send(bytes(data))
            finally:
                io.limit_writes(math.inf)
        except sockio.Stalled:
            raise trio.TooSlowError from None
        return None

    async def receive(self) -> bytes:
        return await self.io.receive()

    def read_ready(self) -> bytes | None:
        """What the connection holds already (``b""`` at its end); None when
        nothing yet (then :meth:`receive`). Never waits, never yields."""
        return self.io.read_ready()

    async def next_body_event(
        self, timeout: float, before_wait: Callable[[], Awaitable[None]]
    ) -> Data | EndOfMessage:
        """The next piece of the response body, or its end.

        ``before_wait`` runs before we block on the socket (the relay flushes
        the client there); a read that takes over ``timeout`` seconds raises
        :class:`trio.TooSlowError`.
        """
        codec = self.codec
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                await before_wait()
                with trio.fail_after(timeout):
                    # A yield per chunk: a read (or the flush before it) that
                    # need not wait does not yield (kernel/io/sockio.py), and a
                    # long body must not keep every other connection waiting.
                    await trio.lowlevel.checkpoint()
                    chunk = await self.receive()
                codec.receive_data(chunk)
            elif isinstance(event, Data | EndOfMessage):
                return event
            else:
                raise RemoteProtocolError(f"unexpected {event!r} in upstream body")

    def close_nowait(self) -> None:
        """Close the socket without a checkpoint (safe in cleanup paths)."""
        self.socket.close()

    def looks_dead(self) -> bool:
        """An idle HTTP/1.1 connection must have nothing to read; if it is
        readable, the peer closed it (or sent garbage): do not reuse it."""
        try:
            readable, _, _ = select.select([self.socket.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


def _why(exc: OSError) -> str:
    """What went wrong, from trio's "all attempts to connect ... failed"
    too: the reasons of its attempts (refused, out of file descriptors...)."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = [e.strerror or str(e) for e in cause.exceptions if isinstance(e, OSError)]
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
    return exc.strerror or str(exc)


async def connect(
    origin: Origin, kind: str, timeout: float, tls: TlsTarget | None = None
) -> UpstreamConnection:
    """Open a new connection (TLS when ``tls`` is given), mapping failures to upstream errors.

    The TLS handshake counts against the same ``timeout`` as the TCP connect.
    A certificate that fails verification is an :class:`UpstreamConnectError`
    (502) that says why.
    """
    try:
        with trio.fail_after(timeout):
            tcp = await trio.open_tcp_stream(origin.host, origin.port)
            if tls is None:
                return UpstreamConnection(tcp, origin, kind)
            ctx, server_name = tls
            stream = TLSStream(tcp, ctx, server_hostname=server_name or origin.host)
            try:
                await stream.do_handshake()
            except BaseException:
                tcp.socket.close()
                raise
            return UpstreamConnection(stream, origin, kind, tls)
    except trio.TooSlowError:
        raise UpstreamTimeout(f"connecting to {origin} timed out after {timeout:g}s") from None
    except trio.BrokenResourceError as exc:
        reason = exc.__cause__ or exc
        raise UpstreamConnectError(f"TLS handshake with {origin} failed: {reason}") from exc
    except OSError as exc:
        raise UpstreamConnectError(f"cannot connect to {origin}: {_why(exc)}") from exc


@attrs.frozen
class PoolStatistics:
    """A snapshot of the pool's counters."""

    opened: int
    reused: int
    idle: int


class UpstreamPool:
    """Idle keep-alive connections per (origin, codec)."""

    def __init__(self) -> None:
        self._idle: dict[_PoolKey, list[UpstreamConnection]] = {}
        #: HTTP/2 connections per (origin, "h2", TLS target); shared, not checked out.
        self._h2: dict[_PoolKey, list[H2Upstream]] = {}
        #: One HTTP/2 connection attempt at a time per key.
        self._connecting: dict[_PoolKey, trio.Lock] = {}
        #: https origins that answered ALPN with http/1.1 (for ``http2 = true``).
        self._h1_only: set[_PoolKey] = set()
        #: Where HTTP/2 connections run their reader tasks (the app sets it).
        self.nursery: trio.Nursery | None = None
        #: Rung by each connection kept here: the reaper waits on it while the pool is empty.
        self._wakeup = Wakeup()
        self.opened = 0
        self.reused = 0

    def take_idle(
        self,
        origin: Origin,
        kind: str,
        idle_timeout: float,
        *,
        tls: TlsTarget | None = None,
    ) -> UpstreamConnection | None:
        """The most recently used live idle connection, or None.

        Each is probed with a ``select()``: an idle connection that became
        readable was closed by the upstream, or got bytes nobody asked for
        (a late second response, say), which must never be read as the next
        request's answer (RFC 9112 §6.3). Either way it is closed. A syscall
        per request, and not one to save.
        """
        conns = self._idle.get((origin, kind, tls))
        if not conns:
            return None
        now = trio.current_time()
        while conns:
            conn = conns.pop()
            if now - conn.idle_since > idle_timeout or conn.looks_dead():
                conn.close_nowait()
                continue
            self.reused += 1
            return conn
        return None

    def put_idle(self, conn: UpstreamConnection, max_idle: int, idle_timeout: float = 0.0) -> None:
        """Keep ``conn`` for reuse (for ``idle_timeout`` seconds at most, when
        given), or close it when the pool for its origin is full."""
        conns = self._idle.setdefault(conn.key, [])
        if len(conns) >= max_idle:
            conn.close_nowait()
            return
        conn.idle_since = trio.current_time()
        conn.idle_timeout = idle_timeout
        conns.append(conn)
        self._wakeup.ring()

    async def acquire_h2_or_h1(
        self,
        origin: Origin,
        kind: str,
        *,
        http2: str,
        connect_timeout: float,
        idle_timeout: float,
        tls: TlsTarget | None = None,
    ) -> UpstreamConnection | H2Upstream:
        """A connection for one request, by the route's HTTP/2 setting: a
        pooled one for (origin, codec, TLS target), or a new one.

        ``http2`` is ``"force"`` (always HTTP/2: ALPN ``h2`` over TLS, h2c
        with prior knowledge otherwise), ``"alpn"`` (https only: HTTP/2 when
        the upstream picks it by ALPN, else HTTP/1.1) or ``"off"``.
        Connections made with different TLS settings (another client
        certificate, CA or SNI name) are never shared.
        """
        if http2 == "off":
            conn = self.take_idle(origin, kind, idle_timeout, tls=tls)
            if conn is not None:
                return conn
            return await self._connect(origin, kind, connect_timeout, tls)
        key: _PoolKey = (origin, "h2", tls)
        h2 = self._usable_h2(key)
        if h2 is not None:
            return h2
        if http2 == "alpn":
            conn = self.take_idle(origin, kind, idle_timeout, tls=tls)
            if conn is not None or key in self._h1_only:
                return conn or await self._connect(origin, kind, connect_timeout, tls)
        # One connection attempt per origin at a time: a burst of flows must
        # share the first HTTP/2 connection, not each open its own.
        lock = self._connecting.setdefault(key, trio.Lock())
        async with lock:
            h2 = self._usable_h2(key)
            if h2 is not None:
                return h2
            if http2 != "alpn" or key not in self._h1_only:
                return await self._connect_h2(key, origin, kind, http2, connect_timeout, tls)
        # The attempt we waited for found HTTP/1.1: connect in parallel, not in turn.
        return await self._connect(origin, kind, connect_timeout, tls)

    def _usable_h2(self, key: _PoolKey) -> H2Upstream | None:
        live = [c for c in self._h2.get(key, ()) if not c.closed]
        self._h2[key] = live
        for h2 in live:
            if h2.available:
                self.reused += 1
                return h2
        return None

    async def _connect(
        self, origin: Origin, kind: str, timeout: float, tls: TlsTarget | None
    ) -> UpstreamConnection:
        conn = await connect(origin, kind, timeout, tls)
        self.opened += 1
        return conn

    async def _connect_h2(
        self,
        key: _PoolKey,
        origin: Origin,
        kind: str,
        http2: str,
        connect_timeout: float,
        tls: TlsTarget | None,
    ) -> UpstreamConnection | H2Upstream:
        conn = await connect(origin, kind, connect_timeout, tls)
        self.opened += 1
        negotiated = (
            conn.stream.selected_alpn_protocol() if isinstance(conn.stream, TLSStream) else None
        )
        if http2 == "alpn" and negotiated != "h2":
            self._h1_only.add(key)  # later flows connect without the lock
            return conn
        if self.nursery is None:
            conn.close_nowait()
            raise UpstreamConnectError("HTTP/2 upstreams need the running app")
        h2 = H2Upstream(conn.stream, origin, key, H2Limits())
        try:
            with trio.fail_after(connect_timeout):
                await h2.start(self.nursery)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            h2.close_nowait()
            raise UpstreamConnectError(f"HTTP/2 preface to {origin} failed: {exc!r}") from exc
        self._h2.setdefault(key, []).append(h2)
        self._wakeup.ring()
        return h2

    @property
    def holds_connections(self) -> bool:
        """Whether any idle HTTP/1.1 or any HTTP/2 connection is kept here."""
        return any(self._idle.values()) or any(self._h2.values())

    async def wait_for_connections(self) -> None:
        """Return once the pool holds a connection (at once if it does).

        The reaper waits here between rounds, so a proxy whose pool is
        empty is not woken to find nothing to reap.
        """
        while not self.holds_connections:
            await self._wakeup.wait()

    def reap(self, idle_timeout: float) -> int:
        """Close idle connections older than their own idle timeout (else
        ``idle_timeout``); returns how many."""
        now = trio.current_time()
        closed = 0
        for key, conns in list(self._idle.items()):
            keep = []
            for conn in conns:
                if now - conn.idle_since > (conn.idle_timeout or idle_timeout):
                    conn.close_nowait()
                    closed += 1
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        for key, h2s in list(self._h2.items()):
            for h2 in h2s:
                if not h2.streams and now - h2.idle_since > idle_timeout:
                    h2.close_nowait()
                    closed += 1
            self._h2[key] = [h for h in h2s if not h.closed]
        return closed

    def close_all(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close_nowait()
        self._idle.clear()
        for h2s in self._h2.values():
            for h2 in h2s:
                h2.close_nowait()
        self._h2.clear()

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            opened=self.opened,
            reused=self.reused,
            idle=sum(len(c) for c in self._idle.values()),
        )
