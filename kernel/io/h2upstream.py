"""HTTP/2 to upstreams: one multiplexed connection carries many flows.

An :class:`H2Upstream` wraps one connection (TLS with ALPN ``h2``, or h2c
with prior knowledge for ``force_http2`` on http:// origins) and the sans-IO
:class:`kernel.protocol.h2_client.H2Client`. A reader task, started in the
pool's nursery, feeds the protocol and routes its events to the
:class:`H2UpstreamStream` of each flow. Writes go out one writer at a time.

The pool (:mod:`kernel.io.upstream`) keeps usable connections per (origin,
TLS target) and opens another when every one is out of streams. After the
upstream's GOAWAY a connection takes no new streams and is closed once its
last stream ends; streams it never processed come back as
``StreamReset(REFUSED_STREAM)``, which the relay retries on a fresh
connection (RFC 9113 §8.7: they were not processed, so this is safe).

Backpressure: response DATA is acknowledged only when the relay took it;
request bodies are sent within the upstream's windows
(:func:`kernel.io.h2flow.send_flow_controlled`).

May import: stdlib, trio, sdk, kernel.protocol, kernel.io.h2flow, kernel.io.sockio,
kernel.io.tlsstream.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from kernel.io import sockio
from kernel.io.h2flow import WindowWaiter, send_flow_controlled, start_write
from kernel.io.sockio import FastIO
from kernel.io.tlsstream import TLSStream
from kernel.protocol import h2_common as ev
from kernel.protocol.events import Data, EndOfMessage, Fields, InformationalResponse, RequestHead
from kernel.protocol.h2_client import H2Client
from sdk import Origin, RemoteProtocolError

__all__ = ["H2Upstream", "H2UpstreamStream", "Refused"]

log = logging.getLogger("kernel.h2upstream")

_CANCEL = 0x8
_REFUSED_STREAM = 0x7


class Refused(Exception):
    """The upstream did not process the stream (GOAWAY or REFUSED_STREAM): safe to retry."""


class H2UpstreamStream:
    """One request on an :class:`H2Upstream`: what the relay reads and writes."""

    __slots__ = ("_ready", "answered", "conn", "done", "events", "stream_id", "window")

    def __init__(self, conn: H2Upstream, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.events: collections.deque[Any] = collections.deque()
        self._ready = trio.Event()
        self.window = WindowWaiter()
        #: The response ended (or the stream was reset): nothing more will come.
        self.done = False
        #: The final response head arrived (it may be waiting in ``events``).
        self.answered = False

    def push(self, event: Any) -> None:
        self.events.append(event)
        self._ready.set()
        if isinstance(event, ev.StreamResponse):
            self.answered = True
            if event.end_stream:
                self.window.close()  # answered in full: the rest of a body is not wanted
        elif isinstance(event, ev.StreamReset | ev.StreamEnd):
            # A reset ends the stream; an ended response ends what the
            # upstream wants of the request (RFC 9113 §8.1: an early answer).
            self.window.close()

    async def _next(self, timeout: float, before_wait: Callable[[], Awaitable[None]]) -> Any:
        if not self.events:
            await before_wait()
            with trio.fail_after(timeout):
                while not self.events:
                    self._ready = trio.Event()
                    await self._ready.wait()
        return self.events.popleft()

    # -- the request ------------------------------------------------------------
    async def send_body(self, data: bytes) -> None:
        if not await send_flow_controlled(
            self.conn.proto, self.stream_id, data, self.conn.write_out, self.window
        ):
            raise trio.BrokenResourceError("upstream stream was reset")

    async def end(self, trailers: Fields | None) -> None:
        self.conn.proto.send_end(self.stream_id, trailers)
        await self.conn.write_out()

    # -- the response -----------------------------------------------------------
    async def response_head(
        self,
        timeout: float,
        interim: Callable[[InformationalResponse], Awaitable[None]] | None = None,
    ) -> ev.StreamResponse:
        """Wait for the final response head; raises on reset. Each 1xx before
        it goes to ``interim`` (skipped without one)."""

        async def nothing() -> None:
            return None

        while True:
            event = await self._next(timeout, nothing)
            if isinstance(event, ev.StreamResponse):
                if event.end_stream:
                    self.done = True
                    self.events.append(EndOfMessage([]))
                return event
            if isinstance(event, ev.StreamInformational):
                if interim is not None:
                    info = InformationalResponse(event.status, event.fields, http_version=b"2")
                    await interim(info)
                continue
            if isinstance(event, ev.StreamReset):
                self.done = True
                if event.error_code == _REFUSED_STREAM:
                    raise Refused(event.reason)
                raise RemoteProtocolError(f"upstream reset the stream: {event.reason}")

    async def next_body_event(
        self, timeout: float, before_wait: Callable[[], Awaitable[None]]
    ) -> Data | EndOfMessage:
        event = await self._next(timeout, before_wait)
        if isinstance(event, EndOfMessage):
            return event
        if isinstance(event, ev.StreamData):
            self.conn.proto.ack_data(self.stream_id, event.flow_length)
            # The WINDOW_UPDATE must go out now: the upstream may be waiting
            # for it, and then the reader (which writes after each read) idles.
            self.conn.kick()
            return Data(event.data)
        if isinstance(event, ev.StreamEnd):
            self.done = True
            return EndOfMessage(list(event.trailers))
        if isinstance(event, ev.StreamReset):
            self.done = True
            raise RemoteProtocolError(f"upstream reset the stream: {event.reason}")
        raise RemoteProtocolError(f"unexpected {event!r} in upstream body")

    def close_nowait(self) -> None:
        """The flow is over: cancel the stream if either side did not end (a
        response cut short, or a request body left unsent after an early
        answer, which would otherwise hold the stream open upstream)."""
        self.done = True
        if self.conn.proto.knows(self.stream_id):
            self.conn.proto.reset(self.stream_id, _CANCEL)
            self.conn.kick()
        self.conn.forget(self.stream_id)


class H2Upstream:
    """One HTTP/2 connection to an upstream, shared by many flows."""

    def __init__(
        self,
        stream: trio.SocketStream | TLSStream,
        origin: Origin,
        key: object,
        limits: ev.H2Limits,
    ) -> None:
        self.stream = stream
        #: Reads and writes: the socket's own calls (h2c), or the TLS stream's.
        self.io: FastIO = sockio.fast_io(stream)
        self.origin = origin
        self.key = key
        self.proto = H2Client(limits)
        self.streams: dict[int, H2UpstreamStream] = {}
        self.closed = False
        self.idle_since = 0.0
        self._write_lock = trio.Lock()
        self._kick = trio.Event()
        self.socket = (
            stream.socket
            if isinstance(stream, trio.SocketStream)
            else stream.transport_stream.socket
        )

    @property
    def available(self) -> bool:
        """May a new stream be opened now?"""
        return not self.closed and self.proto.available_streams > 0

    async def start(self, nursery: trio.Nursery) -> None:
        self.proto.initiate()
        await self.write_out()
        nursery.start_soon(self._read_loop)
        nursery.start_soon(self._writer)

    async def open(
        self, head: RequestHead, scheme: bytes, authority: bytes, end_stream: bool
    ) -> H2UpstreamStream:
        sid = self.proto.send_request(head, scheme, authority, end_stream)
        s = H2UpstreamStream(self, sid)
        self.streams[sid] = s
        await self.write_out()
        return s

    def forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if not self.streams:
            self.idle_since = trio.current_time()
            if not self.proto.is_usable:
                self.close_nowait()

    def kick(self) -> None:
        """Something was queued outside a task that can await (a reset in cleanup)."""
        self._kick.set()

    async def write_out(self) -> None:
        lock = self._write_lock
        if not await start_write(self.proto, lock):
            return
        try:
            data = self.proto.data_to_send()
            if data and not self.closed:
                await self.io.send(data)
        finally:
            lock.release()

    async def _writer(self) -> None:
        while not self.closed:
            await self._kick.wait()
            self._kick = trio.Event()
            try:
                await self.write_out()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.close_nowait()
            except Exception:
                log.exception("HTTP/2 upstream %s failed", self.origin)
                self.close_nowait()

    async def _read_loop(self) -> None:
        try:
            while not self.closed:
                # One yield per read: the read itself does not yield when
                # bytes are there (see kernel/io/sockio.py).
                await trio.lowlevel.checkpoint()
                try:
                    data = await self.io.receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                self._handle(self.proto.receive_data(data, trio.current_time()))
                if not data or self.proto.ended:
                    break
                await self.write_out()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # These tasks run in the app's root nursery: a bug here must end
            # this connection (its flows get 502), never the process.
            log.exception("HTTP/2 upstream %s failed", self.origin)
        finally:
            self.close_nowait()

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, ev.WindowOpen):
                targets = self.streams.values() if event.stream_id == 0 else (
                    [s] if (s := self.streams.get(event.stream_id)) else []
                )  # fmt: skip
                for s in targets:
                    s.window.wake()
            elif isinstance(event, ev.ConnectionEnding):
                if not event.remote or event.error_code:
                    log.info("HTTP/2 upstream %s ending: %s", self.origin, event.reason)
            elif (s := self.streams.get(getattr(event, "stream_id", -1))) is not None:
                s.push(event)
            elif isinstance(event, ev.StreamData):
                self.proto.ack_data(event.stream_id, event.flow_length)

    def close_nowait(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._kick.set()
        for s in list(self.streams.values()):
            s.push(ev.StreamReset(s.stream_id, _CANCEL, remote=True, reason="connection closed"))
        self.socket.close()
