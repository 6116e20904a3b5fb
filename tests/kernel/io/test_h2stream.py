"""H2Stream (kernel/io/h2stream.py) against a real H2Server and an h2 client.

No sockets: a stub connection keeps the protocol object and collects what
``write_out`` would send, and the bytes are fed to a real ``h2`` client.
"""

from __future__ import annotations

import types
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio

from kernel.io.exchange import ClientGone
from kernel.io.h2stream import H2Stream
from kernel.protocol import h2_common as ev
from kernel.protocol.events import Data, EndOfMessage, ResponseHead
from kernel.protocol.h2_server import H2Server

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]


class StubConnection:
    """What an H2Stream needs of its H2Connection."""

    def __init__(self, proto: H2Server) -> None:
        self.proto = proto
        self.state: Any = None
        self.listener: Any = types.SimpleNamespace(send_timeout_s=60.0)
        self.client: Any = None
        self.written = bytearray()
        self.unfinished = 1  # the stream's own task

    async def write_out(self, sender: object = None) -> None:
        self.written += self.proto.data_to_send()


class Pair:
    """An H2Server and an h2 client talking through memory."""

    def __init__(self, window: int = 65535) -> None:
        self.server = H2Server(ev.H2Limits())
        self.server.initiate()
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(cfg)
        self.client.initiate_connection()
        self.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.conn = StubConnection(self.server)
        self.to_server()
        self.to_client()

    def to_server(self) -> list[Any]:
        return self.server.receive_data(self.client.data_to_send(), 0.0)

    def to_client(self) -> list[Any]:
        data = bytes(self.conn.written) + self.server.data_to_send()
        self.conn.written.clear()
        return self.client.receive_data(data) if data else []

    def open(self, end_stream: bool = False) -> H2Stream:
        self.client.send_headers(1, REQUEST, end_stream=end_stream)
        (request,) = [e for e in self.to_server() if isinstance(e, ev.StreamRequest)]
        return H2Stream(self.conn, request.stream_id)  # type: ignore[arg-type]


async def test_request_data_is_acknowledged_only_when_taken() -> None:
    pair = Pair()
    stream = pair.open()
    for _ in range(3):  # 48,000 of the 65,535-byte window: worth an update
        pair.client.send_data(1, b"x" * 16000)
    for e in pair.to_server():
        if isinstance(e, ev.StreamData):
            stream.push(Data(e.data), e.flow_length)
    assert not [e for e in pair.to_client() if isinstance(e, h2.events.WindowUpdated)]
    taken = 0
    while taken < 48000:
        event = await stream.next_body_event(1.0)
        assert isinstance(event, Data)
        taken += len(event.data)
    updates = [e for e in pair.to_client() if isinstance(e, h2.events.WindowUpdated)]
    assert sum(u.delta for u in updates if u.stream_id == 1) == 48000


async def test_a_response_larger_than_the_window_waits_for_it() -> None:
    pair = Pair(window=1000)
    stream = pair.open(end_stream=True)
    stream.begin_response(ResponseHead(200, [(b"content-length", b"3000")]))
    stream.write_body(b"y" * 3000)
    stream.end_response()
    received = bytearray()
    ended = False

    async def client_side() -> None:
        nonlocal ended
        while not ended:
            await trio.sleep(0.01)
            for e in pair.to_client():
                if isinstance(e, h2.events.DataReceived):
                    received.extend(e.data)
                    pair.client.acknowledge_received_data(e.flow_controlled_length, 1)
                ended = ended or isinstance(e, h2.events.StreamEnded)
            for e in pair.to_server():
                if isinstance(e, ev.WindowOpen):
                    stream.on_window()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            await stream.flush()
            assert stream.finished
    assert bytes(received) == b"y" * 3000


async def test_a_head_only_response_ends_with_its_headers() -> None:
    pair = Pair()
    stream = pair.open(end_stream=True)
    stream.begin_response(ResponseHead(204, []))
    stream.end_response()
    await stream.flush()
    events = pair.to_client()
    (response,) = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert response.stream_ended is not None
    assert not [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert stream.finished
    assert stream.conn.unfinished == 0  # no longer counted against the stream limit


async def test_a_reset_stream_ends_reads_and_writes() -> None:
    pair = Pair()
    stream = pair.open()
    stream.on_reset()
    assert stream.scope.cancel_called
    with pytest.raises(ClientGone):
        await stream.next_body_event(1.0)
    stream.begin_response(ResponseHead(200, []))
    with pytest.raises(ClientGone):
        await stream.flush()


async def test_body_end_and_timeout() -> None:
    pair = Pair()
    stream = pair.open()
    stream.push(EndOfMessage([(b"x-trailer", b"1")]))
    assert await stream.next_body_event(1.0) == EndOfMessage([(b"x-trailer", b"1")])
    from sdk import RemoteProtocolError

    with pytest.raises(RemoteProtocolError) as info:
        await stream.next_body_event(0.05)
    assert info.value.status_hint == 408
