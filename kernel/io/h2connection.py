"""One downstream HTTP/2 connection: each stream is a flow.

The connection task reads frames, feeds them to the sans-IO
:class:`kernel.protocol.h2_server.H2Server`, and starts one task per request
stream that runs :func:`kernel.io.exchange.run_exchange` with an
:class:`H2Stream` as its :class:`~kernel.io.downstream.Downstream`, exactly as
an HTTP/1.1 connection does with itself. Plugins cannot tell the difference.

Bytes go out through one writer at a time (``_write_lock``); whoever holds it
sends everything the protocol has queued. The reader also waits for its own
writes (SETTINGS and PING acknowledgements, WINDOW_UPDATEs), so a client that
floods control frames without reading stops being read: its memory here
stays bounded.

Backpressure: a stream's request DATA is acknowledged (WINDOW_UPDATE) only
once the exchange took it, so a client can have at most one window in flight
per stream; a response is handed to the protocol only as far as the client's
window allows (:meth:`H2Stream.flush` waits for ``WindowOpen``).

Work is bounded: at most ``max_concurrent_streams`` exchange tasks run per
connection, counted until each task has *finished* (a stream the client
reset still counts while its task unwinds), so rapid reset cannot pile up
work; the protocol layer sends GOAWAY when resets come too fast. A reset
stream cancels its task, which closes its upstream connection.

May import: stdlib, trio, sdk, kernel.protocol, kernel.generation, kernel.io.
"""

from __future__ import annotations

import collections
import functools
import logging
from typing import Any

import trio

from kernel.config.model import H2Section
from kernel.generation import ListenerRuntime
from kernel.io.exchange import ClientGone, run_exchange
from kernel.io.state import ServerState
from kernel.protocol import h2_common as ev
from kernel.protocol.errorpage import error_body
from kernel.protocol.events import Data, EndOfMessage, Fields, ResponseHead
from kernel.protocol.h2_server import H2Server
from sdk import ClientInfo, RemoteProtocolError

__all__ = ["H2Connection", "H2Stream"]

log = logging.getLogger("kernel.h2")

RECV_SIZE = 65536
# RFC 9113 §7 error codes we send.
_NO_ERROR = 0x0
_INTERNAL_ERROR = 0x2
_REFUSED_STREAM = 0x7
_CANCEL = 0x8


@functools.lru_cache(maxsize=64)
def h2_limits(section: H2Section) -> ev.H2Limits:
    """The protocol limits of a listener's ``[server.h2]`` settings."""
    return ev.H2Limits(
        max_concurrent_streams=section.max_concurrent_streams,
        max_header_list_size=section.max_header_list_size,
        header_table_size=section.header_table_size,
        initial_window_size=section.initial_window_size,
        connection_window=section.connection_window,
        max_frame_size=section.max_frame_size,
    )


class H2Stream:
    """One request stream: the :class:`~kernel.io.downstream.Downstream` of its flow."""

    protocol = "2"
    keep_alive = True

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self.conn = conn
        self.state = conn.state
        self.listener = conn.listener
        self.client = conn.client
        self.stream_id = stream_id
        self.inbound: collections.deque[Data | EndOfMessage] = collections.deque()
        #: Flow-controlled length of each queued Data, acknowledged when taken.
        self._lengths: collections.deque[int] = collections.deque()
        self.reset = False
        self.scope = trio.CancelScope()
        self._readable = trio.Event()
        self._writable = trio.Event()
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
        self._readable.set()

    def on_reset(self) -> None:
        self.reset = True
        self._readable.set()
        self._writable.set()
        self.scope.cancel()

    def on_window(self) -> None:
        self._writable.set()

    # -- Downstream -----------------------------------------------------------
    async def next_body_event(self, timeout: float) -> Data | EndOfMessage:
        while not self.inbound:
            if self.reset:
                raise ClientGone
            self._readable = trio.Event()
            with trio.move_on_after(timeout) as scope:
                await self._readable.wait()
            if scope.cancelled_caught:
                raise RemoteProtocolError("request body timed out", status_hint=408)
        event = self.inbound.popleft()
        length = self._lengths.popleft()
        if length and not self.reset:
            self.conn.proto.ack_data(self.stream_id, length)
            await self.conn.write_out()
        return event

    def begin_response(self, head: ResponseHead) -> None:
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
        if self._head is not None:
            head, self._head = self._head, None
            only_head = self._end and not self._out and not self._trailers
            proto.send_response(sid, head.status_code, head.headers, end_stream=only_head)
            if only_head:
                self.finished = True
                self._end = False
        while self._out:
            taken = proto.send_data(sid, bytes(self._out))
            if taken:
                del self._out[:taken]
                await self.conn.write_out()
                continue
            self._writable = trio.Event()
            await self.conn.write_out()
            if proto.send_window(sid) <= 0:
                await self._writable.wait()
            if self.reset:
                raise ClientGone
        if self._end:
            self._end = False
            proto.send_end(sid, self._trailers)
            self.finished = True
        await self.conn.write_out()

    async def send_informational(self, status: int, fields: Fields) -> None:
        self.conn.proto.send_informational(self.stream_id, status, fields)
        await self.conn.write_out()

    async def abandon_request(self) -> None:
        if not self.reset:
            self.conn.proto.reset(self.stream_id, _NO_ERROR)
            self.reset = True
            await self.conn.write_out()


class H2Connection:
    """The server side of one HTTP/2 client connection."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        state: ServerState,
        listener: ListenerRuntime,
        client: ClientInfo,
    ) -> None:
        self.stream = stream
        self.state = state
        self.listener = listener
        self.client = client
        self.limits = h2_limits(listener.h2)
        self.proto = H2Server(self.limits)
        self.streams: dict[int, H2Stream] = {}
        self._write_lock = trio.Lock()
        self._tasks = 0
        self._closing = False
        self._broken = False
        self._read_scope = trio.CancelScope()

    async def write_out(self) -> None:
        """Send whatever the protocol has queued (one writer at a time)."""
        async with self._write_lock:
            data = self.proto.data_to_send()
            if not data or self._broken:
                return
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._broken = True
                raise ClientGone from exc

    async def serve(self) -> None:
        """Serve the connection until it ends, then close it."""
        self.state.connections += 1
        try:
            await self.run()
        finally:
            self.state.connections -= 1
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def run(self, initial: bytes = b"") -> None:
        """Serve streams until the connection ends (the caller closes it).

        ``initial`` holds bytes already read (the preface of h2c prior knowledge).
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._read_loop(initial)
            except ClientGone:
                pass
            except Exception:
                log.exception("HTTP/2 connection from %s:%d failed", *self._peer())
                self._broken = True
            finally:
                if self._broken or not self.streams:
                    nursery.cancel_scope.cancel()

    def _peer(self) -> tuple[str, int]:
        return self.client.address, self.client.port

    async def _read_loop(self, data: bytes) -> None:
        proto = self.proto
        proto.initiate()
        await self.write_out()
        timers = self.state.timers
        while True:
            if data:
                self._handle(proto.receive_data(data, trio.current_time()))
                await self.write_out()
            if self._closing:
                return
            if self.state.draining and not self.streams:
                proto.goaway(_NO_ERROR)
                await self.write_out()
                return
            idle = not self.streams
            scope = self._read_scope = trio.CancelScope()
            with scope:
                if idle:
                    # Idle connection: the keep-alive timeout and a drain end it.
                    timers.arm(self, self.listener.keepalive_timeout_s, scope.cancel)
                    self.state.idle_scopes.add(scope)
                try:
                    data = bytes(await self.stream.receive_some(RECV_SIZE))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""  # a reset is an end like any other
                finally:
                    if idle:
                        self.state.idle_scopes.discard(scope)
                        timers.disarm(self)
            if scope.cancelled_caught:
                proto.goaway(_NO_ERROR)
                await self.write_out()
                return
            if not data:
                self._handle(proto.receive_data(b"", trio.current_time()))
                return

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, ev.StreamRequest):
                self._start(event)
            elif isinstance(event, ev.StreamData):
                s = self.streams.get(event.stream_id)
                if s is not None:
                    s.push(Data(event.data), event.flow_length)
                else:  # stream already gone: give the window back at once
                    self.proto.ack_data(event.stream_id, event.flow_length)
            elif isinstance(event, ev.StreamEnd):
                s = self.streams.get(event.stream_id)
                if s is not None:
                    s.push(EndOfMessage(list(event.trailers)))
            elif isinstance(event, ev.StreamReset):
                s = self.streams.get(event.stream_id)
                if s is not None:
                    s.on_reset()
            elif isinstance(event, ev.WindowOpen):
                if event.stream_id == 0:
                    for s in self.streams.values():
                        s.on_window()
                elif (s := self.streams.get(event.stream_id)) is not None:
                    s.on_window()
            elif isinstance(event, ev.StreamRefused):
                self._refuse(event.stream_id, event.status, event.reason)
            elif isinstance(event, ev.ConnectionEnding):
                log.log(
                    logging.DEBUG if event.error_code == _NO_ERROR else logging.INFO,
                    "HTTP/2 connection from %s:%d ending: %s (error %#x)",
                    self.client.address,
                    self.client.port,
                    event.reason,
                    event.error_code,
                )
                self._closing = True
                for s in self.streams.values():
                    s.on_reset()

    def _start(self, event: ev.StreamRequest) -> None:
        if self.state.draining or self._tasks >= self.limits.max_concurrent_streams:
            # Tasks still unwinding count too: a client resetting streams
            # cannot make us run more than the limit at once.
            self.proto.reset(event.stream_id, _REFUSED_STREAM)
            return
        s = H2Stream(self, event.stream_id)
        if event.end_stream:
            s.push(EndOfMessage([]))
        self.streams[event.stream_id] = s
        self._tasks += 1
        self._nursery.start_soon(self._run_stream, s, event)

    async def _run_stream(self, s: H2Stream, event: ev.StreamRequest) -> None:
        try:
            with s.scope:
                await run_exchange(s, event.head)
        except ClientGone:
            pass
        except Exception:  # a kernel bug: fail this stream, not the connection
            log.exception("HTTP/2 stream %d from %s:%d failed", s.stream_id, *self._peer())
        finally:
            self._tasks -= 1
            self.streams.pop(s.stream_id, None)
            if not s.finished and not s.reset:
                # The response could not be completed: cut the stream off.
                self.proto.reset(s.stream_id, _INTERNAL_ERROR)
            with trio.CancelScope(shield=True):
                try:
                    await self.write_out()
                except ClientGone:
                    pass
            if not self.streams:
                if self._closing or self._broken:
                    self._nursery.cancel_scope.cancel()
                elif self.state.draining:
                    self._read_scope.cancel()  # the reader says GOAWAY and ends

    def _refuse(self, stream_id: int, status: int, reason: str) -> None:
        """Answer a request we will not forward (it never gets a flow)."""
        log.info(
            "refused HTTP/2 request from %s:%d: %s (%d)",
            self.client.address,
            self.client.port,
            reason,
            status,
        )
        body = error_body(status, "-")
        fields: Fields = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        self.proto.send_response(stream_id, status, fields, end_stream=False)
        if self.proto.send_data(stream_id, body) == len(body):
            self.proto.send_end(stream_id, None)
        else:
            self.proto.reset(stream_id, _CANCEL)
