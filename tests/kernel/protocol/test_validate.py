"""The shared receive-side checks: head scanning and limits, framing, and what
is told of a refused head (bytes in, verdicts out). Start lines and fields are
tested in test_h1_syntax.py, the chunked decoder in test_chunked.py."""

from __future__ import annotations

import time

import pytest

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
