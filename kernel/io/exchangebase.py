"""The state every exchange keeps while it runs, and reading the client's body.

:class:`ExchangeBase` is the root of the exchange classes
(:class:`kernel.io.relay.UpstreamRelay` adds the upstream half,
:mod:`kernel.io.exchange` the request phase); :class:`ClientGone` and
:class:`Abort` are how an exchange ends without an answer.

May import: stdlib, sdk, kernel.protocol, kernel.dispatch, kernel.generation,
kernel.routes; kernel.io types only under TYPE_CHECKING.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernel.dispatch import Chain
from kernel.generation import Generation
from kernel.protocol.events import EndOfMessage, Fields, RequestHead
from kernel.routes import RouteRuntime
from sdk import Flow, RemoteProtocolError, Target

if TYPE_CHECKING:
    from kernel.io.downstream import Downstream
    from kernel.io.h2upstream import H2UpstreamStream
    from kernel.io.upstream import UpstreamConnection

__all__ = ["Abort", "ClientGone", "ExchangeBase"]


class ClientGone(Exception):
    """The client closed or reset its connection."""


class Abort(Exception):
    """End the exchange and close the connection (the response cannot be completed)."""


def _framing(fields: Fields) -> tuple[int | None, bool]:
    """(content-length, chunked) of a validated request head."""
    length: int | None = None
    chunked = False
    for n, v in fields:
        if n == b"content-length":
            length = int(v)
        elif n == b"transfer-encoding":
            chunked = True
    return length, chunked


class ExchangeBase:
    """The mutable state of one exchange while it runs, and the client's body."""

    __slots__ = (
        "chain", "conn", "connected", "content_length", "flow", "gen", "has_body", "head",
        "head_sent", "interim", "orig_path", "request_done", "route", "set_cookie", "trailers",
        "tried", "upgrade", "upstream",
    )  # fmt: skip

    def __init__(
        self, conn: Downstream, gen: Generation, flow: Flow, head: RequestHead, chain: Chain
    ) -> None:
        self.conn = conn
        self.gen = gen
        self.flow = flow
        self.head = head
        self.chain = chain
        self.route: RouteRuntime | None = None
        length, chunked = _framing(head.headers)
        self.content_length = length
        self.has_body = chunked or bool(length)
        #: True once the codec delivered the request's EndOfMessage.
        self.request_done = False
        #: True once any response byte went to the client.
        self.head_sent = False
        #: Interim (1xx) responses passed on to the client so far.
        self.interim = 0
        self.upstream: UpstreamConnection | H2UpstreamStream | None = None
        self.trailers: Fields = []
        #: The request asks for WebSocket and the route lets it through.
        self.upgrade = False
        #: Group routing (kernel.io.balance): the targets tried so far, the
        #: path before a target's base path, the sticky Set-Cookie to add, and
        #: whether this try got a connection.
        self.tried: tuple[Target, ...] = ()
        self.orig_path: str | None = None
        self.set_cookie: str | None = None
        self.connected = False

    # -- the client's body ----------------------------------------------------
    async def _next_body_chunk(self) -> bytes | None:
        """The next request body chunk from the client; None at its end."""
        flow = self.flow
        limit = self.route.max_body_bytes if self.route is not None else 0
        event = await self.conn.next_body_event(self.conn.listener.body_timeout_s)
        if isinstance(event, EndOfMessage):
            self.request_done = True
            self.trailers = event.trailers
            return None
        flow.bytes_in += len(event.data)
        if limit and flow.bytes_in > limit:
            raise RemoteProtocolError("request body too large", status_hint=413)
        return event.data
