"""The sending half both HTTP/2 sides share, and the connection's lifecycle.

:class:`H2Endpoint` adds to :class:`.H2Core` (receiving) what the shell
calls: ``initiate``, ``data_to_send``, ``goaway``, and per stream
``send_window``, ``send_data``, ``send_end``, ``reset`` and ``ack_data``.
Sending is bounded by HTTP/2 flow control *and* by ``max_outbound_buffer``:
a peer that opens huge windows but does not read cannot make us buffer.
The heads are side-specific (:mod:`.h2_server`, :mod:`.h2_client`).

May import: stdlib, kernel.protocol.events, kernel.protocol.h2_*,
sdk._errors.
"""

from __future__ import annotations

from kernel.protocol import h2_frames as m
from kernel.protocol.events import Fields
from kernel.protocol.h2_core import H2Core, Stream
from kernel.protocol.h2_fields import trailer_fields
from sdk._errors import LocalProtocolError

__all__ = ["H2Endpoint"]


class H2Endpoint(H2Core):
    """One HTTP/2 connection, either side; see :mod:`.h2_server`, :mod:`.h2_client`."""

    # -- lifecycle -------------------------------------------------------------------
    def initiate(self) -> None:
        """Queue our preface (client), SETTINGS and the connection WINDOW_UPDATE."""
        lim = self.limits
        settings = {
            m.ENABLE_PUSH: 0,
            m.MAX_CONCURRENT_STREAMS: lim.max_concurrent_streams,
            m.MAX_HEADER_LIST_SIZE: lim.max_header_list_size,
        }
        for code, value, default in (
            (m.HEADER_TABLE_SIZE, lim.header_table_size, 4096),
            (m.INITIAL_WINDOW_SIZE, lim.initial_window_size, 65535),
            (m.MAX_FRAME_SIZE, lim.max_frame_size, 16384),
        ):
            if value != default:
                settings[code] = value
        self._conn.initiate(settings)
        self._conn.open_connection_window(lim.connection_window - 65535)

    def data_to_send(self) -> bytes:
        """Everything queued for the socket (and forget it)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def has_output(self) -> bool:
        """Whether bytes are queued for the socket."""
        return bool(self._out)

    def goaway(self, error_code: int = 0, last_stream_id: int | None = None) -> None:
        """Send GOAWAY. 0 is graceful: the peer's streams up to ``last_stream_id``
        (default: all opened so far) may finish, later ones are refused (a
        server resets those above it at once: the caller cancels their flows);
        close when ``open_streams`` is 0. For a two-step shutdown pass 2**31-1
        first, then the default after a round trip (RFC 9113 §6.8). Any other
        code ends the connection now: no events follow, the caller cancels
        every flow, writes ``data_to_send()`` and closes."""
        if self._ended:
            return
        last = self._conn.highest_inbound_stream_id if last_stream_id is None else last_stream_id
        self._send_goaway(error_code, last, b"")
        if error_code:
            self._ended = True
            self._streams.clear()
            return
        self._goaway_last = last if self._goaway_last is None else min(last, self._goaway_last)
        if not self._client:
            for sid in [s for s in self._streams if s > self._goaway_last]:
                self.reset(sid, m.REFUSED_STREAM)  # not processed: safe to retry

    @property
    def open_streams(self) -> int:
        """Streams not finished on both sides (refused ones awaiting an answer too)."""
        return len(self._streams)

    @property
    def outbound_pressure(self) -> bool:
        """More than ``max_outbound_buffer`` bytes wait: write before reading more."""
        return len(self._out) > self.limits.max_outbound_buffer

    @property
    def ended(self) -> bool:
        """The connection is over: write ``data_to_send()`` and close."""
        return self._ended

    # -- sending ---------------------------------------------------------------------
    def send_window(self, stream_id: int) -> int:
        """Bytes ``send_data`` would take now: the stream and connection windows,
        and room in the outbound buffer. 0 also for a stream that is gone."""
        st = self._streams.get(stream_id)
        if st is None or self._ended or st.send_done or not st.head_sent:
            return 0
        window = self._conn.send_window(stream_id)
        n = max(0, min(window, self.limits.max_outbound_buffer - len(self._out)))
        st.blocked = not n
        return n

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Send as much of ``data`` as the windows allow; returns the bytes taken.

        For the rest wait for :class:`WindowOpen` (this stream or 0), or for
        ``data_to_send()`` to be written when ``outbound_pressure`` was the
        limit. ``end_stream`` applies once all of ``data`` is taken. Returns 0
        for a stream that was reset (its StreamReset was emitted).
        """
        st = self._live(stream_id)
        if st is None:
            return 0
        total = st.sent + len(data)
        if data and st.no_body:
            raise LocalProtocolError("this message has no body")
        if st.send_expected is not None and (
            total > st.send_expected or (end_stream and total != st.send_expected)
        ):
            raise LocalProtocolError("body length differs from content-length")
        n = min(len(data), self.send_window(stream_id)) if data else 0
        conn = self._conn
        step = conn.max_outbound_frame_size
        if n == len(data) and n <= step:  # the usual case: one frame
            if n or end_stream:
                conn.send_data(stream_id, data, end_stream)
                self._guard.data_frames_sent += 1
        else:
            for off in range(0, n, step):
                stop = min(off + step, n)
                conn.send_data(stream_id, data[off:stop], end_stream and stop == len(data))
                self._guard.data_frames_sent += 1
        st.sent += n
        if n < len(data):
            st.blocked = True
        elif end_stream:
            self._sent_end(stream_id, st)
        return n

    def send_end(self, stream_id: int, trailers: Fields | None = None) -> None:
        """End our side of the stream, with trailers if any survive filtering."""
        st = self._live(stream_id)
        if st is None:
            return
        if st.send_expected is not None and st.sent != st.send_expected:
            raise LocalProtocolError("body shorter than content-length")
        fields = trailer_fields(trailers) if trailers else []
        if fields:
            self._conn.send_headers(stream_id, fields, end_stream=True)
        else:
            self._conn.send_data(stream_id, b"", end_stream=True)
        self._sent_end(stream_id, st)

    def knows(self, stream_id: int) -> bool:
        """Is the stream still open on either side (not ended both ways, not reset)?"""
        return not self._ended and stream_id in self._streams

    def reset(self, stream_id: int, error_code: int = m.CANCEL) -> None:
        """RST_STREAM (default CANCEL); no event follows. Unknown streams: no-op."""
        if self._ended or stream_id not in self._streams:
            return
        self._conn.reset_stream(stream_id, error_code)
        self._forget(stream_id)

    def ack_data(self, stream_id: int, n: int) -> None:
        """``n`` bytes of this stream's StreamData were consumed: give the window back.

        Data of a stream that ended or was reset was acknowledged then.
        """
        st = self._streams.get(stream_id)
        if st is None or self._ended:
            return
        n = min(n, st.unacked)
        if n > 0:
            st.unacked -= n
            self._conn.acknowledge(stream_id, n)

    # -- helpers for the sides ---------------------------------------------------------
    def _live(self, stream_id: int) -> Stream | None:
        if self._ended:
            return None
        st = self._streams.get(stream_id)
        if st is not None:
            if st.send_done:
                raise LocalProtocolError("this stream's side is already ended")
            if not st.head_sent:
                raise LocalProtocolError("the head must go first")
        return st

    def _sent_end(self, stream_id: int, st: Stream) -> None:
        st.send_done = True
        if st.recv_done:
            self._forget(stream_id)
