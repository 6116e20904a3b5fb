"""One downstream HTTP/2 connection: each stream is a flow.

The connection task reads frames, feeds them to the sans-IO
:class:`kernel.protocol.h2_server.H2Server`, and starts one task per request
stream that runs :func:`kernel.io.exchange.run_exchange` with an
:class:`H2Stream` as its :class:`~kernel.io.downstream.Downstream`, exactly as
an HTTP/1.1 connection does with itself. Plugins cannot tell the difference.

Bytes go out through one writer at a time (``_write_lock``); whoever holds it
sends everything the protocol has queued, after a yield that lets the other
streams queue theirs (:func:`kernel.io.h2flow.start_write`). The reader
also waits for its own writes (SETTINGS and PING acknowledgements,
WINDOW_UPDATEs), so a client that floods control frames without reading
stops being read: its memory here stays bounded.

Backpressure: a stream's request DATA is acknowledged (WINDOW_UPDATE) only
once the exchange took it, so a client can have at most one window in flight
per stream; a response is handed to the protocol only as far as the client's
window allows (:meth:`H2Stream.flush` waits for ``WindowOpen``).

Work is bounded: at most ``max_concurrent_streams`` exchange tasks run per
connection whose response is not complete, counted until each task has
ended (a stream the client reset still counts while its task unwinds), so
rapid reset cannot pile up work; the protocol layer sends GOAWAY when resets
come too fast. A task whose whole response went out no longer counts: the
client may open its next stream at once (RFC 9113 §5.1.2 counts open
streams), and such a task only runs its flow-done hooks and ends. A reset
stream cancels its task, which closes its upstream connection.

The request framing is HTTP/1.1's for the exchange: a request that has a body
but no ``content-length`` is marked ``transfer-encoding: chunked`` (a body of
unknown length, as the relay understands it), and trailers are only passed on
for such bodies, since an HTTP/1.1 message framed by length cannot carry them.

Ending: without streams the connection is idle, and the keep-alive timeout
or a drain ends it with GOAWAY(NO_ERROR). A drain that finds streams in
flight sends the GOAWAY at once (no new streams) and keeps reading, since the
streams still need the client's WINDOW_UPDATEs, until the last one finished;
so does the client's own GOAWAY(NO_ERROR), and a reload that removed the
connection's listener: its next stream is refused (REFUSED_STREAM, which a
client may retry) and GOAWAY follows. During a shutdown's ``shutdown_delay_s``
(the listeners still serve) a connection that reads anything sends
GOAWAY(2**31-1) first, which refuses nothing but tells the client to open
its next streams elsewhere; the drain's GOAWAY follows later.
After our GOAWAY the connection half-closes and briefly reads and drops what
the client still sends, so that the GOAWAY is not destroyed by a reset.

May import: stdlib, trio, sdk, kernel.protocol, kernel.generation, kernel.io.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import attrs
import trio

from kernel.config.model import H2Section
from kernel.generation import ListenerRuntime
from kernel.io import sockio
from kernel.io.exchange import ClientGone, Refusal, run_exchange
from kernel.io.h2flow import start_write
from kernel.io.h2stream import H2Stream
from kernel.io.sockio import FastIO
from kernel.io.state import ServerState
from kernel.io.tlsstream import TLSStream
from kernel.io.tunnel import linger
from kernel.protocol import h2_common as ev
from kernel.protocol.errorpage import error_fields
from kernel.protocol.events import Data, EndOfMessage, RequestHead
from kernel.protocol.h2_server import H2Server
from kernel.protocol.http1 import Limits
from sdk import ClientInfo, RemoteProtocolError

__all__ = ["H2Connection", "H2Stream", "h2_limits"]

log = logging.getLogger("kernel.h2")

# RFC 9113 §7 error codes we send.
_NO_ERROR = 0x0
_INTERNAL_ERROR = 0x2
_REFUSED_STREAM = 0x7
_CANCEL = 0x8
#: The last stream id of a first GOAWAY: every stream the client sent may still run.
_ALL_STREAMS = 2**31 - 1


@functools.lru_cache(maxsize=64)
def h2_limits(section: H2Section, http1: Limits) -> ev.H2Limits:
    """The protocol limits of a listener's ``[server.h2]`` settings, and of
    its HTTP/1.1 limits those that bound a request's line and field count."""
    return ev.H2Limits(
        max_request_line=http1.max_request_line,
        max_header_count=http1.max_header_count,
        max_concurrent_streams=section.max_concurrent_streams,
        max_header_list_size=section.max_header_list_size,
        header_table_size=section.header_table_size,
        initial_window_size=section.initial_window_size,
        connection_window=section.connection_window,
        max_frame_size=section.max_frame_size,
        reset_budget=section.reset_budget,
        control_budget=section.control_budget,
        empty_data_budget=section.empty_data_budget,
        budget_window_s=section.budget_window_s,
        max_continuation_frames=section.max_continuation_frames,
    )


class H2Connection:
    """The server side of one HTTP/2 client connection."""

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
        self.limits = h2_limits(listener.h2, listener.limits)
        self.proto = H2Server(self.limits, engine=listener.h2.engine)
        self.streams: dict[int, H2Stream] = {}
        self._write_lock = trio.Lock()
        #: Reads and writes: the socket's own calls (h2c), or the TLS stream's.
        self.io: FastIO = sockio.fast_io(stream)
        self.io.limit_writes(listener.send_timeout_s)
        #: Exchange tasks whose response is not complete: what max_concurrent_streams
        #: bounds (H2Stream._finish takes a task off; a reset one counts till it ends).
        self.unfinished = 0
        self._closing = False
        self._broken = False
        self._read_scope = trio.CancelScope()
        #: No stream open: the keep-alive timer runs.
        self._idle = False
        #: End once the streams in flight finished: the keep-alive timeout
        #: passed, or the client said GOAWAY(NO_ERROR).
        self._ending = False
        #: We sent a GOAWAY (graceful or not): linger before closing.
        self._goaway_sent = False
        #: We sent the GOAWAY(2**31-1) of a delayed shutdown: nothing refused yet.
        self._warned = False
        #: The generation the last stream started in (a reload may remove our listener).
        self._generation = state.generation

    async def write_out(self, sender: H2Stream | None = None) -> None:
        """Send whatever the protocol has queued (one writer at a time).

        The bytes belong to every stream, so a stream's task writing them
        (``sender``) is not cancelled by its own stream's reset until they are
        out: a frame cut in half would break the connection for all streams.
        """
        lock = self._write_lock
        if not await start_write(self.proto, lock):
            return
        try:
            data = self.proto.data_to_send()
            if not data or self._broken:
                return
            if sender is not None:
                sender.sending = True
            try:
                # No yield while the socket takes the bytes: the lock is
                # then never held across a yield, and other streams'
                # writers do not queue up behind it.
                await self.io.send(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._broken = True
                raise ClientGone from exc
            except trio.Cancelled:
                self._broken = True  # a frame may be cut short: write nothing more
                raise
            finally:
                if sender is not None:
                    sender.sending = False
                    if sender.reset:
                        sender.scope.cancel()
        finally:
            lock.release()

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
        try:
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
            if self._goaway_sent and not self._broken:
                await linger(self.stream)
        finally:
            self.state.timers.disarm(self)
            if not (self._goaway_sent or self._broken or self.proto.ended):
                # Cancelled (shutdown past its grace, or a drain that cut us off
                # before the reader could say it): still say goodbye, briefly.
                self._goaway_sent = True
                self.proto.goaway(_NO_ERROR)
                with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                    try:
                        await self.write_out()
                    except ClientGone:
                        pass

    # -- idle and drain ---------------------------------------------------------
    def _become_idle(self) -> None:
        """The last stream finished (or none was opened yet): the keep-alive clock runs."""
        if not self._idle:
            self._idle = True
            self.state.timers.arm(self, self.listener.keepalive_timeout_s, self._on_idle_timeout)

    def _on_idle_timeout(self) -> None:
        if self._idle:
            self._ending = True
            self._read_scope.cancel()

    def _peer(self) -> tuple[str, int]:
        return self.client.address, self.client.port

    async def _read_loop(self, data: bytes) -> None:
        proto = self.proto
        proto.initiate()
        await self.write_out()
        state = self.state
        while True:
            if data:
                self._handle(proto.receive_data(data, trio.current_time()))
                await self.write_out()
            if self._closing:
                return
            if state.closing or self._ending:
                # Graceful end: the streams opened so far may finish, later
                # ones are refused (the protocol layer resets them).
                if not self._goaway_sent:
                    self._goaway_sent = True
                    proto.goaway(_NO_ERROR)
                    # Shielded, briefly: a drain cancels every connection soon
                    # after it woke the idle ones.
                    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                        await self.write_out()
                if not self.streams:
                    return
            else:
                if state.draining and not self._warned:
                    # Shutdown is delayed (shutdown_delay_s): the first step of
                    # a two-step GOAWAY. No stream is refused, but the client
                    # opens its next ones on another connection.
                    self._warned = True
                    proto.goaway(_NO_ERROR, _ALL_STREAMS)
                    await self.write_out()
                if not self.streams:
                    self._become_idle()
            # Every wait for the client is woken by a drain (state.idle_scopes),
            # by the keep-alive timer, and by the last stream of a draining
            # connection finishing; then the state is looked at again.
            scope = self._read_scope = trio.CancelScope()
            state.idle_scopes.add(scope)
            try:
                with scope:
                    try:
                        data = await self._receive()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""  # a reset is an end like any other
                    if not data:
                        self._handle(proto.receive_data(b"", trio.current_time()))
                        return
            finally:
                state.idle_scopes.discard(scope)
            if scope.cancelled_caught:
                data = b""

    async def _receive(self) -> bytes:
        # One yield per read: neither sockio's nor TLSStream's read yields
        # when bytes are there, and a client that never stops sending must
        # not keep the other tasks waiting. (Before the read, so a
        # cancellation cannot lose bytes already taken from the socket.)
        await trio.lowlevel.checkpoint()
        return await self.io.receive()

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
                    # Trailers only travel with a body of unknown length (chunked).
                    trailers = [] if s.sized else list(event.trailers)
                    s.push(EndOfMessage(trailers))
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
                self._refuse(event)
            elif isinstance(event, ev.ConnectionEnding):
                log.log(
                    logging.DEBUG if event.error_code == _NO_ERROR else logging.INFO,
                    "HTTP/2 connection from %s:%d ending: %s (error %#x)",
                    self.client.address,
                    self.client.port,
                    event.reason,
                    event.error_code,
                )
                if event.remote and event.error_code == _NO_ERROR and not self.proto.ended:
                    # The client's graceful GOAWAY: it opens no more streams,
                    # and those in flight still get their responses.
                    self._ending = True
                    continue
                self._closing = True
                if not event.remote:
                    self._goaway_sent = True  # ours is in data_to_send()
                for s in self.streams.values():
                    s.on_reset()

    def _start(self, event: ev.StreamRequest) -> None:
        gen = self.state.generation
        if gen is not self._generation:  # reloaded since the last stream
            self._generation = gen
            if gen.listener_for(self.listener) is None:
                # Our listener is gone, and its chains with it: refuse the
                # stream (a client may retry it elsewhere, RFC 9113 §8.7);
                # the reader says GOAWAY next.
                self._ending = True
        if (
            self._ending
            or self.state.closing
            or self.unfinished >= self.limits.max_concurrent_streams
        ):
            # Tasks of reset streams still unwinding count too: a client
            # resetting streams cannot make us run more than the limit at once.
            self.proto.reset(event.stream_id, _REFUSED_STREAM)
            return
        head = event.head
        # (A request without a body has no trailers to worry about.)
        sized = not event.end_stream and any(n == b"content-length" for n, _ in head.headers)
        if not event.end_stream and not sized:
            # A body of unknown length: chunked, in the exchange's HTTP/1.1 terms
            # (without a framing field the exchange would see no body at all).
            head = attrs.evolve(head, headers=[*head.headers, (b"transfer-encoding", b"chunked")])
        s = H2Stream(self, event.stream_id, sized=sized)
        if event.end_stream:
            s.push(EndOfMessage([]))
        self.streams[event.stream_id] = s
        self.unfinished += 1
        if self._idle:
            self._idle = False
            self.state.timers.disarm(self)
        self._nursery.start_soon(self._run_stream, s, head)

    async def _run_stream(self, s: H2Stream, head: RequestHead) -> None:
        try:
            with s.scope:
                await run_exchange(s, head)
        except ClientGone:
            pass
        except Exception:  # a kernel bug: fail this stream, not the connection
            log.exception("HTTP/2 stream %d from %s:%d failed", s.stream_id, *self._peer())
        finally:
            if not s.finished:
                self.unfinished -= 1
            self.streams.pop(s.stream_id, None)
            if not s.finished and not s.reset:
                # The response could not be completed: cut the stream off.
                self.proto.reset(s.stream_id, _INTERNAL_ERROR)
            if self.proto.has_output():  # usually the stream's own flush sent it all
                with trio.CancelScope(shield=True):
                    try:
                        await self.write_out()
                    except ClientGone:
                        pass
            if not self.streams:
                if self._closing or self._broken:
                    self._nursery.cancel_scope.cancel()
                elif self.state.closing or self._ending:
                    self._read_scope.cancel()  # the reader says GOAWAY and ends
                else:
                    self._become_idle()

    def _refuse(self, event: ev.StreamRefused) -> None:
        """Answer a malformed request we will not forward with the kernel's
        page. It is a flow that only ``trellis_flow_done`` sees (in a task
        of its own: the reader goes on)."""
        error = RemoteProtocolError(event.reason, status_hint=event.status)
        head = event.head or RequestHead(method=b"", target=b"", headers=[], http_version=b"2")
        refusal = Refusal(self.state, self.listener, self.client, error, head)
        refusal.log(log, "HTTP/2 request")
        stream_id, status = event.stream_id, event.status
        response = refusal.flow.response
        body = response.body if response is not None and response.body else b""
        self.proto.send_response(stream_id, status, error_fields(body), end_stream=False)
        if self.proto.send_data(stream_id, body) == len(body):
            self.proto.send_end(stream_id, None)
            refusal.sent()
        else:
            self.proto.reset(stream_id, _CANCEL)
        self._nursery.start_soon(refusal.end)
