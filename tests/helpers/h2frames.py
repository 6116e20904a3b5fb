"""HTTP/2 frames in tests: parsed with hyperframe (not our code), or built by hand."""

from __future__ import annotations

from hyperframe.frame import Frame


def parse_frames(data: bytes | bytearray) -> list[Frame]:
    """The frames in ``data``, parsed by hyperframe."""
    out: list[Frame] = []
    pos = 0
    while pos < len(data):
        frame, length = Frame.parse_frame_header(memoryview(data[pos : pos + 9]))
        frame.parse_body(memoryview(data[pos + 9 : pos + 9 + length]))
        out.append(frame)
        pos += 9 + length
    return out


def wire(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """A frame built by hand, for what hyperframe refuses to build (RFC 9113 §4.1)."""
    head = len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big")
    return head + payload
