"""The HPACK decoder (kernel/protocol/hpack_decoder.py) against hpack's own.

Both decoders are fed the same blocks (from hpack's encoder, with Huffman
strings, never-indexed fields, table size changes and evictions; and
arbitrary bytes) and must agree on every field and its type, on the error
class when a block is refused, and on the dynamic table afterwards: the next
block proves it, since its indexes refer to that table.
"""

from __future__ import annotations

from typing import Any

import hpack
import pytest
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.protocol.hpack_decoder import Decoder

REQUEST = [
    (b":method", b"GET"),
    (b":path", b"/index.html"),
    (b":scheme", b"https"),
    (b":authority", b"www.example.test"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
]


def outcome(decoder: Any, block: bytes, raw: bool = True) -> Any:
    """What a decoder makes of ``block``: the fields with their types, or the error class."""
    try:
        fields = decoder.decode(block, raw=raw)
    except (HPACKDecodingError, InvalidTableIndex, InvalidTableSizeError) as exc:
        return type(exc)
    return [(type(f).__name__, tuple(f)) for f in fields]


def fields_outcome(decoder: Decoder, block: bytes) -> Any:
    """What ``fields()`` makes of ``block``: plain tuples and their type, or the error class."""
    try:
        fields = decoder.fields(block)
    except (HPACKDecodingError, InvalidTableIndex, InvalidTableSizeError) as exc:
        return type(exc)
    return [(type(f).__name__, f) for f in fields]


def test_a_repeated_request_decodes_from_the_dynamic_table() -> None:
    enc, ours = hpack.Encoder(), Decoder()
    assert list(ours.decode(enc.encode(REQUEST), raw=True)) == REQUEST
    again = enc.encode(REQUEST)
    assert len(again) == len(REQUEST)  # one index each
    fields = ours.decode(again, raw=True)
    assert fields == REQUEST
    assert all(type(f) is hpack.HeaderTuple for f in fields)


def test_never_indexed_fields_stay_marked_and_out_of_the_table() -> None:
    enc, ours = hpack.Encoder(), Decoder()
    secret = hpack.NeverIndexedHeaderTuple(b"authorization", b"Bearer t")
    for _ in range(2):
        fields = ours.decode(enc.encode([*REQUEST, secret]), raw=True)
        assert fields[-1] == secret
        assert isinstance(fields[-1], hpack.NeverIndexedHeaderTuple)
    assert (b"authorization", b"Bearer t") not in ours._entries


def test_text_when_not_raw() -> None:
    enc = hpack.Encoder()
    assert Decoder().decode(enc.encode(REQUEST)) == [(n.decode(), v.decode()) for n, v in REQUEST]
    bad = hpack.Encoder().encode([(b"x-bin", b"\xff\xfe")], huffman=False)
    with pytest.raises(HPACKDecodingError):
        Decoder().decode(bad)


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"\x80", InvalidTableIndex),  # index 0
        (b"\xbf\x7f", InvalidTableIndex),  # index 190: nothing there
        (b"\xff", HPACKDecodingError),  # an integer cut off after its prefix
        (b"\xff\x80\x80\x80\x80\x80\x01", HPACKDecodingError),  # six continuation bytes
        (b"\x40\x05ab", HPACKDecodingError),  # a name shorter than its length
        (b"\x82\x3f\xe1\x1f", HPACKDecodingError),  # a size update after a field
        (b"\x3f\xe2\x1f", InvalidTableSizeError),  # 4097: above what we allowed
        (b"\x40\x81\xff\x00", HPACKDecodingError),  # Huffman EOS in a name
    ],
)
def test_refused_blocks_raise_hpacks_errors(block: bytes, error: type[Exception]) -> None:
    assert outcome(hpack.Decoder(), block) is error
    assert outcome(Decoder(), block) is error


def test_a_header_list_too_large_is_refused_at_once() -> None:
    block = hpack.Encoder().encode([(b"x-big", b"v" * 100)] * 3)
    for decoder in (hpack.Decoder(max_header_list_size=300), Decoder(max_header_list_size=300)):
        with pytest.raises(OversizedHeaderListError):
            decoder.decode(block, raw=True)


def test_the_table_must_shrink_to_what_was_acknowledged() -> None:
    enc, ours, theirs = hpack.Encoder(), Decoder(), hpack.Decoder()
    for d in (ours, theirs):
        d.max_allowed_table_size = 100
    # An encoder that did not hear of the smaller table: refused by both.
    block = enc.encode(REQUEST)
    assert outcome(ours, block) is outcome(theirs, block) is InvalidTableSizeError
    # One that shrank it first (a size update opens the block) is fine.
    enc2 = hpack.Encoder()
    enc2.header_table_size = 100
    block = enc2.encode(REQUEST)
    assert outcome(Decoder(), block) == outcome(hpack.Decoder(), block)
    small = Decoder()
    small.max_allowed_table_size = 100
    assert small.decode(block, raw=True) == REQUEST
    assert small._size <= 100


# -- differential: hpack's encoder drives both decoders ---------------------------------
name = st.sampled_from(
    [b"x-a", b"x-b", b"cookie", b"content-type", b":path", b"accept", b"x-" + b"n" * 40]
)
value = st.binary(max_size=60) | st.sampled_from([b"", b"1", b"text/html", b"gzip"])
field = st.tuples(name, value, st.booleans())  # the bool: never indexed
step = st.one_of(
    st.tuples(st.just("block"), st.lists(field, max_size=8), st.booleans()),  # (.., huffman)
    st.tuples(st.just("resize"), st.integers(min_value=0, max_value=4096)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=25))
def test_any_sequence_decodes_as_hpack_does(steps: list[tuple[Any, ...]]) -> None:
    enc, ours, theirs = hpack.Encoder(), Decoder(), hpack.Decoder()
    plain = Decoder()  # the same blocks through fields(): plain tuples, same table
    for kind, *args in steps:
        if kind == "resize":
            enc.header_table_size = args[0]
            continue
        fields, huffman = args
        headers = [
            hpack.NeverIndexedHeaderTuple(n, v) if never else hpack.HeaderTuple(n, v)
            for n, v, never in fields
        ]
        block = enc.encode(headers, huffman=huffman)
        expected = outcome(theirs, block)
        assert outcome(ours, block) == expected
        # (hpack's encoder can make blocks that decoders refuse: then the same error)
        plain_expected = expected
        if isinstance(expected, list):
            plain_expected = [("tuple", pair) for _, pair in expected]
        assert fields_outcome(plain, block) == plain_expected
    assert list(ours._entries) == list(theirs.header_table.dynamic_entries)
    assert list(plain._entries) == list(ours._entries)
    assert ours.header_table_size == theirs.header_table_size


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
def test_arbitrary_bytes_meet_the_same_fate(blocks: list[bytes]) -> None:
    """Garbage decodes to the same fields or fails with the same error class,
    and leaves the two tables equal (block after block, until an error)."""
    ours, theirs = Decoder(), hpack.Decoder()
    for block in blocks:
        expected = outcome(theirs, block)
        assert outcome(ours, block) == expected
        if not isinstance(expected, list):
            break
        assert list(ours._entries) == list(theirs.header_table.dynamic_entries)
