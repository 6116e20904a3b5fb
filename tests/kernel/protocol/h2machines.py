"""Drivers for the HTTP/2 machine tests (not a test module): feed a machine
frames, take what it wrote, and an h2 client as the independent peer."""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import SettingsAcknowledged
from hyperframe.frame import Frame, RstStreamFrame

from kernel.protocol import h2_frames as m
from kernel.protocol.h2_common import H2_PREFACE
from kernel.protocol.h2_frames import Event, H2Error, SettingsChanged
from kernel.protocol.h2_machine import Machine
from tests.helpers.h2frames import parse_frames

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
POST = [(b":method", b"POST"), *GET[1:]]
OK = [(b":status", b"200"), (b"content-type", b"text/plain")]


def feed(machine: Machine, data: bytes | bytearray) -> list[Event]:
    """Walk ``data`` frame by frame into ``machine`` (what H2Core does)."""
    events: list[Event] = []
    pos = 0
    if data.startswith(H2_PREFACE):
        pos = len(H2_PREFACE)
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFF_FFFF
        machine.receive(ftype, flags, sid, bytes(data[pos + 9 : pos + 9 + length]), events)
        pos += 9 + length
    return events


def take(machine: Machine) -> bytes:
    out = bytes(machine.out)
    machine.out.clear()
    return out


def server_and_h2_client(**settings: int) -> tuple[Machine, H2Connection]:
    """A server machine and an h2 client past both SETTINGS exchanges."""
    server = Machine(client=False)
    server.initiate({m.ENABLE_PUSH: 0, m.MAX_CONCURRENT_STREAMS: 100, **settings})
    peer = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    peer.initiate_connection()
    events = feed(server, peer.data_to_send())
    assert [type(e) for e in events] == [SettingsChanged]
    h2_events = peer.receive_data(take(server))
    assert any(isinstance(e, SettingsAcknowledged) for e in h2_events)
    feed(server, peer.data_to_send())  # h2's ACK of our SETTINGS
    assert not server._pending
    take(server)
    return server, peer


def raw(machine: Machine, *frames: Frame) -> list[Event]:
    return feed(machine, b"".join(f.serialize() for f in frames))


def refused(machine: Machine, *frames: Frame) -> H2Error:
    with pytest.raises(H2Error) as info:
        raw(machine, *frames)
    return info.value


def rst_codes(data: bytes) -> list[tuple[int, int]]:
    return [
        (f.stream_id, f.error_code) for f in parse_frames(data) if isinstance(f, RstStreamFrame)
    ]
