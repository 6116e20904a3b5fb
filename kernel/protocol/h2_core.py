"""The receiving half both HTTP/2 sides share: the frame walk, guard and machine.

:class:`H2Core` cuts received bytes into frames, asks :class:`.FrameGuard`
about each (sizes, sequencing, flood budgets), hands the ones that passed to
:class:`.Machine` (stream states, flow control, HPACK), and turns what the
machine reports into our events (:mod:`.h2_common`), keeping a small
:class:`Stream` record per stream for what the machine does not know:
``content-length``, trailers, whether the shell has the body. Two things are
done here, not in the machine:

- DATA is checked against ``content-length`` *before* the machine counts it:
  a mismatch resets just that stream.
- GOAWAY: the peer's lets the streams it covers finish; ours is written here.

A connection error (GOAWAY with its code, then the end) comes from the guard,
the machine (HPACK errors, flow-control violations, frames in the wrong
state) or a malformed GOAWAY.

The sending half is :class:`.H2Endpoint`; the sides are :mod:`.h2_server`
and :mod:`.h2_client`.

May import: stdlib, kernel.protocol.events, kernel.protocol.h2_common, .h2_fields,
.h2_frames, .h2_guard, .h2_machine, .h2_reference, sdk._errors.
"""

from __future__ import annotations

from typing import ClassVar

from kernel.protocol.events import Fields
from kernel.protocol.h2_common import (
    ConnectionEnding,
    H2Event,
    H2Limits,
    StreamData,
    StreamEnd,
    StreamReset,
    WindowOpen,
)
from kernel.protocol.h2_fields import check_trailers
from kernel.protocol.h2_frames import (
    CANCEL,
    DATA,
    FRAME_SIZE_ERROR,
    GOAWAY,
    PROTOCOL_ERROR,
    RST_STREAM,
    Data,
    Ended,
    H2Error,
    Head,
    Reset,
    SettingsChanged,
    Trailers,
    Window,
    error_name,
    frame,
)
from kernel.protocol.h2_frames import Event as MachineEvent
from kernel.protocol.h2_guard import (
    Error,
    FrameGuard,
    data_size,
    frame_header,
    parse_goaway,
)
from kernel.protocol.h2_machine import Machine
from kernel.protocol.h2_reference import H2Engine
from sdk._errors import RemoteProtocolError

__all__ = ["ENGINES", "H2Core", "Stream"]

#: The HTTP/2 engines by their config name (``[server.h2] engine``).
ENGINES: dict[str, type[Machine] | type[H2Engine]] = {"trellis": Machine, "h2": H2Engine}


class Stream:
    """Our view of one stream; the engine keeps the protocol state."""

    __slots__ = (
        "blocked", "expected", "got_head", "head_sent", "method", "no_body",
        "received", "recv_done", "refused", "send_done", "send_expected", "sent", "trailers",
        "unacked",
    )  # fmt: skip

    def __init__(self, method: bytes = b"", *, head_sent: bool, got_head: bool) -> None:
        self.method = method
        self.head_sent = head_sent  # our head went out (server: the response)
        self.got_head = got_head  # the peer's head came in (client: a final response)
        self.expected: int | None = None  # body length we hold the peer to
        self.received = 0
        self.unacked = 0  # flow-controlled bytes handed out in StreamData, not acked yet
        self.recv_done = False
        self.send_done = False
        self.refused = False  # server: answered by the shell, body discarded
        self.no_body = False  # what we send may have no body (HEAD, 204, 304)
        self.send_expected: int | None = None
        self.sent = 0
        self.blocked = False  # waits for a WindowOpen
        self.trailers: Fields = []


class H2Core:
    """One HTTP/2 connection's receiving machinery, either side."""

    _client: ClassVar[bool] = False

    #: The frame engine when the constructor names none: "trellis" (ours,
    #: :class:`.Machine`) or "h2" (the library, :class:`.H2Engine`).
    engine: ClassVar[str] = "trellis"

    def __init__(self, limits: H2Limits | None = None, *, engine: str | None = None) -> None:
        self.limits = lim = H2Limits() if limits is None else limits
        # Fields are validated per stream (h2_fields), never by the machine:
        # a malformed request is that stream's error, not the connection's.
        self._conn = ENGINES[engine or self.engine](self._client)
        # Over the advertised size a request gets 431 (h2_fields); twice that
        # and HPACK decoding stops (a connection error: the table is lost).
        self._conn.decoder.max_header_list_size = 2 * lim.max_header_list_size
        self._guard = FrameGuard(lim, server=not self._client)
        self._streams: dict[int, Stream] = {}
        self._inbuf = bytearray()
        self._out = self._conn.out  # the machine writes its frames here, we ours
        self._now = 0.0
        self._events: list[H2Event] = []
        self._window_all = False
        self._window_streams: set[int] = set()
        self._ended = False  # after our ConnectionEnding, or the peer's EOF
        self._goaway_received = False
        self._goaway_last: int | None = None  # our graceful GOAWAY's last stream id

    def receive_data(self, data: bytes, now: float) -> list[H2Event]:
        """Events for bytes from the peer (``b""``: it closed); ``now`` in seconds."""
        if self._ended:
            return []
        self._now = now
        events: list[H2Event] = []
        self._events = events
        if data:
            self._inbuf += data
            self._scan()
        else:
            self._end(0, "peer closed the connection", remote=True, stream_code=CANCEL)
        self._emit_windows()
        return events

    # -- shared helpers --------------------------------------------------------------
    def _forget(self, stream_id: int) -> None:
        st = self._streams.pop(stream_id, None)
        if st is not None and st.unacked:
            self._conn.acknowledge(stream_id, st.unacked)

    def _send_goaway(self, code: int, last: int, debug: bytes) -> None:
        payload = last.to_bytes(4, "big") + code.to_bytes(4, "big") + debug
        self._out += frame(GOAWAY, 0, 0, payload)

    def _reset_stream(self, stream_id: int, code: int, reason: str) -> None:
        """We reset a stream the peer broke; the shell hears of it."""
        self._conn.reset_stream(stream_id, code)
        self._events.append(StreamReset(stream_id, code, remote=False, reason=reason))
        self._forget(stream_id)

    def _fatal(self, code: int, reason: str) -> None:
        self._send_goaway(code, self._conn.highest_inbound_stream_id, reason.encode("ascii"))
        self._end(code, reason, remote=False, stream_code=code)

    def _end(self, code: int, reason: str, *, remote: bool, stream_code: int) -> None:
        for sid in self._streams:
            self._events.append(StreamReset(sid, stream_code, remote=remote, reason=reason))
        self._streams.clear()
        conn = self._conn
        last = conn.highest_outbound_stream_id if self._client else conn.highest_inbound_stream_id
        self._events.append(ConnectionEnding(code, reason, last, remote=remote))
        self._ended = True
        self._inbuf.clear()

    # -- the frame walk --------------------------------------------------------------
    def _scan(self) -> None:
        buf, guard, now, conn = self._inbuf, self._guard, self._now, self._conn
        pos = 0
        if guard.preface_left:
            skipped = guard.skip_preface(buf)
            if skipped is None:
                self._fatal(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            pos = skipped
        err: Error | None = None
        events: list[MachineEvent] = []
        while len(buf) - pos >= 9:
            length, ftype, flags, sid = frame_header(buf, pos)
            if length > conn.max_inbound_frame_size:
                err = FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE"
                break
            end = pos + 9 + length
            if end > len(buf):
                break
            err = guard.check(ftype, flags, sid, length, now)
            if err is not None:
                break
            payload = buf[pos + 9 : end]
            pos = end
            if ftype in (DATA, RST_STREAM, GOAWAY):
                err = self._check_stateful(ftype, flags, sid, payload)
                if err is not None:
                    break
                if ftype == GOAWAY:
                    continue  # handled: the machine never sees a GOAWAY
            try:
                conn.receive(ftype, flags, sid, payload, events)
            except H2Error as e:
                err = e.code, e.reason
                break
            if events:
                for event in events:
                    self._dispatch(event)
                events.clear()
                if self._ended:
                    return
        if err is not None and not self._ended:
            self._fatal(*err)
        if not self._ended:
            del buf[:pos]

    def _check_stateful(self, ftype: int, flags: int, sid: int, payload: bytearray) -> Error | None:
        if ftype == GOAWAY:
            goaway = parse_goaway(payload)
            if sid or goaway is None:
                return PROTOCOL_ERROR, "malformed GOAWAY"
            self._on_goaway(*goaway)
            return None
        st = self._streams.get(sid)
        if ftype == RST_STREAM:
            unfinished = not self._client and st is not None and not st.send_done
            return self._guard.check_rst(unfinished, self._now)
        size, end_stream = data_size(flags, payload)
        err = self._guard.check_data(size, end_stream, self._now)
        if err is None and st is not None:
            total = st.received + size
            if not st.got_head:
                self._reset_stream(sid, PROTOCOL_ERROR, "DATA before the response head")
            elif (n := st.expected) is not None and (total > n or (end_stream and total != n)):
                self._reset_stream(sid, PROTOCOL_ERROR, "body length differs from content-length")
        return err

    # -- the machine's events --------------------------------------------------------
    def _dispatch(self, event: MachineEvent) -> None:
        if self._ended:
            return
        if type(event) is Data:
            self._on_data(event.stream_id, event.data, event.flow)
        elif type(event) is Ended:
            self._on_stream_ended(event.stream_id)
        elif type(event) is Head:
            self._on_head(event)
        elif type(event) is Trailers:
            self._on_trailers(event.stream_id, event.fields)
        elif type(event) is Reset:
            if event.stream_id in self._streams:
                reason = "reset by the peer" if event.remote else "stream error"
                self._events.append(StreamReset(event.stream_id, event.code, event.remote, reason))
                self._forget(event.stream_id)
        elif type(event) is Window:
            if event.stream_id:
                self._window_streams.add(event.stream_id)
            else:
                self._window_all = True
        elif type(event) is SettingsChanged and event.windows:
            self._window_all = True

    def _on_head(self, event: Head) -> None:
        """A request (server) or a response, final or 1xx (client)."""

    def _on_goaway(self, last: int, code: int, debug: bytes) -> None:
        self._goaway_received = True
        reason = (
            f"peer sent GOAWAY {error_name(code)} {debug[:200].decode('ascii', 'replace')}".strip()
        )
        self._events.append(ConnectionEnding(code, reason, last, remote=True))

    def _on_data(self, stream_id: int, data: bytes, flow: int) -> None:
        st = self._streams.get(stream_id)
        if st is not None:
            st.received += len(data)
        if st is None or st.refused or not data:
            self._conn.acknowledge(stream_id, flow)  # nobody downstream of us will
            return
        st.unacked += flow
        self._events.append(StreamData(stream_id, data, flow))

    def _on_trailers(self, stream_id: int, fields: Fields) -> None:
        st = self._streams.get(stream_id)
        if st is None or st.refused:
            return
        try:
            st.trailers = check_trailers(
                fields, max_list_size=self.limits.max_header_list_size, drop=self._client
            )
        except RemoteProtocolError as e:
            self._reset_stream(stream_id, PROTOCOL_ERROR, e.message)

    def _on_stream_ended(self, stream_id: int) -> None:
        st = self._streams.get(stream_id)
        if st is None or st.recv_done:
            return  # reset, or the head already ended it
        st.recv_done = True
        if not st.refused:
            if st.expected is not None and st.received != st.expected:
                self._reset_stream(stream_id, PROTOCOL_ERROR, "body shorter than content-length")
                return
            self._events.append(StreamEnd(stream_id, st.trailers))
        if st.send_done:
            self._forget(stream_id)

    def _emit_windows(self) -> None:
        if self._window_all:
            blocked = [st for st in self._streams.values() if st.blocked]
            for st in blocked:
                st.blocked = False
            if blocked:
                self._events.append(WindowOpen(0))
        else:
            for sid in sorted(self._window_streams):
                stream = self._streams.get(sid)
                if stream is not None and stream.blocked:
                    stream.blocked = False
                    self._events.append(WindowOpen(sid))
        self._window_all = False
        self._window_streams.clear()
