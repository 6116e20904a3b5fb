"""The frame guard: what we check on HTTP/2 frames before the engine sees them.

:class:`.H2Core` walks received bytes frame by frame (the 9-byte headers;
of payloads only DATA's pad length and GOAWAY) and asks :class:`FrameGuard`
about each frame; the engine (:mod:`.h2_machine`, or h2 through
:mod:`.h2_reference`) only gets the frames that passed. That buys:

- no unbounded buffering: a frame is refused at its header when it is longer
  than SETTINGS_MAX_FRAME_SIZE, and a header block at ``max_continuation_frames``
  / twice ``max_header_list_size`` bytes (h2 alone would buffer the whole
  frame first, and accept 64 CONTINUATION frames of 16 KiB: 1 MiB);
- flood budgets charged per frame, the bytes after a frame that breaks one
  never parsed: the work per ``receive_data`` is bounded by the budgets.

A breach is an :data:`Error`: the HTTP/2 error code for our GOAWAY, and why.

May import: stdlib, kernel.protocol.h2_common, kernel.protocol.h2_frames.
"""

from __future__ import annotations

from kernel.protocol.h2_common import H2_PREFACE, H2Limits, RateBudget
from kernel.protocol.h2_frames import (
    CONT,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    SETTINGS,
    WINDOW,
)

__all__ = [
    "Error",
    "FrameGuard",
    "data_size",
    "frame_header",
    "parse_goaway",
]

#: (HTTP/2 error code, reason) for the GOAWAY that ends the connection.
Error = tuple[int, str]
#: WINDOW_UPDATE frames a peer may send beyond two per DATA frame of ours.
_UPDATE_RESERVE = 100


def frame_header(buf: bytearray, pos: int) -> tuple[int, int, int, int]:
    """Length, type, flags and stream id of the frame header at ``buf[pos:pos+9]``."""
    length = int.from_bytes(buf[pos : pos + 3], "big")
    sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFF_FFFF
    return length, buf[pos + 3], buf[pos + 4], sid


def data_size(flags: int, payload: bytearray) -> tuple[int, bool]:
    """Data bytes (padding excluded) and END_STREAM of a DATA frame.

    Bad padding counts as 0 bytes here; the engine then refuses the frame itself.
    """
    size = len(payload)
    if flags & PADDED and payload:
        size = max(0, size - 1 - payload[0])
    return size, bool(flags & END_STREAM)


def parse_goaway(payload: bytearray) -> tuple[int, int, bytes] | None:
    """Last stream id, error code and debug data of a GOAWAY payload (None: short)."""
    if len(payload) < 8:
        return None
    last = int.from_bytes(payload[:4], "big") & 0x7FFF_FFFF
    return last, int.from_bytes(payload[4:8], "big"), bytes(payload[8:])


class FrameGuard:
    """Header-block bounds, the preface, and the three flood budgets."""

    __slots__ = (
        "_block_bytes", "_block_frames", "_block_sid", "_control", "_empty", "_heads",
        "_max_cont", "_updates", "block_cap", "data_frames_sent", "preface_left", "resets",
    )  # fmt: skip

    def __init__(self, limits: H2Limits, *, server: bool) -> None:
        #: Preface bytes still expected (a server reads the client's first).
        self.preface_left = len(H2_PREFACE) if server else 0
        #: The most encoded bytes one header block may have.
        self.block_cap = 2 * limits.max_header_list_size
        self._max_cont = limits.max_continuation_frames
        self._block_sid = self._block_frames = self._block_bytes = 0
        window = limits.budget_window_s
        #: Rapid reset: streams cancelled by the peer or refused by us.
        self.resets = RateBudget(limits.reset_budget, window)
        self._control = RateBudget(limits.control_budget, window)
        self._empty = RateBudget(limits.empty_data_budget, window)
        #: DATA frames we sent (the endpoint counts them) and WINDOW_UPDATE
        #: frames received: see :meth:`check`.
        self.data_frames_sent = 0
        self._updates = self._heads = 0

    def skip_preface(self, buf: bytearray) -> int | None:
        """How many bytes at the start of ``buf`` are preface; None if not one."""
        have = min(self.preface_left, len(buf))
        start = len(H2_PREFACE) - self.preface_left
        if buf[:have] != H2_PREFACE[start : start + have]:
            return None
        self.preface_left -= have
        return have

    def check(self, ftype: int, flags: int, sid: int, length: int, now: float) -> Error | None:
        """Header-block sequence and size, and the control budget."""
        if self._block_sid:
            if ftype != CONT or sid != self._block_sid:
                return PROTOCOL_ERROR, "header block interrupted"
            self._block_frames += 1
            self._block_bytes += length
            if self._block_frames > self._max_cont or self._block_bytes > self.block_cap:
                return (
                    ENHANCE_YOUR_CALM,
                    "header block too large or in too many CONTINUATION frames",
                )
            if flags & END_HEADERS:
                self._block_sid = 0
            return None
        if ftype in (HEADERS, PUSH_PROMISE):
            self._heads += 1
            if length > self.block_cap:
                return ENHANCE_YOUR_CALM, "header block too large"
            if sid and not flags & END_HEADERS:
                self._block_sid, self._block_frames, self._block_bytes = sid, 0, length
            return None
        if ftype == WINDOW:
            # Credit for what we sent: at most two per DATA frame of ours (the
            # stream's and the connection's), one per header block received
            # (a peer may open each new stream's window), and a reserve for
            # windows opened up front. Past that a WINDOW_UPDATE unblocks
            # nothing and counts as a control frame (a flood of 1-byte
            # increments ran free).
            self._updates += 1
            if self._updates <= 2 * self.data_frames_sent + self._heads + _UPDATE_RESERVE:
                return None
            if not self._control.take(now):
                return ENHANCE_YOUR_CALM, "too many WINDOW_UPDATE frames"
            return None
        # Every SETTINGS and PING counts, acknowledgements too: a peer owes one
        # per SETTINGS or PING of ours, and unasked ones were a free flood.
        counted = ftype in (SETTINGS, PING, PRIORITY, GOAWAY) or ftype > CONT
        if counted and not self._control.take(now):
            return ENHANCE_YOUR_CALM, "too many control frames"
        return None

    def check_rst(self, unfinished: bool, now: float) -> Error | None:
        """A RST_STREAM: on a stream we had not finished, it is a rapid reset."""
        if unfinished:
            if not self.resets.take(now):
                return ENHANCE_YOUR_CALM, "too many streams reset by the peer (rapid reset)"
        elif not self._control.take(now):
            return ENHANCE_YOUR_CALM, "too many control frames"
        return None

    def check_data(self, size: int, end_stream: bool, now: float) -> Error | None:
        """A DATA frame: empty ones without END_STREAM are budgeted."""
        if not size and not end_stream and not self._empty.take(now):
            return ENHANCE_YOUR_CALM, "too many empty DATA frames"
        return None
