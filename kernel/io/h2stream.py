"""One HTTP/2 request stream as the :class:`~kernel.io.downstream.Downstream` of its flow.

An :class:`H2Stream` is what :func:`kernel.io.exchange.run_exchange` reads the
request body from and writes the response to, as it does with an HTTP/1.1
connection. Its connection (:class:`kernel.io.h2connection.H2Connection`)
feeds it the request's DATA and end, resets and window updates; the stream
hands its response to the connection's protocol object as far as the
client's flow-control windows allow, and has the connection write it.

Request DATA is acknowledged (WINDOW_UPDATE) only when the exchange takes
it: that is the backpressure towards the client.

May import: stdlib, trio, sdk, kernel.protocol, kernel.io.exchange.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import trio

from kernel.io.exchange import ClientGone
from kernel.protocol.errorpage import error_body, error_fields, reason_phrase
from kernel.protocol.events import Data, EndOfMessage, Fields, ResponseHead
from kernel.protocol.httpdate import dated
from sdk import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from kernel.io.h2connection import H2Connection

__all__ = ["H2Stream"]

_NO_ERROR = 0x0
_CANCEL = 0x8


class H2Stream:
    """One request stream: the :class:`~kernel.io.downstream.Downstream` of its flow."""

    protocol = "2"
    keep_alive = True

    __slots__ = (
        "_end", "_head", "_lengths", "_out", "_readable", "_trailers", "_writable",
        "client", "conn", "finished", "inbound", "listener", "reset", "scope",
        "sending", "sized", "state", "stream_id",
    )  # fmt: skip

    def __init__(self, conn: H2Connection, stream_id: int, *, sized: bool = False) -> None:
        self.conn = conn
        self.state = conn.state
        self.listener = conn.listener
        self.client = conn.client
        self.stream_id = stream_id
        #: The request declared a content-length (its trailers cannot be passed on).
        self.sized = sized
        self.inbound: collections.deque[Data | EndOfMessage] = collections.deque()
        #: Flow-controlled length of each queued Data, acknowledged when taken.
        self._lengths: collections.deque[int] = collections.deque()
        self.reset = False
        self.scope = trio.CancelScope()
        #: The stream's task is writing for the connection (see H2Connection.write_out).
        self.sending = False
        # Made when the task is about to wait (most streams never do).
        self._readable: trio.Event | None = None
        self._writable: trio.Event | None = None
        self._head: ResponseHead | None = None
        self._out = bytearray()
        self._end = False
        self._trailers: Fields | None = None
        #: The whole response (END_STREAM) went to the protocol.
        self.finished = False

    # -- fed by the connection ------------------------------------------------
    def push(self, event: Data | EndOfMessage, flow_length: int = 0) -> None:
        self.inbound.append(event)
        self._lengths.append(flow_length)
        if self._readable is not None:
            self._readable.set()

    def on_reset(self) -> None:
        self.reset = True
        if self._readable is not None:
            self._readable.set()
        if self._writable is not None:
            self._writable.set()
        if not self.sending:  # else write_out cancels it once the bytes are out
            self.scope.cancel()

    def on_window(self) -> None:
        if self._writable is not None:
            self._writable.set()

    # -- Downstream -----------------------------------------------------------
    async def next_body_event(self, timeout: float) -> Data | EndOfMessage:
        while not self.inbound:
            if self.reset:
                raise ClientGone
            readable = self._readable = trio.Event()
            with trio.move_on_after(timeout) as scope:
                await readable.wait()
            if scope.cancelled_caught:
                raise RemoteProtocolError("request body timed out", status_hint=408)
        event = self.inbound.popleft()
        length = self._lengths.popleft()
        if length and not self.reset:
            self.conn.proto.ack_data(self.stream_id, length)
            await self.conn.write_out(self)
        return event

    def begin_response(self, head: ResponseHead) -> None:
        head = dated(head)  # RFC 9110 §6.6.1: the upstream's Date, else ours
        self._head = head

    def write_body(self, data: bytes) -> None:
        self._out += data

    def end_response(self, trailers: Fields | None = None) -> None:
        self._end = True
        self._trailers = trailers or None

    async def flush(self) -> None:
        if self.reset:
            raise ClientGone
        proto = self.conn.proto
        sid = self.stream_id
        head = self._head
        if head is not None:
            only_head = self._end and not self._out and not self._trailers
            # A head the protocol refuses (a plugin's edit) is checked before
            # anything is queued, and stays ours: retract_response can still
            # send the error page in its place, as over HTTP/1.1.
            proto.send_response(sid, head.status_code, head.headers, end_stream=only_head)
            self._head = None
            if only_head:
                self._finish()
                self._end = False
        while self._out:
            # The last piece carries END_STREAM itself (no separate empty
            # frame), and what fits the window goes out in one write below.
            last = self._end and not self._trailers
            taken = proto.send_data(sid, bytes(self._out), end_stream=last)
            if taken:
                del self._out[:taken]
                if not self._out:
                    if last:
                        self._end = False
                        self._finish()
                    break
                await self.conn.write_out(self)
                continue
            writable = self._writable = trio.Event()
            await self.conn.write_out(self)
            if proto.send_window(sid) <= 0:
                with trio.move_on_after(self.listener.send_timeout_s) as wait:
                    await writable.wait()
                if wait.cancelled_caught and not self.reset:
                    # No window for send_timeout_s: a client that stopped
                    # reading, as far as this stream is concerned. Its flow
                    # and upstream connection are not held for ever.
                    proto.reset(sid, _CANCEL)
                    self.reset = True
                    raise ClientGone
            if self.reset:
                raise ClientGone
        if self._end:
            self._end = False
            proto.send_end(sid, self._trailers)
            self._finish()
        await self.conn.write_out(self)

    def _finish(self) -> None:
        """The whole response went to the protocol: the stream no longer
        counts against max_concurrent_streams, though its task may still
        be unwinding (flow-done hooks, the last write)."""
        self.finished = True
        self.conn.unfinished -= 1

    async def send_informational(self, status: int, fields: Fields) -> None:
        self.conn.proto.send_informational(self.stream_id, status, fields)
        await self.conn.write_out(self)

    async def switch_protocols(self, fields: Fields) -> tuple[bytes, trio.abc.Stream]:
        # Unreachable: HTTP/2 refuses Connection/Upgrade fields before routing.
        raise LocalProtocolError("an HTTP/2 stream cannot switch protocols")

    async def retract_response(self, status: int, flow_id: str = "") -> bool:
        if self._head is None:
            return False  # its HEADERS went out: a reset ends it
        body = error_body(status, flow_id)
        self._head = ResponseHead(
            status_code=status,
            headers=error_fields(body),
            reason=reason_phrase(status).encode("ascii"),
        )
        self._out = bytearray(body)
        self._end, self._trailers = True, None
        await self.flush()
        return True

    def cut(self) -> None:
        pass  # the connection resets a stream that ends unfinished (INTERNAL_ERROR)

    async def abandon_request(self) -> None:
        if not self.reset:
            self.conn.proto.reset(self.stream_id, _NO_ERROR)
            self.reset = True
            await self.conn.write_out(self)
