"""What an exchange needs from the client side, whatever protocol carries it.

An exchange (:mod:`kernel.io.exchange`) reads one request body and writes one
response through a :class:`Downstream`. An HTTP/1.1 connection is its own
downstream (:class:`kernel.io.connection.Http1Connection`, one exchange at a
time); on HTTP/2 each stream is one (:class:`kernel.io.h2stream.H2Stream`).
So plugins, routing, the upstream relay and error handling never look at the
protocol the request came in on.

Writes are buffered until :meth:`Downstream.flush`: HTTP/1.1 sends the head
and the body read so far in one write, HTTP/2 hands them to its flow control
and waits until the peer's window took them. The relay flushes before every
wait for more upstream bytes, so backpressure holds end to end.

May import: stdlib, trio, sdk, kernel.protocol, kernel.generation, kernel.io.state.
"""

from __future__ import annotations

from typing import Protocol

import trio

from kernel.generation import ListenerRuntime
from kernel.io.state import ServerState
from kernel.protocol.events import Data, EndOfMessage, Fields, ResponseHead
from sdk import ClientInfo

__all__ = ["Downstream"]


class Downstream(Protocol):
    """The client end of one exchange."""

    state: ServerState
    listener: ListenerRuntime
    client: ClientInfo

    @property
    def protocol(self) -> str:
        """``"1.1"`` or ``"2"``: the HTTP version the client speaks."""

    @property
    def keep_alive(self) -> bool:
        """Whether the carrier may serve another request after this one."""

    async def next_body_event(self, timeout: float) -> Data | EndOfMessage:
        """The next piece of the request body, or its end (with trailers).

        Raises :class:`sdk.RemoteProtocolError` (408 when nothing came within
        ``timeout`` seconds, 400/413 for bad framing) and ``ClientGone``.
        """

    def begin_response(self, head: ResponseHead) -> None:
        """Queue the response head (not sent before :meth:`flush`)."""

    def write_body(self, data: bytes) -> None:
        """Queue a non-empty piece of the response body."""

    def end_response(self, trailers: Fields | None = None) -> None:
        """Queue the end of the response, with trailers if any."""

    async def flush(self) -> None:
        """Send everything queued; returns once the client's side took it."""

    async def send_informational(self, status: int, fields: Fields) -> None:
        """Send a 1xx response right away (``100 Continue``)."""

    async def switch_protocols(self, fields: Fields) -> tuple[bytes, trio.abc.Stream]:
        """Send ``101 Switching Protocols`` with ``fields``; the connection is the caller's.

        Returns the bytes the client already sent past the request, and the
        stream to relay. HTTP/2 streams cannot switch (no extended CONNECT).
        """

    async def retract_response(self, status: int, flow_id: str = "") -> bool:
        """Replace a response none of whose bytes went out by the kernel's
        ``status`` page; False (nothing done) once some of it was sent.

        HTTP/1.1 ends the connection after the page; HTTP/2 only the stream.
        """

    def cut(self) -> None:
        """The response cannot be completed: end it so the client can tell.

        HTTP/1.1 closes the connection with a TCP reset (and no TLS
        ``close_notify``) rather than a clean close, which a client reading a
        close-delimited body would take for its end; HTTP/2 resets the stream.
        """

    async def abandon_request(self) -> None:
        """The response is complete but the request body is not: stop reading it.

        HTTP/1.1 half-closes and drains for a moment (RFC 9112 §9.6) so the
        response is not destroyed by a reset; HTTP/2 resets the stream with
        ``NO_ERROR`` (RFC 9113 §8.1).
        """
