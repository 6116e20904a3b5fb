"""The receiving machinery both sides share (exercised through H2Server)."""

from __future__ import annotations

import random

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from hyperframe.frame import (
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from kernel.protocol.h2_common import (
    ConnectionEnding,
    H2Event,
    StreamData,
    StreamEnd,
    StreamRequest,
    StreamReset,
    WindowOpen,
)
from kernel.protocol.h2_server import H2Server

pytestmark = pytest.mark.usefixtures("h2_engine")

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")]


def client() -> H2Connection:
    conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    return conn


def ready() -> tuple[H2Server, H2Connection]:
    server, peer = H2Server(), client()
    server.initiate()
    assert server.receive_data(peer.data_to_send(), 0.0) == []
    peer.receive_data(server.data_to_send())
    server.receive_data(peer.data_to_send(), 0.0)
    server.data_to_send()
    return server, peer


def conversation() -> bytes:
    peer = client()
    for sid in (1, 3, 5):
        peer.send_headers(sid, [*GET[:3], (b":path", b"/%d" % sid), (b"content-length", b"6")])
    for sid in (1, 3, 5):
        peer.send_data(sid, b"abc")
    peer.send_data(1, b"def", end_stream=True)
    peer.send_data(3, b"def")
    peer.send_headers(3, [(b"x-t", b"1")], end_stream=True)
    peer.reset_stream(5)
    peer.ping(b"12345678")
    return peer.data_to_send()


def feed(chunks: list[bytes]) -> tuple[list[H2Event], bytes]:
    server = H2Server()
    server.initiate()
    events: list[H2Event] = []
    for chunk in chunks:
        events += server.receive_data(chunk, 0.0)
    return events, server.data_to_send()


def test_events_do_not_depend_on_how_bytes_are_split() -> None:
    data = conversation()
    whole, sent = feed([data])
    assert [type(e) for e in whole] == [
        StreamRequest, StreamRequest, StreamRequest,
        StreamData, StreamData, StreamData, StreamData, StreamEnd,
        StreamData, StreamEnd, StreamReset,
    ]  # fmt: skip
    assert whole[-2] == StreamEnd(3, [(b"x-t", b"1")])
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert feed(chunks) == (whole, sent)
    assert feed([data[i : i + 1] for i in range(len(data))]) == (whole, sent)


def test_goaway_from_the_peer_lets_open_streams_finish() -> None:
    server, peer = ready()
    peer.send_headers(1, GET, end_stream=True)
    server.receive_data(peer.data_to_send(), 0.0)
    events = server.receive_data(
        GoAwayFrame(0, error_code=0xB, additional_data=b"bye").serialize(), 0.0
    )
    assert events == [
        ConnectionEnding(0xB, "peer sent GOAWAY ENHANCE_YOUR_CALM bye", 0, remote=True)
    ]
    server.send_response(1, 200, [], end_stream=True)
    assert server.data_to_send()


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x00\x07\x07\x00\x00\x00\x00\x00" + b"\x00" * 7,  # 7 bytes of payload
        b"\x00\x00\x08\x07\x00\x00\x00\x00\x01" + b"\x00" * 8,  # on stream 1
    ],
    ids=["short", "on-a-stream"],
)
def test_malformed_goaway_is_a_protocol_error(frame: bytes) -> None:
    server, _ = ready()
    (event,) = server.receive_data(frame, 0.0)
    assert isinstance(event, ConnectionEnding)
    assert event.error_code == 1
    assert not event.remote


def test_h2_protocol_errors_end_the_connection_after_resetting_streams() -> None:
    server, peer = ready()
    peer.send_headers(1, GET)
    server.receive_data(peer.data_to_send(), 0.0)
    data_on_stream_0 = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"  # (hyperframe won't build it)
    events = server.receive_data(data_on_stream_0, 0.0)
    assert [type(e) for e in events] == [StreamReset, ConnectionEnding]
    assert events[1].error_code == int(ErrorCodes.PROTOCOL_ERROR)  # type: ignore[union-attr]
    assert server.ended
    assert server.receive_data(PingFrame(0).serialize(), 0.0) == []


def test_frames_after_a_breach_are_never_parsed() -> None:
    server, peer = ready()
    pings = b"".join(PingFrame(0, opaque_data=b"x" * 8).serialize() for _ in range(1500))
    peer.send_headers(1, GET, end_stream=True)
    events = server.receive_data(pings + peer.data_to_send(), 0.0)
    assert [type(e) for e in events] == [ConnectionEnding]


def test_window_open_is_sent_once_and_only_to_waiting_streams() -> None:
    server, peer = ready()
    peer.increment_flow_control_window(1_000_000)
    for sid in (1, 3):
        peer.send_headers(sid, GET, end_stream=True)
    server.receive_data(peer.data_to_send(), 0.0)
    for sid in (1, 3):
        server.send_response(sid, 200, [])
    assert server.send_data(1, b"x" * 70000) == 65535  # stream 1 waits
    updates = b"".join(WindowUpdateFrame(sid, window_increment=10).serialize() for sid in (1, 1, 3))
    assert server.receive_data(updates, 0.0) == [WindowOpen(1)]
    assert server.receive_data(WindowUpdateFrame(1, window_increment=10).serialize(), 0.0) == []
    assert server.send_window(3) > 0
    assert server.send_window(1) == 30
    assert server.send_data(1, b"x" * 40) == 30  # waits again; now the connection opens up
    assert server.receive_data(WindowUpdateFrame(0, window_increment=5).serialize(), 0.0) == [
        WindowOpen(0)
    ]
    server.send_data(1, b"x" * 30)
    bigger = SettingsFrame(0, settings={4: 100_000}).serialize()
    assert server.receive_data(bigger, 0.0) == [WindowOpen(0)]


def test_headers_with_padding_and_priority_are_fine() -> None:
    server, peer = ready()
    block = peer.encoder.encode(GET)
    frame = HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM", "PADDED", "PRIORITY"])
    frame.pad_length = 5
    (event,) = server.receive_data(frame.serialize(), 0.0)
    assert isinstance(event, StreamRequest)
    assert event.end_stream
