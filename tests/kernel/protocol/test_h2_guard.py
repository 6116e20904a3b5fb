"""The frame guard on its own: header-block bounds, budgets, frame parsing."""

from __future__ import annotations

from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame

from kernel.protocol.h2_common import H2_PREFACE, H2Limits
from kernel.protocol.h2_frames import CONT, DATA, HEADERS, PING, PRIORITY, SETTINGS, WINDOW
from kernel.protocol.h2_guard import (
    FrameGuard,
    data_size,
    frame_header,
    parse_goaway,
)

CALM, PROTOCOL = 0xB, 0x1
END_HEADERS, ACK = 0x4, 0x1


def test_frame_header_and_payload_helpers() -> None:
    frame = HeadersFrame(0x7FFF_FFFF, data=b"abc", flags=["END_HEADERS"])
    assert frame_header(bytearray(b"xx" + frame.serialize()), 2) == (3, HEADERS, 0x4, 0x7FFF_FFFF)
    padded = DataFrame(1, data=b"hello", flags=["PADDED", "END_STREAM"], pad_length=10)
    payload = bytearray(padded.serialize()[9:])
    assert data_size(0x9, payload) == (5, True)  # PADDED | END_STREAM
    assert data_size(0x8, bytearray(b"\xff")) == (0, False)  # bad padding: h2's to refuse
    goaway = GoAwayFrame(0, last_stream_id=7, error_code=2, additional_data=b"why")
    assert parse_goaway(bytearray(goaway.serialize()[9:])) == (7, 2, b"why")
    assert parse_goaway(bytearray(b"\x00" * 7)) is None


def test_preface_is_checked_in_pieces() -> None:
    guard = FrameGuard(H2Limits(), server=True)
    assert guard.skip_preface(bytearray(H2_PREFACE[:5])) == 5
    assert guard.skip_preface(bytearray(H2_PREFACE[5:] + b"\x00")) == len(H2_PREFACE) - 5
    assert guard.preface_left == 0
    assert FrameGuard(H2Limits(), server=True).skip_preface(bytearray(b"PRX")) is None
    assert FrameGuard(H2Limits(), server=False).preface_left == 0


def test_header_block_frame_cap() -> None:
    guard = FrameGuard(H2Limits(max_continuation_frames=3), server=True)
    assert guard.check(HEADERS, 0, 1, 10, 0.0) is None
    assert [guard.check(CONT, 0, 1, 0, 0.0) for _ in range(3)] == [None] * 3
    err = guard.check(CONT, 0, 1, 0, 0.0)
    assert err is not None
    assert err[0] == CALM
    # A block that ends in time resets the count.
    guard = FrameGuard(H2Limits(max_continuation_frames=3), server=True)
    for sid in (1, 3, 5):
        assert guard.check(HEADERS, 0, sid, 10, 0.0) is None
        assert [guard.check(CONT, 0, sid, 0, 0.0) for _ in range(2)] == [None, None]
        assert guard.check(CONT, END_HEADERS, sid, 0, 0.0) is None


def test_header_block_byte_cap() -> None:
    guard = FrameGuard(H2Limits(max_header_list_size=1000), server=True)
    assert guard.block_cap == 2000
    assert guard.check(HEADERS, 0, 1, 1500, 0.0) is None
    err = guard.check(CONT, 0, 1, 501, 0.0)
    assert err is not None
    assert err[0] == CALM
    single = FrameGuard(H2Limits(max_header_list_size=1000), server=True)
    err = single.check(HEADERS, END_HEADERS, 1, 2001, 0.0)
    assert err is not None
    assert err[0] == CALM


def test_header_block_must_not_be_interrupted() -> None:
    guard = FrameGuard(H2Limits(), server=True)
    assert guard.check(HEADERS, 0, 1, 10, 0.0) is None
    assert guard.check(PING, 0, 0, 8, 0.0) == (PROTOCOL, "header block interrupted")
    guard = FrameGuard(H2Limits(), server=True)
    assert guard.check(HEADERS, 0, 1, 10, 0.0) is None
    assert guard.check(CONT, 0, 3, 10, 0.0) == (PROTOCOL, "header block interrupted")


def test_control_budget_counts_what_needs_work() -> None:
    guard = FrameGuard(H2Limits(control_budget=6), server=True)
    # WINDOW_UPDATE, DATA and HEADERS are free.
    for ftype, flags in [(WINDOW, 0), (DATA, 0), (HEADERS, 4)]:
        for _ in range(10):
            assert guard.check(ftype, flags, 1, 8, 0.0) is None
    # Acknowledgements count: a peer owes one per SETTINGS or PING of ours.
    for ftype, flags in [(PING, ACK), (SETTINGS, ACK)]:
        assert guard.check(ftype, flags, 0, 8, 0.0) is None
    for ftype in (PING, SETTINGS, PRIORITY, 0x42):
        assert guard.check(ftype, 0, 0, 8, 0.0) is None
    err = guard.check(PING, ACK, 0, 8, 0.0)
    assert err == (CALM, "too many control frames")
    assert guard.check(PING, 0, 0, 8, 10 / 6) is None  # 6 per 10 s: one back after 1.67 s


def test_reset_and_empty_data_budgets() -> None:
    guard = FrameGuard(H2Limits(reset_budget=2, control_budget=1, empty_data_budget=2), server=True)
    assert guard.check_rst(True, 0.0) is None
    assert guard.check_rst(True, 0.0) is None
    err = guard.check_rst(True, 0.0)
    assert err is not None
    assert "rapid reset" in err[1]
    assert guard.check_rst(False, 0.0) is None  # a finished stream: a control frame
    assert guard.check_rst(False, 0.0) == (CALM, "too many control frames")
    assert guard.check_data(0, True, 0.0) is None  # ends the stream: fine
    assert guard.check_data(5, False, 0.0) is None
    assert guard.check_data(0, False, 0.0) is None
    assert guard.check_data(0, False, 0.0) is None
    assert guard.check_data(0, False, 0.0) == (CALM, "too many empty DATA frames")
    assert guard.resets.take(100.0)


def test_window_updates_beyond_the_data_we_sent_are_control_frames() -> None:
    guard = FrameGuard(H2Limits(control_budget=3), server=True)
    guard.data_frames_sent = 10
    # Two per DATA frame of ours, and a reserve of 100: free.
    for _ in range(2 * 10 + 100):
        assert guard.check(WINDOW, 0, 0, 4, 0.0) is None
    # Then each takes a control token.
    for _ in range(3):
        assert guard.check(WINDOW, 0, 1, 4, 0.0) is None
    assert guard.check(WINDOW, 0, 0, 4, 0.0) == (CALM, "too many WINDOW_UPDATE frames")
    guard.data_frames_sent += 1000  # more DATA sent: more credit is due
    assert guard.check(WINDOW, 0, 0, 4, 0.0) is None


def test_each_header_block_received_allows_one_window_update() -> None:
    """A peer may open the window of each stream it starts (no DATA of ours yet)."""
    guard = FrameGuard(H2Limits(control_budget=1), server=True)
    for _ in range(500):
        assert guard.check(HEADERS, 4, 1, 10, 0.0) is None
    for _ in range(500 + 100):
        assert guard.check(WINDOW, 0, 1, 4, 0.0) is None
    assert guard.check(WINDOW, 0, 1, 4, 0.0) is None  # the one control token
    assert guard.check(WINDOW, 0, 1, 4, 0.0) == (CALM, "too many WINDOW_UPDATE frames")
