"""The HPACK encoder (RFC 7541) of both HTTP/2 sides: hpack's choices, found by dict.

The frame machine (:mod:`.h2_machine`) encodes every header block it sends with this. hpack's
``Encoder`` looks each field up in its dynamic table with a linear scan and
logs every step; for a proxy answering many small requests that is most of
the cost of sending a response head. :class:`Encoder` makes the same
choices, with the dynamic table indexed by dictionaries:

- a field in the static or dynamic table is sent as its index (§6.1);
- a field marked never-indexed (:class:`hpack.NeverIndexedHeaderTuple`, or a
  third tuple item that is true) is sent as a literal never indexed (§6.2.3),
  its name by index when the tables know it;
- any other field is sent as a literal with incremental indexing (§6.2.1),
  its name by index when known, and enters the dynamic table; one larger
  than the whole table is sent without indexing (§6.2.2) instead of
  emptying it.

A string is Huffman-coded (Appendix B, hpack's code table) unless that
would make it longer (binary values; hpack would code it anyway). When h2
changes the table size (the peer's ``SETTINGS_HEADER_TABLE_SIZE``), entries
are evicted at once and the next block starts with the size updates (§4.2,
§6.3): the smallest size since the last block, then the final one.

It is a drop-in for what h2 uses: ``encode(headers, huffman=True)`` and the
``header_table_size`` property.

May import: stdlib, hpack.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Final

from hpack import HeaderTuple
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

#: The largest dynamic table we keep for a peer, whatever it allows (bytes).
MAX_TABLE_SIZE: Final = 4096

__all__ = ["Encoder"]

#: RFC 7541 §4.1: the size of an entry is its name and value plus 32.
_ENTRY_OVERHEAD: Final = 32
#: Index of the first dynamic table entry (§2.3.3): after the 61 static ones.
_FIRST_DYNAMIC: Final = len(HeaderTable.STATIC_TABLE) + 1
_STATIC_FULL: Final[dict[tuple[bytes, bytes], int]] = {}
_STATIC_NAME: Final[dict[bytes, int]] = {}
for _i, _field in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FULL.setdefault(_field, _i)
    _STATIC_NAME.setdefault(_field[0], _i)

_huffman = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def _integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """``value`` with an N-bit prefix (§5.1), ``flags`` in the first byte's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes, huffman: bool) -> bytes:
    """A string literal (§5.2): Huffman-coded when asked and no longer."""
    if huffman and data:
        coded = _huffman.encode(data)
        if len(coded) <= len(data):
            return _integer(len(coded), 7, 0x80) + coded
    return _integer(len(data), 7, 0) + data


class Encoder:
    """One direction's HPACK compression context, as h2 drives it."""

    __slots__ = ("_entries", "_full", "_inserted", "_maxsize", "_names", "_pending", "_size")

    def __init__(self) -> None:
        #: Dynamic table entries, oldest first: (name, value, size).
        self._entries: collections.deque[tuple[bytes, bytes, int]] = collections.deque()
        self._size = 0
        self._maxsize = 4096  # §6.5.2: SETTINGS_HEADER_TABLE_SIZE starts at 4096
        #: Entries ever inserted; entry number k has index
        #: _FIRST_DYNAMIC + (_inserted - 1 - k) while it is in the table.
        self._inserted = 0
        #: The newest entry number of each (name, value) and of each name.
        self._full: dict[tuple[bytes, bytes], int] = {}
        self._names: dict[bytes, int] = {}
        #: Table sizes set since the last block, to announce at its start.
        self._pending: list[int] = []

    @property
    def header_table_size(self) -> int:
        """The dynamic table's maximum size; h2 sets it from the peer's SETTINGS."""
        return self._maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The peer's SETTINGS_HEADER_TABLE_SIZE is an upper bound on the table
        # we keep for it (RFC 7541 §4.2), not a size to allocate: a client
        # saying 4 GiB would have us hold every distinct response field sent
        # on its connection. We keep at most 4 KiB, the protocol's default.
        value = min(value, MAX_TABLE_SIZE)
        if value == self._maxsize and not self._pending:
            return
        self._maxsize = value
        self._pending.append(value)
        self._evict()

    def encode(
        self,
        headers: Iterable[tuple[bytes, bytes] | tuple[bytes, bytes, bool]],
        huffman: bool = True,
    ) -> bytes:
        """One header block: ``headers`` in order (pseudo-headers first, as h2 gives them)."""
        out = bytearray()
        if self._pending:
            smallest, final = min(self._pending), self._pending[-1]
            self._pending.clear()
            if smallest < final:
                out += _integer(smallest, 5, 0x20)
            out += _integer(final, 5, 0x20)
        full, names = self._full, self._names
        for header in headers:
            name, value = header[0], header[1]
            if isinstance(header, HeaderTuple):
                sensitive = not header.indexable
            else:
                sensitive = len(header) > 2 and bool(header[2])
            if not sensitive:
                index = _STATIC_FULL.get((name, value))
                if index is None and (number := full.get((name, value))) is not None:
                    index = _FIRST_DYNAMIC + self._inserted - 1 - number
                if index is not None:  # §6.1: indexed
                    out += _integer(index, 7, 0x80)
                    continue
            name_index = _STATIC_NAME.get(name)
            if name_index is None and (number := names.get(name)) is not None:
                name_index = _FIRST_DYNAMIC + self._inserted - 1 - number
            size = len(name) + len(value) + _ENTRY_OVERHEAD
            if sensitive:
                prefix, flags = 4, 0x10  # §6.2.3: never indexed
            elif size > self._maxsize:
                prefix, flags = 4, 0x00  # §6.2.2: without indexing
            else:
                prefix, flags = 6, 0x40  # §6.2.1: with incremental indexing
            if name_index is None:
                out += _integer(0, prefix, flags)
                out += _string(name, huffman)
            else:
                out += _integer(name_index, prefix, flags)
            out += _string(value, huffman)
            if flags == 0x40:
                self._add(name, value, size)
        return bytes(out)

    def _add(self, name: bytes, value: bytes, size: int) -> None:
        number = self._inserted
        self._inserted = number + 1
        self._entries.append((name, value, size))
        self._size += size
        self._full[name, value] = number
        self._names[name] = number
        self._evict()

    def _evict(self) -> None:
        """Drop the oldest entries until the table fits its maximum size (§4.4)."""
        entries = self._entries
        while self._size > self._maxsize:
            number = self._inserted - len(entries)
            name, value, size = entries.popleft()
            self._size -= size
            if self._full.get((name, value)) == number:
                del self._full[name, value]
            if self._names.get(name) == number:
                del self._names[name]
