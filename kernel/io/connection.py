"""One downstream HTTP/1.1 connection: read requests, run exchanges, in order.

A connection is one trio task. It owns the socket and the server codec,
reads request heads under the head and keep-alive deadlines, hands each
request to :func:`kernel.io.exchange.run_exchange`, and loops while both
sides keep the connection alive. Pipelined requests are answered in order
because the next head is only read once the current exchange is over.

Timeouts (``[server]``, per listener):

- ``request_head_timeout_s``: a whole request head must arrive within it,
  counted from the accept or from the first byte of a keep-alive request
  (then ``408`` and close);
- ``keepalive_timeout_s``: an idle connection waiting for its next request is
  closed silently when it passes, or at once when shutdown begins.

Both are kept by the coarse timers of :mod:`kernel.io.timers` (up to 50 ms
late), which cost far less per request than trio deadlines.

A request refused here (a head that does not parse or is over a limit:
400, 413, 414, 417, 431, 501, 505; a stalled head: 408) is answered with
the kernel's page and the connection closes; it is a flow all the same
(:class:`kernel.io.exchange.Refusal`), which only ``trellis_flow_done``
sees.

May import: stdlib, trio, sdk, kernel.protocol, kernel.io, kernel.generation.
"""

from __future__ import annotations

import logging

import trio

from kernel.generation import ListenerRuntime
from kernel.io import sockio
from kernel.io.exchange import ClientGone, Refusal, run_exchange
from kernel.io.h2connection import H2Connection
from kernel.io.sockio import FastIO
from kernel.io.state import ServerState
from kernel.io.tlsstream import TLSStream
from kernel.io.tunnel import linger
from kernel.protocol.errorpage import render_error_response
from kernel.protocol.events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Fields,
    RequestHead,
    ResponseHead,
    Sentinel,
)
from kernel.protocol.h2_common import H2_PREFACE
from kernel.protocol.http1 import ServerCodec, make_server_codec, send_fields
from kernel.protocol.httpdate import dated
from kernel.protocol.validate import salvage_request_head
from sdk import ClientInfo, RemoteProtocolError

__all__ = ["Http1Connection"]

log = logging.getLogger("kernel.connection")


def _head(start: bytes, fields: Fields) -> bytes:
    return b"".join([start, *(b"%s: %s\r\n" % f for f in fields), b"\r\n"])


class Http1Connection:
    """The server side of one client connection."""

    __slots__ = (
        "_cut", "_fresh", "_out", "_partial", "_scope", "_sniffed_for", "_waiting", "client",
        "codec", "io", "listener", "state", "stream",
    )  # fmt: skip

    protocol = "1.1"

    def __init__(
        self,
        stream: trio.SocketStream | TLSStream,
        state: ServerState,
        listener: ListenerRuntime,
        client: ClientInfo,
    ) -> None:
        self.stream = stream
        self.state = state
        self.listener = listener
        self.client = client
        self.codec: ServerCodec = make_server_codec(listener.http1, listener.limits)  # type: ignore[arg-type]
        #: Response bytes queued until the next flush.
        self._out: list[bytes] = []
        #: A response was begun and none of it has been sent yet.
        self._fresh = False
        #: A response was cut: close with a reset (:meth:`cut`).
        self._cut = False
        #: Seconds the h2c sniff waited: the first head has that much less.
        self._sniffed_for = 0.0
        #: Reads and writes: the socket's own calls, or the TLS stream's.
        self.io: FastIO = sockio.fast_io(stream)
        self.io.limit_writes(listener.send_timeout_s)

    async def send(self, data: bytes) -> None:
        """Write to the client; a vanished client becomes :class:`ClientGone`."""
        if not data:
            return
        try:
            await self.io.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone from exc

    async def receive(self) -> bytes:
        try:
            return await self.io.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone from exc

    # -- the Downstream interface (kernel/io/downstream.py) ---------------------
    @property
    def keep_alive(self) -> bool:
        return self.codec.keep_alive

    async def next_body_event(self, timeout: float) -> Data | EndOfMessage:
        codec = self.codec
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                with trio.move_on_after(timeout) as scope:
                    # A yield per chunk: a socket read that need not wait does
                    # not yield (kernel/io/sockio.py), and a long body must not
                    # keep every other connection waiting.
                    await trio.lowlevel.checkpoint()
                    data = await self.receive()
                if scope.cancelled_caught:
                    raise RemoteProtocolError("request body timed out", status_hint=408)
                codec.receive_data(data)
            elif isinstance(event, Data | EndOfMessage):
                return event
            else:
                raise RemoteProtocolError(f"unexpected {event!r} in request body")

    def begin_response(self, head: ResponseHead) -> None:
        head = dated(head)  # RFC 9110 §6.6.1: the upstream's Date, else ours
        self._out.append(self.codec.send_response_head(head))
        self._fresh = True

    def write_body(self, data: bytes) -> None:
        self._out.append(self.codec.send_data(data))

    def end_response(self, trailers: Fields | None = None) -> None:
        self._out.append(self.codec.send_end(trailers))

    async def flush(self) -> None:
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._fresh = False
            await self.send(data)

    async def send_informational(self, status: int, fields: Fields) -> None:
        await self.send(self.codec.send_informational(status, fields))

    async def switch_protocols(self, fields: Fields) -> tuple[bytes, trio.abc.Stream]:
        send_fields(fields)  # the same checks as any field we send
        await self.send(_head(b"HTTP/1.1 101 Switching Protocols\r\n", fields))
        return self.codec.trailing_data(), self.stream

    async def retract_response(self, status: int, flow_id: str = "") -> bool:
        if not self._fresh:
            return False
        self._out.clear()
        self._fresh = False
        await self.send(render_error_response(status, flow_id))  # says close
        return True

    def cut(self) -> None:
        self._cut = True

    async def abandon_request(self) -> None:
        await linger(self.stream)

    # -- the connection -----------------------------------------------------
    async def serve(self) -> None:
        """Serve requests until either side ends the connection."""
        # One cancel scope for the connection's whole life instead of one per
        # wait. It has no deadline: the coarse timers (kernel/io/timers.py)
        # cancel it when the idle keep-alive wait or the head deadline runs
        # out, and a drain cancels it while idle. Either way the connection
        # ends. (The exchange keeps its own deadlines.)
        scope = trio.CancelScope()
        self._scope = scope
        self._waiting = ""  # "idle" or "head" while a timer is armed for this wait
        self._partial = False  # bytes of a head arrived during the current wait
        self.state.connections += 1
        try:
            with scope:
                if isinstance(self.stream, trio.SocketStream) and self.listener.http2:
                    # h2c with prior knowledge shares the port (RFC 9113 §3.3):
                    # told apart from HTTP/1.1 by the first bytes.
                    initial = await self._sniff_preface()
                    if initial.startswith(H2_PREFACE):
                        h2 = H2Connection(self.stream, self.state, self.listener, self.client)
                        await h2.run(initial)
                        return
                    self.codec.next_event()  # NEED_DATA: the codec may take bytes
                    self.codec.receive_data(initial)
                first = True
                while True:
                    try:
                        event: Event | Sentinel | None = self.codec.next_event()
                    except RemoteProtocolError as exc:
                        await self._refuse(exc)
                        return
                    if not first and (event is not NEED_DATA or self.codec.buffered):
                        # Pipelined: the next head is here already. Yield once
                        # per request, as the socket calls may not have.
                        await trio.lowlevel.checkpoint()
                    elif event is NEED_DATA and not first:
                        # Between requests: a silent close on the keep-alive
                        # timeout or when shutdown begins.
                        if self.state.draining:
                            return
                        # Yield first, then look: while the other connections
                        # take their turns the client has time to send its
                        # next request, and under load it is then here, taken
                        # without a trip through epoll. (Looking at once finds
                        # it almost never.) The same over TLS.
                        await trio.lowlevel.checkpoint()
                        early = self.io.read_ready()
                        if early is not None:
                            if not early:
                                return
                            self.codec.receive_data(early)
                        else:
                            await self._idle_wait(scope)
                        event = None
                    head = await self._read_head(first, event)
                    if head is None:
                        return
                    first = False
                    keep_going = await run_exchange(self, head)
                    if not keep_going or self.state.draining or not self.codec.keep_alive:
                        return
                    self.codec.start_next_cycle()
            if scope.cancelled_caught and self._waiting == "head" and self._partial:
                # A stalled head gets 408; a client that sent nothing gets no
                # answer (as nginx), nor does an idle connection closed by time
                # or by drain.
                await self._refuse(RemoteProtocolError("request head timed out", status_hint=408))
        except (ClientGone, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except Exception:
            # A kernel bug: it ends this connection, never the process.
            log.exception("connection from %s:%d failed", self.client.address, self.client.port)
        finally:
            self.state.connections -= 1
            self.state.idle_scopes.discard(scope)
            if self._cut:
                sockio.reset_on_close(self.io.socket)
                if isinstance(self.stream, TLSStream):
                    self.stream.cut()
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _idle_wait(self, scope: trio.CancelScope) -> None:
        """Wait for the next request's first bytes, under the keep-alive timer."""
        self._waiting = "idle"
        self.state.timers.arm(self, self.listener.keepalive_timeout_s, scope.cancel)
        self.state.idle_scopes.add(scope)
        try:
            # Only wait for readability here, straight on the I/O manager:
            # thousands of connections sit in this wait, and the frames and
            # context managers of a full receive would cost ~1 KiB more on each.
            await trio.lowlevel.wait_readable(self.io.socket)
            # Then read, under this timer still: over TLS a record may come in
            # parts (on a plain socket the bytes are there: no wait).
            self.codec.receive_data(await self.receive())
        finally:
            self.state.idle_scopes.discard(scope)
            self.state.timers.disarm(self)
        self._waiting = ""

    async def _sniff_preface(self) -> bytes:
        """The first bytes, enough to tell the HTTP/2 preface from HTTP/1.1.

        Read under the request-head deadline, like a head.
        """
        self._waiting = "head"
        timers = self.state.timers
        timers.arm(self, self.listener.request_head_timeout_s, self._scope.cancel)
        started = trio.current_time()
        try:
            data = b""
            while len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
                more = await self.receive()
                if not more:
                    break
                data += more
                self._partial = True
        finally:
            timers.disarm(self)
            self._sniffed_for = trio.current_time() - started
        self._waiting = ""
        return data

    async def _read_head(self, first: bool, event: Event | Sentinel | None) -> RequestHead | None:
        """The next request head, or None when the connection should just close.

        ``event`` is what the codec already returned, or None to ask it.
        """
        lst = self.listener
        codec = self.codec
        scope = self._scope
        try:
            if event is None:
                event = codec.next_event()
            if event is NEED_DATA:  # the head is not complete yet
                # Bytes of this head may already be here (pipelined, or the
                # first bytes that ended the idle wait): then it is a stall.
                self._partial = codec.buffered or not first
                self._waiting = "head"
                timers = self.state.timers
                # The deadline counts from the accept: on the first head,
                # the h2c sniff's wait is part of it.
                left = lst.request_head_timeout_s
                if first and self._sniffed_for:
                    left = max(left - self._sniffed_for, 0.001)
                timers.arm(self, left, scope.cancel)
                try:
                    while event is NEED_DATA:
                        data = await self.receive()
                        self._partial = self._partial or bool(data)
                        codec.receive_data(data)
                        event = codec.next_event()
                finally:
                    timers.disarm(self)
                self._waiting = ""
        except RemoteProtocolError as exc:
            await self._refuse(exc)
            return None
        return self._as_head(event)

    @staticmethod
    def _as_head(event: Event | Sentinel) -> RequestHead | None:
        if isinstance(event, RequestHead):
            return event
        if isinstance(event, ConnectionClosed):
            return None
        # PAUSED cannot happen here (the cycle was restarted); anything else is
        # a codec bug, which must not pass silently.
        raise RuntimeError(f"unexpected event before a request head: {event!r}")

    async def _refuse(self, error: RemoteProtocolError) -> None:
        """Answer a request we cannot parse (or that stalled) with the error's
        status, then close (framing is in doubt). The refusal is a flow
        that only ``trellis_flow_done`` sees, whether or not the page got out."""
        # What the codec holds of the refused head: its method, target, fields
        # as far as they are valid.
        head = salvage_request_head(self.codec.trailing_data(), self.listener.limits)
        refusal = Refusal(self.state, self.listener, self.client, error, head)
        try:
            refusal.log(log, "request")
            with trio.move_on_after(1.0):
                await self.send(render_error_response(error.status_hint, refusal.flow.id))
                refusal.sent()
        except ClientGone:
            return
        finally:
            await refusal.end()
        # Also after 408: a slow client may still be dribbling bytes.
        await linger(self.stream)
