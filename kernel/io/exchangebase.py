"""The state every exchange keeps while it runs, the client's body, local answers.

:class:`ExchangeBase` is the root of the exchange classes
(:class:`kernel.io.relay.UpstreamRelay` adds the upstream half,
:mod:`kernel.io.exchange` the request phase); :class:`ClientGone` and
:class:`Abort` are how an exchange ends without an answer. It reads the
client's body, sends a local response (a plugin's, a replacement a response
hook made, or an error page) and says whose edit made a message unsendable:
what the kernel cannot write after plugin hooks changed it is their doing,
and the error names them (:meth:`ExchangeBase._spoilt`).

May import: stdlib, sdk, kernel.protocol, kernel.dispatch, kernel.generation,
kernel.routes; kernel.io types only under TYPE_CHECKING.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernel import dispatch
from kernel.dispatch import Chain, Impl
from kernel.generation import Generation
from kernel.protocol.errorpage import reason_phrase
from kernel.protocol.events import EndOfMessage, Fields, RequestHead, ResponseHead
from kernel.routes import RouteRuntime
from sdk import Flow, LocalProtocolError, RemoteProtocolError, Response, Target

if TYPE_CHECKING:
    from kernel.io.downstream import Downstream
    from kernel.io.h2upstream import H2UpstreamStream
    from kernel.io.upstream import UpstreamConnection

__all__ = ["Abort", "ClientGone", "ExchangeBase"]

_NO_BODY_STATUS = frozenset({204, 304})


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

    # -- local responses ------------------------------------------------------
    async def _send_local(
        self, response: Response, *, error: bool = False, close: bool = False
    ) -> None:
        """Send a complete local response (its whole body is in ``response``).

        ``error`` marks the kernel's or ``trellis_error``'s page: body
        transforms are skipped, because a plugin failing there cannot fail the
        flow a second time. ``close`` ends the connection after it. The
        response was checked (a returned one by the dispatcher, one the
        response hooks saw by :meth:`_hooked_response`); a head the codec
        still refuses after the response hooks is refused as theirs.
        """
        conn, flow = self.conn, self.flow
        body = response.body or b""
        transforms = () if error else self.chain.response_body
        fields = [
            (n, v)
            for n, v in response.headers.fields
            if n not in (b"content-length", b"transfer-encoding", b"connection")
        ]
        if transforms:
            # Same contract as a streamed body: the chunk, then the end.
            body = dispatch.transform(transforms, "trellis_response_body", flow, body, False)
            body += dispatch.transform(transforms, "trellis_response_body", flow, b"", True)
        bodyless = response.status_code in _NO_BODY_STATUS or response.status_code < 200
        if not bodyless:
            fields.append((b"content-length", str(len(body)).encode("ascii")))
        try:
            conn.begin_response(
                ResponseHead(
                    status_code=response.status_code,
                    headers=fields,
                    reason=(response.reason or reason_phrase(response.status_code)).encode(
                        "latin-1"
                    ),
                    # The codec adds "connection: close" itself when not keeping alive.
                    keep_alive=not close and not conn.state.draining and self.request_done,
                )
            )
            self.head_sent = True
            if body and not bodyless and flow.request.method != "HEAD":
                conn.write_body(body)
                flow.bytes_out += len(body)
            conn.end_response()
            await conn.flush()
        except LocalProtocolError as exc:
            if error or not self.chain.response:
                raise
            raise self._unsendable_response(exc) from exc

    # -- what plugins made unsendable -----------------------------------------
    def _hooked_response(self) -> Response:
        """``flow.response`` as the response hooks left it, to be sent as it is.

        Raises :class:`LocalProtocolError` naming the hooks' plugins when it
        cannot be: not a :class:`~sdk.Response`, or one the dispatcher's
        check refuses (a status outside 200-599, a reason with CR, ...).
        """
        response = self.flow.response
        if not isinstance(response, Response):
            problem = f"flow.response is {type(response).__name__}, not sdk.Response"
        elif (wrong := dispatch.response_problem(response)) is not None:
            problem = f"the response's {wrong}"
        else:
            return response
        raise self._spoilt(self.chain.response, "response", problem)

    def _unsendable_response(self, exc: LocalProtocolError) -> LocalProtocolError:
        """The codec refused a response head the response hooks had edited."""
        return self._spoilt(
            self.chain.response, "response", f"the response cannot be sent: {exc.message}"
        )

    def _request_hooks(self) -> tuple[Impl, ...]:
        """The implementations that had the request before it went upstream:
        the listener's routing ones, then the route's request phase."""
        chain = self.chain
        pre = self.gen.pre_route.get(self.conn.listener.name)
        routing = pre.route_select if pre is not None else ()
        return routing + chain.request_access + chain.request + chain.upstream_select

    def _spoilt(self, impls: tuple[Impl, ...], phase: str, problem: str) -> LocalProtocolError:
        """What the kernel cannot send after ``impls`` (the ``phase`` hooks)
        changed it: their doing, and the error (a 500) says whose."""
        names = ", ".join(dict.fromkeys(repr(impl.instance) for impl in impls))
        return LocalProtocolError(f"after the {phase} hooks of {names}, {problem}")
