"""Peek at a TLS ClientHello: the SNI name and ALPN list, before any handshake.

A listener with ``passthrough = true`` reads the first bytes of a connection
and hands them to :func:`parse_client_hello` until it returns a
:class:`ClientHello` (or raises); those same bytes are then either relayed
unchanged to another server or fed to the TLS handshake. Nothing is
consumed or answered here.

What is parsed (RFC 8446 §4.1.2, §5.1; RFC 6066 §3; RFC 7301 §3.1): one
handshake message of type ``client_hello``, possibly split over several
``handshake`` records, at most :data:`MAX_HELLO` bytes long. Only the
``server_name`` (``host_name`` entry) and
``application_layer_protocol_negotiation`` extensions are read; the rest is
skipped after its length is checked. Anything else raises
:class:`ClientHelloError` with a message for logs: the caller should close
the connection (or, for a first byte that is not ``0x16``, it may be
cleartext on a TLS port).

May import: stdlib.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MAX_HELLO",
    "NEED_MORE",
    "ClientHello",
    "ClientHelloError",
    "NeedMore",
    "parse_client_hello",
]

#: The largest ClientHello accepted, in bytes (handshake body, not records).
MAX_HELLO: Final = 16384

_HANDSHAKE: Final = 22  # ContentType.handshake
_CLIENT_HELLO: Final = 1  # HandshakeType.client_hello
_MAX_RECORD: Final = 16384 + 256  # TLSPlaintext length, with room for old stacks
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16


class ClientHelloError(ValueError):
    """The bytes are not (the start of) an acceptable TLS ClientHello."""


class NeedMore(enum.Enum):
    """The type of :data:`NEED_MORE`."""

    NEED_MORE = "need more"


#: Returned while the ClientHello is still incomplete: read more and call again.
NEED_MORE: Final = NeedMore.NEED_MORE


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello tells before the handshake."""

    #: The SNI host name, lower-case without a trailing dot; ``None`` when not sent.
    server_name: str | None
    #: ALPN protocol ids offered, in the client's order (empty when not sent).
    alpn: tuple[str, ...]
    #: Bytes of the records that carried the hello (what was needed of ``data``).
    length: int


class _Reader:
    """Bounds-checked reads over the handshake body; every overrun is a ClientHelloError."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise ClientHelloError(f"truncated ClientHello: {what} runs past its end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def take_all(self) -> bytes:
        return self.take(self.left, "")

    def vector(self, length_bytes: int, what: str) -> _Reader:
        size = self.uint(length_bytes, f"{what} length")
        start = self.pos
        self.take(size, what)
        return _Reader(self.data, start, start + size)

    @property
    def left(self) -> int:
        return self.end - self.pos


def _handshake_bytes(data: bytes) -> tuple[bytes, int] | Literal[NeedMore.NEED_MORE]:
    """Join handshake records until the whole hello is there: (body, record bytes used)."""
    body = bytearray()
    pos = 0
    need: int | None = None  # the hello's total size (header + body), once known
    while need is None or len(body) < need:
        header = data[pos : pos + 5]
        if header[:1] and header[0] != _HANDSHAKE:
            first = header[0]
            shown = f" ({chr(first)!r})" if 32 <= first < 127 else ""
            where = "first byte" if pos == 0 else "a record inside the ClientHello"
            raise ClientHelloError(f"not a TLS handshake: {where} is 0x{first:02x}{shown}")
        if len(header) >= 2 and header[1] != 3:
            raise ClientHelloError(
                f"not a TLS record: version 0x{header[1]:02x}{header[2:3].hex()}"
            )
        if len(header) < 5:
            return NEED_MORE
        size = int.from_bytes(header[3:5], "big")
        if size == 0 or size > _MAX_RECORD:
            raise ClientHelloError(f"bad TLS record length {size}")
        fragment = data[pos + 5 : pos + 5 + size]
        if len(fragment) < size:
            # Check what is there already, so garbage fails before it is all read.
            body += fragment
            if need is None and len(body) >= 4:
                _check_header(bytes(body[:4]))
            return NEED_MORE
        body += fragment
        pos += 5 + size
        if need is None and len(body) >= 4:
            need = 4 + _check_header(bytes(body[:4]))
    assert need is not None
    return bytes(body[:need]), pos


def _check_header(header: bytes) -> int:
    if header[0] != _CLIENT_HELLO:
        raise ClientHelloError(f"first handshake message is type {header[0]}, not ClientHello")
    size = int.from_bytes(header[1:4], "big")
    if size > MAX_HELLO:
        raise ClientHelloError(f"ClientHello of {size} bytes exceeds the {MAX_HELLO}-byte limit")
    return size


def parse_client_hello(data: bytes) -> ClientHello | Literal[NeedMore.NEED_MORE]:
    """The SNI name and ALPN list from the first bytes of a TLS connection.

    Returns :data:`NEED_MORE` while ``data`` holds only a valid beginning;
    raises :class:`ClientHelloError` (and nothing else) for anything that
    cannot become a ClientHello of at most :data:`MAX_HELLO` bytes.
    """
    joined = _handshake_bytes(bytes(data))
    if joined is NEED_MORE:
        return NEED_MORE
    hello, used = joined
    r = _Reader(hello, 4)
    r.take(2, "legacy_version")
    r.take(32, "random")
    if r.vector(1, "legacy_session_id").left > 32:
        raise ClientHelloError("legacy_session_id longer than 32 bytes")
    suites = r.vector(2, "cipher_suites")
    if suites.left == 0 or suites.left % 2:
        raise ClientHelloError(f"cipher_suites of {suites.left} bytes")
    if r.vector(1, "legacy_compression_methods").left == 0:
        raise ClientHelloError("no compression methods")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    if r.left == 0:  # no extensions at all (old clients)
        return ClientHello(None, (), used)
    extensions = r.vector(2, "extensions")
    if r.left:
        raise ClientHelloError(f"{r.left} bytes after the extensions")
    seen: set[int] = set()
    while extensions.left:
        kind = extensions.uint(2, "extension type")
        body = extensions.vector(2, f"extension {kind}")
        if kind in seen:
            raise ClientHelloError(f"extension {kind} sent twice")
        seen.add(kind)
        if kind == _EXT_SERVER_NAME:
            server_name = _server_name(body)
        elif kind == _EXT_ALPN:
            alpn = _alpn(body)
    return ClientHello(server_name, alpn, used)


def _server_name(body: _Reader) -> str | None:
    names = body.vector(2, "server_name_list")
    if body.left:
        raise ClientHelloError("bytes after server_name_list")
    found: str | None = None
    while names.left:
        kind = names.uint(1, "server name type")
        value = names.vector(2, "server name").take_all()
        if kind != 0 or found is not None:
            continue  # only one host_name counts (RFC 6066 §3); other types are unknown
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            raise ClientHelloError("server name is not ASCII") from None
        text = text.lower().rstrip(".")
        if not text or any(c in text for c in "\x00/\\ ") or not text.isprintable():
            raise ClientHelloError(f"invalid server name {text!r}")
        found = text
    return found


def _alpn(body: _Reader) -> tuple[str, ...]:
    protocols = body.vector(2, "protocol_name_list")
    if body.left:
        raise ClientHelloError("bytes after protocol_name_list")
    out: list[str] = []
    while protocols.left:
        name = protocols.vector(1, "protocol name").take_all()
        if not name:
            raise ClientHelloError("empty ALPN protocol name")
        out.append(name.decode("latin-1"))
    return tuple(out)
