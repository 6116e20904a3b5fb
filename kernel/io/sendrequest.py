"""Sending a request upstream: its head with the forwarding fields, then its body.

:class:`RequestSender` is the part of an exchange between the pooled
connection and the response head (:class:`kernel.io.relay.UpstreamRelay`
does the rest): it builds the upstream head (forwarding fields, Host,
WebSocket upgrade, chunked when a plugin may change the body's length),
streams the client's body through ``trellis_request_body`` under
``send_timeout_s`` (the longest the upstream may take no byte of it), and
watches for an early answer (RFC 9112
§9.5): an upstream that answers before it has the whole body gets no more
of it, and its answer is relayed.

``Expect: 100-continue`` goes on to the upstream (RFC 9110 §10.1.1), and
the body waits for its word: its ``100`` (passed on to the client), a final
answer (relayed; the body is never sent), or a second of silence (then our
own ``100``). A final answer already read after the ``100`` (one packet
brought both) is relayed at once, without waiting for the client's body.
Over HTTP/2 upstreams (:mod:`kernel.io.h2relay`) the kernel still says
``100`` itself.

May import: stdlib, trio, sdk, kernel.protocol, kernel.dispatch,
kernel.io.upstream, kernel.io.exchangebase.
"""

from __future__ import annotations

import trio

from kernel import dispatch
from kernel.io.exchangebase import ExchangeBase
from kernel.io.upstream import UpstreamConnection
from kernel.protocol.events import (
    NEED_DATA,
    Fields,
    InformationalResponse,
    RequestHead,
    ResponseHead,
)
from kernel.protocol.forwarding import downstream_response_fields, upstream_request_fields
from kernel.protocol.http1 import ClientCodec
from sdk import LocalProtocolError, RemoteProtocolError, UpstreamTimeout

__all__ = [
    "CONTINUE_WAIT_S",
    "MAX_INTERIM",
    "UNSENDABLE",
    "RequestSender",
    "UpstreamBroken",
    "up_send",
]

#: Interim (1xx) responses passed on per request; more are dropped.
MAX_INTERIM = 10

_CHUNKED = ((b"transfer-encoding", b"chunked"),)

#: What building and writing a request head raises when a plugin left
#: ``flow.request`` unsendable: a value the codec refuses (a space in the
#: path, a second Host, CR or LF in a field), a character outside Latin-1, an
#: attribute of the wrong type.
UNSENDABLE = (LocalProtocolError, UnicodeError, AttributeError, TypeError)

#: How long a request that asked ``Expect: 100-continue`` waits for the
#: upstream's ``100`` (or its final answer) before the client gets our own
#: ``100`` and the body goes anyway: an upstream may ignore Expect (curl's
#: and Apache's wait is one second too).
CONTINUE_WAIT_S = 1.0


class UpstreamBroken(Exception):
    """The upstream connection failed under us (reset, closed, or bad framing).

    ``answered``: some of a response had arrived (then it is never retried).
    """

    def __init__(self, *, answered: bool = False) -> None:
        super().__init__()
        self.answered = answered


class RequestSender(ExchangeBase):
    """The request half of the upstream side of an exchange."""

    __slots__ = ()

    def _upstream_fields(self) -> Fields:
        flow = self.flow
        req = flow.request
        host = (req.headers.get("host") or req.authority).encode("latin-1")
        # The framing is ours, by what the client sends, whatever a plugin
        # set: chunked when a plugin may change the body's length or the
        # client did not say it; else the client's number (0 too).
        length = self.content_length
        framing: tuple[tuple[bytes, bytes], ...]
        if self.has_body and (self.chain.request_body or length is None):
            framing = _CHUNKED
        elif length is not None:
            framing = ((b"content-length", b"%d" % length),)
        else:
            framing = ()
        # X-Forwarded-Host / Forwarded "host=" tell the upstream what the
        # *client* asked for, even when a plugin rewrote the Host we send.
        fields = upstream_request_fields(
            req.headers.fields,
            self.gen.forwarding,
            client_address=flow.client.address,
            scheme=req.scheme,
            host=req.authority.encode("latin-1") or host,
            version=req.http_version.encode("ascii"),
            framing=framing,
        )
        # Host usually comes first (HTTP/2 requests always have it there).
        if not (fields and fields[0][0] == b"host") and not any(n == b"host" for n, _ in fields):
            fields.insert(0, (b"host", host))
        if self.upgrade:
            # Only WebSocket, whatever else the client's Upgrade listed.
            fields += [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]
        return fields

    def _unsendable_request(self, exc: Exception) -> LocalProtocolError | None:
        """A request head the kernel cannot write (``exc``, one of
        :data:`UNSENDABLE`) after request hooks ran: their doing, a 500
        naming them; it never reaches the upstream. None without such hooks
        (then it is the kernel's own failure, raised as it is)."""
        impls = self._request_hooks()
        if not impls:
            return None
        why = exc.message if isinstance(exc, LocalProtocolError) else f"{type(exc).__name__}: {exc}"
        return self._spoilt(impls, "request", f"the request cannot be sent: {why}")

    async def _send_request(
        self, up: UpstreamConnection
    ) -> ResponseHead | InformationalResponse | None:
        """Send the request; returns the upstream's answer when it came before
        the body was asked for (``Expect: 100-continue``), else None (then the
        caller reads the response head)."""
        flow = self.flow
        req = flow.request
        codec = up.codec
        expect = self.has_body and self.head.expect_continue
        try:
            fields = self._upstream_fields()
            if expect:
                # RFC 9110 §10.1.1: the expectation goes on toward the origin,
                # whose word (100, or a final answer) the client waits for.
                fields.append((b"expect", b"100-continue"))
            head = RequestHead(
                method=req.method.encode("ascii"),
                target=req.path.encode("latin-1"),
                headers=fields,
            )
            data = codec.send_request_head(head)
        except UNSENDABLE as exc:
            if (refused := self._unsendable_request(exc)) is None:
                raise
            raise refused from exc
        if not self.has_body:
            # Consume the request's EndOfMessage so the codec can cycle
            # (once: a retry on a fresh connection comes here again).
            if not self.request_done:
                await self._next_body_chunk()
            await up_send(up, data + codec.send_end())
            return None
        await up_send(up, data)
        if expect:
            answer = await self._await_continue(up)
            if answer is not None:
                return answer  # the body is not sent: the client's connection ends after it
        route = self.route
        assert route is not None
        timeout = route.send_timeout_s
        try:
            return await self._send_body(up, timeout)
        except UpstreamBroken:
            if self._answered_early(up):
                return None  # what it said before it closed: its answer, not a 502
            raise
        except trio.TooSlowError:
            if self._answered_early(up):
                return None
            raise UpstreamTimeout(
                f"{flow.upstream} took no request body for {timeout:g}s"
            ) from None

    async def _await_continue(
        self, up: UpstreamConnection
    ) -> ResponseHead | InformationalResponse | None:
        """After a head that asked ``Expect: 100-continue``: wait for the upstream's word.

        Its ``100`` is passed on to the client (the only one it gets: a later
        ``100`` is dropped with the response head) and None returned: send the
        body. A final answer first (a ``401``, a ``413``) is returned, and
        the body is never sent; the upstream connection is then not reused
        (the codec keeps no connection answered before its request was
        sent). So is a final answer that came with the ``100`` or by the
        time it was passed on (:meth:`_heard`): the client has its ``100``
        and may be sending the body, which does not go up, and its
        connection ends after the answer. An upstream silent for
        :data:`CONTINUE_WAIT_S` is taken for one that ignores Expect (as curl
        does): the client gets our own ``100``. Other interim answers
        (``103``) are passed on meanwhile.
        """
        codec = up.codec
        answered = False
        # The deadline is the upstream's alone: a write to a slow client (a
        # 103 passed on) is never cut off half-way by it.
        deadline = trio.current_time() + CONTINUE_WAIT_S
        try:
            while (answer := await self._answer_so_far(codec)) is None:
                with trio.move_on_at(deadline):
                    data = await up.receive()
                    answered = answered or bool(data)
                    codec.receive_data(data)
                    continue
                break  # silence: an upstream that ignores Expect
        except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError) as exc:
            raise UpstreamBroken(answered=answered) from exc
        if answer is not None and answer.status_code != 100:
            return answer  # a final answer, or a 101 (only after our upgrade): no body goes
        await self.conn.send_informational(100, [])
        # The read that brought the 100 may have brought the final answer too
        # (one packet), or it came while the 100 went: it is heard now, not
        # once the client's first body chunk comes (a client may send none).
        return await self._heard(up)

    async def _answer_so_far(
        self, codec: ClientCodec
    ) -> ResponseHead | InformationalResponse | None:
        """The upstream's answer in what the codec holds: a final head, a
        ``100`` or a ``101``; None when it needs more bytes. Other 1xx on the
        way are passed on (:meth:`_forward_interim`)."""
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                return None
            if isinstance(event, ResponseHead):
                return event
            if not isinstance(event, InformationalResponse):
                raise RemoteProtocolError(f"unexpected {event!r} from upstream")
            if event.status_code in (100, 101):
                return event
            await self._forward_interim(event)

    async def _forward_interim(self, event: InformationalResponse) -> None:
        """Pass an upstream's 1xx on to the client (RFC 9110 §15.2: ``103 Early
        Hints``, ``102``), whichever protocol it came over: at most
        :data:`MAX_INTERIM` per request, and never a ``100`` (the client gets
        exactly one, before its body: the upstream's or ours, see
        :meth:`_await_continue`)."""
        if event.status_code == 100 or self.interim >= MAX_INTERIM:
            return
        self.interim += 1
        fields = downstream_response_fields(event.headers, self.gen.forwarding, event.http_version)
        try:
            await self.conn.send_informational(event.status_code, fields)
        except LocalProtocolError:
            pass  # one this client may not get: an HTTP/1.0 client gets none

    async def _send_body(self, up: UpstreamConnection, timeout: float) -> ResponseHead | None:
        """Stream the request body, no wait for room over ``timeout``, until
        it ends (None) or the upstream answers early (its final response
        head; the rest of the body is not sent)."""
        flow, codec = self.flow, up.codec
        transforms = self.chain.request_body
        while (chunk := await self._next_body_chunk()) is not None:
            if transforms:
                chunk = dispatch.transform(transforms, "trellis_request_body", flow, chunk, False)
                if not chunk:
                    continue
            # Looked at before a write, and while one waits for room, never
            # after: once the last byte went, an answer is simply the answer.
            early = await self._heard(up)
            if early is None:
                early = await self._write(up, codec.send_data(chunk), timeout)
            if early is not None:
                return early
        tail = b""
        if transforms:
            last = dispatch.transform(transforms, "trellis_request_body", flow, b"", True)
            if last:
                tail = codec.send_data(last)
        return await self._write(up, tail + codec.send_end(self.trailers or None), timeout)

    async def _write(
        self, up: UpstreamConnection, data: bytes, timeout: float
    ) -> ResponseHead | None:
        """Send body bytes, each wait for room within ``timeout`` (a slow
        upstream that keeps reading is not cut off; one that takes nothing
        for ``timeout`` raises :class:`trio.TooSlowError`). Returns None when
        all went, or the upstream's final answer if one came while the write
        waited (the rest is not sent); interim answers do not stop it."""
        rest = await _up_send_until_answered(up, data, timeout)
        while rest is not None:
            early = await self._heard(up, woke=True)
            if early is not None:
                return early
            rest = await _up_send_until_answered(up, rest, timeout)
        return None

    async def _heard(self, up: UpstreamConnection, *, woke: bool = False) -> ResponseHead | None:
        """What the upstream said while the body goes: its final response
        head (RFC 9112 §9.5: stop sending), or None - nothing, a part of a
        head, or only interim answers, which are passed on (a ``100``
        dropped: the client had its one) while the body goes on (RFC 9110
        §15.2; a late ``100`` after our own is one of them, §10.1.1). The
        codec may already hold an answer read with a ``100``
        (:meth:`_await_continue`). ``woke``: a write's wait ended because the
        socket was readable, so nothing to read means the connection broke.
        Also asked right after the client's ``100`` (:meth:`_await_continue`),
        before the body is waited for."""
        if not self._answered_early(up) and woke:
            raise UpstreamBroken  # readable with nothing to read: the body is cut
        try:
            # A 100 here is a late one, after ours: dropped, the body goes on.
            while (answer := await self._answer_so_far(up.codec)) is not None:
                if isinstance(answer, ResponseHead):
                    return answer
                if answer.status_code != 100:
                    raise RemoteProtocolError(f"unexpected {answer!r} from upstream")
            return None
        except RemoteProtocolError as exc:
            # (Whether it had answered does not matter: a request with a body
            # is never sent twice.)
            raise UpstreamBroken from exc

    def _answered_early(self, up: UpstreamConnection) -> bool:
        """The upstream began to answer before the whole body was sent.

        RFC 9112 §9.5: a client sending a body watches for an error response
        and stops sending. The answer is then read as any other; the codec
        does not keep such a connection, and the client's unread body ends
        its connection after the response (:meth:`_relay_response`).
        """
        try:
            data = up.read_ready()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        if data is None:
            return False
        up.codec.receive_data(data)
        return True


async def up_send(up: UpstreamConnection, data: bytes) -> None:
    """Write to the upstream; a failure becomes :class:`UpstreamBroken`."""
    try:
        await up.send(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise UpstreamBroken from exc


async def _up_send_until_answered(
    up: UpstreamConnection, data: bytes | memoryview, timeout: float
) -> memoryview | None:
    try:
        return await up.send_until_answered(data, timeout)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise UpstreamBroken from exc
