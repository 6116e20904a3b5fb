"""The HTTP/1.1 codec interface: Limits, the factories, and what every codec
owes the kernel. Each behaviour test runs against both codecs."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from kernel.protocol.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    InformationalResponse,
    RequestHead,
    ResponseHead,
)
from kernel.protocol.h11_codec import H11ClientCodec, H11ServerCodec
from kernel.protocol.http1 import (
    CHUNKED,
    GOOD_NAMES,
    ClientCodec,
    Limits,
    ServerCodec,
    asks_websocket,
    make_client_codec,
    make_server_codec,
    reason_phrase,
    remember,
    resolve_kind,
    send_fields,
    send_request_check,
    with_close,
)
from kernel.protocol.httptools_codec import HttptoolsClientCodec, HttptoolsServerCodec
from sdk._errors import LocalProtocolError, RemoteProtocolError
from tests.kernel.protocol.corpus import (
    KINDS,
    LIMIT_REQUESTS,
    REQUESTS,
    RESPONSES,
    SMALL,
    Pair,
    run_client,
    run_server,
)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def read(codec: ServerCodec | ClientCodec, data: bytes = b"") -> list[Any]:
    """Feed ``data`` (if any) and collect events up to NEED_DATA/PAUSED (included)."""
    if data:
        codec.receive_data(data)
    out: list[Any] = []
    while True:
        event = codec.next_event()
        out.append(event)
        if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
            return out


def server(kind: str, data: bytes = b"", limits: Limits | None = None) -> ServerCodec:
    codec = make_server_codec(kind, limits or Limits())  # type: ignore[arg-type]
    if data:
        codec.receive_data(data)
    return codec


def client(kind: str) -> ClientCodec:
    return make_client_codec(kind)  # type: ignore[arg-type]


def lines(head: bytes) -> list[bytes]:
    """Header lines of a serialised head, names lower-cased."""
    out = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if line:
            out.append(name.lower() + b":" + value)
    return out


GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = ResponseHead(status_code=200, headers=[(b"content-length", b"0")])


# -- Limits and factories --------------------------------------------------------
def test_limits_defaults_and_bounds() -> None:
    lim = Limits()
    assert (lim.max_request_line, lim.max_header_bytes, lim.max_header_count) == (8192, 65536, 100)
    assert (lim.max_body_bytes, lim.max_chunk_ext) == (0, 4096)
    with pytest.raises(ValueError, match="max_body_bytes"):
        Limits(max_body_bytes=-1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        lim.max_body_bytes = 1  # type: ignore[misc]


def test_resolve_kind() -> None:
    assert resolve_kind("auto") == "httptools"  # httptools is installed here
    assert resolve_kind("h11") == "h11"
    assert resolve_kind("httptools") == "httptools"
    with pytest.raises(ValueError, match="unknown"):
        resolve_kind("h2")  # type: ignore[arg-type]


def test_factories() -> None:
    assert isinstance(make_server_codec("h11", Limits()), H11ServerCodec)
    assert isinstance(make_server_codec("auto", Limits()), HttptoolsServerCodec)
    assert isinstance(make_client_codec("h11"), H11ClientCodec)
    assert isinstance(make_client_codec("httptools", SMALL), HttptoolsClientCodec)


# -- the hostile corpus, both codecs ------------------------------------------------
@pytest.mark.parametrize(("name", "data", "expected"), REQUESTS, ids=[c[0] for c in REQUESTS])
def test_request_corpus(kind: str, name: str, data: bytes, expected: int | None) -> None:
    transcript = run_server(kind, [data])
    outcome = transcript[-1][1] if transcript[-1][0] == "error" else None
    assert outcome == expected, transcript


@pytest.mark.parametrize(
    ("name", "data", "expected"), LIMIT_REQUESTS, ids=[c[0] for c in LIMIT_REQUESTS]
)
def test_limits(kind: str, name: str, data: bytes, expected: int | None) -> None:
    transcript = run_server(kind, [data], SMALL)
    outcome = transcript[-1][1] if transcript[-1][0] == "error" else None
    assert outcome == expected, transcript
    # A head that arrives byte by byte is judged the same way.
    assert run_server(kind, [bytes([b]) for b in data], SMALL)[-1] == transcript[-1]


@pytest.mark.parametrize(("name", "data", "expected"), RESPONSES, ids=[c[0] for c in RESPONSES])
def test_response_corpus(kind: str, name: str, data: bytes, expected: int | None) -> None:
    request = RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"a")])
    transcript = run_client(kind, request, [data])
    outcome = transcript[-1][1] if transcript[-1][0] == "error" else None
    assert outcome == expected, transcript


def test_a_bare_cr_ending_the_head_is_refused_at_once(kind: str) -> None:
    """Not after the head timeout: the blank line it stands in for never comes."""
    codec = make_server_codec(kind, Limits())  # type: ignore[arg-type]
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n")
    with pytest.raises(RemoteProtocolError, match="bare CR"):
        codec.next_event()


# -- server: cycles, pipelining, EOF ----------------------------------------------
def test_pipelined_requests_are_answered_in_order(kind: str) -> None:
    codec = server(
        kind,
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
        b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    for target, body in ((b"/1", []), (b"/2", [Data(b"hi")]), (b"/3", [])):
        events = read(codec)
        assert isinstance(events[0], RequestHead)
        assert events[0].target == target
        assert events[1:] == [*body, EndOfMessage(), PAUSED]
        assert codec.next_event() is PAUSED  # stays paused until the cycle restarts
        with pytest.raises(LocalProtocolError):
            codec.start_next_cycle()  # no response yet
        codec.send_response_head(OK)
        codec.send_end()
        codec.start_next_cycle()
    assert read(codec) == [NEED_DATA]
    codec.receive_data(b"")
    assert read(codec) == [ConnectionClosed()]
    assert codec.next_event() == ConnectionClosed()


def test_buffered_tells_idle_from_a_started_head(kind: str) -> None:
    codec = server(kind, GET + b"\r\n")  # a stray CRLF after the request is skipped
    assert read(codec)[-1] is PAUSED
    codec.send_response_head(OK)
    codec.send_end()
    codec.start_next_cycle()
    assert codec.next_event() is NEED_DATA
    assert not codec.buffered  # idle
    codec.receive_data(b"GET /next HTTP/1.1\r\n")
    assert codec.next_event() is NEED_DATA
    assert codec.buffered  # a head has begun


def test_byte_by_byte_equals_whole(kind: str) -> None:
    data = (
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;e=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n" + GET
    )
    assert run_server(kind, [bytes([b]) for b in data]) == run_server(kind, [data])


def test_eof_after_request_while_paused(kind: str) -> None:
    codec = server(kind, GET)
    assert read(codec)[-1] is PAUSED
    codec.receive_data(b"")
    assert codec.next_event() is PAUSED
    codec.send_response_head(OK)
    codec.send_end()
    codec.start_next_cycle()
    assert codec.next_event() == ConnectionClosed()


def test_errors_are_final(kind: str) -> None:
    codec = server(kind, b"GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as first:
        codec.next_event()
    assert first.value.status_hint == 400
    assert not codec.keep_alive
    with pytest.raises(RemoteProtocolError):
        codec.next_event()
    with pytest.raises(LocalProtocolError):
        codec.send_response_head(OK)  # no request head was parsed


def test_error_mid_body_still_allows_a_response(kind: str) -> None:
    codec = server(kind, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert isinstance(codec.next_event(), RequestHead)
    with pytest.raises(RemoteProtocolError):
        codec.next_event()
    head = codec.send_response_head(
        ResponseHead(status_code=400, headers=[(b"content-length", b"0")])
    )
    assert b"connection: close" in lines(head)
    assert not codec.keep_alive


def test_request_fields(kind: str) -> None:
    codec = server(kind, b"GET http://h/p HTTP/1.0\r\nX-A:  1 \r\nx-a: 2\r\n\r\n")
    head = read(codec)[0]
    assert head == RequestHead(
        method=b"GET",
        target=b"http://h/p",
        headers=[(b"x-a", b"1"), (b"x-a", b"2")],
        http_version=b"1.0",
        keep_alive=False,
        expect_continue=False,
    )
    assert codec.request_method == b"GET"


# -- server: response framing ------------------------------------------------------
def respond(kind: str, request: bytes, head: ResponseHead) -> tuple[ServerCodec, bytes]:
    codec = server(kind, request)
    assert read(codec)[-1] is PAUSED
    return codec, codec.send_response_head(head)


def test_chunked_response_with_trailers(kind: str) -> None:
    codec, head = respond(kind, GET, ResponseHead(status_code=200, headers=[]))
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert lines(head) == [b"transfer-encoding: chunked"]
    assert codec.send_data(b"") == b""
    assert codec.send_data(b"hello") == b"5\r\nhello\r\n"
    assert codec.send_end([(b"x-t", b"1")]).lower() == b"0\r\nx-t: 1\r\n\r\n"
    assert codec.keep_alive


def test_content_length_is_enforced(kind: str) -> None:
    codec, _ = respond(
        kind, GET, ResponseHead(status_code=200, headers=[(b"content-length", b"3")])
    )
    assert codec.send_data(b"ab") == b"ab"
    with pytest.raises(LocalProtocolError):
        codec.send_data(b"cd")
    assert not codec.keep_alive
    codec, _ = respond(
        kind, GET, ResponseHead(status_code=200, headers=[(b"content-length", b"3")])
    )
    with pytest.raises(LocalProtocolError):
        codec.send_end()


def test_trailers_a_response_cannot_carry_are_dropped(kind: str) -> None:
    """RFC 9110 §6.5: optional metadata; the body is what must arrive."""
    codec, _ = respond(
        kind, GET, ResponseHead(status_code=200, headers=[(b"content-length", b"2")])
    )
    assert codec.send_data(b"hi") + codec.send_end([(b"x", b"1")]) == b"hi"
    assert codec.keep_alive
    codec, _ = respond(kind, b"GET / HTTP/1.0\r\n\r\n", ResponseHead(status_code=200, headers=[]))
    assert codec.send_data(b"hi") + codec.send_end([(b"x", b"1")]) == b"hi"
    codec, _ = respond(kind, GET, ResponseHead(status_code=200, headers=[]))
    assert codec.send_end([(b"x", b"1")]).lower() == b"0\r\nx: 1\r\n\r\n"


def test_forbidden_response_trailers_are_left_out(kind: str) -> None:
    codec = client(kind)
    codec.send_request_head(request())
    codec.send_end()
    events = read(
        codec,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n"
        b"0\r\nContent-Length: 99\r\nX-Sum: 1\r\nConnection: close\r\n\r\n",
    )
    assert events[1:] == [Data(b"hi"), EndOfMessage([(b"x-sum", b"1")]), PAUSED]
    assert codec.keep_alive


@pytest.mark.parametrize("answer", [b"hello there", b"SSH-2.0-x", b"\x16\x03\x01", b"HTTX"])
def test_an_answer_that_cannot_become_http_is_refused_at_once(kind: str, answer: bytes) -> None:
    """It used to be waited for until the response timeout (a 504, not a 502)."""
    codec = client(kind)
    codec.send_request_head(request())
    codec.send_end()
    codec.receive_data(answer)
    with pytest.raises(RemoteProtocolError) as info:
        codec.next_event()
    assert info.value.status_hint == 502


@pytest.mark.parametrize("start", [b"H", b"HTTP", b"HTTP/1.1 200 O"])
def test_the_start_of_a_response_is_waited_for(kind: str, start: bytes) -> None:
    codec = client(kind)
    codec.send_request_head(request())
    codec.send_end()
    codec.receive_data(start)
    assert codec.next_event() is NEED_DATA


def test_request_trailers_need_a_chunked_body(kind: str) -> None:
    codec = client(kind)
    codec.send_request_head(request(b"POST", [(b"content-length", b"0")]))
    with pytest.raises(LocalProtocolError):
        codec.send_end([(b"x", b"1")])


@pytest.mark.parametrize(
    ("request_line", "status"),
    [(b"HEAD / HTTP/1.1", 200), (b"GET / HTTP/1.1", 204), (b"GET / HTTP/1.1", 304)],
)
def test_bodyless_responses(kind: str, request_line: bytes, status: int) -> None:
    request = request_line + b"\r\nHost: a\r\n\r\n"
    codec, head = respond(
        kind, request, ResponseHead(status_code=status, headers=[(b"content-length", b"10")])
    )
    # RFC 9110 §8.6: a 204 never has one; HEAD and 304 say what a GET would get.
    assert (b"content-length: 10" in lines(head)) is (status != 204)
    with pytest.raises(LocalProtocolError):
        codec.send_data(b"x")
    codec, head = respond(
        kind, request, ResponseHead(status_code=status, headers=[(b"content-length", b"10")])
    )
    assert codec.send_end() == b""
    assert codec.keep_alive


def test_head_response_without_length_says_what_get_would(kind: str) -> None:
    codec, head = respond(
        kind, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", ResponseHead(status_code=200, headers=[])
    )
    assert lines(head) == [b"transfer-encoding: chunked"]
    assert codec.send_end() == b""


def test_http10_client_gets_close_delimited_body(kind: str) -> None:
    codec, head = respond(
        kind, b"GET / HTTP/1.0\r\n\r\n", ResponseHead(status_code=200, headers=[])
    )
    assert lines(head) == [b"connection: close"]
    assert codec.send_data(b"raw") == b"raw"
    assert codec.send_end() == b""
    assert not codec.keep_alive
    with pytest.raises(LocalProtocolError):
        codec.start_next_cycle()


def test_http10_client_with_length_is_still_closed(kind: str) -> None:
    codec, head = respond(kind, b"GET / HTTP/1.0\r\n\r\n", OK)
    assert lines(head) == [b"content-length: 0", b"connection: close"]
    assert not codec.keep_alive


@pytest.mark.parametrize(
    ("raw", "head"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", OK),
        (GET, ResponseHead(status_code=200, headers=[(b"content-length", b"0")], keep_alive=False)),
        (
            GET,
            ResponseHead(
                status_code=200, headers=[(b"content-length", b"0"), (b"connection", b"close")]
            ),
        ),
    ],
    ids=["request-close", "kernel-says-no", "response-close"],
)
def test_connection_close(kind: str, raw: bytes, head: ResponseHead) -> None:
    codec, data = respond(kind, raw, head)
    assert lines(data).count(b"connection: close") == 1
    assert not codec.keep_alive


def test_connection_tokens_merge_like_h11(kind: str) -> None:
    head = ResponseHead(
        status_code=200, headers=[(b"connection", b"keep-alive, x-hop")], keep_alive=False
    )
    _, data = respond(kind, GET, head)
    assert lines(data) == [
        b"connection: close",
        b"connection: x-hop",
        b"transfer-encoding: chunked",
    ]


def test_kernel_transfer_encoding_means_unknown_length(kind: str) -> None:
    head = ResponseHead(status_code=200, headers=[(b"transfer-encoding", b"chunked")])
    assert lines(respond(kind, GET, head)[1]) == [b"transfer-encoding: chunked"]
    assert lines(respond(kind, b"GET / HTTP/1.0\r\n\r\n", head)[1]) == [b"connection: close"]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x", b"a\r\nInjected: 1")],
        [(b"x", b"a\x00")],
        [(b"x", b" padded")],
        [(b"x", b"padded\t")],
        [(b"X-Upper", b"1")],
        [(b"bad name", b"1")],
        [(b"content-length", b"1"), (b"content-length", b"1")],
        [(b"content-length", b"1"), (b"transfer-encoding", b"chunked")],
        [(b"content-length", b"-1")],
        [(b"transfer-encoding", b"gzip")],
    ],
)
def test_invalid_response_fields_are_refused(kind: str, headers: list[tuple[bytes, bytes]]) -> None:
    codec = server(kind, GET)
    read(codec)
    with pytest.raises(LocalProtocolError):
        codec.send_response_head(ResponseHead(status_code=200, headers=headers))
    # Nothing was sent: the error page can take its place (a plugin's bad
    # edit must not cost the client its answer).
    assert codec.send_response_head(OK).startswith(b"HTTP/1.1 200 ")


def test_reason_phrases(kind: str) -> None:
    assert respond(kind, GET, ResponseHead(status_code=404, headers=[]))[1].startswith(
        b"HTTP/1.1 404 Not Found\r\n"
    )
    assert respond(kind, GET, ResponseHead(status_code=299, headers=[]))[1].startswith(
        b"HTTP/1.1 299 \r\n"
    )
    assert respond(kind, GET, ResponseHead(status_code=200, headers=[], reason=b"Fine"))[
        1
    ].startswith(b"HTTP/1.1 200 Fine\r\n")
    codec = server(kind, GET)
    read(codec)
    with pytest.raises(LocalProtocolError):
        codec.send_response_head(ResponseHead(status_code=200, headers=[], reason=b"OK\r\nX: y"))


@pytest.mark.parametrize("status", [99, 100, 101, 1000])
def test_final_status_range(kind: str, status: int) -> None:
    codec = server(kind, GET)
    read(codec)
    with pytest.raises(LocalProtocolError):
        codec.send_response_head(ResponseHead(status_code=status, headers=[]))


def test_connect_is_an_ordinary_request_without_tunnels(kind: str) -> None:
    codec = server(kind, b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")
    head = read(codec)[0]
    assert (head.method, head.target) == (b"CONNECT", b"h:443")
    with pytest.raises(LocalProtocolError, match="tunnel"):
        codec.send_response_head(OK)
    codec = server(kind, b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")
    read(codec)
    codec.send_response_head(ResponseHead(status_code=501, headers=[(b"content-length", b"0")]))
    codec.send_end()
    assert codec.keep_alive


def test_response_twice_is_refused(kind: str) -> None:
    codec, _ = respond(kind, GET, OK)
    with pytest.raises(LocalProtocolError):
        codec.send_response_head(OK)
    with pytest.raises(LocalProtocolError):
        codec.send_end()  # dead after the misuse


# -- server: 1xx and Expect: 100-continue -----------------------------------------
EXPECT = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"


def test_100_continue_then_body_keeps_alive(kind: str) -> None:
    codec = server(kind, EXPECT)
    head = codec.next_event()
    assert isinstance(head, RequestHead)
    assert head.expect_continue
    assert codec.next_event() is NEED_DATA
    assert codec.send_informational(100, []) == b"HTTP/1.1 100 Continue\r\n\r\n"
    with pytest.raises(LocalProtocolError):
        codec.send_informational(100, [])  # once per request
    assert read(codec, b"hi") == [Data(b"hi"), EndOfMessage(), PAUSED]
    codec.send_response_head(OK)
    codec.send_end()
    assert codec.keep_alive
    codec.start_next_cycle()


def test_response_before_the_body_closes(kind: str) -> None:
    codec = server(kind, EXPECT)
    assert isinstance(codec.next_event(), RequestHead)
    head = codec.send_response_head(
        ResponseHead(status_code=417, headers=[(b"content-length", b"0")])
    )
    assert b"connection: close" in lines(head)
    codec.send_end()
    assert not codec.keep_alive
    assert read(codec, b"hi") == [Data(b"hi"), EndOfMessage(), PAUSED]  # still readable
    with pytest.raises(LocalProtocolError):
        codec.start_next_cycle()


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    ],
    ids=["no-body", "http10"],
)
def test_expect_continue_only_when_meaningful(kind: str, raw: bytes) -> None:
    head = server(kind, raw).next_event()
    assert isinstance(head, RequestHead)
    assert not head.expect_continue


@pytest.mark.parametrize("expect", [b"something-else", b"100-continue, foo"])
def test_other_expectations_are_refused_with_417(kind: str, expect: bytes) -> None:
    """They used to be passed on, ``100-continue, foo`` after our own 100."""
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: " + expect + b"\r\nContent-Length: 1\r\n\r\n"
    with pytest.raises(RemoteProtocolError) as info:
        server(kind, raw).next_event()
    assert info.value.status_hint == 417


def test_informational_rules(kind: str) -> None:
    codec = server(kind, GET)
    read(codec)
    assert codec.send_informational(103, [(b"link", b"</a>")]).lower() == (
        b"http/1.1 103 early hints\r\nlink: </a>\r\n\r\n"
    )
    for status, headers in ((101, []), (200, []), (99, []), (102, [(b"content-length", b"1")])):
        with pytest.raises(LocalProtocolError):
            codec.send_informational(status, headers)
    codec.send_response_head(OK)
    with pytest.raises(LocalProtocolError):
        codec.send_informational(100, [])
    codec = server(kind, b"GET / HTTP/1.0\r\n\r\n")
    read(codec)
    with pytest.raises(LocalProtocolError):
        codec.send_informational(100, [])  # RFC 9110 §15.2: never to HTTP/1.0


# -- client side -------------------------------------------------------------------
def request(
    method: bytes = b"GET", headers: list[tuple[bytes, bytes]] | None = None
) -> RequestHead:
    return RequestHead(method=method, target=b"/", headers=[(b"host", b"a"), *(headers or [])])


def test_client_chunked_request_body(kind: str) -> None:
    codec = client(kind)
    head = codec.send_request_head(request(b"POST", [(b"transfer-encoding", b"chunked")]))
    assert head == b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
    assert codec.send_data(b"abc") == b"3\r\nabc\r\n"
    assert codec.send_end([(b"t", b"1")]).lower() == b"0\r\nt: 1\r\n\r\n"


def test_client_writes_host_first(kind: str) -> None:
    # RFC 9110 §7.2: a user agent SHOULD send Host as the first field; h11
    # always does, and the fast codec writes the same bytes.
    codec = client(kind)
    head = RequestHead(
        method=b"GET", target=b"/", headers=[(b"x", b"1"), (b"host", b"h"), (b"y", b"2")]
    )
    assert codec.send_request_head(head) == b"GET / HTTP/1.1\r\nhost: h\r\nx: 1\r\ny: 2\r\n\r\n"


def test_client_content_length_is_enforced(kind: str) -> None:
    codec = client(kind)
    codec.send_request_head(request(b"POST", [(b"content-length", b"2")]))
    assert codec.send_data(b"a") == b"a"
    with pytest.raises(LocalProtocolError):
        codec.send_end()
    codec = client(kind)
    codec.send_request_head(request())
    with pytest.raises(LocalProtocolError):
        codec.send_data(b"no framing, no body")


@pytest.mark.parametrize(
    "head",
    [
        RequestHead(method=b"GET", target=b"/", headers=[]),
        RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"a"), (b"host", b"b")]),
        RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"a")], http_version=b"1.0"),
        RequestHead(method=b"G T", target=b"/", headers=[(b"host", b"a")]),
        RequestHead(method=b"GET", target=b"/a b", headers=[(b"host", b"a")]),
        request(b"POST", [(b"content-length", b"1"), (b"transfer-encoding", b"chunked")]),
        request(b"GET", [(b"x", b"a\nb")]),
    ],
    ids=["no-host", "two-hosts", "http10", "bad-method", "bad-target", "cl-te", "bad-value"],
)
def test_client_refuses_invalid_requests(kind: str, head: RequestHead) -> None:
    codec = client(kind)
    with pytest.raises(LocalProtocolError):
        codec.send_request_head(head)
    with pytest.raises(LocalProtocolError):
        codec.send_request_head(request())  # dead


def test_client_head_and_304_have_no_body(kind: str) -> None:
    codec = client(kind)
    codec.send_request_head(request(b"HEAD"))
    codec.send_end()
    events = read(codec, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert [type(e) for e in events[:2]] == [ResponseHead, EndOfMessage]
    assert events[2] is PAUSED
    assert codec.keep_alive
    codec.start_next_cycle()
    codec.send_request_head(request())
    codec.send_end()
    events = read(codec, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
    assert [type(e) for e in events[:2]] == [ResponseHead, EndOfMessage]


def test_client_close_delimited_response(kind: str) -> None:
    codec = client(kind)
    codec.send_request_head(request())
    codec.send_end()
    events = read(codec, b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert isinstance(events[0], ResponseHead)
    assert not events[0].keep_alive
    assert events[1:] == [Data(b"abc"), NEED_DATA]
    assert read(codec, b"def") == [Data(b"def"), NEED_DATA]
    codec.receive_data(b"")
    assert read(codec) == [EndOfMessage(), PAUSED]
    assert not codec.keep_alive
    with pytest.raises(LocalProtocolError):
        codec.start_next_cycle()


@pytest.mark.parametrize(
    ("headers", "response"),
    [
        ([(b"connection", b"close")], b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ([], b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ([], b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"),
    ],
    ids=["request-close", "http10", "response-close"],
)
def test_client_keep_alive_rules(
    kind: str, headers: list[tuple[bytes, bytes]], response: bytes
) -> None:
    codec = client(kind)
    codec.send_request_head(request(b"GET", headers))
    codec.send_end()
    events = read(codec, response)
    assert not events[0].keep_alive
    assert not codec.keep_alive


def test_client_early_response_is_not_reused(kind: str) -> None:
    codec = client(kind)
    codec.send_request_head(request(b"POST", [(b"content-length", b"10")]))
    events = read(codec, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    assert [type(e) for e in events] == [ResponseHead, EndOfMessage, type(PAUSED)]
    codec.send_data(b"0123456789")
    codec.send_end()
    assert not codec.keep_alive


def test_client_interim_responses_then_final(kind: str) -> None:
    codec = client(kind)
    codec.send_request_head(request())
    codec.send_end()
    events = read(
        codec,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: <x>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
    )
    assert events == [
        InformationalResponse(status_code=100, headers=[], reason=b"Continue"),
        InformationalResponse(status_code=103, headers=[(b"link", b"<x>")], reason=b"Early Hints"),
        ResponseHead(status_code=200, headers=[(b"content-length", b"1")], reason=b"OK"),
        Data(b"z"),
        EndOfMessage(),
        PAUSED,
    ]


def test_client_errors(kind: str) -> None:
    codec = client(kind)
    codec.receive_data(b"HTTP/1.1 200 OK\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as exc:
        codec.next_event()
    assert exc.value.status_hint == 502
    with pytest.raises(RemoteProtocolError):
        codec.next_event()
    codec = client(kind)
    assert codec.next_event() is NEED_DATA  # idle, nothing sent
    codec.send_request_head(request())
    with pytest.raises(LocalProtocolError):
        codec.send_request_head(request())  # one at a time


@pytest.mark.parametrize(
    "extra",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!",  # a second response
        b"x",  # one byte past the end
    ],
)
def test_client_bytes_past_the_response_end_the_connection(kind: str, extra: bytes) -> None:
    """RFC 9112 §6.3: extra data is never taken for the next request's answer."""
    codec = client(kind)
    codec.send_request_head(request())
    codec.send_end()
    events = read(codec, b"HTTP/1.1 204 No Content\r\n\r\n" + extra)
    assert isinstance(events[0], ResponseHead)
    assert events[-1] is PAUSED
    assert not codec.keep_alive
    with pytest.raises(LocalProtocolError):
        codec.start_next_cycle()


def test_client_keeps_a_connection_that_ended_clean(kind: str) -> None:
    codec = client(kind)
    codec.send_request_head(request())
    codec.send_end()
    assert read(codec, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")[-1] is PAUSED
    assert codec.keep_alive
    codec.start_next_cycle()
    codec.send_request_head(request())
    codec.send_end()
    codec.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(codec.next_event(), ResponseHead)


# -- round trips over a fake link (h11's ConnectionPair) ----------------------------
@pytest.mark.parametrize("client_kind", KINDS)
def test_round_trips(kind: str, client_kind: str) -> None:
    pair = Pair(client_kind, kind)
    data = pair.client.send_request_head(request(b"POST", [(b"transfer-encoding", b"chunked")]))
    data += pair.client.send_data(b"hello") + pair.client.send_end([(b"x-t", b"1")])
    events = pair.to_server(data)
    assert events[1:] == [Data(b"hello"), EndOfMessage([(b"x-t", b"1")])]
    data = pair.server.send_response_head(ResponseHead(status_code=200, headers=[(b"x", b"y")]))
    data += pair.server.send_data(b"world") + pair.server.send_end()
    events = pair.to_client(data)
    assert events[0] == ResponseHead(
        status_code=200, headers=[(b"x", b"y"), (b"transfer-encoding", b"chunked")], reason=b"OK"
    )
    assert events[1:] == [Data(b"world"), EndOfMessage()]
    assert pair.client.keep_alive
    assert pair.server.keep_alive
    pair.client.start_next_cycle()
    pair.server.start_next_cycle()
    data = pair.client.send_request_head(request(b"HEAD")) + pair.client.send_end()
    assert pair.to_server(data)[1:] == [EndOfMessage()]
    data = (
        pair.server.send_response_head(
            ResponseHead(status_code=200, headers=[(b"content-length", b"42")])
        )
        + pair.server.send_end()
    )
    events = pair.to_client(data)
    assert events[0].headers == [(b"content-length", b"42")]
    assert events[1:] == [EndOfMessage()]


# -- the sending rules both codecs share --------------------------------------------
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([], (None, False, 0)),
        ([(b"content-length", b"12"), (b"host", b"a")], (12, False, 1)),
        ([(b"transfer-encoding", b"CHUNKED"), (b"connection", b"close")], (CHUNKED, True, 0)),
        ([(b"x", b"")], (None, False, 0)),
        ([(b"x", b"a \t b\xff")], (None, False, 0)),
        ([(b"X", b"1")], None),
        ([(b"x y", b"1")], None),
        ([(b"x", b" 1")], None),
        ([(b"x", b"1 ")], None),
        ([(b"x", b"1\r\n")], None),
        ([(b"x", b"\x7f")], None),
        ([(b"content-length", b"1"), (b"content-length", b"1")], None),
        ([(b"transfer-encoding", b"chunked"), (b"content-length", b"1")], None),
        ([(b"transfer-encoding", b"gzip")], None),
        ([(b"content-length", b"0x1")], None),
    ],
)
def test_send_fields(
    fields: list[tuple[bytes, bytes]], expected: tuple[int | None, bool, int] | None
) -> None:
    for _ in range(2):  # the second time from the memory of good names/values
        if expected is None:
            with pytest.raises(LocalProtocolError):
                send_fields(fields)
        else:
            assert send_fields(fields) == expected


def test_good_values_do_not_pass_as_names() -> None:
    assert send_fields([(b"x", b"a b: C")]) == (None, False, 0)
    with pytest.raises(LocalProtocolError):
        send_fields([(b"a b: C", b"x")])


def test_send_request_check() -> None:
    ok = RequestHead(
        method=b"GET", target=b"/x", headers=[(b"host", b"a"), (b"connection", b"close")]
    )
    assert send_request_check(ok) == (None, True)
    for bad in (
        RequestHead(method=b"GET", target=b"/x", headers=[]),
        RequestHead(method=b"GET", target=b"/x", headers=[(b"host", b"a")], http_version=b"1.0"),
        RequestHead(method=b"GET\r", target=b"/x", headers=[(b"host", b"a")]),
        RequestHead(method=b"GET", target=b"", headers=[(b"host", b"a")]),
    ):
        with pytest.raises(LocalProtocolError):
            send_request_check(bad)


def test_reason_phrase() -> None:
    assert reason_phrase(404, b"") == b"Not Found"
    assert reason_phrase(599, b"") == b""
    assert reason_phrase(200, b"Fine \t\x80") == b"Fine \t\x80"
    with pytest.raises(LocalProtocolError):
        reason_phrase(200, b"a\nb")


def test_with_close() -> None:
    assert with_close([]) == [(b"connection", b"close")]
    assert with_close(
        [(b"a", b"1"), (b"connection", b"Keep-Alive, upgrade,, x"), (b"b", b"2")]
    ) == [
        (b"a", b"1"),
        (b"b", b"2"),
        (b"connection", b"close"),
        (b"connection", b"upgrade"),
        (b"connection", b"x"),
    ]


WS_REQUEST = RequestHead(
    method=b"GET",
    target=b"/chat",
    headers=[
        (b"host", b"a"),
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
    ],
)
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def test_a_101_is_accepted_only_after_asking_for_websocket(kind: str) -> None:
    c = client(kind)
    c.send_request_head(WS_REQUEST)
    c.send_end()
    frame = b"\x81\x05hello"  # the first WebSocket frame, in the same read
    c.receive_data(SWITCH + frame)
    event = c.next_event()
    assert isinstance(event, InformationalResponse)
    assert event.status_code == 101
    assert (b"upgrade", b"websocket") in event.headers
    assert c.trailing_data() == frame
    assert not c.keep_alive


def test_an_unasked_101_is_refused(kind: str) -> None:
    c = client(kind)
    plain = RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"a")])
    c.send_request_head(plain)
    c.send_end()
    c.receive_data(SWITCH)
    with pytest.raises(RemoteProtocolError, match="101"):
        c.next_event()


@pytest.mark.parametrize(
    "fields",
    [
        b"Upgrade: h2c\r\nConnection: Upgrade\r\n",
        b"Upgrade: websocket\r\n",  # no Connection: upgrade
        b"Connection: Upgrade\r\n",
    ],
)
def test_a_101_must_switch_to_websocket(kind: str, fields: bytes) -> None:
    c = client(kind)
    c.send_request_head(WS_REQUEST)
    c.send_end()
    c.receive_data(b"HTTP/1.1 101 Switching Protocols\r\n" + fields + b"\r\n")
    with pytest.raises(RemoteProtocolError, match="101 to a protocol other than WebSocket"):
        c.next_event()


@pytest.mark.parametrize(
    ("method", "fields", "asks"),
    [
        (b"GET", [(b"connection", b"keep-alive, Upgrade"), (b"upgrade", b"WebSocket")], True),
        (b"GET", [(b"connection", b"upgrade"), (b"upgrade", b"h2c")], False),
        (b"GET", [(b"upgrade", b"websocket")], False),
        (b"POST", [(b"connection", b"upgrade"), (b"upgrade", b"websocket")], False),
    ],
)
def test_asks_websocket(method: bytes, fields: list[tuple[bytes, bytes]], asks: bool) -> None:
    assert asks_websocket(method, fields) is asks


def test_server_trailing_data_is_what_follows_the_request(kind: str) -> None:
    s = server(kind, b"GET /chat HTTP/1.1\r\nHost: a\r\n\r\n\x81\x05hello")
    assert isinstance(s.next_event(), RequestHead)
    assert isinstance(s.next_event(), EndOfMessage)
    assert s.trailing_data() == b"\x81\x05hello"


def test_the_memory_of_good_names_is_bounded() -> None:
    saved = set(GOOD_NAMES)
    try:
        remember(GOOD_NAMES, b"x" * 257)  # too long to keep
        assert b"x" * 257 not in GOOD_NAMES
        for i in range(5000):
            remember(GOOD_NAMES, b"bounded-%d" % i)
        assert len(GOOD_NAMES) == 4096  # full: it stops remembering
        assert send_fields([(b"bounded-4999", b"v")]) == (None, False, 0)  # still checked
    finally:
        GOOD_NAMES.clear()
        GOOD_NAMES.update(saved)
