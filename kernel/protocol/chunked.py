"""The chunked transfer coding and trailer sections, received (RFC 9112 §7.1).

- :class:`ChunkedDecoder`: one chunked body at a time, bounded like a head
  (size lines, extensions, the body limit, the trailer section).
- :data:`NOT_IN_TRAILERS`, :func:`screen_trailers`: the fields a trailer
  section may not carry, for both protocols (HTTP/2's trailers are screened
  by :mod:`.h2_fields` with the same rule).

Part of :mod:`.validate`, which re-exports these names for the codecs.

May import: stdlib, kernel.protocol.events, kernel.protocol.http1,
kernel.protocol.h1_syntax.
"""

from __future__ import annotations

import re
from typing import Final

from kernel.protocol.events import Fields
from kernel.protocol.h1_syntax import EXT_VALUE, bad, check_field_block, split_fields
from kernel.protocol.http1 import TOKEN, Limits

__all__ = ["MAX_LENGTH", "NOT_IN_TRAILERS", "ChunkedDecoder", "screen_trailers"]

# RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF, at most 16 hex digits (2**64).
# BWS before ";" is refused: h11 cannot parse it and no sender needs it.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?>(?:;[ \t]*+" + TOKEN + EXT_VALUE + rb"?)*)\r\n")
#: The largest body we can frame, whatever ``max_body_bytes`` says: a
#: Content-Length has at most 18 digits, and a chunked body adding up to more
#: is an absurd size (a 16-hex-digit chunk is 2**64), refused as one.
MAX_LENGTH: Final = 10**18 - 1
#: Fields that frame, route or authenticate a message, or tell who it came
#: through, have no business in a trailer section (RFC 9110 §6.5.1): a next
#: hop that merged them into the head would be fooled. Received, both
#: protocols refuse them; HTTP/2 also leaves them out when sending.
NOT_IN_TRAILERS: Final = frozenset(
    (
        # framing and the connection
        b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
        b"te", b"trailer", b"content-length", b"http2-settings",
        # routing, and how to read the content
        b"host", b"content-type", b"content-encoding", b"content-range",
        # credentials, and the forwarding chain the kernel vouches for
        b"authorization", b"proxy-authorization", b"proxy-authenticate", b"www-authenticate",
        b"cookie", b"set-cookie", b"forwarded", b"x-forwarded-for", b"x-forwarded-host",
        b"x-forwarded-proto", b"via",
    )
)  # fmt: skip


def screen_trailers(fields: Fields, *, refuse: bool) -> Fields:
    """Received trailer fields without those in :data:`NOT_IN_TRAILERS`.

    ``refuse`` (a request's trailers, either protocol): one of them is a 400
    instead. A response's are pruned: its body is on its way already.
    """
    for name, _ in fields:
        if name in NOT_IN_TRAILERS:
            if refuse:
                raise bad(f"{name.decode('ascii')} in trailers")
            return [f for f in fields if f[0] not in NOT_IN_TRAILERS]
    return fields


class ChunkedDecoder:
    """The chunked transfer coding (RFC 9112 §7.1), one message at a time.

    :meth:`step` walks the caller's buffer. It returns ``(pos, data_end)``:
    when ``data_end > pos``, ``buf[pos:data_end]`` is body data; otherwise it
    needs more bytes, or :attr:`done` is set and :attr:`trailers` holds the
    trailer fields. Either way the caller continues from the larger offset.
    """

    __slots__ = (
        "_left", "_limits", "_refuse", "_scan", "_state", "_total", "done", "trailers",
        "trailers_at",
    )  # fmt: skip

    def __init__(self, limits: Limits, *, refuse_forbidden: bool = True) -> None:
        self._limits = limits
        #: A trailer field in NOT_IN_TRAILERS fails a request (400); from a
        #: response, whose body is on its way already, it is left out instead.
        self._refuse = refuse_forbidden
        #: Where the trailer section began in the buffer of the step that ended.
        self.trailers_at = 0
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._left = 0
        self._total = 0
        self._scan = 0
        self.done = False
        self.trailers: Fields = []

    def step(self, buf: bytes, pos: int) -> tuple[int, int]:
        n = len(buf)
        while not self.done:
            state = self._state
            if state == 1:
                if pos >= n:
                    return pos, pos
                end = min(n, pos + self._left)
                self._left -= end - pos
                if not self._left:
                    self._state = 2
                return pos, end
            if state == 0:
                after = self._size_line(buf, pos)
                if after < 0:
                    return pos, pos
                pos = after
            elif state == 2:
                if buf[pos : pos + 2] != b"\r\n"[: n - pos]:
                    raise bad("chunk data not followed by CRLF")
                if n - pos < 2:
                    return pos, pos
                pos += 2
                self._state = 0
            else:
                after = self._trailers(buf, pos)
                if after < 0:
                    return pos, pos
                pos = after
        return pos, pos

    def _size_line(self, buf: bytes, pos: int) -> int:
        limit = 17 + self._limits.max_chunk_ext  # digits + extensions + CR
        lf = buf.find(b"\n", pos, pos + limit + 1)
        if lf < 0:
            if len(buf) - pos > limit:
                raise bad("chunk size line too long")
            return -1
        m = _CHUNK_LINE.fullmatch(buf, pos, lf + 1)
        if m is None:
            raise bad("malformed chunk size line")
        if lf - 1 - m.end(1) > self._limits.max_chunk_ext:
            raise bad("chunk extensions too long")
        size = int(m.group(1), 16)
        self._total += size
        if self._limits.max_body_bytes and self._total > self._limits.max_body_bytes:
            raise bad("body larger than allowed", 413)
        if self._total > MAX_LENGTH:
            raise bad("absurd chunk size")
        self._left = size
        self._state = 1 if size else 3
        self._scan = 0
        return lf + 1

    def _trailers(self, buf: bytes, pos: int) -> int:
        # The trailer section is field lines then CRLF, bounded like a head.
        first = buf[pos : pos + 2]
        self.trailers_at = pos
        if first[:1] == b"\r":
            if first == b"\r\n":
                self.done = True
                return pos + 2
            if len(first) == 2:
                raise bad("bare CR in trailers")
            return -1
        lim = self._limits
        end_lf = buf.find(b"\n\r\n", pos + self._scan)
        stop = len(buf) if end_lf < 0 else end_lf + 1
        if buf[pos : pos + 1] == b"\n" or buf.find(b"\n\n", pos + self._scan, stop) >= 0:
            raise bad("bare LF in trailers")
        if end_lf < 0:
            if len(buf) - pos > lim.max_header_bytes + 2:
                raise bad("trailer section too large", 431)
            self._scan = max(0, len(buf) - pos - 2)
            return -1
        if end_lf + 1 - pos > lim.max_header_bytes:
            raise bad("trailer section too large", 431)
        if buf.count(b"\n", pos, end_lf + 1) > lim.max_header_count:
            raise bad("too many trailer fields", 431)
        check_field_block(buf, pos, end_lf + 1)
        self.trailers = screen_trailers(split_fields(buf, pos, end_lf + 1), refuse=self._refuse)
        self.done = True
        return end_lf + 3
