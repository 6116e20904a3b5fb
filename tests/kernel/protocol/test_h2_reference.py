"""The h2 engine: h2 behind the machine's interface, compared with the machine itself."""

from __future__ import annotations

import attrs
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from hyperframe.frame import DataFrame, SettingsFrame

from kernel.protocol import h2_frames as m
from kernel.protocol.h2_common import H2_PREFACE
from kernel.protocol.h2_frames import Data, Ended, Event, H2Error, Head, Trailers
from kernel.protocol.h2_machine import Machine
from kernel.protocol.h2_reference import H2Engine
from sdk._errors import LocalProtocolError
from tests.helpers.h2frames import parse_frames

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
POST = [(b":method", b"POST"), *GET[1:]]


def walk(engine: Machine | H2Engine, data: bytes) -> list[Event]:
    """Feed ``data`` frame by frame, as H2Core does (preface skipped)."""
    events: list[Event] = []
    pos = len(H2_PREFACE) if data.startswith(H2_PREFACE) else 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFF_FFFF
        payload = data[pos + 9 : pos + 9 + length]
        engine.receive(data[pos + 3], data[pos + 4], sid, payload, events)
        pos += 9 + length
    return events


def summary(events: list[Event]) -> list[tuple[object, ...]]:
    return [(type(e).__name__, *attrs.astuple(e)) for e in events]


def conversation() -> bytes:
    """A client's bytes: three requests, bodies, trailers, a reset, a ping."""
    peer = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    peer.initiate_connection()
    peer.send_headers(1, GET, end_stream=True)
    peer.send_headers(3, POST)
    peer.send_data(3, b"x" * 5000)
    peer.send_headers(3, [(b"x-t", b"1")], end_stream=True)
    peer.send_headers(5, POST)
    peer.send_data(5, b"abc")
    peer.reset_stream(5)
    peer.increment_flow_control_window(1000)
    peer.ping(b"12345678")
    return peer.data_to_send()


def test_both_engines_report_the_same_conversation() -> None:
    data = conversation()
    ours, theirs = Machine(client=False), H2Engine(client=False)
    for engine in (ours, theirs):
        engine.initiate({m.ENABLE_PUSH: 0, m.MAX_CONCURRENT_STREAMS: 100})
    assert summary(walk(ours, data)) == summary(walk(theirs, data))
    kinds = [type(e) for e in walk(Machine(client=False), data)]
    assert kinds.count(Head) == 3
    assert Trailers in kinds


def test_a_head_that_ends_the_stream_is_reported_once() -> None:
    engine = H2Engine(client=False)
    engine.initiate({})
    events = walk(engine, conversation())
    assert [type(e) for e in events if getattr(e, "stream_id", 0) == 1] == [Head]
    assert (Ended, 3) in [(type(e), getattr(e, "stream_id", 0)) for e in events]
    assert sum(len(e.data) for e in events if isinstance(e, Data)) == 5003


def test_h2s_own_goaway_is_dropped_for_the_caller_s() -> None:
    engine = H2Engine(client=False)
    engine.initiate({})
    engine.out.clear()
    with pytest.raises(H2Error) as info:
        walk(engine, DataFrame(7, data=b"x").serialize())  # an idle stream
    assert info.value.code == m.PROTOCOL_ERROR
    assert engine.out == b""  # H2Core writes the GOAWAY


def test_what_h2_enforces_at_once_and_what_waits_for_the_ack() -> None:
    engine = H2Engine(client=True)
    engine.initiate({m.ENABLE_PUSH: 0, m.INITIAL_WINDOW_SIZE: 1 << 20, m.MAX_FRAME_SIZE: 32768})
    assert engine.max_inbound_frame_size == 16384
    frames = parse_frames(bytes(engine.out)[len(H2_PREFACE) :])
    assert [type(f) for f in frames] == [SettingsFrame, SettingsFrame]
    walk(engine, SettingsFrame(0, flags=["ACK"]).serialize())
    walk(engine, SettingsFrame(0, flags=["ACK"]).serialize())
    assert engine.max_inbound_frame_size == 32768


def test_sending_mistakes_are_local_protocol_errors() -> None:
    engine = H2Engine(client=False)
    engine.initiate({})
    with pytest.raises(LocalProtocolError):
        engine.send_headers(1, [(b":status", b"200")])
    engine.reset_stream(9, 0)  # unknown: nothing happens
    engine.acknowledge(9, 100)
    assert engine.send_window(9) == 0
