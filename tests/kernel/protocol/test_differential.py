"""Differential tests: the h11 and httptools codecs must agree on everything.

Both codecs get the same bytes, cut at the same places; their transcripts
(request heads, body bytes, trailers, the status hint of a refusal) must be
equal. Inputs are the hostile corpus plus hypothesis-generated requests and
responses, valid and mutated, from an alphabet rich in the bytes that make
parsers disagree (CR, LF, NUL, SP, HTAB, ":", ",", obs-text).

What they write is compared too: given the same request and the same
response to send, both codecs write the same bytes (the framing fields h11
sets itself included).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.protocol.events import NEED_DATA, PAUSED, RequestHead, ResponseHead
from kernel.protocol.http1 import Limits, make_server_codec
from tests.kernel.protocol.corpus import (
    LIMIT_REQUESTS,
    REQUESTS,
    RESPONSES,
    SMALL,
    run_client,
    run_server,
    split,
)

# TRELLIS_FUZZ_SCALE=20 turns this into a deep run (minutes instead of seconds).
_SCALE = int(os.environ.get("TRELLIS_FUZZ_SCALE", "1"))
FAST = settings(
    deadline=None, max_examples=100 * _SCALE, suppress_health_check=[HealthCheck.too_slow]
)
MANY = settings(
    deadline=None, max_examples=250 * _SCALE, suppress_health_check=[HealthCheck.too_slow]
)

_BYTES = [
    b"a",
    b"Z",
    b"0",
    b"9",
    b"-",
    b"_",
    b":",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\x01",
    b"\x0b",
    b"\x7f",
    b"\x80",
    b"\xff",
    b",",
    b";",
    b"=",
    b'"',
    b"/",
    b"?",
    b"@",
    b"[",
    b"]",
    b"%",
    b"(",
    b"*",
    b".",
]
noise = st.lists(st.sampled_from(_BYTES), max_size=8).map(b"".join)
methods = (
    st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"CONNECT", b"get", b"X-Y"])
    | noise
)
targets = st.sampled_from(
    [
        b"/",
        b"/a/b?c=d&e",
        b"*",
        b"http://h.example/p",
        b"HTTPS://h:8443",
        b"h.example:443",
        b"http://u@h/",
        b"http:///x",
        b"/%zz",
        b"//x",
    ]
) | noise.map(lambda b: b"/" + b)
versions = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1"]
)
hosts = (
    st.sampled_from(
        [
            b"a",
            b"h.example:8080",
            b"[::1]",
            b"[::1]:80",
            b"10.0.0.1",
            b"",
            b"a b",
            b"a:x",
            b"u@h",
            b"xn--d1a.%41",
        ]
    )
    | noise
)
lengths = st.sampled_from(
    [
        b"0",
        b"3",
        b"10",
        b"+3",
        b"3, 3",
        b" 3 ",
        b"0x3",
        b"",
        b"00000000000000000003",
        b"99999999999999999999",
    ]
) | st.integers(0, 40).map(lambda n: b"%d" % n)
codings = (
    st.sampled_from(
        [
            b"chunked",
            b"CHUNKED",
            b" chunked ",
            b"chunked, chunked",
            b"gzip, chunked",
            b"identity",
            b"chunked\x0b",
            b"xchunked",
            b"chunked;a=b",
            b", chunked",
            b"gzip",
            b'x;q="1,2", chunked',
            b"chunked, gzip",
        ]
    )
    | noise
)
OWS_PIECES = [b"", b" ", b"\t", b" \t", b"\t\t"]
specials = st.one_of(
    st.tuples(st.just(b"Host"), hosts),
    st.tuples(st.sampled_from([b"Content-Length", b"content-length", b"Content-Length "]), lengths),
    st.tuples(st.sampled_from([b"Transfer-Encoding", b"transfer-encoding"]), codings),
    st.tuples(
        st.just(b"Connection"), st.sampled_from([b"close", b"keep-alive", b"Upgrade", b"x, close"])
    ),
    st.tuples(st.just(b"Expect"), st.sampled_from([b"100-continue", b"100-Continue", b"x"])),
    st.tuples(st.just(b"Upgrade"), st.sampled_from([b"websocket", b"h2c"])),
    st.tuples(st.sampled_from([b"X-A", b"accept", b"x-b"]) | noise, noise),
)
wrapped = st.tuples(st.sampled_from(OWS_PIECES), st.sampled_from(OWS_PIECES))
specials = st.one_of(
    specials,
    st.builds(lambda f, w: (f[0], w[0] + f[1] + w[1]), specials, wrapped),
)
separators = st.sampled_from([b": ", b":", b":  ", b": \t", b" : ", b":\t"])
eols = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"\r\n "])


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    out = b""
    for data in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3)):
        size = b"%x" % len(data)
        size = draw(
            st.sampled_from([size, size.upper(), b"0" + size, size + b";e=1", size + b" ;x", b"z"])
        )
        out += size + b"\r\n" + data + draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"", b"xx"]))
    out += b"0\r\n"
    for name, value in draw(
        st.lists(st.tuples(st.sampled_from([b"T", b"x-t"]) | noise, noise), max_size=2)
    ):
        out += name + b": " + value + draw(eols)
    return out + draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b""]))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    line = draw(methods) + b" " + draw(targets) + b" " + draw(versions) + b"\r\n"
    head = line
    for name, value in draw(st.lists(specials, max_size=6)):
        head += name + draw(separators) + value + draw(eols)
    head += b"\r\n"
    body = draw(st.one_of(chunked_bodies(), st.binary(max_size=24)))
    return head + body


_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=_TCHAR, min_size=1, max_size=10).map(str.encode)
#: Field names that frame, route or upgrade a request are drawn on purpose
#: below; a random token that happens to be one ("HOST", "te") makes the
#: request invalid (a second Host), so it is no "valid request" any more.
_SPECIAL_NAMES = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"te",
     b"upgrade", b"keep-alive", b"proxy-connection", b"trailer")
)  # fmt: skip
plain_names = tokens.filter(lambda name: name.lower() not in _SPECIAL_NAMES)
field_values = st.lists(
    st.sampled_from(
        [b"a", b"Z", b"0", b" ", b"\t", b",", b";", b"=", b'"', b"/", b"\x80", b"\xff", b"~"]
    ),
    max_size=10,
).map(b"".join)


@st.composite
def valid_chunks(draw: st.DrawFn) -> bytes:
    out = b""
    for data in draw(st.lists(st.binary(min_size=1, max_size=40), max_size=3)):
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b';a="x y"', b";a = b"]))
        out += b"%x" % len(data) + ext + b"\r\n" + data + b"\r\n"
    out += b"0\r\n"
    for name, value in draw(st.lists(st.tuples(tokens, field_values), max_size=2)):
        out += name + b": " + value + b"\r\n"
    return out + b"\r\n"


@st.composite
def valid_requests(draw: st.DrawFn) -> bytes:
    method = draw(
        st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS"]) | tokens
    )
    target = draw(st.sampled_from([b"/", b"/a/b?c=d", b"http://h.example/p", b"/%41"]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0"]))
    fields = [(b"Host", draw(st.sampled_from([b"a", b"h.example:8080", b"[::1]:1", b""])))]
    fields += draw(st.lists(st.tuples(plain_names, field_values), max_size=4))
    fields += draw(
        st.lists(
            st.sampled_from(
                [
                    (b"Connection", b"close"),
                    (b"Connection", b"keep-alive"),
                    (b"Expect", b"100-continue"),
                ]
            ),
            max_size=1,
        )
    )
    framing = draw(
        st.sampled_from(
            ["none", "length", "chunked"] if version == b"HTTP/1.1" else ["none", "length"]
        )
    )
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=40))
        fields.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        body = draw(valid_chunks())
        fields.append((b"Transfer-Encoding", b"chunked"))
    order = draw(st.permutations(fields))
    head = (
        draw(st.just(b"\r\n")) * draw(st.integers(0, 1))
        + method
        + b" "
        + target
        + b" "
        + version
        + b"\r\n"
    )
    for name, value in order:
        head += name + draw(st.sampled_from([b": ", b":", b":\t"])) + value + b"\r\n"
    return head + b"\r\n" + body


@st.composite
def mutated(draw: st.DrawFn, inner: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(inner))
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.integers(0, len(data)))
        what = draw(st.sampled_from(_BYTES))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        if action == "insert":
            data[where:where] = what
        elif action == "replace":
            data[where : where + len(what)] = what
        else:
            del data[where : where + 1]
    return bytes(data)


cuts = st.lists(st.integers(0, 300), max_size=6)

# llhttp parses the values of a few fields itself (Transfer-Encoding,
# Content-Length, Connection, Upgrade): every such name with every OWS around
# a set of telling values. (This grid caught llhttp refusing "chunked\t".)
SPECIAL_NAMES = [
    b"Transfer-Encoding",
    b"Content-Length",
    b"Connection",
    b"Upgrade",
    b"Proxy-Connection",
    b"Keep-Alive",
    b"Host",
    b"Expect",
]
SPECIAL_VALUES = [
    b"chunked",
    b"CHUNKED",
    b"gzip, chunked",
    b"chunked, gzip",
    b"chunked,chunked",
    b"3",
    b"0",
    b"03",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"close, upgrade",
    b"websocket",
    b"100-continue",
    b"a",
    b"",
    b"identity",
]
OWS = [b"", b" ", b"\t", b" \t", b"\t ", b"  "]
SPECIAL_GRID = [
    (n, w1 + val + w2) for n in SPECIAL_NAMES for val in SPECIAL_VALUES for w1 in OWS for w2 in OWS
]


def assert_same_server(chunks: list[bytes], limits: Limits | None = None) -> None:
    h11_side = run_server("h11", chunks, limits)
    fast_side = run_server("httptools", chunks, limits)
    assert h11_side == fast_side, (chunks, h11_side, fast_side)


# -- the corpus, cut anywhere -------------------------------------------------------
@FAST
@given(case=st.sampled_from(REQUESTS), where=cuts)
def test_corpus_requests_agree_at_any_split(
    case: tuple[str, bytes, int | None], where: list[int]
) -> None:
    _, data, _ = case
    assert_same_server(split(data, where))
    # With default limits, where a request is cut does not change its fate.
    assert run_server("httptools", split(data, where)) == run_server("httptools", [data])


@FAST
@given(case=st.sampled_from(LIMIT_REQUESTS), where=cuts)
def test_corpus_limits_agree_at_any_split(
    case: tuple[str, bytes, int | None], where: list[int]
) -> None:
    assert_same_server(split(case[1], where), SMALL)


def test_special_fields_with_any_ows_agree() -> None:
    for name, value in SPECIAL_GRID:
        for extra in (b"", b"X-Other: 1\r\n"):
            host = b"" if name == b"Host" else b"Host: a\r\n"
            field = name + b":" + value + b"\r\n"
            assert_same_server(
                [b"POST / HTTP/1.1\r\n" + host + field + extra + b"\r\n3\r\nabc\r\n0\r\n\r\n"]
            )
            response = b"HTTP/1.1 200 OK\r\n" + field + extra + b"\r\n3\r\nabc\r\n0\r\n\r\n"
            assert run_client("h11", GET_A, [response]) == run_client(
                "httptools", GET_A, [response]
            )


GET_A = RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"a")])
HEAD_A = RequestHead(method=b"HEAD", target=b"/", headers=[(b"host", b"a")])


@FAST
@given(case=st.sampled_from(RESPONSES), where=cuts, head=st.sampled_from([GET_A, HEAD_A]))
def test_corpus_responses_agree_at_any_split(
    case: tuple[str, bytes, int | None], where: list[int], head: RequestHead
) -> None:
    chunks = split(case[1], where)
    assert run_client("h11", head, chunks) == run_client("httptools", head, chunks)


# -- generated requests ------------------------------------------------------------
@MANY
@given(data=valid_requests(), where=cuts)
def test_valid_requests_agree_and_are_accepted(data: bytes, where: list[int]) -> None:
    transcript = run_server("h11", split(data, where))
    assert transcript[-1][0] != "error", transcript
    assert_same_server(split(data, where))


@MANY
@given(data=st.one_of(requests(), mutated(requests())), where=cuts)
def test_hostile_requests_agree(data: bytes, where: list[int]) -> None:
    assert_same_server(split(data, where))


@MANY
@given(data=mutated(valid_requests()), where=cuts)
def test_near_miss_requests_agree(data: bytes, where: list[int]) -> None:
    assert_same_server(split(data, where))


@FAST
@given(
    first=valid_requests(),
    second=st.one_of(valid_requests(), mutated(valid_requests())),
    where=cuts,
)
def test_pipelined_requests_agree(first: bytes, second: bytes, where: list[int]) -> None:
    assert_same_server(split(first + second, where))


@FAST
@given(data=st.one_of(valid_requests(), mutated(valid_requests())), where=cuts)
def test_requests_agree_under_small_limits(data: bytes, where: list[int]) -> None:
    assert_same_server(split(data, where), SMALL)


# -- generated responses -----------------------------------------------------------
statuses = (
    st.sampled_from(
        [
            b"200 OK",
            b"204 No Content",
            b"304 Not Modified",
            b"100 Continue",
            b"101 Switching",
            b"404",
            b"200 ",
            b"20 x",
            b"999 Z",
        ]
    )
    | noise
)
response_specials = st.one_of(
    st.tuples(st.sampled_from([b"Content-Length", b"content-length"]), lengths),
    st.tuples(st.just(b"Transfer-Encoding"), codings),
    st.tuples(st.just(b"Connection"), st.sampled_from([b"close", b"keep-alive"])),
    st.tuples(st.sampled_from([b"Server", b"x-b"]) | noise, noise),
)


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(1, 2))):
        out += draw(st.sampled_from([b"HTTP/1.1 ", b"HTTP/1.0 ", b"HTTP/2 ", b"HTTP/1.1"])) + draw(
            statuses
        )
        out += b"\r\n"
        for name, value in draw(st.lists(response_specials, max_size=4)):
            out += name + draw(separators) + value + draw(eols)
        out += b"\r\n" + draw(st.one_of(chunked_bodies(), st.binary(max_size=16)))
    return out


@st.composite
def valid_responses(draw: st.DrawFn) -> bytes:
    out = b""
    for status in draw(
        st.lists(st.sampled_from([b"100 Continue", b"103 Early Hints"]), max_size=1)
    ):
        out += b"HTTP/1.1 " + status + b"\r\n\r\n"
    status = draw(
        st.sampled_from(
            [b"200 OK", b"404 Not Found", b"204 No Content", b"304 Not Modified", b"500"]
        )
    )
    version = draw(st.sampled_from([b"HTTP/1.1"] * 3 + [b"HTTP/1.0"]))
    fields = draw(st.lists(st.tuples(tokens, field_values), max_size=3))
    framing = draw(
        st.sampled_from(
            ["close", "length", "chunked"] if version == b"HTTP/1.1" else ["close", "length"]
        )
    )
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=40))
        fields.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        body = draw(valid_chunks())
        fields.append((b"Transfer-Encoding", b"chunked"))
    else:
        body = draw(st.binary(max_size=40))
    out += version + b" " + status + b"\r\n"
    for name, value in draw(st.permutations(fields)):
        out += name + b": " + value + b"\r\n"
    return out + b"\r\n" + body


@MANY
@given(data=valid_responses(), where=cuts, head=st.sampled_from([GET_A, HEAD_A]))
def test_valid_responses_agree_and_are_accepted(
    data: bytes, where: list[int], head: RequestHead
) -> None:
    chunks = split(data, where)
    transcript = run_client("h11", head, chunks)
    assert transcript[-1][0] == "done", transcript
    assert transcript == run_client("httptools", head, chunks)


@MANY
@given(
    data=st.one_of(responses(), mutated(responses()), mutated(valid_responses())),
    where=cuts,
    head=st.sampled_from([GET_A, HEAD_A]),
)
def test_generated_responses_agree(data: bytes, where: list[int], head: RequestHead) -> None:
    chunks = split(data, where)
    assert run_client("h11", head, chunks) == run_client("httptools", head, chunks)


# -- what both codecs write ---------------------------------------------------------
def written(kind: str, request: bytes, head: ResponseHead) -> bytes:
    """Everything a server codec writes answering ``request`` with ``head``, a
    body of two pieces and (where the framing carries them) trailers."""
    codec = make_server_codec(kind, Limits())  # type: ignore[arg-type]
    codec.receive_data(request)
    while (event := codec.next_event()) is not PAUSED:
        assert event is not NEED_DATA, event
    out = codec.send_response_head(head)
    body = b"" if request.startswith(b"HEAD ") or head.status_code in (204, 304) else b"hello"
    out += codec.send_data(body[:2]) + codec.send_data(body[2:])
    return out + codec.send_end([(b"x-trailer", b"1")])


GET_11 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
GET_10 = b"GET / HTTP/1.0\r\n\r\n"
HEAD_11 = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD_CLOSE = b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
X = (b"x-a", b"1")


@pytest.mark.parametrize(
    ("request_", "head", "expected"),
    [
        (
            GET_11,
            ResponseHead(status_code=200, headers=[X]),
            b"x-a: 1\r\ntransfer-encoding: chunked\r\n",
        ),
        (
            GET_CLOSE,
            ResponseHead(status_code=200, headers=[X, (b"content-length", b"5")]),
            b"x-a: 1\r\ncontent-length: 5\r\nconnection: close\r\n",
        ),
        (
            GET_CLOSE,
            ResponseHead(status_code=200, headers=[X]),
            b"x-a: 1\r\nconnection: close\r\ntransfer-encoding: chunked\r\n",
        ),
        (
            GET_11,
            ResponseHead(status_code=200, headers=[(b"connection", b"x-hop"), X], keep_alive=False),
            b"x-a: 1\r\nconnection: close\r\nconnection: x-hop\r\ntransfer-encoding: chunked\r\n",
        ),
        (GET_10, ResponseHead(status_code=200, headers=[X]), b"x-a: 1\r\nconnection: close\r\n"),
        (HEAD_11, ResponseHead(status_code=200, headers=[]), b"transfer-encoding: chunked\r\n"),
        (
            HEAD_CLOSE,
            ResponseHead(status_code=200, headers=[]),
            b"connection: close\r\ntransfer-encoding: chunked\r\n",
        ),
    ],
    ids=[
        "chunked",
        "request-close",
        "request-close-chunked",
        "kernel-close-chunked",
        "http10",
        "head-chunked",
        "head-close-chunked",
    ],
)
def test_both_codecs_write_the_same_framing_fields(
    request_: bytes, head: ResponseHead, expected: bytes
) -> None:
    """h11 sets Transfer-Encoding and Connection itself, title-cased and
    after the other fields; the h11 codec writes them as the fast codec does."""
    h11_side = written("h11", request_, head)
    assert h11_side == written("httptools", request_, head)
    assert h11_side.startswith(b"HTTP/1.1 200 OK\r\n" + expected + b"\r\n")


lower_names = plain_names.map(bytes.lower)
plain_values = st.text(alphabet=_TCHAR + ",;=/", min_size=1, max_size=8).map(str.encode)


@FAST
@given(
    request_=st.sampled_from([GET_11, GET_CLOSE, GET_10, HEAD_11, HEAD_CLOSE]),
    status=st.sampled_from([200, 204, 304, 404]),
    fields=st.lists(st.tuples(lower_names, plain_values), max_size=4),
    connection=st.lists(st.sampled_from([b"close", b"keep-alive", b"x-hop", b"te"]), max_size=2),
    length=st.sampled_from([None, b"5"]),
    keep_alive=st.booleans(),
)
def test_both_codecs_write_the_same_bytes(
    request_: bytes,
    status: int,
    fields: list[tuple[bytes, bytes]],
    connection: list[bytes],
    length: bytes | None,
    keep_alive: bool,
) -> None:
    if connection:
        fields = [*fields, (b"connection", b", ".join(connection))]
    if length is not None and status != 304:
        fields = [(b"content-length", length), *fields]
    head = ResponseHead(status_code=status, headers=fields, keep_alive=keep_alive)
    assert written("h11", request_, head) == written("httptools", request_, head)
