"""The sending half and lifecycle both sides share (through H2Server/H2Client)."""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from kernel.protocol.h2_client import H2Client
from kernel.protocol.h2_common import H2_PREFACE, H2Limits, StreamData, StreamRequest
from kernel.protocol.h2_server import H2Server
from tests.helpers.h2frames import parse_frames as frames

pytestmark = pytest.mark.usefixtures("h2_engine")

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")]


def ready(limits: H2Limits | None = None) -> tuple[H2Server, H2Connection]:
    server = H2Server(limits)
    server.initiate()
    peer = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    peer.initiate_connection()
    peer.increment_flow_control_window(1 << 20)
    assert server.receive_data(peer.data_to_send(), 0.0) == []
    peer.receive_data(server.data_to_send())
    server.receive_data(peer.data_to_send(), 0.0)
    server.data_to_send()
    return server, peer


def test_initiate_writes_settings_and_the_connection_window() -> None:
    server = H2Server()
    server.initiate()
    settings, update = frames(server.data_to_send())
    assert isinstance(settings, SettingsFrame)
    assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 100
    assert settings.settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == 65536
    assert settings.settings[SettingsFrame.ENABLE_PUSH] == 0
    assert isinstance(update, WindowUpdateFrame)
    assert update.stream_id == 0
    assert update.window_increment == (1 << 20) - 65535
    assert server.data_to_send() == b""
    client = H2Client(H2Limits(initial_window_size=1 << 20, connection_window=65535))
    client.initiate()
    data = client.data_to_send()
    assert data.startswith(H2_PREFACE)
    sent = frames(data[len(H2_PREFACE) :])  # no WINDOW_UPDATE: 65535 is the default
    assert {type(f) for f in sent} == {SettingsFrame}  # one frame, or two with h2
    settings = {k: v for f in sent for k, v in f.settings.items()}  # type: ignore[attr-defined]
    assert settings[SettingsFrame.ENABLE_PUSH] == 0
    assert settings[SettingsFrame.INITIAL_WINDOW_SIZE] == 1 << 20


def test_send_data_is_split_at_the_peer_frame_size() -> None:
    server, peer = ready()
    peer.send_headers(1, GET, end_stream=True)
    server.receive_data(peer.data_to_send(), 0.0)
    server.send_response(1, 200, [])
    assert server.send_data(1, b"x" * 40000, end_stream=True) == 40000
    data = [f for f in frames(server.data_to_send()) if isinstance(f, DataFrame)]
    assert [len(f.data) for f in data] == [16384, 16384, 7232]
    assert ["END_STREAM" in f.flags for f in data] == [False, False, True]


def test_empty_send_data_with_end_stream_ends_the_stream() -> None:
    server, peer = ready()
    peer.send_headers(1, GET, end_stream=True)
    server.receive_data(peer.data_to_send(), 0.0)
    server.send_response(1, 200, [])
    server.data_to_send()
    assert server.send_data(1, b"", end_stream=True) == 0
    (frame,) = frames(server.data_to_send())
    assert isinstance(frame, DataFrame)
    assert "END_STREAM" in frame.flags
    assert server.open_streams == 0


def test_ack_data_gives_back_at_most_what_was_handed_out() -> None:
    server, peer = ready(H2Limits(connection_window=65535))
    peer.send_headers(1, GET)
    peer.send_data(1, b"x" * 16384)
    peer.send_data(1, b"x" * 16384)
    events = server.receive_data(peer.data_to_send(), 0.0)
    assert sum(e.flow_length for e in events if isinstance(e, StreamData)) == 32768
    server.ack_data(1, 1 << 30)
    updates = [f for f in frames(server.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert sorted((f.stream_id, f.window_increment) for f in updates) == [(0, 32768), (1, 32768)]
    server.ack_data(1, 100)
    assert server.data_to_send() == b""


def test_reset_sends_rst_and_later_data_is_acknowledged_for_us() -> None:
    server, peer = ready(H2Limits(connection_window=65535))
    peer.send_headers(1, GET)
    server.receive_data(peer.data_to_send(), 0.0)
    server.reset(1, int(ErrorCodes.CANCEL))
    (rst,) = frames(server.data_to_send())
    assert isinstance(rst, RstStreamFrame)
    assert rst.error_code == 8
    assert server.open_streams == 0
    server.reset(1)  # again: no-op
    assert server.data_to_send() == b""
    # DATA already in flight: no event, and the connection window is not lost.
    late = b"".join(DataFrame(1, data=b"y" * 16384).serialize() for _ in range(3))
    assert server.receive_data(late, 0.0) == []
    updates = [f for f in frames(server.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert sum(f.window_increment for f in updates if f.stream_id == 0) >= 32768


def test_error_goaway_ends_the_connection_at_once() -> None:
    server, peer = ready()
    peer.send_headers(1, GET)
    server.receive_data(peer.data_to_send(), 0.0)
    server.goaway(int(ErrorCodes.INTERNAL_ERROR))
    (goaway,) = frames(server.data_to_send())
    assert isinstance(goaway, GoAwayFrame)
    assert (goaway.error_code, goaway.last_stream_id) == (2, 1)
    assert server.ended
    assert server.open_streams == 0
    server.send_response(1, 200, [])
    assert server.send_data(1, b"x") == 0
    assert server.receive_data(HeadersFrame(3).serialize(), 0.0) == []
    assert server.data_to_send() == b""


def test_two_step_graceful_goaway() -> None:
    server, peer = ready()
    server.goaway(last_stream_id=2**31 - 1)  # "stop opening streams, soon"
    peer.send_headers(1, GET, end_stream=True)
    (event,) = server.receive_data(peer.data_to_send(), 0.0)
    assert isinstance(event, StreamRequest)  # still accepted
    server.goaway()  # now the real last stream
    goaways = [f for f in frames(server.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert [(g.error_code, g.last_stream_id) for g in goaways] == [(0, 2**31 - 1), (0, 1)]
    assert not server.ended
    server.send_response(1, 204, [], end_stream=True)
    assert server.open_streams == 0


def test_outbound_pressure_and_send_window() -> None:
    server, peer = ready(H2Limits(max_outbound_buffer=1000))
    peer.send_headers(1, GET, end_stream=True)
    server.receive_data(peer.data_to_send(), 0.0)
    server.send_response(1, 200, [])
    assert not server.outbound_pressure
    assert server.send_window(1) <= 1000
    server.send_data(1, b"x" * 5000)
    assert server.outbound_pressure
    assert server.send_window(1) == 0
    server.data_to_send()
    assert not server.outbound_pressure
    assert server.send_window(1) > 0
