"""HTTP/2's vocabulary (RFC 9113): frame types, flags, error codes, settings,
the frame header, and the events an HTTP/2 engine reports.

Both engines speak it: our :class:`.Machine` (:mod:`.h2_machine`) and h2's
:class:`.H2Engine` (:mod:`.h2_reference`). :class:`.H2Core` walks frames and
dispatches the events; :mod:`.h2_guard` checks frames by these names. An
engine refuses what breaks the connection with :class:`H2Error` (the caller
sends GOAWAY with its code).

May import: stdlib, attrs.
"""

from __future__ import annotations

import struct

import attrs

__all__ = [
    "Data",
    "Ended",
    "Event",
    "H2Error",
    "Head",
    "Reset",
    "SettingsChanged",
    "Trailers",
    "Window",
    "error_name",
    "frame",
]

# Frame types (§6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (§7).
_ERRORS = (
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
    "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
    "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
)  # fmt: skip
(
    NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT,
    STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR,
    CONNECT_ERROR, ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED,
) = range(len(_ERRORS))  # fmt: skip

# Settings (§6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

#: The largest flow-control window (§6.9.1).
MAX_WINDOW = 2**31 - 1

_HEADER = struct.Struct(">HBBBL")  # length (high 16 bits, low 8), type, flags, stream id


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame's bytes (§4.1)."""
    n = len(payload)
    return _HEADER.pack(n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


def error_name(code: int) -> str:
    """An error code's name (``ENHANCE_YOUR_CALM``), or its hex for an unknown one."""
    return _ERRORS[code] if 0 <= code < len(_ERRORS) else hex(code)


class H2Error(Exception):
    """The peer broke the connection's rules: GOAWAY with ``code``, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# -- events --------------------------------------------------------------------------
@attrs.define(weakref_slot=False)
class Head:
    """A stream's first header block (a request, or a response; ``informational``
    for a 1xx response, which a final one follows)."""

    stream_id: int
    fields: list[tuple[bytes, bytes]]
    end_stream: bool
    informational: bool


@attrs.define(weakref_slot=False)
class Trailers:
    """A header block after the body; the stream's receiving side ends with it."""

    stream_id: int
    fields: list[tuple[bytes, bytes]]


@attrs.define(weakref_slot=False)
class Data:
    """Body bytes; ``flow`` (padding included) is what acknowledging them gives back."""

    stream_id: int
    data: bytes
    flow: int


@attrs.define(weakref_slot=False)
class Ended:
    """The peer's side of the stream ended (END_STREAM)."""

    stream_id: int


@attrs.define(weakref_slot=False)
class Reset:
    """The stream is over: reset by the peer (``remote``) or by us for a stream error."""

    stream_id: int
    code: int
    remote: bool


@attrs.define(weakref_slot=False)
class Window:
    """The peer opened a send window: a stream's, or the connection's (0)."""

    stream_id: int


@attrs.define(weakref_slot=False)
class SettingsChanged:
    """The peer's SETTINGS were applied; ``windows``: stream send windows grew."""

    windows: bool


Event = Head | Trailers | Data | Ended | Reset | Window | SettingsChanged
