"""Wire events: what the sans-IO HTTP/1.1 codecs hand to the I/O shell.

These are the only values that cross the ``kernel.protocol`` / ``kernel.io``
seam, for both codecs and both sides (server and client). They are small,
slotted and immutable; header fields are ``(name, value)`` byte pairs with the
name lower-cased, in wire order.

May import: stdlib, attrs.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Fields",
    "InformationalResponse",
    "RequestHead",
    "ResponseHead",
    "Sentinel",
]

#: Header fields in wire order: lower-cased name, raw value.
Fields = list[tuple[bytes, bytes]]


class Sentinel:
    """A named singleton, like h11's ``NEED_DATA``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The codec needs more bytes before it can produce another event.
NEED_DATA: Final = Sentinel("NEED_DATA")
#: A whole message was received; call ``start_next_cycle()`` before the next one.
PAUSED: Final = Sentinel("PAUSED")


@attrs.frozen(slots=True)
class RequestHead:
    """A request line plus header block, validated and ready to route.

    ``target`` is the raw request-target (origin-form ``/p?q`` or absolute-form
    ``http://h/p``). ``keep_alive`` is what the message itself allows (version,
    ``Connection: close``). ``expect_continue`` is true for ``Expect: 100-continue``.
    """

    method: bytes
    target: bytes
    headers: Fields
    http_version: bytes = b"1.1"
    keep_alive: bool = True
    expect_continue: bool = False


@attrs.frozen(slots=True)
class ResponseHead:
    """A final (>= 200) response status line plus header block."""

    status_code: int
    headers: Fields
    reason: bytes = b""
    http_version: bytes = b"1.1"
    keep_alive: bool = True


@attrs.frozen(slots=True)
class InformationalResponse:
    """A 1xx interim response (``100 Continue``, ``101``, ``103``).

    ``http_version`` is the one its status line named (HTTP/1.0 has no 1xx,
    but a server may still label one so); ``Via`` names it. A ``101`` (the
    WebSocket switch) keeps the default.
    """

    status_code: int
    headers: Fields
    reason: bytes = b""
    http_version: bytes = b"1.1"


@attrs.frozen(slots=True)
class Data:
    """A piece of a message body, in order; never empty."""

    data: bytes


@attrs.frozen(slots=True)
class EndOfMessage:
    """The body is complete; ``trailers`` holds any chunked trailer fields."""

    trailers: Fields = attrs.field(factory=list)


@attrs.frozen(slots=True)
class ConnectionClosed:
    """The peer closed its side cleanly between messages."""


Event = RequestHead | ResponseHead | InformationalResponse | Data | EndOfMessage | ConnectionClosed
