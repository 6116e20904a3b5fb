"""What is particular to the llhttp codecs: llhttp's strictness standing in for
:func:`validate.check_field_block`, the canned start lines, zero-copy bodies
and the exact bytes written. Shared behaviour is in ``test_http1.py``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.protocol import httptools_codec
from kernel.protocol import validate as v
from kernel.protocol.events import NEED_DATA, PAUSED, Data, EndOfMessage, RequestHead, ResponseHead
from kernel.protocol.http1 import Limits
from kernel.protocol.httptools_codec import HttptoolsClientCodec, HttptoolsServerCodec
from sdk._errors import RemoteProtocolError

PIECES = [
    b"a",
    b"Z",
    b"0",
    b"-",
    b"_",
    b":",
    b": ",
    b" ",
    b"\t",
    b"\r",
    b"\r\n",
    b"\x00",
    b"\x01",
    b"\x0b",
    b"\x0c",
    b"\x1f",
    b"\x7f",
    b"\x80",
    b"\xff",
    b"(",
    b",",
    b";",
    b'"',
    b"\\",
    b"{",
]


def parse_block(block: bytes) -> list[tuple[bytes, bytes]] | None:
    """llhttp's verdict on a field block: the fields, or None if refused."""
    try:
        return httptools_codec._parse_fields(block + b"\r\n")
    except RemoteProtocolError:
        return None


@settings(deadline=None, max_examples=1500)
@given(
    lines=st.lists(
        st.lists(st.sampled_from(PIECES), max_size=8).map(b"".join), min_size=1, max_size=4
    )
)
def test_llhttp_refuses_exactly_what_check_field_block_refuses(lines: list[bytes]) -> None:
    block = b"".join(line + b"\r\n" for line in lines)
    # The scanner has already cut the head at its first blank line.
    if b"\n\r\n" in b"\n" + block or b"\n\n" in block:
        return
    try:
        v.check_field_block(block, 0, len(block))
    except RemoteProtocolError:
        assert parse_block(block) is None, block
    else:
        assert parse_block(block) == v.split_fields(block, 0, len(block)), block


@pytest.mark.parametrize(
    "block",
    [
        b"X: a \t \r\n",
        b"X:\r\n",
        b"X:\t\tb\r\n",
        b"X: \x80\xff\r\n",
        b"Content-Length: 3 \r\n",
        b"Connection: upgrade\r\nUpgrade: h2c\r\n",
        b"Transfer-Encoding: chunked\r\n",
    ],
)
def test_fields_match_split_fields(block: bytes) -> None:
    assert parse_block(block) == v.split_fields(block, 0, len(block))


def test_llhttp_never_sees_the_request_line() -> None:
    # llhttp knows a fixed method table and is picky about URLs; neither matters.
    codec = HttptoolsServerCodec(Limits())
    codec.receive_data(b"FROB-NICATE /a|b{c}^ HTTP/1.1\r\nHost: a\r\n\r\n")
    head = codec.next_event()
    assert isinstance(head, RequestHead)
    assert (head.method, head.target) == (b"FROB-NICATE", b"/a|b{c}^")


def test_upgrade_requests_are_ordinary() -> None:
    # llhttp would hand everything after this head to "the new protocol".
    codec = HttptoolsServerCodec(Limits())
    codec.receive_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 2\r\n\r\nhi"
        b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert isinstance(codec.next_event(), RequestHead)
    assert [codec.next_event(), codec.next_event(), codec.next_event()] == [
        Data(b"hi"),
        EndOfMessage(),
        PAUSED,
    ]


def test_body_is_not_copied() -> None:
    codec = HttptoolsServerCodec(Limits())
    codec.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
    assert isinstance(codec.next_event(), RequestHead)
    assert codec.next_event() is NEED_DATA
    chunk = b"0123456789"
    codec.receive_data(chunk)
    event = codec.next_event()
    assert isinstance(event, Data)
    assert event.data is chunk


def test_exact_bytes_written() -> None:
    codec = HttptoolsServerCodec(Limits())
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(codec.next_event(), RequestHead)
    assert codec.next_event() == EndOfMessage()
    head = ResponseHead(
        status_code=200, headers=[(b"content-type", b"text/plain"), (b"content-length", b"2")]
    )
    assert codec.send_response_head(head) == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n"
    )
    assert codec.send_data(b"hi") == b"hi"
    assert codec.send_end() == b""
    client = HttptoolsClientCodec(Limits())
    request = RequestHead(
        method=b"PUT", target=b"/x", headers=[(b"host", b"h"), (b"transfer-encoding", b"chunked")]
    )
    assert (
        client.send_request_head(request)
        == b"PUT /x HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert client.send_data(b"a" * 26) == b"1a\r\n" + b"a" * 26 + b"\r\n"
    assert client.send_end() == b"0\r\n\r\n"


def test_one_parser_serves_every_head_in_turn() -> None:
    """The process's llhttp parser survives what ends a connection or fails a
    head: the next head, of any connection, parses as if it were the first."""
    parse = httptools_codec._parse_fields
    assert parse(b"Connection: close\r\nA: 1\r\n\r\n") == [(b"connection", b"close"), (b"a", b"1")]
    assert parse(b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n") == [
        (b"connection", b"upgrade"),
        (b"upgrade", b"websocket"),
    ]
    with pytest.raises(RemoteProtocolError):  # llhttp's smuggling rule (validate has it too)
        parse(b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n")
    assert parse(b"A: 0\r\n\r\n") == [(b"a", b"0")]
    with pytest.raises(RemoteProtocolError):
        parse(b"Bad Name: x\r\n\r\n")
    assert parse(b"B: 2\r\n\r\n") == [(b"b", b"2")]
    # Framing in the fields never makes llhttp wait for a body it will not get.
    assert parse(b"Content-Length: 5\r\n\r\n") == [(b"content-length", b"5")]
    assert parse(b"C: 3\r\n\r\n") == [(b"c", b"3")]


def test_a_close_head_leaves_no_content_length_behind() -> None:
    """llhttp keeps Content-Length digits from one "Connection: close" head
    to the next: a valid head was refused every 3rd-20th time (then 502s
    from upstreams that close, 400s to clients that do)."""
    parse = httptools_codec._parse_fields
    for length in (b"3", b"1234", b"1048576"):
        for _ in range(100):
            head = b"Connection: close\r\nContent-Length: " + length + b"\r\n\r\n"
            assert parse(head)[-1] == (b"content-length", length)
    for _ in range(50):
        assert parse(b"Proxy-Connection: close\r\nContent-Length: 1048576\r\n\r\n")


_HEAD_LINES = [
    b"connection: close", b"connection: keep-alive", b"connection: close, upgrade",
    b"proxy-connection: close", b"upgrade: websocket", b"content-length: 10",
    b"content-length: 1048576", b"content-length: 0", b"transfer-encoding: chunked",
    b"expect: 100-continue", b"x-a: 1", b"x b: 1", b"x-d: a\x01b", b"content-length: -1",
]  # fmt: skip


@settings(deadline=None, max_examples=300)
@given(
    heads=st.lists(
        st.lists(st.sampled_from(_HEAD_LINES), max_size=4, unique=True), min_size=2, max_size=10
    )
)
def test_heads_in_a_row_parse_as_each_would_alone(heads: list[list[bytes]]) -> None:
    blocks = [b"".join(line + b"\r\n" for line in head) + b"\r\n" for head in heads]
    in_a_row = [parse_block(block[:-2]) for block in blocks]
    alone = []
    for block in blocks:
        httptools_codec._parser = httptools_codec._new_parser()
        alone.append(parse_block(block[:-2]))
    assert in_a_row == alone
