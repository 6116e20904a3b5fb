"""HTTP/2 stream states, flow-control windows and sending (RFC 9113), sans-IO.

The half of :class:`.Machine` that owns the state both directions share:
:class:`Streams` holds the open streams (:class:`Stream`: both windows, which
halves are closed), how recent ones ended, both sides' settings, the HPACK
contexts and :attr:`Streams.out`; it writes what we send (SETTINGS, header
blocks in HEADERS and CONTINUATION, DATA within the windows, RST_STREAM,
WINDOW_UPDATE as consumed bytes are acknowledged). :class:`.Machine`
(:mod:`.h2_machine`) subclasses it with what a received frame means.

What the caller asks of it that HTTP/2 forbids is a
:class:`~sdk._errors.LocalProtocolError`.

May import: stdlib, kernel.protocol.h2_common, .h2_frames, .hpack_encoder,
.hpack_decoder, sdk._errors.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Iterable
from typing import Final

from kernel.protocol.h2_common import H2_PREFACE
from kernel.protocol.h2_frames import (
    CONT,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    RST_STREAM,
    SETTINGS,
    WINDOW,
    Event,
    Reset,
    frame,
)
from kernel.protocol.hpack_decoder import Decoder
from kernel.protocol.hpack_encoder import Encoder
from sdk._errors import LocalProtocolError

__all__ = [
    "CLOSED_MEMORY",
    "ENDED",
    "RESET_RECEIVED",
    "RESET_SENT",
    "SETTING",
    "U32",
    "Stream",
    "Streams",
]

#: Streams remembered after they close (how they closed decides what a late
#: frame for them means); older ones count as closed by END_STREAM.
CLOSED_MEMORY: Final = 1024

_HEADER = struct.Struct(">HBBBL")  # length (high 16 bits, low 8), type, flags, stream id
U32: Final = struct.Struct(">L")
SETTING: Final = struct.Struct(">HL")

# How a stream closed: a late frame for it is ignored (we reset it), a
# stream error (the peer reset it) or a connection error (it ended).
RESET_SENT: Final = 1
RESET_RECEIVED: Final = 2
ENDED: Final = 3


# -- flow control --------------------------------------------------------------------
class _Inbound:
    """A receive window and when to give it back (h2's WindowManager rule: once
    half of it was consumed, or when it is empty and 1 KiB waits)."""

    __slots__ = ("max", "processed", "window")

    def __init__(self, size: int) -> None:
        self.window = self.max = size
        self.processed = 0

    def opened(self, n: int) -> None:
        self.window += n
        self.max = max(self.max, self.window)

    def process(self, n: int) -> int:
        """``n`` bytes were consumed; the WINDOW_UPDATE increment due now (0: none)."""
        self.processed += n
        done = self.processed
        if done >= self.max // 2 or (not self.window and done > min(1024, self.max // 4)):
            inc = min(done, self.max - self.window)
            self.processed = 0
            self.window += inc
            return inc
        return 0


class Stream:
    """An open stream: both windows, and which of its halves are closed."""

    __slots__ = ("got_final", "inbound", "out_window", "recv_closed", "send_closed", "sent_head")

    def __init__(self, out_window: int, in_window: int) -> None:
        self.out_window = out_window
        self.inbound = _Inbound(in_window)
        self.recv_closed = False  # the peer's END_STREAM came
        self.send_closed = False  # ours went
        self.sent_head = False
        self.got_final = False  # a non-1xx head came (the client's responses)


class Streams:
    """One HTTP/2 connection's streams and windows, and what we send on them.

    :class:`.Machine` adds what we receive; ``client`` picks the side.
    """

    def __init__(self, client: bool) -> None:
        self.client = client
        self.encoder = Encoder()
        self.decoder = Decoder()
        #: Bytes for the socket; the owner takes them (and clears it).
        self.out = bytearray()
        self.streams: dict[int, Stream] = {}
        #: How recent streams ended, oldest first (OrderedDict: a plain dict
        #: used as a queue pays for the holes its deletions leave at the front).
        self._closed: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.highest_inbound_stream_id = 0
        self.highest_outbound_stream_id = 0
        # The peer's settings, as they stand.
        self.remote_max_concurrent_streams = 2**31 - 1
        self.remote_initial_window = 65535
        self.max_outbound_frame_size = 16384
        # Ours, once acknowledged; the SETTINGS awaiting their ACK.
        self.local_initial_window = 65535
        self.max_inbound_frame_size = 16384
        self._pending: list[dict[int, int]] = []
        self.out_window = 65535
        self.inbound = _Inbound(65535)
        # A header block in CONTINUATION frames: stream id, END_STREAM, bytes.
        self._block_sid = 0
        self._block_end = False
        self._block_bad = False  # its HEADERS made the stream depend on itself
        self._block = bytearray()

    # -- set-up ------------------------------------------------------------------------
    def initiate(self, settings: dict[int, int]) -> None:
        """Queue the client preface (client) and our first SETTINGS."""
        if self.client:
            self.out += H2_PREFACE
        self.send_settings(settings)

    def send_settings(self, settings: dict[int, int]) -> None:
        """Queue a SETTINGS frame; the values bind us once the peer acknowledges it."""
        payload = b"".join(SETTING.pack(code, value) for code, value in settings.items())
        self.out += frame(SETTINGS, 0, 0, payload)
        self._pending.append(dict(settings))

    def open_connection_window(self, n: int) -> None:
        """Let the peer send ``n`` more bytes on the connection (WINDOW_UPDATE 0)."""
        if n > 0:
            self.inbound.opened(n)
            self.out += frame(WINDOW, 0, 0, U32.pack(n))

    # -- stream ends -------------------------------------------------------------------
    def _recv_end(self, sid: int, st: Stream) -> None:
        st.recv_closed = True
        if st.send_closed:
            self._close(sid, ENDED)

    def _close(self, sid: int, how: int) -> None:
        del self.streams[sid]
        closed = self._closed
        closed[sid] = how
        if len(closed) > CLOSED_MEMORY:
            closed.popitem(last=False)

    def _stream_error(self, sid: int, code: int, events: list[Event]) -> None:
        self.out += frame(RST_STREAM, 0, sid, U32.pack(code))
        if sid in self.streams:
            self._close(sid, RESET_SENT)
            events.append(Reset(sid, code, False))

    def _give_back(self, n: int) -> None:
        inc = self.inbound.process(n) if n else 0
        if inc:
            self.out += frame(WINDOW, 0, 0, U32.pack(inc))

    # -- sending -----------------------------------------------------------------------
    def next_stream_id(self) -> int:
        """The id the next stream we open gets (client: odd)."""
        if self.highest_outbound_stream_id:
            return self.highest_outbound_stream_id + 2
        return 1 if self.client else 2

    def send_headers(
        self,
        sid: int,
        fields: Iterable[tuple[bytes, bytes] | tuple[bytes, bytes, bool]],
        end_stream: bool = False,
    ) -> None:
        """A header block: a new stream's head (client), a response head, a
        1xx, or trailers (``end_stream`` then)."""
        st = self.streams.get(sid)
        if st is None:
            if not self.client or not sid & 1 or sid <= self.highest_outbound_stream_id:
                raise LocalProtocolError(f"stream {sid} is not open")
            self.highest_outbound_stream_id = sid
            st = self.streams[sid] = Stream(self.remote_initial_window, self.local_initial_window)
        elif st.send_closed:
            raise LocalProtocolError(f"stream {sid} is closed for sending")
        block = self.encoder.encode(fields)
        size = self.max_outbound_frame_size
        flags = END_STREAM if end_stream else 0
        out = self.out
        if len(block) <= size:
            out += frame(HEADERS, flags | END_HEADERS, sid, block)
        else:
            out += frame(HEADERS, flags, sid, block[:size])
            for off in range(size, len(block), size):
                last = off + size >= len(block)
                out += frame(CONT, END_HEADERS if last else 0, sid, block[off : off + size])
        st.sent_head = True
        if end_stream:
            self._send_end(sid, st)

    def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        """One DATA frame; it must fit the windows and SETTINGS_MAX_FRAME_SIZE."""
        st = self.streams.get(sid)
        if st is None or st.send_closed or not st.sent_head:
            raise LocalProtocolError(f"stream {sid} is not open for DATA")
        n = len(data)
        if n > self.max_outbound_frame_size:
            raise LocalProtocolError("DATA larger than the peer's SETTINGS_MAX_FRAME_SIZE")
        if n > self.out_window or n > st.out_window:
            raise LocalProtocolError("DATA beyond the flow-control window")
        self.out_window -= n
        st.out_window -= n
        self.out += _HEADER.pack(n >> 8, n & 0xFF, DATA, END_STREAM if end_stream else 0, sid)
        self.out += data
        if end_stream:
            self._send_end(sid, st)

    def reset_stream(self, sid: int, code: int) -> None:
        """RST_STREAM on an open stream; a stream that is over is left alone."""
        if sid in self.streams:
            self.out += frame(RST_STREAM, 0, sid, U32.pack(code))
            self._close(sid, RESET_SENT)

    def send_window(self, sid: int) -> int:
        """Bytes of DATA the windows allow on this stream now (0 if it cannot send)."""
        st = self.streams.get(sid)
        if st is None or st.send_closed:
            return 0
        return max(0, min(self.out_window, st.out_window))

    def acknowledge(self, sid: int, n: int) -> None:
        """``n`` flow-controlled bytes of ``sid`` were consumed: WINDOW_UPDATEs as due."""
        self._give_back(n)
        st = self.streams.get(sid)
        if st is not None and not st.recv_closed:
            inc = st.inbound.process(n)
            if inc:
                self.out += frame(WINDOW, 0, sid, U32.pack(inc))

    def _send_end(self, sid: int, st: Stream) -> None:
        st.send_closed = True
        if st.recv_closed:
            self._close(sid, ENDED)
