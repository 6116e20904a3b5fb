"""HTTP/2 framing, stream states and flow control (RFC 9113), sans-IO.

:class:`Machine` is the part of an HTTP/2 connection that both sides share
and that knows nothing of requests: it takes whole frames (the frame walk
and its guard are :class:`.H2Core`'s), keeps each stream's state and both
directions' flow-control windows, decodes and encodes header blocks with our
HPACK contexts, answers SETTINGS and PING, and writes frames into
:attr:`Machine.out`. What it learns comes back as the events of :mod:`.h2_frames`;
what it refuses is an :class:`.H2Error` (the caller sends GOAWAY with
its code) or a stream error it settles itself (RST_STREAM, and a
:class:`.Reset` event). What the caller asks of it that HTTP/2 forbids is a
:class:`~sdk._errors.LocalProtocolError`.

It replaces h2's ``H2Connection``, which did the same through a state
machine of enum transitions, a frame object per frame and an event object
per change: the largest single cost of an HTTP/2 request here.

Not here: the connection preface, frame lengths against SETTINGS_MAX_FRAME_SIZE,
header-block sequencing and size, flood budgets (:mod:`.h2_guard`); GOAWAY,
``content-length`` and field rules (:mod:`.h2_core`, :mod:`.h2_fields`).
Priority signals are read and ignored (RFC 9113 §5.3.2 deprecates the
scheme); server push is off (SETTINGS_ENABLE_PUSH 0) and a PUSH_PROMISE is a
connection error.

The state, and everything we send, is :class:`.Streams`' (:mod:`.h2_streams`),
which :class:`Machine` extends with what a received frame means.

May import: stdlib, hpack, kernel.protocol.h2_frames, .h2_streams.
"""

from __future__ import annotations

from hpack.exceptions import HPACKError, OversizedHeaderListError

from kernel.protocol.h2_frames import (
    ACK,
    COMPRESSION_ERROR,
    CONT,
    DATA,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    INTERNAL_ERROR,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_WINDOW,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW,
    Data,
    Ended,
    Event,
    H2Error,
    Head,
    Reset,
    SettingsChanged,
    Trailers,
    Window,
    frame,
)
from kernel.protocol.h2_streams import (
    CLOSED_MEMORY,
    ENDED,
    RESET_RECEIVED,
    SETTING,
    U32,
    Stream,
    Streams,
)

__all__ = ["CLOSED_MEMORY", "Machine"]


class Machine(Streams):
    """One HTTP/2 connection's frames and streams; ``client`` picks the side."""

    # -- receiving ---------------------------------------------------------------------
    def receive(
        self, ftype: int, flags: int, sid: int, payload: bytes | bytearray, events: list[Event]
    ) -> None:
        """One whole frame from the peer; what it means is appended to ``events``.

        Raises :class:`H2Error` when the connection must end.
        """
        if ftype == DATA:
            self._on_data(flags, sid, payload, events)
        elif ftype == HEADERS:
            if not sid:
                raise H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
            fragment = self._strip(flags, payload, priority=True, sid=sid)
            # RFC 9113 §5.3.1: a stream depending on itself is a stream
            # error, settled once its block is decoded (HPACK must see it).
            bad = bool(flags & PRIORITY_FLAG) and self._depends_on_itself(flags, payload, sid)
            if flags & END_HEADERS:
                self._on_block(sid, bytes(fragment), bool(flags & END_STREAM), events, bad)
            else:
                self._block_sid, self._block_end = sid, bool(flags & END_STREAM)
                self._block_bad = bad
                self._block = bytearray(fragment)
        elif ftype == CONT:
            if not self._block_sid or sid != self._block_sid:
                raise H2Error(PROTOCOL_ERROR, "CONTINUATION without a header block")
            self._block += payload
            if flags & END_HEADERS:
                sid, self._block_sid = self._block_sid, 0
                self._on_block(sid, bytes(self._block), self._block_end, events, self._block_bad)
                self._block = bytearray()
        elif ftype == WINDOW:
            self._on_window(sid, payload, events)
        elif ftype == RST_STREAM:
            self._on_rst(sid, payload, events)
        elif ftype == SETTINGS:
            self._on_settings(flags, sid, payload, events)
        elif ftype == PING:
            if len(payload) != 8:
                raise H2Error(FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
            if sid:
                raise H2Error(PROTOCOL_ERROR, "PING on a stream")
            if not flags & ACK:
                self.out += frame(PING, ACK, 0, bytes(payload))
        elif ftype == PRIORITY:
            if not sid:
                raise H2Error(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise H2Error(FRAME_SIZE_ERROR, "PRIORITY payload is not 5 bytes")
            if U32.unpack_from(payload)[0] & MAX_WINDOW == sid:
                if sid in self.streams:
                    self._stream_error(sid, PROTOCOL_ERROR, events)
                elif self._idle(sid):  # no RST_STREAM on a stream never opened
                    raise H2Error(PROTOCOL_ERROR, "stream depends on itself")
                # (On a stream that is over, nothing is left to refuse.)
        elif ftype == PUSH_PROMISE:
            raise H2Error(PROTOCOL_ERROR, "PUSH_PROMISE, and push is off")
        elif ftype == GOAWAY:
            raise H2Error(INTERNAL_ERROR, "GOAWAY is the caller's to handle")
        # Unknown types are ignored (RFC 9113 §5.5); the guard budgets them.

    def _strip(
        self, flags: int, payload: bytes | bytearray, *, priority: bool, sid: int
    ) -> bytes | bytearray:
        """The frame's data: padding (and a HEADERS frame's priority) removed."""
        start, end = 0, len(payload)
        if flags & PADDED:
            if not end or payload[0] >= end:
                raise H2Error(PROTOCOL_ERROR, "padding as long as the frame")
            start, end = 1, end - payload[0]
        if priority and flags & PRIORITY_FLAG:
            if end - start < 5:
                raise H2Error(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            start += 5
        return payload[start:end] if start or end != len(payload) else payload

    @staticmethod
    def _depends_on_itself(flags: int, payload: bytes | bytearray, sid: int) -> bool:
        """A HEADERS frame's priority names its own stream (``_strip`` checked the length)."""
        return bool(U32.unpack_from(payload, 1 if flags & PADDED else 0)[0] & MAX_WINDOW == sid)

    def _idle(self, sid: int) -> bool:
        """Never opened (by either side)."""
        if (sid & 1) != self.client:  # the peer's ids: odd from a client, even from a server
            return sid > self.highest_inbound_stream_id
        return sid > self.highest_outbound_stream_id

    def _late(self, sid: int) -> None:
        """A frame for a stream that is not open, to be ignored unless this raises.

        RFC 9113 §5.1: a frame on an idle stream, or on one that ended, is a
        connection error; on one the peer reset, a stream error (RST_STREAM
        STREAM_CLOSED); on one we reset, the peer may not know yet.
        """
        if self._idle(sid):
            raise H2Error(PROTOCOL_ERROR, f"frame on idle stream {sid}")
        how = self._closed.get(sid, ENDED)
        if how == RESET_RECEIVED:
            self.out += frame(RST_STREAM, 0, sid, U32.pack(STREAM_CLOSED))
        elif how == ENDED:
            raise H2Error(STREAM_CLOSED, f"frame on closed stream {sid}")

    def _on_block(
        self, sid: int, block: bytes, end_stream: bool, events: list[Event], bad: bool = False
    ) -> None:
        # The block is decoded whatever becomes of the stream: HPACK's table
        # must see every block.
        try:
            fields = self.decoder.fields(block)
        except OversizedHeaderListError as e:
            raise H2Error(ENHANCE_YOUR_CALM, f"header list too large: {e}") from e
        except HPACKError as e:
            raise H2Error(COMPRESSION_ERROR, f"HPACK: {e}") from e
        st = self.streams.get(sid)
        if st is None:
            if not self.client and sid & 1 and sid > self.highest_inbound_stream_id:
                self.highest_inbound_stream_id = sid
                st = Stream(self.remote_initial_window, self.local_initial_window)
                self.streams[sid] = st
            else:
                if self.client and not sid & 1:
                    raise H2Error(PROTOCOL_ERROR, "HEADERS on a stream we did not open")
                if not self.client and sid & 1 and sid not in self._closed:
                    # RFC 9113 §5.1.1: a new stream's id must be above every
                    # id the peer used; a lower one never opened (or long
                    # forgotten) is an unexpected identifier.
                    raise H2Error(PROTOCOL_ERROR, f"HEADERS opening stream {sid} below the highest")
                self._late(sid)
                return
        if bad:
            self._stream_error(sid, PROTOCOL_ERROR, events)
            return
        if st.recv_closed:
            self._stream_error(sid, STREAM_CLOSED, events)
            return
        if self.client:
            status = next((v for n, v in fields if n == b":status"), b"")
            informational = status[:1] == b"1"
            if st.got_final:
                self._trailers(sid, st, fields, end_stream, events)
                return
            if informational and end_stream:
                self._stream_error(sid, PROTOCOL_ERROR, events)
                return
            st.got_final = not informational
            events.append(Head(sid, fields, end_stream, informational))
        elif st.got_final:
            self._trailers(sid, st, fields, end_stream, events)
            return
        else:
            st.got_final = True
            events.append(Head(sid, fields, end_stream, False))
        if end_stream:
            self._recv_end(sid, st)

    def _trailers(
        self,
        sid: int,
        st: Stream,
        fields: list[tuple[bytes, bytes]],
        end_stream: bool,
        events: list[Event],
    ) -> None:
        if not end_stream:
            self._stream_error(sid, PROTOCOL_ERROR, events)
            return
        events.append(Trailers(sid, fields))
        events.append(Ended(sid))
        self._recv_end(sid, st)

    def _on_data(
        self, flags: int, sid: int, payload: bytes | bytearray, events: list[Event]
    ) -> None:
        if not sid:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        conn = self.inbound
        conn.window -= flow
        if conn.window < 0:
            raise H2Error(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        data = self._strip(flags, payload, priority=False, sid=sid) if flags & PADDED else payload
        st = self.streams.get(sid)
        if st is None or st.recv_closed or not st.got_final:
            if st is not None:  # half-closed (remote), or no head yet
                code = STREAM_CLOSED if st.recv_closed else PROTOCOL_ERROR
                self._stream_error(sid, code, events)
            else:
                self._late(sid)
            self._give_back(flow)  # nobody will acknowledge these bytes
            return
        st.inbound.window -= flow
        if st.inbound.window < 0:
            raise H2Error(FLOW_CONTROL_ERROR, f"DATA beyond stream {sid}'s window")
        events.append(Data(sid, bytes(data), flow))
        if flags & END_STREAM:
            events.append(Ended(sid))
            self._recv_end(sid, st)

    def _on_window(self, sid: int, payload: bytes | bytearray, events: list[Event]) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        inc = U32.unpack_from(payload)[0] & MAX_WINDOW
        if not sid:
            if not inc:
                raise H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.out_window += inc
            if self.out_window > MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            events.append(Window(0))
            return
        st = self.streams.get(sid)
        if st is None:
            if self._idle(sid):
                raise H2Error(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # a window for a stream that is over: nothing to open
        if not inc:
            self._stream_error(sid, PROTOCOL_ERROR, events)
            return
        st.out_window += inc
        if st.out_window > MAX_WINDOW:
            self._stream_error(sid, FLOW_CONTROL_ERROR, events)
            return
        events.append(Window(sid))

    def _on_rst(self, sid: int, payload: bytes | bytearray, events: list[Event]) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes")
        if not sid:
            raise H2Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if sid not in self.streams:
            if self._idle(sid):
                raise H2Error(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        self._close(sid, RESET_RECEIVED)
        events.append(Reset(sid, U32.unpack_from(payload)[0], True))

    def _on_settings(
        self, flags: int, sid: int, payload: bytes | bytearray, events: list[Event]
    ) -> None:
        if sid:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2Error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if self._pending:
                self._apply_local(self._pending.pop(0))
            return
        if len(payload) % 6:
            raise H2Error(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        windows = False
        for off in range(0, len(payload), 6):
            code, value = SETTING.unpack_from(payload, off)
            if code == HEADER_TABLE_SIZE:
                self.encoder.header_table_size = value
            elif code == ENABLE_PUSH:
                if value > 1 or (value and self.client):
                    raise H2Error(PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
            elif code == MAX_CONCURRENT_STREAMS:
                self.remote_max_concurrent_streams = value
            elif code == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2Error(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE > 2^31-1")
                delta = value - self.remote_initial_window
                self.remote_initial_window = value
                for st in self.streams.values():
                    st.out_window += delta
                    if st.out_window > MAX_WINDOW:
                        raise H2Error(FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
                windows = windows or delta > 0
            elif code == MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise H2Error(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self.max_outbound_frame_size = value
        self.out += frame(SETTINGS, ACK, 0)
        events.append(SettingsChanged(windows))

    def _apply_local(self, settings: dict[int, int]) -> None:
        for code, value in settings.items():
            if code == HEADER_TABLE_SIZE:
                self.decoder.max_allowed_table_size = value
            elif code == INITIAL_WINDOW_SIZE:
                delta = value - self.local_initial_window
                self.local_initial_window = value
                for st in self.streams.values():
                    st.inbound.opened(delta)
            elif code == MAX_FRAME_SIZE:
                self.max_inbound_frame_size = value
