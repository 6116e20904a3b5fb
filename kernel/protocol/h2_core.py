"""The receiving half both HTTP/2 sides share: h2 behind the frame guard.

h2's ``H2Connection`` does the HTTP/2 state machines, HPACK and flow
control. :class:`H2Core` feeds it only whole frames that passed
:class:`.FrameGuard`, turns h2's events into ours (:mod:`.h2_common`), and
keeps a small :class:`Stream` record per stream for what h2 does not know.
Two things h2 would get wrong for a proxy are done here instead:

- DATA is checked against ``content-length`` *before* h2 sees it: h2 makes
  a mismatch a connection error, we reset just that stream.
- GOAWAY never reaches h2: h2 treats any GOAWAY, sent or received, as the end
  of the connection (no frame may follow), which would forbid finishing the
  streams a graceful GOAWAY lets finish. Ours are written with hyperframe.

What h2 still decides alone is a connection error (GOAWAY with h2's code):
HPACK errors, flow-control violations, frames in the wrong state, and a
``content-length`` that is not a number (h2 parses it before we see the head).

The sending half is :class:`.H2Endpoint`; the sides are :mod:`.h2_server`
and :mod:`.h2_client`.

May import: stdlib, h2, hyperframe, kernel.protocol.events,
kernel.protocol.h2_common, .h2_fields, .h2_guard, .hpack_encoder, .hpack_decoder,
sdk._errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import h2.events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

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
from kernel.protocol.h2_guard import (
    DATA,
    GOAWAY,
    RST_STREAM,
    Error,
    FrameGuard,
    data_size,
    frame_header,
    parse_goaway,
)
from kernel.protocol.hpack_decoder import Decoder
from kernel.protocol.hpack_encoder import Encoder
from sdk._errors import RemoteProtocolError

__all__ = ["H2Core", "Stream", "to_fields"]

_PROTOCOL = int(ErrorCodes.PROTOCOL_ERROR)
_CANCEL = int(ErrorCodes.CANCEL)


def to_fields(headers: Iterable[tuple[bytes, bytes]]) -> Fields:
    """h2's decoded headers (bytes, since ``header_encoding=None``) as Fields."""
    return [(name, value) for name, value in headers]


class Stream:
    """Our view of one stream; h2 keeps the protocol state."""

    __slots__ = (
        "blocked", "expected", "got_head", "h2_expected", "head_sent", "method", "no_body",
        "received", "recv_done", "refused", "send_done", "send_expected", "sent", "trailers",
        "unacked",
    )  # fmt: skip

    def __init__(self, method: bytes = b"", *, head_sent: bool, got_head: bool) -> None:
        self.method = method
        self.head_sent = head_sent  # our head went out (server: the response)
        self.got_head = got_head  # the peer's head came in (client: a final response)
        self.expected: int | None = None  # body length we hold the peer to
        self.h2_expected: int | None = None  # the one h2 holds it to
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

    def __init__(self, limits: H2Limits | None = None) -> None:
        self.limits = lim = H2Limits() if limits is None else limits
        # We validate received fields ourselves (h2_fields), per stream: h2's
        # validation turns every malformed request into a connection error.
        # What we send, h2_fields has checked and normalised already (and
        # marks credentials never-indexed): h2 would only repeat it.
        config = H2Configuration(
            client_side=self._client,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._conn = H2Connection(config)
        # hpack's encoder scans its table linearly and logs every field; ours
        # makes the same choices by dict lookups (hpack_encoder). Its decoder
        # too logs every field; ours reads a block in one pass (hpack_decoder).
        self._conn.encoder = Encoder()  # type: ignore[assignment]
        self._conn.decoder = Decoder()  # type: ignore[assignment]
        # Over the advertised size a request gets 431 (h2_fields); twice that
        # and HPACK decoding stops (a connection error: the table is lost).
        self._conn.decoder.max_header_list_size = 2 * lim.max_header_list_size
        self._guard = FrameGuard(lim, server=not self._client)
        self._streams: dict[int, Stream] = {}
        self._inbuf = bytearray()
        self._out = bytearray()
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
            self._end(0, "peer closed the connection", remote=True, stream_code=_CANCEL)
        self._emit_windows()
        self._drain()
        return events

    # -- shared helpers --------------------------------------------------------------
    def _drain(self) -> None:
        self._out += self._conn.data_to_send()

    def _forget(self, stream_id: int) -> None:
        st = self._streams.pop(stream_id, None)
        if st is not None and st.unacked:
            self._ack(stream_id, st.unacked)

    def _ack(self, stream_id: int, n: int) -> None:
        if n > 0:
            try:
                self._conn.acknowledge_received_data(n, stream_id)
            except (ProtocolError, ValueError):
                pass

    def _send_goaway(self, code: int, last: int, debug: bytes) -> None:
        self._drain()
        frame = GoAwayFrame(0, last_stream_id=last, error_code=code, additional_data=debug)
        self._out += frame.serialize()

    def _reset_stream(self, stream_id: int, code: int, reason: str) -> None:
        """We reset a stream the peer broke; the shell hears of it."""
        try:
            self._conn.reset_stream(stream_id, code)
        except ProtocolError:
            pass
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
        buf, guard, now = self._inbuf, self._guard, self._now
        pos = seg = 0  # buf[seg:pos] passed the guard and is not yet fed to h2
        if guard.preface_left:
            skipped = guard.skip_preface(buf)
            if skipped is None:
                self._fatal(_PROTOCOL, "not an HTTP/2 connection preface")
                return
            pos = skipped
        err: Error | None = None
        while len(buf) - pos >= 9:
            length, ftype, flags, sid = frame_header(buf, pos)
            if length > self._conn.max_inbound_frame_size:
                err = int(ErrorCodes.FRAME_SIZE_ERROR), "frame larger than SETTINGS_MAX_FRAME_SIZE"
                break
            end = pos + 9 + length
            if end > len(buf):
                break
            err = guard.check(ftype, flags, sid, length, now)
            if err is None and ftype in (DATA, RST_STREAM, GOAWAY):
                self._feed(seg, pos)  # these need h2's state (and ours) up to date
                seg = pos
                if self._ended:
                    return
                err = self._check_stateful(ftype, flags, sid, buf[pos + 9 : end])
                if err is None and ftype == GOAWAY:
                    seg = end  # handled: h2 never sees a GOAWAY
            if err is not None:
                break
            pos = end
        self._feed(seg, pos)
        if err is not None and not self._ended:
            self._fatal(*err)
        if not self._ended:
            del buf[:pos]

    def _check_stateful(self, ftype: int, flags: int, sid: int, payload: bytearray) -> Error | None:
        if ftype == GOAWAY:
            goaway = parse_goaway(payload)
            if sid or goaway is None:
                return _PROTOCOL, "malformed GOAWAY"
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
                self._reset_stream(sid, _PROTOCOL, "DATA before the response head")
            elif any(
                n is not None and (total > n or (end_stream and total != n))
                for n in (st.expected, st.h2_expected)
            ):
                self._reset_stream(sid, _PROTOCOL, "body length differs from content-length")
        return err

    def _feed(self, start: int, end: int) -> None:
        if end <= start or self._ended:
            return
        try:
            events = self._conn.receive_data(self._inbuf[start:end])
        except ProtocolError as e:  # h2 queued its GOAWAY
            self._end(int(e.error_code), f"h2: {e}", remote=False, stream_code=int(e.error_code))
            return
        for event in events:
            self._dispatch(event)

    # -- h2's events -----------------------------------------------------------------
    def _dispatch(self, event: ev.Event) -> None:
        if self._ended:
            return
        if isinstance(event, ev.DataReceived):
            self._on_data(event.stream_id, event.data, event.flow_controlled_length)
        elif isinstance(event, ev.StreamEnded):
            self._on_stream_ended(event.stream_id)
        elif isinstance(event, ev.TrailersReceived):
            self._on_trailers(event.stream_id, to_fields(event.headers))
        elif isinstance(event, ev.StreamReset):
            if event.stream_id in self._streams:
                code, remote = int(event.error_code), event.remote_reset
                reason = "reset by the peer" if remote else "reset by h2"
                self._events.append(StreamReset(event.stream_id, code, remote, reason))
                self._forget(event.stream_id)
        elif isinstance(event, ev.WindowUpdated):
            if event.stream_id:
                self._window_streams.add(event.stream_id)
            else:
                self._window_all = True
        elif isinstance(event, ev.RemoteSettingsChanged):
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._window_all = True
        else:
            self._dispatch_side(event)

    def _dispatch_side(self, event: ev.Event) -> None:
        """Heads: RequestReceived (server), ResponseReceived and 1xx (client)."""

    def _on_goaway(self, last: int, code: int, debug: bytes) -> None:
        self._goaway_received = True
        try:
            name = ErrorCodes(code).name
        except ValueError:
            name = hex(code)
        reason = f"peer sent GOAWAY {name} {debug[:200].decode('ascii', 'replace')}".strip()
        self._events.append(ConnectionEnding(code, reason, last, remote=True))

    def _on_data(self, stream_id: int, data: bytes, flow: int) -> None:
        st = self._streams.get(stream_id)
        if st is not None:
            st.received += len(data)
        if st is None or st.refused or not data:
            self._ack(stream_id, flow)  # nobody downstream of us will
            return
        st.unacked += flow
        self._events.append(StreamData(stream_id, data, flow))

    def _on_trailers(self, stream_id: int, fields: Fields) -> None:
        st = self._streams.get(stream_id)
        if st is None or st.refused:
            return
        try:
            st.trailers = check_trailers(fields, max_list_size=self.limits.max_header_list_size)
        except RemoteProtocolError as e:
            self._reset_stream(stream_id, _PROTOCOL, e.message)

    def _on_stream_ended(self, stream_id: int) -> None:
        st = self._streams.get(stream_id)
        if st is None or st.recv_done:
            return  # reset, or the head already ended it
        st.recv_done = True
        if not st.refused:
            if any(n is not None and st.received != n for n in (st.expected, st.h2_expected)):
                self._reset_stream(stream_id, _PROTOCOL, "body shorter than content-length")
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
