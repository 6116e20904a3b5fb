"""The HPACK encoder (kernel/protocol/hpack_encoder.py) against hpack's decoder.

Whatever it sends must decode, with the decoder's own table kept in step,
to exactly the fields given, never-indexed ones still marked so; and it must
make hpack's choices (index what the tables hold, index new fields, never
index credentials).
"""

from __future__ import annotations

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.protocol.hpack_encoder import Encoder

RESPONSE = [
    (b":status", b"200"),
    (b"server", b"nginx"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"1024"),
    (b"x-custom", b"some value"),
]


def decoded(decoder: hpack.Decoder, block: bytes) -> list[tuple[bytes, bytes]]:
    return list(decoder.decode(block, raw=True))


def test_a_repeated_block_is_all_indexes() -> None:
    enc, dec = Encoder(), hpack.Decoder()
    first = enc.encode(RESPONSE)
    assert decoded(dec, first) == RESPONSE
    second = enc.encode(RESPONSE)
    assert len(second) == len(RESPONSE)  # one byte each: static or dynamic index
    assert decoded(dec, second) == RESPONSE


def test_same_bytes_as_hpack_for_a_sequence_of_blocks() -> None:
    """hpack's own encoder, given the same blocks, writes the same bytes."""
    ours, theirs = Encoder(), hpack.Encoder()
    blocks = [
        RESPONSE,
        [(b":status", b"404"), (b"server", b"nginx"), (b"content-length", b"0")],
        [*RESPONSE, (b"set-cookie", b"a=" + b"x" * 300)],
        RESPONSE,
    ]
    for block in blocks:
        assert ours.encode(block) == theirs.encode(block)


def test_credentials_never_enter_the_table() -> None:
    enc, dec = Encoder(), hpack.Decoder()
    secret = hpack.NeverIndexedHeaderTuple(b"authorization", b"Bearer t")
    for _ in range(2):
        block = enc.encode([(b":status", b"200"), secret, (b"cookie", b"a=1", True)])
        fields = decoded(dec, block)
        assert fields == [(b":status", b"200"), secret, (b"cookie", b"a=1")]
        assert isinstance(fields[1], hpack.NeverIndexedHeaderTuple)
        assert isinstance(fields[2], hpack.NeverIndexedHeaderTuple)
    assert len(dec.header_table.dynamic_entries) == 0


def test_table_size_changes_are_announced_and_evict() -> None:
    enc, dec = Encoder(), hpack.Decoder()
    dec.decode(enc.encode(RESPONSE))
    enc.header_table_size = 0
    enc.header_table_size = 100
    block = enc.encode(RESPONSE)
    assert block[0] == 0x20  # size update to 0 first (the smallest), then to 100
    dec.max_allowed_table_size = 100
    assert decoded(dec, block) == RESPONSE
    assert dec.header_table.maxsize == 100
    unchanged = Encoder()
    unchanged.header_table_size = 4096  # the default: nothing to announce
    assert unchanged.encode([(b":status", b"200")]) == b"\x88"


def test_a_field_larger_than_the_table_is_sent_without_indexing() -> None:
    enc, dec = Encoder(), hpack.Decoder()
    big = [(b"x-big", b"v" * 5000)]
    assert decoded(dec, enc.encode(big)) == big
    assert len(dec.header_table.dynamic_entries) == 0
    assert decoded(dec, enc.encode(RESPONSE)) == RESPONSE  # the table still works


names = st.sampled_from(
    [b":status", b"content-type", b"server", b"date", b"x-a", b"x-b", b"cookie", b"authorization"]
)
values = st.one_of(
    st.sampled_from([b"200", b"text/plain", b"", b"nginx", b"a=1"]),
    st.binary(max_size=120).map(lambda b: bytes(c for c in b if c not in b"\r\n\0")),
)
field = st.tuples(names, values, st.booleans()).map(
    lambda t: hpack.NeverIndexedHeaderTuple(t[0], t[1]) if t[2] else (t[0], t[1])
)
step = st.one_of(
    st.lists(field, max_size=12).map(lambda fields: ("block", fields)),
    st.sampled_from([0, 64, 256, 4096, 8192]).map(lambda size: ("size", size)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=30))
def test_any_sequence_round_trips_through_hpacks_decoder(steps: list[tuple[str, object]]) -> None:
    enc, dec = Encoder(), hpack.Decoder()
    dec.max_allowed_table_size = 8192
    for kind, arg in steps:
        if kind == "size":
            assert isinstance(arg, int)
            enc.header_table_size = arg
            continue
        assert isinstance(arg, list)
        got = decoded(dec, enc.encode(arg))
        assert got == [(f[0], f[1]) for f in arg]
        for sent, received in zip(arg, got, strict=True):
            never = isinstance(sent, hpack.NeverIndexedHeaderTuple)
            assert isinstance(received, hpack.NeverIndexedHeaderTuple) == never
        # The decoder's table (newest first) holds exactly what ours holds.
        assert list(dec.header_table.dynamic_entries) == [
            (n, v) for n, v, _ in reversed(enc._entries)
        ]


def test_the_table_we_keep_is_at_most_4_kib_whatever_the_peer_allows() -> None:
    """A client's SETTINGS_HEADER_TABLE_SIZE of 4 GiB is an upper bound, not a
    request: kept as is, every distinct response field sent on its connection
    stayed in memory (an audit held ~30 MB for one connection)."""
    enc = Encoder()
    enc.header_table_size = 0xFFFF_FFFF
    assert enc.header_table_size == 4096
    dec = hpack.Decoder()
    dec.max_allowed_table_size = 0xFFFF_FFFF
    for i in range(200):
        value = b"v%d-" % i + b"x" * 1000
        block = enc.encode([(b"x-echo", value)])
        assert dec.decode(block, raw=True) == [(b"x-echo", value)]
    # What the table holds stays under the cap: the oldest values are gone.
    first = enc.encode([(b"x-echo", b"v0-" + b"x" * 1000)])
    assert len(first) > 100
    assert dec.header_table.maxsize == 4096
