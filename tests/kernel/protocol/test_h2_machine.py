"""The HTTP/2 machine on its own, receiving: h2 as the independent peer, crafted
frames for the rest (sending is tested in test_h2_streams.py)."""

from __future__ import annotations

import hpack
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    DataReceived,
    ResponseReceived,
    StreamEnded,
    TrailersReceived,
)
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from kernel.protocol import h2_frames as m
from kernel.protocol.h2_frames import (
    Data,
    Ended,
    H2Error,
    Head,
    Reset,
    SettingsChanged,
    Trailers,
)
from kernel.protocol.h2_machine import Machine
from tests.helpers.h2frames import parse_frames, wire
from tests.kernel.protocol.h2machines import (
    GET,
    OK,
    POST,
    feed,
    raw,
    refused,
    rst_codes,
    server_and_h2_client,
    take,
)


# -- a whole exchange with h2 ---------------------------------------------------------
def test_a_request_and_its_response_with_h2_as_the_client() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, POST)
    peer.send_data(1, b"hello")
    peer.send_headers(1, [(b"x-sum", b"1")], end_stream=True)
    events = feed(server, peer.data_to_send())
    assert [type(e) for e in events] == [Head, Data, Trailers, Ended]
    head, data, trailers, _ = events
    assert isinstance(head, Head)
    assert (head.fields, head.end_stream) == (POST, False)
    assert isinstance(data, Data)
    assert (data.data, data.flow) == (b"hello", 5)
    assert isinstance(trailers, Trailers)
    assert trailers.fields == [(b"x-sum", b"1")]
    assert server.highest_inbound_stream_id == 1

    server.send_headers(1, OK)
    server.send_data(1, b"world")
    server.send_headers(1, [(b"x-done", b"yes")], end_stream=True)
    got = peer.receive_data(take(server))
    assert [type(e) for e in got] == [ResponseReceived, DataReceived, TrailersReceived, StreamEnded]
    assert got[0].headers == OK  # type: ignore[attr-defined]
    assert got[1].data == b"world"  # type: ignore[attr-defined]
    assert server.streams == {}  # both sides ended: closed


def test_h2_as_the_server_answers_our_client() -> None:
    client = Machine(client=True)
    client.initiate({m.ENABLE_PUSH: 0})
    peer = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    peer.initiate_connection()
    peer.receive_data(take(client))
    feed(client, peer.data_to_send())
    sid = client.next_stream_id()
    assert sid == 1
    client.send_headers(sid, GET, end_stream=True)
    assert client.next_stream_id() == 3
    peer.receive_data(take(client))
    peer.send_headers(1, [(b":status", b"103"), (b"link", b"</a>")])
    peer.send_headers(1, OK)
    peer.send_data(1, b"body", end_stream=True)
    events = feed(client, peer.data_to_send())
    assert [type(e) for e in events] == [Head, Head, Data, Ended]
    assert [e.informational for e in events[:2]] == [True, False]  # type: ignore[union-attr]
    assert client.streams == {}


def test_a_header_block_in_continuation_frames_is_joined() -> None:
    server, peer = server_and_h2_client()
    block = peer.encoder.encode(GET)
    events = raw(
        server,
        HeadersFrame(1, data=block[:3], flags=["END_STREAM"]),
        ContinuationFrame(1, data=block[3:6]),
        ContinuationFrame(1, data=block[6:], flags=["END_HEADERS"]),
    )
    assert [type(e) for e in events] == [Head]  # the head carries its END_STREAM
    assert (events[0].fields, events[0].end_stream) == (GET, True)  # type: ignore[union-attr]


def test_padding_and_priority_are_stripped() -> None:
    server, peer = server_and_h2_client()
    block = peer.encoder.encode(POST)
    events = raw(
        server,
        HeadersFrame(1, data=block, flags=["END_HEADERS", "PADDED", "PRIORITY"], pad_length=7),
        DataFrame(1, data=b"abc", flags=["PADDED", "END_STREAM"], pad_length=4),
    )
    assert [type(e) for e in events] == [Head, Data, Ended]
    assert events[0].fields == POST  # type: ignore[union-attr]
    assert (events[1].data, events[1].flow) == (b"abc", 8)  # type: ignore[union-attr]


# -- flow control ---------------------------------------------------------------------
def test_a_settings_window_change_moves_open_streams() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    server.send_headers(1, OK)
    peer.update_settings({SettingsFrame.INITIAL_WINDOW_SIZE: 100_000})
    events = feed(server, peer.data_to_send())
    assert [type(e) for e in events] == [SettingsChanged]
    assert events[0].windows  # type: ignore[union-attr]
    assert server.send_window(1) == 65535  # the connection window is the smaller now
    assert server.streams[1].out_window == 100_000
    assert [type(f) for f in parse_frames(take(server))] == [HeadersFrame, SettingsFrame]  # + ACK


def test_our_settings_bind_us_only_once_acknowledged() -> None:
    server = Machine(client=False)
    server.initiate({m.MAX_FRAME_SIZE: 65536, m.HEADER_TABLE_SIZE: 0})
    assert server.max_inbound_frame_size == 16384
    raw(server, SettingsFrame(0, flags=["ACK"]))
    assert server.max_inbound_frame_size == 65536
    assert server.decoder.max_allowed_table_size == 0


def test_data_for_a_stream_we_reset_is_ignored_but_its_window_returned() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, POST)
    feed(server, peer.data_to_send())
    server.reset_stream(1, 0x8)
    assert [type(f) for f in parse_frames(take(server))] == [RstStreamFrame]
    frames = [DataFrame(1, data=b"x" * 16384) for _ in range(2)]
    assert raw(server, *frames) == []
    updates = [(f.stream_id, f.window_increment) for f in parse_frames(take(server))]
    assert updates == [(0, 32768)]  # the connection window, given back


# -- connection errors ----------------------------------------------------------------
_EH, _ES = 0x4, 0x1
_U31 = (2**31 - 1).to_bytes(4, "big")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (wire(m.DATA, 0, 0, b"x"), m.PROTOCOL_ERROR),
        (wire(m.HEADERS, _EH, 0, b"\x82"), m.PROTOCOL_ERROR),
        (wire(m.HEADERS, _EH, 2, b"\x82"), m.PROTOCOL_ERROR),
        (wire(m.DATA, 0, 9, b"x"), m.PROTOCOL_ERROR),
        (wire(m.RST_STREAM, 0, 9, b"\0\0\0\0"), m.PROTOCOL_ERROR),
        (wire(m.RST_STREAM, 0, 0, b"\0\0\0\0"), m.PROTOCOL_ERROR),
        (wire(m.WINDOW, 0, 9, b"\0\0\0\1"), m.PROTOCOL_ERROR),
        (wire(m.WINDOW, 0, 0, b"\0\0\0\0"), m.PROTOCOL_ERROR),
        (wire(m.WINDOW, 0, 0, _U31), m.FLOW_CONTROL_ERROR),
        (wire(m.SETTINGS, 0, 0, b"\0\x02\0\0\0\x02"), m.PROTOCOL_ERROR),
        (wire(m.SETTINGS, 0, 0, b"\0\x05\0\0\0\x64"), m.PROTOCOL_ERROR),
        (wire(m.SETTINGS, 0, 0, b"\0\x04\x80\0\0\0"), m.FLOW_CONTROL_ERROR),
        (wire(m.SETTINGS, 0, 1, b""), m.PROTOCOL_ERROR),
        (wire(m.PING, 0, 1, b"12345678"), m.PROTOCOL_ERROR),
        (wire(m.PUSH_PROMISE, _EH, 1, b"\0\0\0\x02\x82"), m.PROTOCOL_ERROR),
        (wire(m.CONT, _EH, 1, b"\x82"), m.PROTOCOL_ERROR),
        (wire(m.PRIORITY, 0, 0, b"\0\0\0\1\x10"), m.PROTOCOL_ERROR),
        (wire(m.HEADERS, _EH, 1, b"\xff\xff\xff\xff"), m.COMPRESSION_ERROR),
    ],
    ids=[
        "data-0",
        "headers-0",
        "headers-even",
        "data-idle",
        "rst-idle",
        "rst-0",
        "window-idle",
        "window-0-zero",
        "window-0-overflow",
        "enable-push",
        "max-frame-size",
        "initial-window",
        "settings-on-stream",
        "ping-on-stream",
        "push-promise",
        "naked-continuation",
        "priority-0",
        "hpack",
    ],
)
def test_connection_errors(data: bytes, code: int) -> None:
    server, _ = server_and_h2_client()
    with pytest.raises(H2Error) as info:
        feed(server, data)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("ftype", "flags", "payload", "code"),
    [
        (m.PING, 0, b"1234567", m.FRAME_SIZE_ERROR),
        (m.WINDOW, 0, b"123", m.FRAME_SIZE_ERROR),
        (m.RST_STREAM, 0, b"12345", m.FRAME_SIZE_ERROR),
        (m.SETTINGS, 0, b"12345", m.FRAME_SIZE_ERROR),
        (m.SETTINGS, m.ACK, b"123456", m.FRAME_SIZE_ERROR),
        (m.PRIORITY, 0, b"1234", m.FRAME_SIZE_ERROR),
        (m.DATA, m.PADDED, b"\x05abc", m.PROTOCOL_ERROR),
    ],
    ids=["ping", "window", "rst", "settings", "settings-ack", "priority", "padding"],
)
def test_malformed_frames_end_the_connection(
    ftype: int, flags: int, payload: bytes, code: int
) -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, POST)
    feed(server, peer.data_to_send())
    sid = 1 if ftype in (m.RST_STREAM, m.PRIORITY, m.DATA) else 0
    with pytest.raises(H2Error) as info:
        feed(server, m.frame(ftype, flags, sid, payload))
    assert info.value.code == code


def test_data_beyond_the_windows_ends_the_connection() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, POST)
    feed(server, peer.data_to_send())
    frames = [DataFrame(1, data=b"x" * n) for n in (16384, 16384, 16384, 16383)]
    raw(server, *frames)
    assert refused(server, DataFrame(1, data=b"x")).code == m.FLOW_CONTROL_ERROR


def test_a_frame_on_a_stream_that_ended_is_a_connection_error() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    server.send_headers(1, OK, end_stream=True)
    assert refused(server, DataFrame(1, data=b"x")).code == m.STREAM_CLOSED


def test_a_stream_id_may_not_go_down() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(3, GET, end_stream=True)
    feed(server, peer.data_to_send())
    # RFC 9113 §5.1.1: an unexpected stream identifier is a PROTOCOL_ERROR
    assert refused(server, HeadersFrame(1, data=b"\x82", flags=["END_HEADERS"])).code == (
        m.PROTOCOL_ERROR
    )


def test_headers_again_on_a_stream_that_ended_is_stream_closed() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    server.send_headers(1, OK, end_stream=True)
    assert refused(server, HeadersFrame(1, data=b"\x82", flags=["END_HEADERS"])).code == (
        m.STREAM_CLOSED
    )


def test_the_client_refuses_headers_on_an_even_stream() -> None:
    client = Machine(client=True)
    assert refused(client, HeadersFrame(2, data=b"\x88", flags=["END_HEADERS"])).code == (
        m.PROTOCOL_ERROR
    )


# -- stream errors: RST_STREAM, the connection goes on ----------------------------------
def test_data_after_end_stream_resets_the_stream() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    events = raw(server, DataFrame(1, data=b"x"))
    assert [(type(e), e.code, e.remote) for e in events] == [(Reset, m.STREAM_CLOSED, False)]  # type: ignore[union-attr]
    assert rst_codes(take(server)) == [(1, m.STREAM_CLOSED)]


def test_a_priority_on_itself_resets_an_open_stream_and_ends_the_connection_if_idle() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, POST)
    feed(server, peer.data_to_send())
    events = raw(server, PriorityFrame(1, depends_on=1))
    assert [type(e) for e in events] == [Reset]
    assert rst_codes(take(server)) == [(1, m.PROTOCOL_ERROR)]
    assert feed(server, PriorityFrame(1, depends_on=1).serialize()) == []  # over: ignored
    assert refused(server, PriorityFrame(9, depends_on=9)).code == m.PROTOCOL_ERROR


@pytest.mark.parametrize("padded", [False, True])
def test_headers_depending_on_their_own_stream_reset_only_it(padded: bool) -> None:
    """RFC 9113 §5.3.1: a stream error; it used to end the connection. The
    block is still decoded: the next one refers to its HPACK entries."""
    server, _ = server_and_h2_client()
    enc = hpack.Encoder()
    fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    block = enc.encode(fields)
    priority = b"\0\0\0\1\x10"
    flags = _EH | m.END_STREAM | 0x20
    payload = priority + block
    if padded:
        flags |= m.PADDED
        payload = b"\x02" + payload + b"\0\0"
    events = feed(server, wire(m.HEADERS, flags, 1, payload))
    assert [type(e) for e in events] == [Reset]
    assert rst_codes(take(server)) == [(1, m.PROTOCOL_ERROR)]
    events = feed(server, wire(m.HEADERS, _EH | m.END_STREAM, 3, enc.encode(fields)))
    assert [type(e) for e in events] == [Head]
    assert events[0].fields == fields  # type: ignore[union-attr]


def test_a_zero_stream_window_update_resets_the_stream() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    events = raw(server, WindowUpdateFrame(1, window_increment=0))
    assert [type(e) for e in events] == [Reset]
    assert rst_codes(take(server)) == [(1, m.PROTOCOL_ERROR)]


def test_a_stream_window_overflow_resets_the_stream() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, GET, end_stream=True)
    feed(server, peer.data_to_send())
    events = raw(server, WindowUpdateFrame(1, window_increment=2**31 - 1))
    assert [type(e) for e in events] == [Reset]
    assert rst_codes(take(server)) == [(1, m.FLOW_CONTROL_ERROR)]


def test_trailers_without_end_stream_reset_the_stream() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, POST)
    feed(server, peer.data_to_send())
    block = peer.encoder.encode([(b"x-t", b"1")])
    events = raw(server, HeadersFrame(1, data=block, flags=["END_HEADERS"]))
    assert [type(e) for e in events] == [Reset]
    assert rst_codes(take(server)) == [(1, m.PROTOCOL_ERROR)]


def test_a_stream_the_peer_reset_answers_late_frames_with_stream_closed() -> None:
    server, peer = server_and_h2_client()
    peer.send_headers(1, POST)
    peer.reset_stream(1)
    events = feed(server, peer.data_to_send())
    assert [(type(e), getattr(e, "remote", None)) for e in events] == [(Head, None), (Reset, True)]
    assert raw(server, DataFrame(1, data=b"x")) == []
    assert rst_codes(take(server)) == [(1, m.STREAM_CLOSED)]
    assert raw(server, WindowUpdateFrame(1, window_increment=1), RstStreamFrame(1)) == []


def test_an_informational_response_with_end_stream_resets_the_stream() -> None:
    client = Machine(client=True)
    client.send_headers(1, GET, end_stream=True)
    take(client)
    block = b"\x08\x03103"  # :status 103: a literal, its name from the static table
    events = raw(client, HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]))
    assert [type(e) for e in events] == [Reset]


def test_ping_is_answered_and_its_ack_is_not() -> None:
    server, _ = server_and_h2_client()
    assert raw(server, PingFrame(0, opaque_data=b"abcdefgh")) == []
    (ack,) = parse_frames(take(server))
    assert isinstance(ack, PingFrame)
    assert ("ACK" in ack.flags, ack.opaque_data) == (True, b"abcdefgh")
    raw(server, PingFrame(0, opaque_data=b"abcdefgh", flags=["ACK"]))
    assert take(server) == b""


def test_unknown_frame_types_are_ignored() -> None:
    server, _ = server_and_h2_client()
    assert feed(server, m.frame(0x42, 0xFF, 7, b"whatever")) == []
    assert take(server) == b""
