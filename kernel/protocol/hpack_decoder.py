"""The HPACK decoder (RFC 7541) of both HTTP/2 sides: hpack's results, in one pass.

The frame machine (:mod:`.h2_machine`) decodes every header block it receives with this.
hpack's ``Decoder`` slices a memoryview for each field, goes through a method
per representation and a table method per lookup, and makes a logging call
per field (and one per block) that costs even with logging off. A proxy
decodes a block for every request (and every upstream response), most
fields sent as a single index. :class:`Decoder` walks the block once with
integer offsets and reads the tables directly; what it returns, the table
it keeps and the errors it raises are hpack's, so h2 cannot tell the
difference:

- ``decode(data, raw=True)``: the fields in order, as
  :class:`hpack.HeaderTuple` (:class:`hpack.NeverIndexedHeaderTuple` for a
  literal never indexed, §6.2.3) of bytes; ``raw=False`` decodes them as
  UTF-8 (a field that is not is an :class:`~hpack.HPACKDecodingError`);
- a literal with incremental indexing enters the dynamic table (§6.2.1); an
  entry larger than the table empties it (§4.4); a dynamic table size update
  (§6.3) may only open a block and may not exceed ``max_allowed_table_size``
  (the size we advertised and the peer acknowledged; h2 sets it), and at the
  end of a block the table must fit it (:class:`~hpack.InvalidTableSizeError`);
- a block that expands past ``max_header_list_size`` (names and values plus
  32 per field) raises :class:`~hpack.OversizedHeaderListError` at once;
- an index outside both tables is :class:`~hpack.InvalidTableIndex`; a
  truncated block, an integer longer than five bytes after its prefix, or a
  bad Huffman string (hpack's own decoder, Appendix B) an
  :class:`~hpack.HPACKDecodingError`.

May import: stdlib, hpack.
"""

from __future__ import annotations

import collections
from typing import Any, Final

from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["Decoder"]

#: RFC 7541 §4.1: the size of an entry is its name and value plus 32.
_ENTRY_OVERHEAD: Final = 32
_STATIC: Final = HeaderTable.STATIC_TABLE
_STATIC_COUNT: Final = len(_STATIC)
#: Bytes an integer may take after its prefix (hpack's limit, a 32-bit value).
_MAX_CONTINUATION: Final = 5
_new = tuple.__new__  # builds a HeaderTuple without its Python-level __new__


class Decoder:
    """One direction's HPACK decompression context, as h2 drives it."""

    __slots__ = ("_entries", "_maxsize", "_size", "max_allowed_table_size", "max_header_list_size")

    def __init__(self, max_header_list_size: int = 2**16) -> None:
        #: Dynamic table entries, newest first: index 62 is ``_entries[0]``.
        self._entries: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._size = 0
        self._maxsize = 4096  # §6.5.2: SETTINGS_HEADER_TABLE_SIZE starts at 4096
        #: The largest decoded block (names, values, 32 per field) accepted.
        self.max_header_list_size = max_header_list_size
        #: The table size we advertised and the peer acknowledged.
        self.max_allowed_table_size = 4096

    @property
    def header_table_size(self) -> int:
        """The dynamic table's maximum size, as the peer last set it."""
        return self._maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._maxsize = value
        self._evict()

    def decode(self, data: bytes, raw: bool = False) -> list[HeaderTuple]:
        """The fields of one complete header block, in order."""
        headers: list[HeaderTuple] = self._decode(data, HeaderTuple, NeverIndexedHeaderTuple)
        if raw:
            return headers
        try:
            return [_new(type(h), (h[0].decode("utf-8"), h[1].decode("utf-8"))) for h in headers]
        except UnicodeDecodeError as err:
            raise HPACKDecodingError("Unable to decode headers as UTF-8") from err

    def fields(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The fields of one block as plain ``(name, value)`` bytes (the frame
        machine's need): ``decode(data, raw=True)`` without hpack's types."""
        return self._decode(data, tuple, tuple)

    # -- inside ----------------------------------------------------------------------
    def _decode(self, data: bytes, indexed: type, never: type) -> list[Any]:
        if type(data) is not bytes:
            data = bytes(data)
        plain = indexed is tuple
        headers: list[Any] = []
        end = len(data)
        pos = 0
        inflated = 0
        limit = self.max_header_list_size
        while pos < end:
            first = data[pos]
            if first & 0x80:  # §6.1: indexed field
                index, pos = _integer(data, pos, 0x7F)
                header = self._lookup(index)
                name, value = header
                if not plain:
                    header = _new(indexed, header)
            elif first & 0x40:  # §6.2.1: literal with incremental indexing
                name, value, pos = self._literal(data, pos, 0x3F)
                header = _new(indexed, (name, value))
                self._add(name, value)
            elif first & 0x20:  # §6.3: dynamic table size update
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                size, pos = _integer(data, pos, 0x1F)
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.header_table_size = size
                continue
            else:  # §6.2.2 without indexing, §6.2.3 never indexed
                name, value, pos = self._literal(data, pos, 0x0F)
                header = _new(never if first & 0x10 else indexed, (name, value))
            headers.append(header)
            inflated += len(name) + len(value) + _ENTRY_OVERHEAD
            if inflated > limit:
                raise OversizedHeaderListError(
                    f"A header list larger than {limit} has been received"
                )
        if self._maxsize > self.max_allowed_table_size:
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        return headers

    def _lookup(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC[index - 1]
        dynamic = index - _STATIC_COUNT - 1
        if 0 <= dynamic < len(self._entries):
            return self._entries[dynamic]
        raise InvalidTableIndex(f"Invalid table index {index}")

    def _literal(self, data: bytes, pos: int, mask: int) -> tuple[bytes, bytes, int]:
        """A literal field (§6.2) at ``pos``; its name by index when the prefix is not 0."""
        index, pos = _integer(data, pos, mask)
        if index:
            name = self._lookup(index)[0]
        else:
            name, pos = _string(data, pos)
        value, pos = _string(data, pos)
        return name, value, pos

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + _ENTRY_OVERHEAD
        if size > self._maxsize:  # §4.4: an entry larger than the table empties it
            self._entries.clear()
            self._size = 0
            return
        self._entries.appendleft((name, value))
        self._size += size
        self._evict()

    def _evict(self) -> None:
        """Drop the oldest entries until the table fits its maximum size (§4.4)."""
        entries = self._entries
        while self._size > self._maxsize and entries:
            name, value = entries.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _integer(data: bytes, pos: int, mask: int) -> tuple[int, int]:
    """The integer (§5.1) whose N-bit prefix (``mask``) is in ``data[pos]``; and where it ends."""
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    for _ in range(_MAX_CONTINUATION):
        if pos >= len(data):
            raise HPACKDecodingError("Unable to decode HPACK integer representation")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise HPACKDecodingError("Variable integer representation is too long")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """A string literal (§5.2) at ``pos``, Huffman-decoded if so marked; and where it ends."""
    if pos >= len(data):
        raise HPACKDecodingError("Truncated header block")
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 0x7F)
    end = pos + length
    if end > len(data):
        raise HPACKDecodingError("Truncated header block")
    raw = data[pos:end]
    return (decode_huffman(raw) if huffman else raw), end
