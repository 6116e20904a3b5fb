"""H2Client against a real h2 server, and against our own H2Server, in memory."""

from __future__ import annotations

from typing import Any

import hpack
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived, TrailersReceived
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, PingFrame, RstStreamFrame, WindowUpdateFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.protocol.events import RequestHead, ResponseHead
from kernel.protocol.h2_client import H2Client
from kernel.protocol.h2_common import (
    ConnectionEnding,
    H2Event,
    H2Limits,
    StreamData,
    StreamEnd,
    StreamInformational,
    StreamRequest,
    StreamReset,
    StreamResponse,
    WindowOpen,
)
from kernel.protocol.h2_server import H2Server
from sdk._errors import LocalProtocolError
from tests.helpers.h2frames import parse_frames as frames
from tests.helpers.h2frames import wire

pytestmark = pytest.mark.usefixtures("h2_engine")

GET = RequestHead(b"GET", b"/x?y", [(b"host", b"a.example"), (b"accept", b"*/*")])
POST = RequestHead(b"POST", b"/up", [(b"host", b"a.example")])
OK = [(b":status", b"200")]


class Upstream:
    """An H2Client and an h2 server that sends whatever it is told."""

    def __init__(self, limits: H2Limits | None = None, **settings: int) -> None:
        self.client = H2Client(limits)
        self.client.initiate()
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.server = H2Connection(config)
        self.server.initiate_connection()
        if settings:
            self.server.update_settings({SettingCodes[k]: v for k, v in settings.items()})
        self.to_server()
        assert self.to_client() == []
        self.to_server()

    def to_server(self) -> list[Any]:
        data = self.client.data_to_send()
        return self.server.receive_data(data) if data else []

    def to_client(self, now: float = 0.0) -> list[H2Event]:
        data = self.server.data_to_send()
        return self.client.receive_data(data, now) if data else []

    def respond(self, sid: int, headers: list[tuple[bytes, bytes]], *body: bytes) -> Any:
        self.server.send_headers(sid, headers, end_stream=not body)
        for i, chunk in enumerate(body):
            self.server.send_data(sid, chunk, end_stream=i == len(body) - 1)
        return self.to_client()


def test_get_builds_pseudo_headers_and_reads_the_response() -> None:
    u = Upstream()
    head = RequestHead(
        b"GET",
        b"http://ignored.example/p?q",
        [
            (b"host", b"a.example"),
            (b"Accept", b"*/*"),
            (b"connection", b"keep-alive"),
            (b"keep-alive", b"5"),
            (b"proxy-connection", b"x"),
            (b"upgrade", b"h2c"),
            (b"te", b"trailers, deflate"),
        ],
    )
    assert u.client.send_request(head, b"https", b"a.example:8443", end_stream=True) == 1
    (request, _ended) = u.to_server()
    assert isinstance(request, RequestReceived)
    assert request.headers == [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"a.example:8443"),
        (b":path", b"/p?q"),
        (b"accept", b"*/*"),
        (b"te", b"trailers"),
    ]
    events = u.respond(1, [*OK, (b"content-length", b"5"), (b"x", b"y")], b"hel", b"lo")
    head = ResponseHead(200, [(b"content-length", b"5"), (b"x", b"y")], http_version=b"2")
    assert events == [
        StreamResponse(1, head, False),
        StreamData(1, b"hel", 3),
        StreamData(1, b"lo", 2),
        StreamEnd(1, []),
    ]
    assert u.client.open_streams == 0


def test_post_body_and_trailers_both_ways() -> None:
    u = Upstream()
    sid = u.client.send_request(POST, b"http", b"a.example", end_stream=False)
    assert u.client.send_data(sid, b"abc") == 3
    u.client.send_end(sid, [(b"x-sum", b"1"), (b"host", b"evil")])
    events = u.to_server()
    assert isinstance(events[1], DataReceived)
    assert events[1].data == b"abc"
    assert isinstance(events[2], TrailersReceived)
    assert events[2].headers == [(b"x-sum", b"1")]
    u.server.send_headers(sid, [(b":status", b"100")])
    u.server.send_headers(sid, OK)
    u.server.send_data(sid, b"ok")
    u.server.send_headers(sid, [(b"x-t", b"2")], end_stream=True)
    assert u.to_client() == [
        StreamInformational(1, 100, []),
        StreamResponse(1, ResponseHead(200, [], http_version=b"2"), False),
        StreamData(1, b"ok", 2),
        StreamEnd(1, [(b"x-t", b"2")]),
    ]


def _bad(*fields: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [*OK, *fields]


BAD_HEADS: dict[str, list[tuple[bytes, bytes]]] = {
    "CR in value": _bad((b"x", b"a\rb")),
    "LF in value": _bad((b"x", b"a\nb")),
    "NUL in value": _bad((b"x", b"a\x00")),
    "upper-case name": _bad((b"X-Y", b"1")),
    "connection": _bad((b"connection", b"close")),
    "transfer-encoding": _bad((b"transfer-encoding", b"chunked")),
    "keep-alive": _bad((b"keep-alive", b"1")),
    "upgrade": _bad((b"upgrade", b"x")),
    "no :status": [(b"x", b"1")],
    "short :status": [(b":status", b"20")],
    "101": [(b":status", b"101")],
    "two :status": [*OK, *OK],
    "request pseudo-header": [*OK, (b":path", b"/")],
    "pseudo after regular": [(b"x", b"1"), *OK],
    "repeated content-length": _bad((b"content-length", b"1"), (b"content-length", b"1")),
}


@pytest.mark.parametrize("name", BAD_HEADS)
def test_malformed_response_resets_only_its_stream(name: str) -> None:
    u = Upstream()
    u.client.send_request(GET, b"https", b"a.example", end_stream=True)
    u.to_server()
    u.server.send_headers(1, BAD_HEADS[name], end_stream=False)
    events = u.to_client()
    assert events == [StreamReset(1, 1, remote=False, reason=events[0].reason)]  # type: ignore[union-attr]
    rst = [f for f in frames(u.client.data_to_send()) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in rst] == [(1, 1)]
    assert u.client.is_usable
    sid = u.client.send_request(GET, b"https", b"a.example", end_stream=True)
    u.to_server()
    assert [type(e) for e in u.respond(sid, OK)] == [StreamResponse]


@pytest.mark.parametrize(
    ("method", "headers", "body"),
    [
        (b"GET", _bad((b"content-length", b"3")), [b"abcd"]),
        (b"GET", _bad((b"content-length", b"5")), [b"ab", b"c"]),
        (b"HEAD", _bad((b"content-length", b"5")), [b"x"]),
        (b"GET", [(b":status", b"204")], [b"x"]),
        (b"GET", _bad((b"content-length", b"5")), []),  # END_STREAM on the head
    ],
    ids=["more", "less", "head-with-body", "204-with-body", "no-body"],
)
def test_body_length_mismatch_resets_the_stream(
    method: bytes, headers: list[tuple[bytes, bytes]], body: list[bytes]
) -> None:
    u = Upstream()
    u.client.send_request(RequestHead(method, b"/", []), b"https", b"a", end_stream=True)
    u.to_server()
    events = u.respond(1, headers, *body)
    assert isinstance(events[-1], StreamReset)
    assert not events[-1].remote
    assert events[-1].error_code == 1
    assert not any(isinstance(e, StreamEnd) for e in events)
    assert u.client.is_usable


def test_data_before_the_head_and_bad_trailers() -> None:
    u = Upstream()
    u.client.send_request(GET, b"https", b"a", end_stream=True)
    u.client.send_request(GET, b"https", b"a", end_stream=True)
    u.to_server()
    u.server.data_to_send()
    events = u.client.receive_data(DataFrame(1, data=b"x").serialize(), 0.0)
    assert [(type(e), e.stream_id) for e in events] == [(StreamReset, 1)]  # type: ignore[union-attr]
    u.server.send_headers(3, OK)
    # (A forbidden field is only left out of a response's trailers; a
    # malformed one still resets the stream.)
    u.server.send_headers(3, [(b"x-bad", b" padded ")], end_stream=True)
    assert [type(e) for e in u.to_client()] == [StreamResponse, StreamReset]


def test_forbidden_response_trailers_are_left_out() -> None:
    u = Upstream()
    u.client.send_request(GET, b"https", b"a", end_stream=True)
    u.to_server()
    u.server.send_headers(1, OK)
    u.server.send_headers(
        1, [(b"x-sum", b"1"), (b"set-cookie", b"a=1"), (b"host", b"evil")], end_stream=True
    )
    events = u.to_client()
    assert [type(e) for e in events] == [StreamResponse, StreamEnd]
    assert events[-1].trailers == [(b"x-sum", b"1")]  # type: ignore[union-attr]


def test_responses_are_not_acknowledged_until_ack_data() -> None:
    u = Upstream()
    u.client.send_request(GET, b"https", b"a", end_stream=True)
    u.to_server()
    chunks = [b"d" * 16384, b"d" * 16384, b"d" * 7232]
    events = u.respond(1, OK, *chunks)
    assert sum(e.flow_length for e in events if isinstance(e, StreamData)) == 40000
    assert not any(isinstance(f, WindowUpdateFrame) for f in frames(u.client.data_to_send()))
    u.client.ack_data(1, 40000)  # the stream ended: acknowledged then already
    assert u.client.data_to_send() == b""
    u.client.send_request(GET, b"https", b"a", end_stream=True)
    u.to_server()
    u.server.send_headers(3, OK)
    for chunk in chunks[:2]:
        u.server.send_data(3, chunk)
    assert [type(e) for e in u.to_client()] == [StreamResponse, StreamData, StreamData]
    assert not any(isinstance(f, WindowUpdateFrame) for f in frames(u.client.data_to_send()))
    u.client.ack_data(3, 32768)
    sent = [f for f in frames(u.client.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert [f.stream_id for f in sent] == [3]


def test_request_body_waits_for_the_upstream_window() -> None:
    u = Upstream(INITIAL_WINDOW_SIZE=100)
    sid = u.client.send_request(POST, b"https", b"a", end_stream=False)
    assert u.client.send_data(sid, b"b" * 300) == 100
    events = u.to_server()
    assert sum(len(e.data) for e in events if isinstance(e, DataReceived)) == 100
    u.server.acknowledge_received_data(100, sid)
    assert u.to_client() == [WindowOpen(sid)]
    assert u.client.send_data(sid, b"b" * 200, end_stream=True) == 100


def test_available_streams_follows_the_peer_limit() -> None:
    u = Upstream(MAX_CONCURRENT_STREAMS=2)
    assert u.client.available_streams == 2
    u.client.send_request(GET, b"https", b"a", end_stream=True)
    u.client.send_request(GET, b"https", b"a", end_stream=True)
    assert u.client.available_streams == 0
    with pytest.raises(LocalProtocolError):
        u.client.send_request(GET, b"https", b"a", end_stream=True)
    u.to_server()
    u.respond(1, OK)
    assert u.client.available_streams == 1


def test_upstream_reset_and_eof() -> None:
    u = Upstream()
    for _ in range(2):
        u.client.send_request(GET, b"https", b"a", end_stream=True)
    u.to_server()
    u.server.reset_stream(1, ErrorCodes.REFUSED_STREAM)
    assert u.to_client() == [StreamReset(1, 7, remote=True, reason="reset by the peer")]
    assert u.client.receive_data(b"", 1.0) == [
        StreamReset(3, 8, remote=True, reason="peer closed the connection"),
        ConnectionEnding(0, "peer closed the connection", 3, remote=True),
    ]
    assert not u.client.is_usable
    assert u.client.available_streams == 0


def test_error_goaway_from_h2_upstream() -> None:
    u = Upstream()
    for _ in range(3):
        u.client.send_request(GET, b"https", b"a", end_stream=True)
    u.to_server()
    u.server.close_connection(ErrorCodes.INTERNAL_ERROR, last_stream_id=1)
    events = u.to_client()
    assert [(type(e), getattr(e, "stream_id", None)) for e in events] == [
        (StreamReset, 3), (StreamReset, 5), (ConnectionEnding, None),
    ]  # fmt: skip
    assert events[0].error_code == 7
    assert events[0].remote
    assert events[-1] == ConnectionEnding(2, "peer sent GOAWAY INTERNAL_ERROR", 1, remote=True)
    with pytest.raises(LocalProtocolError):
        u.client.send_request(GET, b"https", b"a", end_stream=True)


def test_ping_flood_from_upstream_ends_the_connection() -> None:
    u = Upstream()
    u.client.send_request(GET, b"https", b"a", end_stream=True)
    flood = b"".join(PingFrame(0, opaque_data=b"p" * 8).serialize() for _ in range(3000))
    events = u.client.receive_data(flood, 0.0)
    assert [type(e) for e in events] == [StreamReset, ConnectionEnding]
    assert events[-1].error_code == int(ErrorCodes.ENHANCE_YOUR_CALM)  # type: ignore[union-attr]
    assert events[-1].last_stream_id == 1  # type: ignore[union-attr]
    assert not u.client.is_usable


def test_send_request_refuses_what_cannot_be_sent() -> None:
    u = Upstream()
    for head, scheme, authority in [
        (RequestHead(b"CONNECT", b"a:443", []), b"https", b"a:443"),
        (GET, b"https", b"a b"),
        (GET, b"ftp", b"a"),
        (RequestHead(b"GET", b"relative", []), b"https", b"a"),
        (RequestHead(b"GET", b"/", [(b"x", b"a\r\nb: c")]), b"https", b"a"),
        (RequestHead(b"POST", b"/", [(b"content-length", b"3")]), b"https", b"a"),
    ]:
        with pytest.raises(LocalProtocolError):
            u.client.send_request(head, scheme, authority, end_stream=True)
    assert u.client.available_streams == 100  # nothing half-opened
    sid = u.client.send_request(POST, b"https", b"a", end_stream=True)
    with pytest.raises(LocalProtocolError):
        u.client.send_data(sid, b"late")


# -- our own two ends ---------------------------------------------------------------------
class Both:
    def __init__(self) -> None:
        self.server, self.client = H2Server(), H2Client()
        self.server.initiate()
        self.client.initiate()
        for _ in range(2):
            assert self.down() == []
            assert self.up() == []

    def up(self) -> list[H2Event]:
        data = self.client.data_to_send()
        return self.server.receive_data(data, 0.0) if data else []

    def down(self) -> list[H2Event]:
        data = self.server.data_to_send()
        return self.client.receive_data(data, 0.0) if data else []


def test_h2server_and_h2client_talk_with_backpressure() -> None:
    b = Both()
    sid = b.client.send_request(POST, b"https", b"a.example", end_stream=False)
    body = b"q" * 100_000
    taken = b.client.send_data(sid, body)
    assert taken == 65535  # the stream window we advertise
    events = b.up()
    request = events[0]
    assert isinstance(request, StreamRequest)
    assert request.head.headers == [(b"host", b"a.example")]
    data = [e for e in events if isinstance(e, StreamData)]
    assert sum(e.flow_length for e in data) == 65535
    assert b.down() == []  # nothing acknowledged, nothing given back
    for e in data:
        b.server.ack_data(sid, e.flow_length)
    assert b.down() == [WindowOpen(sid)]
    assert b.client.send_data(sid, body[taken:], end_stream=True) == len(body) - taken
    assert [type(e) for e in b.up()][-1] is StreamEnd
    b.server.send_response(sid, 200, [(b"x", b"1")])
    b.server.send_end(sid, [(b"x-t", b"2")])
    assert b.down() == [
        StreamResponse(sid, ResponseHead(200, [(b"x", b"1")], http_version=b"2"), False),
        StreamEnd(sid, [(b"x-t", b"2")]),
    ]
    assert b.server.open_streams == 0
    assert b.client.open_streams == 0


def test_graceful_goaway_between_our_ends() -> None:
    b = Both()
    ids = [b.client.send_request(GET, b"https", b"a", end_stream=True) for _ in range(3)]
    assert [type(e) for e in b.up()] == [StreamRequest] * 3
    b.server.goaway(last_stream_id=3)  # stream 5 is dropped: never processed
    events = b.down()
    assert [(type(e), getattr(e, "stream_id", None)) for e in events] == [
        (StreamReset, 5), (ConnectionEnding, None),
    ]  # fmt: skip
    assert events[0].error_code == 7  # type: ignore[union-attr]
    assert events[1] == ConnectionEnding(0, "peer sent GOAWAY NO_ERROR", 3, remote=True)
    assert not b.client.is_usable
    for sid in ids[:2]:  # streams up to last_stream_id still complete
        b.server.send_response(sid, 204, [], end_stream=True)
    assert [type(e) for e in b.down()] == [StreamResponse, StreamResponse]
    assert b.server.open_streams == 0
    assert b.client.open_streams == 0


# -- a hostile upstream: events or the connection's end, never an exception ------------
_RESPONSE_BLOCK = hpack.Encoder().encode([(b":status", b"200"), (b"content-length", b"3")])
_payloads = st.one_of(
    st.binary(max_size=40),
    st.just(_RESPONSE_BLOCK),
    st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")),
    st.binary(min_size=8, max_size=8),
)
_frames = st.lists(
    st.builds(
        wire,
        st.integers(0, 10),
        st.sampled_from([0, 1, 4, 5, 8, 0x20, 0xFF]),
        st.sampled_from([0, 1, 2, 3, 5]),
        _payloads,
    ),
    max_size=25,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=_frames, cut=st.integers(1, 64))
def test_a_hostile_upstream_ends_in_events_never_in_an_exception(
    frames: list[bytes], cut: int
) -> None:
    client = H2Client()
    client.initiate()
    client.send_request(GET, b"https", b"a.example", end_stream=True)
    client.send_request(POST, b"https", b"a.example", end_stream=False)
    client.data_to_send()
    data = wire(4, 0, 0, b"") + b"".join(frames)
    ended = False
    for pos in range(0, len(data), cut):
        events = client.receive_data(data[pos : pos + cut], 0.0)
        assert not ended or events == []
        ended = ended or any(isinstance(e, ConnectionEnding) and not e.remote for e in events)
        client.data_to_send()
    assert client.ended or not ended
