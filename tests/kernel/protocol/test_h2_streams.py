"""Sending on HTTP/2 streams: header blocks, DATA within both windows,
WINDOW_UPDATEs as bytes are consumed, resets, and what may not be sent."""

from __future__ import annotations

import pytest
from h2.events import StreamReset, WindowUpdated
from hyperframe.frame import ContinuationFrame, HeadersFrame

from kernel.protocol import h2_frames as m
from kernel.protocol.h2_frames import Head, Window
from kernel.protocol.h2_streams import CLOSED_MEMORY
from sdk._errors import LocalProtocolError
from tests.helpers.h2frames import parse_frames
from tests.kernel.protocol.h2machines import (
    GET,
    OK,
    POST,
    feed,
    rst_codes,
    server_and_h2_client,
    take,
)


def test_a_large_header_block_goes_out_in_continuation_frames() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    big = [(b":status", b"200"), *[(b"x-%d" % i, b"v" * 1000) for i in range(40)]]
    server.send_headers(1, big, end_stream=True)
    out = take(server)
    assert [type(f) for f in parse_frames(out)] == [
        HeadersFrame,
        ContinuationFrame,
        ContinuationFrame,
    ]
    got = peer.receive_data(out)
    assert got[0].headers == big  # type: ignore[attr-defined]


def test_sending_is_bounded_by_both_windows() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    server.send_headers(1, OK)
    assert server.send_window(1) == 65535
    for _ in range(3):
        server.send_data(1, b"x" * 16384)
    server.send_data(1, b"x" * 16383)
    assert server.send_window(1) == 0
    with pytest.raises(LocalProtocolError):
        server.send_data(1, b"x")
    peer.receive_data(take(server))
    peer.increment_flow_control_window(10)  # the connection's only
    events = feed(server, peer.data_to_send())
    assert [(type(e), e.stream_id) for e in events] == [(Window, 0)]  # type: ignore[union-attr]
    assert server.send_window(1) == 0  # the stream's window is still shut
    peer.increment_flow_control_window(5, stream_id=1)
    events = feed(server, peer.data_to_send())
    assert [(type(e), e.stream_id) for e in events] == [(Window, 1)]  # type: ignore[union-attr]
    assert server.send_window(1) == 5


def test_data_larger_than_the_peer_frame_size_is_refused() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    server.send_headers(1, OK)
    with pytest.raises(LocalProtocolError):
        server.send_data(1, b"x" * 16385)


def test_windows_come_back_once_half_was_consumed() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, POST)
    for _ in range(2):
        peer.send_data(1, b"x" * 16384)
    feed(server, peer.data_to_send())
    server.acknowledge(1, 16384)
    assert take(server) == b""  # a quarter of each window: not yet
    server.acknowledge(1, 16384)
    updates = [(f.stream_id, f.window_increment) for f in parse_frames(take(server))]
    assert updates == [(0, 32768), (1, 32768)]
    got = peer.receive_data(bytes(m.frame(m.PING, 0, 0, b"\0" * 8)))
    assert got  # h2 still talks to us


def test_what_we_may_not_send_is_refused() -> None:
    server, peer = server_and_h2_client()
    with pytest.raises(LocalProtocolError):
        server.send_headers(1, OK)  # no such stream
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    with pytest.raises(LocalProtocolError):
        server.send_data(1, b"x")  # DATA before the head
    server.send_headers(1, OK, end_stream=True)
    with pytest.raises(LocalProtocolError):
        server.send_headers(1, OK)
    server.reset_stream(1, 0)  # over already: nothing happens
    assert rst_codes(take(server)) == []


def test_closed_streams_are_remembered_within_a_bound() -> None:
    server, peer = server_and_h2_client()
    for sid in range(1, 2 * (CLOSED_MEMORY + 10), 2):
        peer.send_headers(sid, GET, end_stream=True)
        feed(server, peer.data_to_send())
        server.reset_stream(sid, 0x8)
        peer.receive_data(take(server))
    assert len(server._closed) == CLOSED_MEMORY
    assert server.streams == {}


def test_h2_events_and_ours_agree_on_a_reset_from_us() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, POST)
    feed(server, peer.data_to_send())
    server.reset_stream(1, 0x8)
    got = peer.receive_data(take(server))
    assert [(type(e), e.error_code) for e in got] == [(StreamReset, 0x8)]  # type: ignore[attr-defined]
    peer.send_headers(3, GET, end_stream=True)
    assert [type(e) for e in feed(server, peer.data_to_send())] == [Head]
    assert not any(isinstance(e, WindowUpdated) for e in got)
