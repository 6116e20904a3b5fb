"""The chunked transfer coding, received: sizes, extensions, limits and trailers."""

from __future__ import annotations

import attrs
import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.protocol import chunked as v
from kernel.protocol.http1 import Limits
from sdk._errors import RemoteProtocolError

LIM = Limits(
    max_request_line=32, max_header_bytes=64, max_header_count=3, max_body_bytes=50, max_chunk_ext=8
)


def hint(fn: object, *args: object) -> int:
    with pytest.raises(RemoteProtocolError) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value.status_hint


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
