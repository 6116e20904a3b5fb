"""HTTP/2's vocabulary: frames we build read back by hyperframe, error names, events."""

from __future__ import annotations

from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, PingFrame

from kernel.protocol import h2_frames as f
from tests.helpers.h2frames import parse_frames


def test_a_frame_reads_back_with_hyperframe() -> None:
    data = f.frame(f.DATA, f.END_STREAM, 7, b"x" * 70_000)  # length over 16 bits
    (parsed,) = parse_frames(data)
    assert isinstance(parsed, DataFrame)
    assert (parsed.stream_id, parsed.data, "END_STREAM" in parsed.flags) == (7, b"x" * 70_000, True)
    (ping,) = parse_frames(f.frame(f.PING, f.ACK, 0, b"12345678"))
    assert isinstance(ping, PingFrame)
    assert (ping.opaque_data, "ACK" in ping.flags) == (b"12345678", True)


def test_error_codes_and_names_are_the_rfc_s() -> None:
    for code in ErrorCodes:  # h2's table, an independent copy of RFC 9113 §7
        assert f.error_name(int(code)) == code.name
        assert getattr(f, code.name) == int(code)
    assert f.error_name(0x42) == "0x42"


def test_events_compare_by_value() -> None:
    assert f.Data(1, b"a", 1) == f.Data(1, b"a", 1)
    assert f.Reset(3, f.CANCEL, True) != f.Reset(3, f.CANCEL, False)
