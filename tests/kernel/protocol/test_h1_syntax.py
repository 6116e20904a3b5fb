"""HTTP/1.1 head syntax: start lines, field lines and the Host rule (bytes in, verdicts out)."""

from __future__ import annotations

import time

import pytest

from kernel.protocol import h1_syntax as v
from kernel.protocol.http1 import Limits
from kernel.protocol.validate import request_framing
from sdk._errors import RemoteProtocolError


def hint(fn: object, *args: object) -> int:
    with pytest.raises(RemoteProtocolError) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value.status_hint


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


# -- Host ----------------------------------------------------------------------------------
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
    request_framing(b"GET", b"1.1", [(b"host", b"")], Limits())
    assert not v.host_ok(b"")
    assert v.host_ok(b"remembered.example:8080")
    assert b"remembered.example:8080" in v._GOOD_HOSTS
