"""H2Server against a real h2 client (and raw hyperframe frames), all in memory."""

from __future__ import annotations

from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived
from h2.settings import SettingCodes
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.protocol.events import RequestHead
from kernel.protocol.h2_common import (
    H2_PREFACE,
    ConnectionEnding,
    H2Event,
    H2Limits,
    StreamData,
    StreamEnd,
    StreamRefused,
    StreamRequest,
    StreamReset,
    WindowOpen,
)
from kernel.protocol.h2_machine import Machine
from kernel.protocol.h2_server import H2Server
from sdk._errors import LocalProtocolError
from tests.helpers.h2frames import parse_frames as frames
from tests.helpers.h2frames import wire

pytestmark = pytest.mark.usefixtures("h2_engine")


def held_block(server: H2Server) -> int:
    """Bytes of an unfinished header block the engine holds."""
    engine = server._conn
    if isinstance(engine, Machine):
        return len(engine._block)
    return sum(len(f.data) for f in engine._h2.incoming_buffer._headers_buffer)


GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"a.example"),
    (b":path", b"/"),
]
CALM = int(ErrorCodes.ENHANCE_YOUR_CALM)


class Pair:
    """An H2Server and an h2 client that sends whatever it is told (no validation)."""

    def __init__(self, limits: H2Limits | None = None, *, handshake: bool = True) -> None:
        self.server = H2Server(limits)
        self.server.initiate()
        config = H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.client = H2Connection(config)
        self.client.initiate_connection()
        self.now = 0.0
        if handshake:
            assert self.to_server() == []
            self.to_client()
            assert self.to_server() == []  # the SETTINGS ACK

    def to_server(self) -> list[H2Event]:
        data = self.client.data_to_send()
        return self.server.receive_data(data, self.now) if data else []

    def to_client(self) -> list[Any]:
        data = self.server.data_to_send()
        return self.client.receive_data(data) if data else []

    def raw(self, *sent: Frame) -> list[H2Event]:
        self.client.data_to_send()  # (anything h2 queued goes first)
        return self.server.receive_data(b"".join(f.serialize() for f in sent), self.now)

    def body(self, sid: int, data: bytes, end: bool = False) -> None:
        for i in range(0, len(data), 16384):
            last = end and i + 16384 >= len(data)
            self.client.send_data(sid, data[i : i + 16384], end_stream=last)

    def request(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool = True) -> Any:
        self.client.send_headers(sid, headers, end_stream=end)
        return self.to_server()


def test_get_round_trip() -> None:
    p = Pair()
    headers = [*GET, (b"accept", b"*/*"), (b"cookie", b"a=1"), (b"cookie", b"b=2")]
    (event,) = p.request(1, headers)
    assert isinstance(event, StreamRequest)
    assert event.end_stream
    assert event.scheme == b"https"
    assert event.authority == b"a.example"
    assert event.head == RequestHead(
        b"GET",
        b"/",
        [(b"host", b"a.example"), (b"accept", b"*/*"), (b"cookie", b"a=1; b=2")],
        http_version=b"2",
    )
    p.server.send_response(1, 200, [(b"Content-Type", b"text/plain"), (b"Connection", b"close")])
    assert p.server.send_data(1, b"hello", end_stream=True) == 5
    got = p.to_client()
    assert got[0].headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert got[1].data == b"hello"
    assert got[2].stream_id == 1
    assert p.server.open_streams == 0


def test_credentials_go_on_the_wire_never_indexed() -> None:
    """h2's outbound normalisation is off; the never-indexed marking of
    credentials (h2_fields) still reaches the HPACK encoder."""
    p = Pair()
    p.request(1, GET)
    p.server.data_to_send()
    p.server.send_response(1, 200, [(b"set-cookie", b"a=1"), (b"authorization", b"x")])
    (headers,) = [f for f in frames(p.server.data_to_send()) if isinstance(f, HeadersFrame)]
    decoded = Decoder().decode(headers.data, raw=True)
    assert decoded == [(b":status", b"200"), (b"set-cookie", b"a=1"), (b"authorization", b"x")]
    assert [isinstance(f, NeverIndexedHeaderTuple) for f in decoded] == [False, False, True]


def test_post_with_body_and_trailers_both_ways() -> None:
    p = Pair()
    p.client.send_headers(1, [*GET[:3], (b":path", b"/up"), (b"te", b"trailers")])
    p.client.send_data(1, b"abc")
    p.client.send_data(1, b"def")
    p.client.send_headers(1, [(b"x-sum", b"9")], end_stream=True)
    events = p.to_server()
    assert isinstance(events[0], StreamRequest)
    assert not events[0].end_stream
    assert events[1:] == [
        StreamData(1, b"abc", 3),
        StreamData(1, b"def", 3),
        StreamEnd(1, [(b"x-sum", b"9")]),
    ]
    p.server.send_response(1, 201, [(b"content-length", b"2")])
    p.server.send_data(1, b"ok")
    p.server.send_end(1, [(b"x-done", b"yes"), (b"content-length", b"7")])
    got = p.to_client()
    assert [type(e).__name__ for e in got] == [
        "ResponseReceived", "DataReceived", "TrailersReceived", "StreamEnded",
    ]  # fmt: skip
    assert got[2].headers == [(b"x-done", b"yes")]  # framing fields never go in trailers


def test_settings_advertised_and_connection_window() -> None:
    p = Pair()
    remote = p.client.remote_settings
    assert remote.max_concurrent_streams == 100
    assert remote.max_header_list_size == 65536
    assert remote.header_table_size == 4096
    assert remote.initial_window_size == 65535
    assert remote.enable_push == 0
    assert p.client.outbound_flow_control_window == 1 << 20
    small = Pair(H2Limits(header_table_size=512, initial_window_size=1000, max_frame_size=32768))
    assert small.client.remote_settings.header_table_size == 512
    assert small.client.remote_settings.initial_window_size == 1000
    assert small.client.remote_settings.max_frame_size == 32768
    # Applied to our decoder once the client acknowledged them.
    assert small.server._conn.decoder.max_allowed_table_size == 512


def test_request_body_is_only_acknowledged_by_ack_data() -> None:
    p = Pair()
    p.request(1, [*GET[:3], (b":path", b"/up")], end=False)
    p.body(1, b"x" * 40000)
    events = p.to_server()
    assert sum(len(e.data) for e in events if isinstance(e, StreamData)) == 40000
    assert not [f for f in frames(p.server.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert p.client.local_flow_control_window(1) == 65535 - 40000
    p.server.ack_data(1, 40000)
    updates = [f for f in frames(p.server.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert {f.stream_id for f in updates} == {1}  # h2 holds the connection one back until 1/2
    p.server.ack_data(1, 1)  # nothing outstanding: ignored
    assert p.server.data_to_send() == b""


def test_reset_stream_gives_unacknowledged_bytes_back_to_the_connection() -> None:
    p = Pair(H2Limits(connection_window=65535))
    p.request(1, [*GET[:3], (b":path", b"/up")], end=False)
    p.body(1, b"x" * 60000)
    p.to_server()
    p.client.reset_stream(1, ErrorCodes.CANCEL)
    assert p.to_server() == [StreamReset(1, 8, remote=True, reason="reset by the peer")]
    updates = [f for f in frames(p.server.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert [(f.stream_id, f.window_increment) for f in updates] == [(0, 60000)]


def test_send_data_stops_at_the_window_and_resumes_on_window_open() -> None:
    p = Pair()
    p.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100})
    p.to_server()
    p.to_client()
    p.request(1, GET)
    p.server.send_response(1, 200, [])
    assert p.server.send_window(1) == 100
    assert p.server.send_data(1, b"y" * 250) == 100
    assert p.server.send_window(1) == 0
    got = p.to_client()
    assert sum(len(e.data) for e in got if isinstance(e, DataReceived)) == 100
    p.client.acknowledge_received_data(100, 1)
    assert p.to_server() == [WindowOpen(1)]
    assert p.server.send_data(1, b"y" * 150, end_stream=True) == 100
    assert p.server.open_streams == 1


def test_outbound_buffer_bounds_what_send_data_takes() -> None:
    p = Pair(H2Limits(max_outbound_buffer=5000))
    p.request(1, GET)
    p.server.send_response(1, 200, [])
    taken = p.server.send_data(1, b"z" * 20000)
    assert 0 < taken <= 5000
    assert p.server.send_data(1, b"z" * 20000) == 0
    assert p.server.outbound_pressure
    p.server.data_to_send()
    assert p.server.send_data(1, b"z" * 3000) == 3000


# -- refusals: each refused stream gets StreamRefused and never a StreamRequest ----------
def _with(*extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [*GET, *extra]


REFUSED: dict[str, tuple[list[tuple[bytes, bytes]], int]] = {
    "CR in value": (_with((b"x", b"a\rb")), 400),
    "LF in value": (_with((b"x", b"a\nb")), 400),
    "NUL in value": (_with((b"x", b"a\x00b")), 400),
    "CTL in value": (_with((b"x", b"a\x01b")), 400),
    "leading space": (_with((b"x", b" a")), 400),
    "trailing tab": (_with((b"x", b"a\t")), 400),
    "CR in name": (_with((b"x\r", b"a")), 400),
    "NUL in name": (_with((b"x\x00y", b"a")), 400),
    "space in name": (_with((b"x y", b"a")), 400),
    "empty name": (_with((b"", b"a")), 400),
    "upper-case name": (_with((b"X-Foo", b"a")), 400),
    "CR in :path": ([*GET[:3], (b":path", b"/a\rb")], 400),
    "LF in :path": ([*GET[:3], (b":path", b"/a\nb")], 400),
    "NUL in :path": ([*GET[:3], (b":path", b"/a\x00")], 400),
    "space in :path": ([*GET[:3], (b":path", b"/a b")], 400),
    "CR in :method": ([(b":method", b"GE\rT"), *GET[1:]], 400),
    "NUL in :scheme": ([GET[0], (b":scheme", b"http\x00"), *GET[2:]], 400),
    "LF in :authority": ([*GET[:2], (b":authority", b"a\nb"), GET[3]], 400),
    "CR in :protocol": ([*GET, (b":protocol", b"websocket\r")], 400),
    "empty :path": ([*GET[:3], (b":path", b"")], 400),
    "relative :path": ([*GET[:3], (b":path", b"a")], 400),
    "absolute :path": ([*GET[:3], (b":path", b"http://b/")], 400),
    "* for GET": ([*GET[:3], (b":path", b"*")], 400),
    "connection": (_with((b"connection", b"close")), 400),
    "keep-alive": (_with((b"keep-alive", b"5")), 400),
    "proxy-connection": (_with((b"proxy-connection", b"x")), 400),
    "transfer-encoding": (_with((b"transfer-encoding", b"chunked")), 400),
    "upgrade": (_with((b"upgrade", b"h2c")), 400),
    "te gzip": (_with((b"te", b"gzip")), 400),
    "te trailers, gzip": (_with((b"te", b"trailers, gzip")), 400),
    "no :method": (GET[1:], 400),
    "no :scheme": ([GET[0], *GET[2:]], 400),
    "no :path": (GET[:3], 400),
    "two :path": ([*_with()[:4], (b":path", b"/b")], 400),
    "unknown pseudo": ([*GET, (b":foo", b"x")], 400),
    ":status in request": ([*GET, (b":status", b"200")], 400),
    "pseudo after regular": ([*GET[:3], (b"x", b"1"), GET[3]], 400),
    "bad :scheme": ([GET[0], (b":scheme", b"ftp"), *GET[2:]], 400),
    "bad :method": ([(b":method", b"G T"), *GET[1:]], 400),
    "no authority": ([GET[0], GET[1], GET[3]], 400),
    "userinfo in :authority": ([*GET[:2], (b":authority", b"u@h"), GET[3]], 400),
    "authority and host differ": (_with((b"host", b"b.example")), 400),
    "two hosts": ([GET[0], GET[1], GET[3], (b"host", b"a"), (b"host", b"a")], 400),
    "repeated content-length": (_with((b"content-length", b"0"), (b"content-length", b"0")), 400),
    "content-length with END_STREAM": (_with((b"content-length", b"3")), 400),
    "CONNECT": ([(b":method", b"CONNECT"), (b":authority", b"a.example:443")], 501),
    "extended CONNECT": ([(b":method", b"CONNECT"), (b":protocol", b"websocket"), *GET[1:]], 501),
    "header list over the limit": (_with(*[(b"x-%d" % i, b"v" * 1000) for i in range(70)]), 431),
    # The HTTP/1.1 listener's limits (8192, 100): an HTTP/2 request used to
    # reach the upstream as a request line or field list it would refuse.
    "line over max_request_line": ([*GET[:3], (b":path", b"/" + b"a" * 8179)], 414),
    "over max_header_count": (_with(*[(b"x-%d" % i, b"v") for i in range(101)]), 431),
}


@pytest.mark.parametrize("name", REFUSED)
def test_malformed_request_is_refused_on_its_stream_only(name: str) -> None:
    headers, status = REFUSED[name]
    p = Pair()
    events = p.request(1, headers)
    assert len(events) == 1, events
    assert isinstance(events[0], StreamRefused)
    assert events[0].stream_id == 1
    assert events[0].status == status
    # What is told of it, for its flow: its :method, unless it is not a valid one.
    sent = [v for n, v in headers if n == b":method"]
    assert events[0].head is not None
    assert events[0].head.method in {b"", *sent[:1]}
    if sent == [b"GET"]:
        assert events[0].head.method == b"GET"
    assert events[0].head.http_version == b"2"
    # The shell answers; the connection goes on serving.
    p.server.send_response(1, status, [(b"content-length", b"0")], end_stream=True)
    assert p.to_client()[0].headers[0] == (b":status", str(status).encode())
    assert [type(e) for e in p.request(3, GET)] == [StreamRequest]


def test_a_request_at_the_http1_limits_is_accepted() -> None:
    p = Pair()
    # GET + " " + target + " HTTP/1.1" is exactly 8192 bytes; 99 fields and host.
    at_limit = [*GET[:3], (b":path", b"/" + b"a" * 8178)]
    assert [type(e) for e in p.request(1, at_limit)] == [StreamRequest]
    assert [type(e) for e in p.request(3, _with(*[(b"x-%d" % i, b"v") for i in range(99)]))] == [
        StreamRequest
    ]


def test_valid_edge_cases_are_accepted() -> None:
    p = Pair()
    options = [
        (b":method", b"OPTIONS"),
        (b":scheme", b"http"),
        (b":path", b"*"),
        (b"host", b"h:80"),
    ]
    (event,) = p.request(1, options)
    assert isinstance(event, StreamRequest)
    assert event.head.target == b"*"
    assert event.head.headers == [(b"host", b"h:80")]
    (event,) = p.request(3, _with((b"host", b"a.example"), (b"x", b"a\tb c\x80")))
    assert isinstance(event, StreamRequest)
    assert event.head.headers == [(b"host", b"a.example"), (b"x", b"a\tb c\x80")]


def test_refused_request_body_is_discarded_and_acknowledged() -> None:
    p = Pair(H2Limits(connection_window=65535))
    p.client.send_headers(1, _with((b"connection", b"x")))
    p.body(1, b"x" * 50000)
    events = p.to_server()
    assert [type(e) for e in events] == [StreamRefused]
    updates = [f for f in frames(p.server.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    # (h2 batches window updates: half a window at a time)
    assert sum(f.window_increment for f in updates if f.stream_id == 0) >= 32768
    p.server.send_response(1, 400, [], end_stream=True)
    sent = frames(p.server.data_to_send())
    # The request was not finished: it is cut short without error (RFC 9113 §8.1).
    assert [(type(f), getattr(f, "error_code", None)) for f in sent][-1] == (RstStreamFrame, 0)
    assert p.server.open_streams == 0


def test_unparseable_content_length_refuses_only_its_stream(h2_engine: str) -> None:
    # A malformed request is a stream error (RFC 9113 §8.1.1): the shell
    # answers 400 and the connection goes on. h2 parses content-length
    # itself, before we see the head, and makes it a connection error.
    p = Pair()
    events = p.request(1, _with((b"content-length", b"abc")), end=False)
    if h2_engine == "h2":
        assert events == [ConnectionEnding(1, events[-1].reason, 1)]
        return
    assert events == [StreamRefused(1, 400, "invalid or repeated content-length")]
    assert [type(e) for e in p.request(3, GET)] == [StreamRequest]


@pytest.mark.parametrize(
    ("declared", "chunks", "trailers"),
    [(b"3", [b"abcd"], False), (b"5", [b"ab", b"cd"], False), (b"5", [b"ab"], True)],
    ids=["more-than-declared", "less-at-end-stream", "less-before-trailers"],
)
def test_content_length_mismatch_resets_only_the_stream(
    declared: bytes, chunks: list[bytes], trailers: bool
) -> None:
    p = Pair()
    p.client.send_headers(1, _with((b"content-length", declared)))
    for i, chunk in enumerate(chunks):
        p.client.send_data(1, chunk, end_stream=not trailers and i == len(chunks) - 1)
    if trailers:
        p.client.send_headers(1, [(b"x", b"y")], end_stream=True)
    events = p.to_server()
    assert isinstance(events[0], StreamRequest)
    assert events[-1] == StreamReset(1, 1, remote=False, reason=events[-1].reason)  # type: ignore[union-attr]
    assert not any(isinstance(e, StreamEnd) for e in events)
    assert sum(len(e.data) for e in events if isinstance(e, StreamData)) < 4
    rst = [f for f in frames(p.server.data_to_send()) if isinstance(f, RstStreamFrame)]
    assert rst[0].stream_id == 1
    assert rst[0].error_code == 1
    assert [type(e) for e in p.request(3, GET)] == [StreamRequest]


def test_bad_trailers_reset_the_stream() -> None:
    p = Pair()
    p.client.send_headers(1, GET[:4])
    p.client.send_headers(1, [(b"transfer-encoding", b"chunked")], end_stream=True)
    events = p.to_server()
    assert [type(e) for e in events] == [StreamRequest, StreamReset]
    assert not events[1].remote  # type: ignore[union-attr]


def test_streams_over_the_limit_are_refused_not_fatal() -> None:
    p = Pair(H2Limits(max_concurrent_streams=2), handshake=False)
    # The client has not seen our SETTINGS yet (legal): it opens three.
    for sid in (1, 3, 5):
        p.client.send_headers(sid, GET, end_stream=True)
    events = p.to_server()
    assert [(type(e), e.stream_id) for e in events] == [(StreamRequest, 1), (StreamRequest, 3)]  # type: ignore[union-attr]
    rst = [f for f in frames(p.server.data_to_send()) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in rst] == [(5, int(ErrorCodes.REFUSED_STREAM))]
    p.server.send_response(1, 204, [], end_stream=True)
    assert [type(e) for e in p.request(7, GET)] == [StreamRequest]


# -- floods -------------------------------------------------------------------------------
def _ended_with_calm(p: Pair, events: list[H2Event]) -> None:
    assert isinstance(events[-1], ConnectionEnding)
    assert events[-1].error_code == CALM
    goaways = [f for f in frames(p.server.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert [g.error_code for g in goaways] == [CALM]
    assert p.server.receive_data(PingFrame(0).serialize(), p.now) == []
    assert p.server.data_to_send() == b""


def test_rapid_reset_flood_ends_the_connection_with_bounded_work() -> None:
    p = Pair()
    block = b""
    for i in range(1000):
        sid = 2 * i + 1
        p.client.send_headers(sid, GET)
        p.client.reset_stream(sid, ErrorCodes.CANCEL)
        block += p.client.data_to_send()
    events = p.server.receive_data(block, 0.0)
    _ended_with_calm(p, events)
    requests = [e for e in events if isinstance(e, StreamRequest)]
    assert 200 <= len(requests) <= 201  # the budget, not the 1000 sent
    assert events[-1].last_stream_id == requests[-1].stream_id  # type: ignore[union-attr]


def test_resets_spread_over_time_stay_within_the_budget() -> None:
    p = Pair(H2Limits(reset_budget=10, budget_window_s=10.0))
    for i in range(50):
        p.now = float(i)  # one per second: the bucket refills faster than that
        sid = 2 * i + 1
        p.client.send_headers(sid, GET)
        p.client.reset_stream(sid, ErrorCodes.CANCEL)
        assert [type(e) for e in p.to_server()] == [StreamRequest, StreamReset]
    for i in range(50, 60):  # the same rate without time passing: over budget
        p.client.send_headers(2 * i + 1, GET)
        p.client.reset_stream(2 * i + 1, ErrorCodes.CANCEL)
    _ended_with_calm(p, p.to_server())


def _flood(kind: str, n: int) -> list[Frame]:
    if kind == "ping":
        return [PingFrame(0, opaque_data=b"12345678") for _ in range(n)]
    if kind == "settings":
        return [SettingsFrame(0, settings={4: 65535}) for _ in range(n)]
    if kind == "priority":
        return [PriorityFrame(3, depends_on=0, stream_weight=1) for _ in range(n)]
    return [DataFrame(1, data=b"") for _ in range(n)]


@pytest.mark.parametrize(
    ("kind", "allowed"),
    # The client's initial SETTINGS and its ACK of ours took two control
    # tokens in the handshake.
    [("ping", 998), ("settings", 998), ("priority", 998), ("empty-data", 100)],
)
def test_control_and_empty_frame_floods_end_the_connection(kind: str, allowed: int) -> None:
    p = Pair()
    p.request(1, GET, end=False)
    assert p.raw(*_flood(kind, allowed)) == []
    events = p.raw(*_flood(kind, 1000))
    assert [type(e) for e in events] == [StreamReset, ConnectionEnding]
    _ended_with_calm(p, events)


@pytest.mark.parametrize("kind", ["ping-ack", "settings-ack"])
def test_unasked_acknowledgement_floods_end_the_connection(kind: str) -> None:
    """They were free: a client could send millions, and stall every other."""
    p = Pair()
    frame = PingFrame(0, opaque_data=b"12345678") if kind == "ping-ack" else SettingsFrame(0)
    frame.flags.add("ACK")
    assert p.raw(*[frame] * 998) == []
    _ended_with_calm(p, p.raw(*[frame] * 10))


def test_a_window_update_flood_ends_the_connection() -> None:
    """1-byte increments with no DATA of ours to credit: after the reserve,
    each one is a control frame."""
    p = Pair()
    flood = [WindowUpdateFrame(0, window_increment=1)] * 1200
    _ended_with_calm(p, p.raw(*flood))


def test_a_downloading_client_may_send_window_updates_freely() -> None:
    p = Pair()
    p.request(1, GET)
    p.server.send_response(1, 200, [])
    for _ in range(3000):
        assert p.server.send_data(1, b"x" * 10) == 10
    p.server.data_to_send()
    updates = [WindowUpdateFrame(1, window_increment=10), WindowUpdateFrame(0, window_increment=10)]
    assert not any(isinstance(e, ConnectionEnding) for e in p.raw(*updates * 3000))


def test_budgets_refill_with_time() -> None:
    p = Pair()
    p.request(1, GET, end=False)
    for second in range(30):
        p.now = 10.0 * second  # a whole budget per window is fine, forever
        assert p.raw(*_flood("empty-data", 100)) == []
    _ended_with_calm(p, p.raw(*_flood("empty-data", 1)))


def test_ping_flood_queues_at_most_the_budget_of_acks() -> None:
    p = Pair()
    events = p.raw(*_flood("ping", 5000))
    sent = frames(p.server.data_to_send())
    assert isinstance(events[-1], ConnectionEnding)
    assert sum(isinstance(f, PingFrame) for f in sent) == 998  # (handshake SETTINGS + ACK: 2)
    assert isinstance(sent[-1], GoAwayFrame)


def test_continuation_flood_is_cut_at_the_frame_cap() -> None:
    p = Pair()
    block = p.client.encoder.encode(GET)
    flood: list[Frame] = [HeadersFrame(1, data=block[:2])]
    flood += [ContinuationFrame(1, data=b"") for _ in range(10000)]
    events = p.raw(*flood)
    assert events == [ConnectionEnding(CALM, events[0].reason, 0)]  # type: ignore[union-attr]
    # The engine holds the HEADERS' two bytes and at most the allowed CONTINUATIONs.
    assert held_block(p.server) <= 2
    assert not p.server._inbuf


def test_continuation_bytes_are_capped_before_they_are_buffered() -> None:
    p = Pair()
    junk = b"\x00" * 16384
    flood: list[Frame] = [HeadersFrame(1, data=junk)]
    flood += [ContinuationFrame(1, data=junk) for _ in range(12)]
    events = p.raw(*flood)
    assert isinstance(events[-1], ConnectionEnding)
    assert events[-1].error_code == CALM
    assert held_block(p.server) <= 2 * 65536


def test_oversized_frame_header_ends_the_connection_without_buffering() -> None:
    p = Pair()
    header = (2**24 - 1).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big")
    events = p.server.receive_data(header, 0.0)
    assert [type(e) for e in events] == [ConnectionEnding]
    assert events[0].error_code == int(ErrorCodes.FRAME_SIZE_ERROR)  # type: ignore[union-attr]


def test_header_list_far_over_the_limit_is_a_connection_error() -> None:
    p = Pair(H2Limits(max_header_list_size=4096))
    events = p.request(1, _with(*[(b"x-%d" % i, b"v" * 1000) for i in range(12)]))
    assert [type(e) for e in events] == [ConnectionEnding]
    assert events[0].error_code == CALM  # type: ignore[union-attr]


# -- shutdown -----------------------------------------------------------------------------
def test_graceful_goaway_lets_open_streams_finish_and_refuses_new_ones() -> None:
    p = Pair()
    p.request(1, GET)
    p.server.goaway()
    (goaway,) = frames(p.server.data_to_send())
    assert isinstance(goaway, GoAwayFrame)
    assert (goaway.error_code, goaway.last_stream_id) == (0, 1)
    # The client had not seen it yet and opens stream 3: refused, retryable.
    assert p.request(3, GET) == []
    rst = frames(p.server.data_to_send())
    assert [(type(f), f.stream_id, f.error_code) for f in rst] == [(RstStreamFrame, 3, 7)]  # type: ignore[attr-defined]
    p.server.send_response(1, 200, [], end_stream=True)
    assert [type(f) for f in frames(p.server.data_to_send())] == [HeadersFrame]
    assert p.server.open_streams == 0


def test_client_goaway_and_eof() -> None:
    p = Pair()
    p.request(1, GET)
    p.request(3, GET, end=False)
    events = p.raw(GoAwayFrame(0, last_stream_id=0, error_code=0))
    assert events == [ConnectionEnding(0, "peer sent GOAWAY NO_ERROR", 0, remote=True)]
    p.server.send_response(1, 204, [], end_stream=True)  # streams still finish
    assert p.server.open_streams == 1
    events = p.server.receive_data(b"", 1.0)
    assert events == [
        StreamReset(3, 8, remote=True, reason="peer closed the connection"),
        ConnectionEnding(0, "peer closed the connection", 3, remote=True),
    ]
    assert p.server.receive_data(b"more", 2.0) == []


def test_bad_preface_and_split_preface() -> None:
    server = H2Server()
    server.initiate()
    server.data_to_send()
    events = server.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    assert [type(e) for e in events] == [ConnectionEnding]
    assert events[0].error_code == 1  # type: ignore[union-attr]
    p = Pair(handshake=False)
    data = p.client.data_to_send()
    for i in range(len(data)):
        assert p.server.receive_data(data[i : i + 1], 0.0) == []
    p.client.send_headers(1, GET, end_stream=True)
    assert [type(e) for e in p.to_server()] == [StreamRequest]


def test_sending_rules() -> None:
    p = Pair()
    p.request(1, [(b":method", b"HEAD"), *GET[1:]])
    p.server.send_response(1, 200, [(b"content-length", b"10")])
    with pytest.raises(LocalProtocolError):
        p.server.send_data(1, b"x")  # a HEAD response has no body
    p.server.send_end(1)
    p.request(3, GET)
    with pytest.raises(LocalProtocolError):
        p.server.send_data(3, b"x")  # the head goes first
    p.server.send_informational(3, 103, [(b"link", b"</a>")])
    with pytest.raises(LocalProtocolError):
        p.server.send_informational(3, 101, [])
    p.server.send_response(3, 200, [(b"content-length", b"2")])
    with pytest.raises(LocalProtocolError):
        p.server.send_response(3, 200, [])
    with pytest.raises(LocalProtocolError):
        p.server.send_data(3, b"abc")
    with pytest.raises(LocalProtocolError):
        p.server.send_end(3)
    assert p.server.send_data(3, b"ab", end_stream=True) == 2
    # Streams that are gone take nothing and raise nothing.
    assert p.server.send_data(99, b"x") == 0
    p.server.send_response(99, 200, [])
    p.server.reset(99)


# -- hostile bytes: whatever arrives, events or the connection's end, never an exception --
_GET_BLOCK = Encoder().encode(GET)
_payloads = st.one_of(
    st.binary(max_size=40),
    st.just(_GET_BLOCK),
    st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")),
    st.binary(min_size=8, max_size=8),
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 2**32 - 1)), max_size=3).map(
        lambda kv: b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in kv)
    ),
)
_frames = st.lists(
    st.builds(
        wire,
        st.integers(0, 10),
        st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x25, 0xFF]),
        st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1]),
        _payloads,
    ),
    max_size=25,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=_frames, cut=st.integers(1, 64))
def test_hostile_frames_end_in_events_never_in_an_exception(frames: list[bytes], cut: int) -> None:
    server = H2Server()
    server.initiate()
    data = H2_PREFACE + wire(4, 0, 0, b"") + b"".join(frames)
    ended = False
    for pos in range(0, len(data), cut):
        events = server.receive_data(data[pos : pos + cut], 0.0)
        assert not ended or events == []
        for event in events:
            if isinstance(event, StreamRequest):
                server.send_response(event.stream_id, 204, [], end_stream=True)
            # Ours (not the peer's GOAWAY): the connection is over, nothing follows.
            ended = ended or (isinstance(event, ConnectionEnding) and not event.remote)
        server.data_to_send()
    assert server.ended or not ended


def test_a_stream_refused_by_a_limit_carries_its_whole_head() -> None:
    """For its flow (logs, metrics): the head was valid, only too large."""
    p = Pair()
    (event,) = p.request(1, _with(*[(b"x-%d" % i, b"v") for i in range(101)]))
    assert isinstance(event, StreamRefused)
    assert event.status == 431
    assert event.head is not None
    assert (event.head.method, event.head.target) == (b"GET", b"/")
    assert len(event.head.headers) == 102  # host first, then every field
