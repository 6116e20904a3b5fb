"""The shared receive-side checks: head scanning and limits, start lines,
fields, framing and the chunked decoder (bytes in, verdicts out)."""

from __future__ import annotations

import time

import attrs
import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.protocol import validate as v
from kernel.protocol.http1 import CHUNKED, UNTIL_CLOSE, Limits
from sdk._errors import RemoteProtocolError

LIM = Limits(
    max_request_line=32, max_header_bytes=64, max_header_count=3, max_body_bytes=50, max_chunk_ext=8
)


def hint(fn: object, *args: object) -> int:
    with pytest.raises(RemoteProtocolError) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value.status_hint


# -- HeadScanner ----------------------------------------------------------------------
def test_scanner_finds_the_end_and_the_first_line() -> None:
    scanner = v.HeadScanner(LIM)
    buf = b"xxGET / HTTP/1.1\r\nA: b\r\n\r\nbody"
    assert scanner.find_end(buf, 2) == len(buf) - 4
    assert scanner.line_end == buf.index(b"\n")
    scanner.reset()
    assert scanner.find_end(b"GET / HTTP/1.1\r\n\r\n", 0) == 18  # no fields at all


def test_scanner_resumes_across_feeds_and_compaction() -> None:
    head = b"GET / HTTP/1.1\r\nA: b\r\nC: d\r\n\r\n"
    for step in (1, 2, 3, 7):
        scanner = v.HeadScanner(LIM)
        buf, pos = b"junk", 4  # the caller may compact: offsets are relative to pos
        for i in range(0, len(head), step):
            buf = buf[pos:] + head[i : i + step]
            pos = 0
            end = scanner.find_end(buf, pos)
            if end >= 0:
                break
        assert (end, buf[:end]) == (len(head), head)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * 18 + b" HTTP/1.1\r\n\r\n", None),  # 32 bytes: the limit
        (b"GET /" + b"a" * 19 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /" + b"a" * 19 + b" HTTP/1.1\n\n", 414),  # (length first, then bare LF)
        (b"GET /" + b"a" * 40, 414),  # incomplete
        (b"GET /" + b"a" * 27 + b"\r", None),  # 33 bytes, the 33rd may be the CR: wait
        (b"GET / HTTP/1.1\r\nA: " + b"a" * 59 + b"\r\n\r\n", None),  # 64-byte block
        (b"GET / HTTP/1.1\r\nA: " + b"a" * 60 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nA: " + b"a" * 70, 431),  # incomplete
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n", 431),  # incomplete
        (b"GET / HTTP/1.1\r\nA: 1\n\n", 400),
        (b"GET / HTTP/1.1\r\nA: 1\n\nB", 400),
        (b"\x16\x03\x01", 400),
        (b" GET", 400),
        (b"\r", None),
        (b"\rX", 400),
    ],
)
def test_scanner_limits(data: bytes, status: int | None) -> None:
    scanner = v.HeadScanner(LIM)
    if status is None:
        scanner.find_end(data, 0)
    else:
        assert hint(scanner.find_end, data, 0) == status


def test_scanner_is_linear_on_dribbled_heads() -> None:
    scanner = v.HeadScanner(Limits(max_header_bytes=10**6, max_header_count=10**6))
    buf = b"GET / HTTP/1.1\r\n"
    started = time.perf_counter()
    for _ in range(20000):  # 20 000 feeds of 3 bytes, each rescanning only the tail
        buf += b"a\r\n"
        assert scanner.find_end(buf, 0) == -1
    assert time.perf_counter() - started < 5  # quadratic would be minutes


# -- start lines ------------------------------------------------------------------------
def request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    buf = line + b"\r\n"
    return v.parse_request_line(buf, 0, len(buf) - 1)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"GET / HTTP/1.1", (b"GET", b"/", b"1.1")),
        (b"get /?a HTTP/1.0", (b"get", b"/?a", b"1.0")),
        (b"M-SEARCH * HTTP/1.1", 400),
        (b"OPTIONS * HTTP/1.1", (b"OPTIONS", b"*", b"1.1")),
        (b"GET http://h:1/p?q HTTP/1.1", (b"GET", b"http://h:1/p?q", b"1.1")),
        (b"GET hTtPs://[::1] HTTP/1.1", (b"GET", b"hTtPs://[::1]", b"1.1")),
        (b"CONNECT h:443 HTTP/1.1", (b"CONNECT", b"h:443", b"1.1")),
        (b"CONNECT [::1]:443 HTTP/1.1", (b"CONNECT", b"[::1]:443", b"1.1")),
        (b"CONNECT :443 HTTP/1.1", 400),
        (b"CONNECT h HTTP/1.1", 400),
        (b"GET h:443 HTTP/1.1", 400),
        (b"GET ws://h/ HTTP/1.1", 400),
        (b"GET http://[::1/ HTTP/1.1", 400),
        (b"GET http://h:99999999/ HTTP/1.1", 400),
        (b"GET / HTTP/2.0", 505),
        (b"GET / HTTP/1.9", 505),
        (b"GET / HTTP/11", 400),
        (b"GET / HTTP/1.1 ", 400),
        (b"GET\t/ HTTP/1.1", 400),
        (b"GET / HTTP/1.1\r", 400),
        (b"", 400),
    ],
)
def test_parse_request_line(line: bytes, expected: tuple[bytes, bytes, bytes] | int) -> None:
    if isinstance(expected, int):
        assert hint(request_line, line) == expected
    else:
        assert request_line(line) == expected


def test_request_line_needs_crlf() -> None:
    assert hint(v.parse_request_line, b"GET / HTTP/1.1\n", 0, 14) == 400
    assert hint(v.parse_request_line, b"\n", 0, 0) == 400


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"HTTP/1.1 200 OK", (200, b"OK", b"1.1")),
        (b"HTTP/1.0 404 Not \t Found \xff", (404, b"Not \t Found \xff", b"1.0")),
        (b"HTTP/1.1 204", (204, b"", b"1.1")),
        (b"HTTP/1.1 204 ", (204, b"", b"1.1")),
        (b"HTTP/1.1 099 X", 400),
        (b"HTTP/2.0 200 OK", 505),
        (b"HTTP/1.1 2000 OK", 400),
        (b"HTTP/1.1 200 O\x00K", 400),
        (b"http/1.1 200 OK", 400),
    ],
)
def test_parse_status_line(line: bytes, expected: tuple[int, bytes, bytes] | int) -> None:
    buf = line + b"\r\n"
    if isinstance(expected, int):
        assert hint(v.parse_status_line, buf, 0, len(buf) - 1) == expected
    else:
        assert v.parse_status_line(buf, 0, len(buf) - 1) == expected


# -- field lines --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("block", "ok"),
    [
        (b"", True),
        (b"A: b\r\n", True),
        (b"a-B_c.~!#$%&'*+^`|: x\r\n", True),
        (b"A:\r\nB:\t\r\n", True),
        (b"A: \x80\xff caf\xc3\xa9 \t x\r\n", True),
        (b"A: b\n", False),
        (b"A: b\rC: d\r\n", False),
        (b" A: b\r\n", False),
        (b"A: b\r\n c\r\n", False),
        (b"A : b\r\n", False),
        (b": b\r\n", False),
        (b"A\x00: b\r\n", False),
        (b"A: \x00\r\n", False),
        (b"A: \x1f\r\n", False),
        (b"A: \x7f\r\n", False),
        (b"A b\r\n", False),
        (b"\xc3\xa9: b\r\n", False),
    ],
)
def test_field_block(block: bytes, ok: bool) -> None:
    if ok:
        v.check_field_block(block, 0, len(block))
    else:
        assert hint(v.check_field_block, block, 0, len(block)) == 400


def test_split_fields_lowers_names_and_strips_ows() -> None:
    block = b"X-A:  1 \t\r\nx-a:2\r\nB:\r\nC: a  b\r\n"
    assert v.split_fields(block, 0, len(block)) == [
        (b"x-a", b"1"),
        (b"x-a", b"2"),
        (b"b", b""),
        (b"c", b"a  b"),
    ]


def test_field_regexes_are_linear() -> None:
    hostile = [b"A:" + b" " * 60000 + b"\x01\r\n", b"A: " + b"a \t" * 20000 + b"\x00\r\n"]
    started = time.perf_counter()
    for block in hostile:
        assert hint(v.check_field_block, block, 0, len(block)) == 400
        v.split_fields(block, 0, len(block))
    assert time.perf_counter() - started < 2


# -- framing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "fields", "expected"),
    [
        (b"1.1", [(b"host", b"a")], (0, True, False)),
        (b"1.1", [(b"host", b"a"), (b"content-length", b"7")], (7, True, False)),
        (b"1.1", [(b"host", b"a"), (b"transfer-encoding", b"Chunked")], (CHUNKED, True, False)),
        (b"1.1", [(b"host", b"a"), (b"connection", b"keep-alive, Close")], (0, False, False)),
        (b"1.1", [(b"host", b"a"), (b"connection", b"closed")], (0, True, False)),
        (
            b"1.1",
            [(b"host", b"a"), (b"expect", b"100-Continue"), (b"content-length", b"1")],
            (1, True, True),
        ),
        (b"1.1", [(b"host", b"a"), (b"expect", b"100-continue")], (0, True, False)),
        (b"1.0", [], (0, False, False)),
        (b"1.0", [(b"connection", b"keep-alive")], (0, False, False)),
        (b"1.1", [(b"host", b"")], (0, True, False)),
        (b"1.1", [], 400),
        (b"1.1", [(b"host", b"a"), (b"host", b"a")], 400),
        (b"1.1", [(b"host", b"a{b}")], 400),
        (b"1.1", [(b"host", b"a;c=d!$&'()*+")], (0, True, False)),  # sub-delims are fine,
        (b"1.1", [(b"host", b"a,for=1.2.3.4")], 400),  # but a comma would split X-Forwarded-Host
        (b"1.1", [(b"host", b"a:65535")], (0, True, False)),
        (b"1.1", [(b"host", b"a:65536")], 400),
        (b"1.1", [(b"host", b"a:99999")], 400),
        (b"1.1", [(b"host", b"[1::2::3]")], 400),
        (b"1.1", [(b"host", b"a"), (b"content-length", b"51")], 413),
        (b"1.1", [(b"host", b"a"), (b"content-length", b"1"), (b"content-length", b"1")], 400),
        (b"1.1", [(b"host", b"a"), (b"content-length", b"1,1")], 400),
        (
            b"1.1",
            [(b"host", b"a"), (b"content-length", b"1"), (b"transfer-encoding", b"chunked")],
            400,
        ),
        (b"1.0", [(b"transfer-encoding", b"chunked")], 400),
        (b"1.1", [(b"host", b"a"), (b"transfer-encoding", b"gzip, chunked")], 501),
        (b"1.1", [(b"host", b"a"), (b"transfer-encoding", b"gzip ; q=1 , chunked")], 501),
        (b"1.1", [(b"host", b"a"), (b"transfer-encoding", b"gzip")], 400),
        (b"1.1", [(b"host", b"a"), (b"transfer-encoding", b"chunked, chunked")], 400),
        (b"1.1", [(b"host", b"a"), (b"transfer-encoding", b"gzip;, chunked")], 400),
        (
            b"1.1",
            [
                (b"host", b"a"),
                (b"transfer-encoding", b"chunked"),
                (b"transfer-encoding", b"chunked"),
            ],
            400,
        ),
        (
            b"1.1",
            [(b"transfer-encoding", b"gzip, chunked")],
            501,
        ),  # (framing is judged before Host)
        # Expectations: 100-continue (any case, repeated), nothing else (417).
        (
            b"1.1",
            [(b"host", b"a"), (b"content-length", b"1"), (b"expect", b"100-Continue")],
            (1, True, True),
        ),
        (
            b"1.1",
            [(b"host", b"a"), (b"content-length", b"1"), (b"expect", b"100-continue, ")],
            (1, True, True),
        ),
        (b"1.1", [(b"host", b"a"), (b"expect", b"foo")], 417),
        (
            b"1.1",
            [(b"host", b"a"), (b"content-length", b"1"), (b"expect", b"100-continue, foo")],
            417,
        ),
        (b"1.0", [(b"expect", b"foo=bar")], 417),
    ],
)
def test_request_framing(
    version: bytes, fields: list[tuple[bytes, bytes]], expected: tuple[int, bool, bool] | int
) -> None:
    if isinstance(expected, int):
        assert hint(v.request_framing, b"POST", version, fields, LIM) == expected
    else:
        assert v.request_framing(b"POST", version, fields, LIM) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([(b"host", b"a:443"), (b"content-length", b"30")], 400),
        ([(b"host", b"a:443"), (b"transfer-encoding", b"chunked")], 400),
        ([(b"host", b"a:443"), (b"content-length", b"0")], (0, True, False)),
        ([(b"host", b"a:443")], (0, True, False)),
    ],
    ids=["length", "chunked", "length-0", "none"],
)
def test_connect_has_no_content(
    fields: list[tuple[bytes, bytes]], expected: tuple[int, bool, bool] | int
) -> None:
    """A CONNECT framed by its Content-Length swallowed the request after it."""
    if isinstance(expected, int):
        assert hint(v.request_framing, b"CONNECT", b"1.1", fields, LIM) == expected
    else:
        assert v.request_framing(b"CONNECT", b"1.1", fields, LIM) == expected


def test_accepted_coding_is_reported_lower_case() -> None:
    fields = [(b"host", b"a"), (b"transfer-encoding", b"CHUNKED")]
    v.request_framing(b"POST", b"1.1", fields, LIM)
    assert fields == [(b"host", b"a"), (b"transfer-encoding", b"chunked")]


@pytest.mark.parametrize(
    ("status", "version", "fields", "method", "expected"),
    [
        (200, b"1.1", [], b"GET", (UNTIL_CLOSE, False)),
        (200, b"1.1", [(b"content-length", b"5")], b"GET", (5, True)),
        (200, b"1.1", [(b"transfer-encoding", b"chunked")], b"GET", (CHUNKED, True)),
        (200, b"1.0", [(b"content-length", b"5")], b"GET", (5, False)),
        (200, b"1.1", [(b"content-length", b"5"), (b"connection", b"close")], b"GET", (5, False)),
        (200, b"1.1", [(b"content-length", b"999")], b"HEAD", (0, True)),  # over the limit: no body
        (304, b"1.1", [(b"content-length", b"999")], b"GET", (0, True)),
        (204, b"1.1", [], b"GET", (0, True)),
        (103, b"1.1", [], b"GET", (0, True)),
        (200, b"1.1", [(b"content-length", b"51")], b"GET", 413),
        (200, b"1.1", [(b"transfer-encoding", b"gzip")], b"GET", 501),
        (
            200,
            b"1.1",
            [(b"transfer-encoding", b"chunked"), (b"content-length", b"1")],
            b"HEAD",
            400,
        ),
        (200, b"1.0", [(b"transfer-encoding", b"chunked")], b"GET", 400),
        (200, b"1.1", [(b"content-length", b"1"), (b"content-length", b"1")], b"GET", 400),
    ],
)
def test_response_framing(
    status: int,
    version: bytes,
    fields: list[tuple[bytes, bytes]],
    method: bytes,
    expected: tuple[int, bool] | int,
) -> None:
    if isinstance(expected, int):
        assert hint(v.response_framing, status, version, fields, method, LIM) == expected
    else:
        assert v.response_framing(status, version, fields, method, LIM) == expected


# -- ChunkedDecoder ----------------------------------------------------------------------------
def decode(
    stream: bytes, step: int = 0, limits: Limits = LIM
) -> tuple[bytes, list[tuple[bytes, bytes]], int]:
    """Body, trailers and how many bytes the message took; ``step`` > 0 feeds
    that many bytes at a time into a compacting buffer, as the codecs do."""
    decoder = v.ChunkedDecoder(limits)
    pieces = [stream[i : i + step] for i in range(0, len(stream), step)] if step else [stream]
    buf, pos, fed, body = b"", 0, 0, b""
    for piece in pieces:
        buf, pos = buf[pos:] + piece, 0
        fed += len(piece)
        while not decoder.done:
            start, end = decoder.step(buf, pos)
            if end == start:
                pos = start
                break
            body += buf[start:end]
            pos = end
        if decoder.done:
            return body, decoder.trailers, fed - (len(buf) - pos)
    raise AssertionError("the stream ended before the chunked body")


STREAM = b"3;a=1\r\nabc\r\n00000a\r\n0123456789\r\n0;z\r\nT: 1 \r\nU:\r\n\r\nNEXT"


@pytest.mark.parametrize("step", [0, 1, 2, 5, 100])
def test_chunked_decoding(step: int) -> None:
    assert decode(STREAM, step) == (b"abc0123456789", [(b"t", b"1"), (b"u", b"")], len(STREAM) - 4)


@pytest.mark.parametrize(
    ("stream", "status"),
    [
        (b"1" * 17 + b"\r\n", 400),
        (b"g\r\n", 400),
        (b"\r\n", 400),
        (b"3 \r\nabc\r\n", 400),
        (b"3 ;a\r\nabc\r\n", 400),
        (b"3;\r\nabc\r\n", 400),
        (b"3;a=\r\nabc\r\n", 400),
        (b'3;a="\x00"\r\nabc\r\n', 400),
        (b"3;" + b"a" * 9 + b"\r\nabc\r\n", 400),  # max_chunk_ext=8
        (b"3;" + b"a" * 30, 400),  # incomplete, already too long
        (b"3\r\nabcd\r\n", 400),
        (b"3\r\nabc\n", 400),
        (b"33\r\n" + b"a" * 51, 413),  # max_body_bytes=50
        (b"19\r\n" + b"a" * 25 + b"\r\n1a\r\n", 413),
        (b"0\r\nT: 1\n\r\n", 400),
        (b"0\r\n\n", 400),
        (b"0\r\n\rx", 400),
        (b"0\r\nT : 1\r\n\r\n", 400),
        (b"0\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n", 431),
        (b"0\r\nA: " + b"a" * 70, 431),
    ],
)
def test_chunked_errors(stream: bytes, status: int) -> None:
    assert hint(decode, stream + b"0\r\n\r\n") == status


def test_an_absurd_chunk_size_is_refused_even_without_a_body_limit() -> None:
    unlimited = attrs.evolve(LIM, max_body_bytes=0)
    largest = v.ChunkedDecoder(unlimited)  # 10**18 - 1, the longest Content-Length
    assert largest.step(b"de0b6b3a763ffff\r\nab", 0) == (17, 19)
    over = v.ChunkedDecoder(unlimited)
    assert hint(over.step, b"de0b6b3a7640000\r\nab", 0) == 400
    assert hint(decode, b"ffffffffffffffff\r\nabc\r\n0\r\n\r\n", 0, unlimited) == 400


@settings(deadline=None, max_examples=200)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=30), max_size=5),
    trailers=st.lists(
        st.tuples(st.sampled_from([b"t", b"x-y"]), st.sampled_from([b"", b"1", b"a b"])), max_size=2
    ),
    step=st.integers(0, 9),
)
def test_chunked_decoding_matches_h11(
    chunks: list[bytes], trailers: list[tuple[bytes, bytes]], step: int
) -> None:
    stream = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n"
    stream += b"".join(n + b": " + val + b"\r\n" for n, val in trailers) + b"\r\n"
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + stream)
    body, events = b"", []
    while (event := conn.next_event()) is not h11.NEED_DATA:
        events.append(event)
        body += bytes(getattr(event, "data", b""))
    assert decode(stream, step, Limits()) == (body, list(events[-1].headers), len(stream))


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"example.com", True),
        (b"example.com:8080", True),
        (b"[::1]:443", True),
        (b"[zz::1]", False),
        (b"user@example.com", False),
        (b"exa mple.com", False),
        (b"example.com:port", False),
        (b"", False),
    ],
)
def test_host_ok_is_the_rule_for_host_and_authority(value: bytes, ok: bool) -> None:
    assert v.host_ok(value) is ok


def test_a_host_remembered_as_good_always_has_a_host_part() -> None:
    # An empty host is good only where none is needed; remembering it would
    # let it pass where one is (HTTP/2's :authority).
    for value in (b"", b":80"):
        assert v.host_ok(value, need_host=False)
        assert not v.host_ok(value)
    v.request_framing(b"GET", b"1.1", [(b"host", b"")], Limits())
    assert not v.host_ok(b"")
    assert v.host_ok(b"remembered.example:8080")
    assert b"remembered.example:8080" in v._GOOD_HOSTS


# -- salvage_request_head: what a refused head's flow is told ---------------------------------
@pytest.mark.parametrize(
    ("raw", "told"),
    [
        # Refused for its framing: everything is valid and told.
        (
            b"\r\nPOST /a?b HTTP/1.1\r\nHost: h\r\nExpect: foo\r\n\r\nrest",
            (b"POST", b"/a?b", b"1.1", [(b"host", b"h"), (b"expect", b"foo")]),
        ),
        (b"GET / HTTP/1.0\r\n\r\n", (b"GET", b"/", b"1.0", [])),
        # A bad field, too many, a block too large or not there yet: the line alone.
        (b"GET /x HTTP/1.1\r\nBad Field: 1\r\n\r\n", (b"GET", b"/x", b"1.1", [])),
        (b"GET /x HTTP/1.1\r\n" + b"a: 1\r\n" * 4 + b"\r\n", (b"GET", b"/x", b"1.1", [])),
        (b"GET /x HTTP/1.1\r\na: " + b"v" * 70 + b"\r\n\r\n", (b"GET", b"/x", b"1.1", [])),
        (b"GET /x HTTP/1.1\r\nHost: h\r\n", (b"GET", b"/x", b"1.1", [])),
        # A line refused as a whole: the method when it starts the line.
        (b"GET /" + b"u" * 40 + b" HTTP/1.1\r\n\r\n", (b"GET", b"", b"", [])),
        (b"GET /x HTTP/2.0\r\n\r\n", (b"GET", b"", b"", [])),
        (b"GET /a b HTTP/1.1\r\n\r\n", (b"GET", b"", b"", [])),
        (b"GET", (b"", b"", b"", [])),
        (b"\x16\x03\x01\x02\x00", (b"", b"", b"", [])),
        (b"", (b"", b"", b"", [])),
    ],
)
def test_salvage_tells_what_is_valid_of_a_refused_head(
    raw: bytes, told: tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]
) -> None:
    head = v.salvage_request_head(raw, LIM)
    assert (head.method, head.target, head.http_version, head.headers) == told
