"""Relaying an exchange to its upstream.

:class:`UpstreamRelay` adds the upstream half of the life of a request to
:class:`~kernel.io.exchangebase.ExchangeBase` (see
:mod:`kernel.io.exchange`): pick a pooled connection (on a group target,
with failover and retries to other targets, :mod:`kernel.io.balance`), send
the request (:mod:`kernel.io.sendrequest`), wait for the response head under
the response deadline, and stream the response back through
``trellis_response_body``, coalescing writes to the client. A response
hook's own response is answered instead (:meth:`UpstreamRelay._answer_instead`),
and the upstream's dropped.

May import: stdlib, trio, sdk, kernel.protocol, kernel.dispatch,
kernel.generation, kernel.routes, kernel.tls, kernel.io.upstream,
kernel.io.state, kernel.io.balance, kernel.io.exchangebase,
kernel.io.sendrequest, kernel.io.h2relay, kernel.io.h2upstream, kernel.io.tunnel.
"""

from __future__ import annotations

import logging
import random
import time

import trio

from kernel import dispatch
from kernel.io import balance
from kernel.io.exchangebase import Abort, ClientGone, ExchangeBase
from kernel.io.h2relay import proxy_h2
from kernel.io.h2upstream import H2Upstream, H2UpstreamStream, Refused
from kernel.io.sendrequest import RequestSender, UpstreamBroken
from kernel.io.tunnel import splice
from kernel.io.upstream import TlsTarget, UpstreamConnection
from kernel.protocol.errorpage import reason_phrase
from kernel.protocol.events import (
    NEED_DATA,
    Data,
    EndOfMessage,
    InformationalResponse,
    ResponseHead,
)
from kernel.protocol.forwarding import downstream_response_fields
from kernel.protocol.http1 import asks_websocket
from kernel.routes import RouteRuntime
from kernel.tls import default_client_context
from sdk import (
    Flow,
    Headers,
    LocalProtocolError,
    Origin,
    RemoteProtocolError,
    Response,
    UpstreamError,
    UpstreamTimeout,
)

__all__ = ["Abort", "ClientGone", "ExchangeBase", "UpstreamRelay"]

log = logging.getLogger("kernel.exchange")

_now = time.monotonic
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: How often a flow without a body is sent again after the upstream refused
#: its HTTP/2 stream unprocessed (GOAWAY, REFUSED_STREAM). Each GOAWAY moves
#: the flow to a newer connection, so a burst larger than what the upstream
#: takes per connection needs more than one retry; the bound stops an
#: upstream that refuses everything from keeping the flow forever.
_REFUSED_RETRIES = 5


class UpstreamRelay(RequestSender):
    """The upstream half of an exchange."""

    __slots__ = ()

    # -- proxying -------------------------------------------------------------
    async def proxy(self) -> bool:
        flow, route = self.flow, self.route
        assert route is not None
        assert flow.upstream is not None
        # (HTTP/2 refuses Connection and Upgrade fields before routing; an
        # HTTP/1.0 request's Upgrade is ignored, RFC 9110 §7.8.)
        if (
            route.websocket
            and self.conn.protocol == "1.1"
            and self.head.http_version == b"1.1"
            and asks_websocket(self.head.method, self.head.headers)
        ):
            self.upgrade = True
        policy, budget = route.retry, route.retry_budget
        budget.request()
        started = _now()
        tries = 1
        while True:
            self.connected = False
            sent = _now()
            try:
                up, head = await self._attempt()
            except UpstreamError as exc:
                if flow.target is not None:
                    balance.outcome(self, None, None, str(exc))
                    if not self.connected and balance.may_fail_over(self):
                        # Nothing reached that target: another may take it, any method.
                        balance.choose(self)
                        flow.record(f"kernel: failover to {flow.group}/{_target_name(flow)}")
                        continue
                if not self._may_retry(exc, None, tries, started):
                    raise
            else:
                if flow.target is not None:
                    balance.outcome(self, head.status_code, _now() - sent)
                if isinstance(head, InformationalResponse):  # 101: only after our upgrade
                    assert isinstance(up, UpstreamConnection)  # upgrades never go over h2
                    return await self._tunnel(up, head)
                if not self._may_retry(None, head.status_code, tries, started):
                    return await self._relay_response(up, head)
                # The answer is dropped, and the connection with it (its body is unread).
                up.close_nowait()
                self.upstream = None
            flow.record(f"kernel: retry {tries} of {policy.attempts - 1}")
            await trio.sleep(random.uniform(0, policy.backoff_s * 2 ** (tries - 1)))
            if flow.target is not None:
                balance.choose(self)  # a different target when there is one
            tries += 1

    def _may_retry(
        self, exc: UpstreamError | None, status: int | None, tries: int, started: float
    ) -> bool:
        """Whether ``[upstream.retry]`` sends the request again after this outcome."""
        route = self.route
        assert route is not None
        policy = route.retry
        if tries >= policy.attempts or self.has_body or self.upgrade:
            return False
        if self.flow.request.method not in policy.methods:
            return False
        if exc is not None:
            wanted = (
                policy.on_timeout if isinstance(exc, UpstreamTimeout) else policy.on_connect_error
            )
        else:
            wanted = status in policy.statuses
        if not wanted:
            return False
        if policy.deadline_s and _now() - started >= policy.deadline_s:
            return False
        return route.retry_budget.take()

    async def _attempt(
        self,
    ) -> tuple[UpstreamConnection | H2UpstreamStream, ResponseHead | InformationalResponse]:
        """One try: a connection (or stream), the request, the response head."""
        flow, gen, route = self.flow, self.gen, self.route
        assert route is not None
        assert flow.upstream is not None
        pool = self.conn.state.pool
        tls = _tls_target(route, flow.upstream)
        # A pooled connection the upstream closes just as we take it (after
        # the pool's probe) fails the request before any byte of an answer
        # came. An idempotent request without a body (RFC 9110 §9.2.2) is then
        # sent once more on a fresh connection; anything else must not risk
        # being sent twice, and an answer, however bad, is never retried.
        retryable = not self.has_body and flow.request.method in _IDEMPOTENT
        scheme = flow.upstream.scheme
        if scheme != "http" and scheme != "https":  # a plugin's Origin("ftp", ...)
            raise UpstreamError(f"upstream {flow.upstream}: the kernel speaks http and https only")
        https = scheme == "https"
        http2 = "force" if route.force_http2 else "alpn" if route.http2 and https else "off"
        if self.upgrade:
            # WebSocket needs an HTTP/1.1 connection of its own, and the
            # upgrade is never sent twice.
            retryable = False
            http2 = "off"
        attempt = refusals = 0
        while True:
            # A failure to get a connection (even after a dead pooled one)
            # means the request reached nobody: the caller may fail over.
            self.connected = False
            up = await pool.acquire_h2_or_h1(
                flow.upstream,
                gen.upstream_http1,
                http2=http2,
                connect_timeout=route.connect_timeout_s,
                idle_timeout=route.idle_timeout_s,
                tls=tls,
            )
            self.connected = True
            if isinstance(up, H2Upstream):
                try:
                    stream, h2head = await proxy_h2(self, up)
                except Refused:
                    # Forget the refused stream: a connection closes (after its
                    # GOAWAY) only once it has no stream left.
                    if self.upstream is not None:
                        self.upstream.close_nowait()
                        self.upstream = None
                    # Never processed by the upstream (RFC 9113 §8.7): send again.
                    if refusals < _REFUSED_RETRIES and not self.has_body:
                        refusals += 1
                        continue
                    raise UpstreamError(f"upstream {flow.upstream} refused the stream") from None
                return stream, h2head
            self.upstream = up
            reused = up.requests > 0
            up.requests += 1
            flow.timings.upstream_connected = _now()
            try:
                answer = await self._send_request(up)
                if answer is None:
                    answer = await self._receive_response_head(up)
                return up, answer
            except UpstreamBroken as exc:
                up.close_nowait()
                self.upstream = None
                if reused and attempt == 0 and retryable and not exc.answered:
                    attempt += 1
                    continue
                raise UpstreamError(f"upstream {flow.upstream} failed: {exc.__cause__!r}") from exc

    async def _tunnel(self, up: UpstreamConnection, head: InformationalResponse) -> bool:
        """After the upstream's ``101``: answer the client, then relay bytes both ways.

        The response hooks see the ``101`` (and may add fields to it); after
        it the two connections are spliced until either side ends or nothing
        moves for ``websocket_idle_timeout_s``. Both connections then close.
        A hook that replaced the response, changed its status or gave it a
        body answers with that instead (:meth:`_answer_instead`): no switch,
        and the upstream connection closes.
        """
        flow, conn, route = self.flow, self.conn, self.route
        assert route is not None
        fields = downstream_response_fields(head.headers, self.gen.forwarding)
        response = Response(
            status_code=101,
            headers=Headers.from_wire(fields),
            reason=head.reason.decode("latin-1"),
        )
        balance.sticky_cookie(self, response)
        flow.response = response
        flow.timings.response_head = _now()
        if self.chain.response:
            await dispatch.call_all(self.chain.response, "trellis_response", flow)
            if (
                flow.response is not response
                or response.status_code != 101
                or response.body is not None
            ):
                hooked = self._hooked_response()  # refused when it cannot be sent
                up.close_nowait()  # it switched protocols: it speaks HTTP no more
                self.upstream = None
                return await self._answer_instead(hooked)
        # The codec let this 101 through only as a switch to WebSocket.
        out = [*response.headers.fields, (b"connection", b"upgrade"), (b"upgrade", b"websocket")]
        try:
            client_first, client_stream = await conn.switch_protocols(out)
        except LocalProtocolError as exc:
            if not self.chain.response:
                raise
            raise self._unsendable_response(exc) from exc
        self.head_sent = True
        to_up, to_client = await splice(
            client_stream,
            up.stream,
            to_b_first=client_first,
            to_a_first=up.codec.trailing_data(),
            idle_timeout=route.websocket_idle_timeout_s,
        )
        flow.bytes_in += to_up
        flow.bytes_out += to_client
        return False  # neither connection speaks HTTP any more; the exchange closes both

    async def _receive_response_head(
        self, up: UpstreamConnection
    ) -> ResponseHead | InformationalResponse:
        route = self.route
        assert route is not None
        codec = up.codec
        # The deadline is a coarse timer (kernel/io/timers.py): when it fires it
        # closes the upstream socket, which wakes the receive below. It is
        # armed at the first wait: most answers need none (below).
        timed_out = armed = answered = False
        timers = self.conn.state.timers
        try:
            while True:
                event = codec.next_event()
                if event is NEED_DATA:
                    # Yield before reading: the upstream needs a moment to
                    # answer, and after the other tasks' turns its answer is
                    # usually there, read without a trip through epoll.
                    await trio.lowlevel.checkpoint()
                    data = up.read_ready()
                    if data is None:
                        if not armed:

                            def expire() -> None:
                                nonlocal timed_out
                                timed_out = True
                                up.close_nowait()

                            armed = True
                            timers.arm(up, route.response_timeout_s, expire)
                        data = await up.receive()
                    answered = answered or bool(data)
                    codec.receive_data(data)
                elif isinstance(event, ResponseHead):
                    return event
                elif isinstance(event, InformationalResponse):
                    if event.status_code == 101:  # the codec allows it only after an upgrade
                        return event
                    await self._forward_interim(event)  # no 100, at most ten
                else:
                    raise RemoteProtocolError(f"unexpected {event!r} from upstream")
        except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError) as exc:
            if not timed_out:
                raise UpstreamBroken(answered=answered) from exc
        finally:
            if armed:
                timers.disarm(up)
        raise UpstreamTimeout(
            f"{self.flow.upstream} sent no response within {route.response_timeout_s:g}s"
        )

    async def _relay_response(
        self, up: UpstreamConnection | H2UpstreamStream, head: ResponseHead
    ) -> bool:
        flow, conn, route = self.flow, self.conn, self.route
        assert route is not None
        fields = downstream_response_fields(head.headers, self.gen.forwarding, head.http_version)
        response = Response(
            status_code=head.status_code,
            headers=Headers.from_wire(fields),
            reason=head.reason.decode("latin-1"),
            http_version=head.http_version.decode("ascii"),
        )
        balance.sticky_cookie(self, response)
        flow.response = response
        flow.timings.response_head = _now()
        if self.chain.response:
            await dispatch.call_all(self.chain.response, "trellis_response", flow)
            # Refused here, not half-written below (no answer at all).
            hooked = self._hooked_response()
            if hooked is not response or response.body is not None:
                # A response of the plugin's own (or a body it set): the answer.
                self._drop_answer(up)
                return await self._answer_instead(hooked)
        transforms = self.chain.response_body
        out_fields = response.headers.fields
        if transforms:
            out_fields = [(n, v) for n, v in out_fields if n != b"content-length"]
        try:
            # Writes to the client are coalesced: the head and whatever body
            # the upstream already delivered go out together, and we flush
            # before every wait for more upstream bytes (so at most one
            # upstream read is ever buffered: backpressure is kept).
            conn.begin_response(
                ResponseHead(
                    status_code=response.status_code,
                    headers=out_fields,
                    reason=(response.reason or reason_phrase(response.status_code)).encode(
                        "latin-1"
                    ),
                    keep_alive=not conn.state.draining,
                )
            )
            self.head_sent = True
            timeout = route.read_timeout_s
            try:
                while True:
                    # The client gets what we have before we wait for more.
                    event = await up.next_body_event(timeout, conn.flush)
                    if isinstance(event, Data):
                        chunk = event.data
                        if transforms:
                            chunk = dispatch.transform(
                                transforms, "trellis_response_body", flow, chunk, False
                            )
                            if not chunk:
                                continue
                        flow.bytes_out += len(chunk)
                        conn.write_body(chunk)
                    elif isinstance(event, EndOfMessage):
                        if transforms:
                            last = dispatch.transform(
                                transforms, "trellis_response_body", flow, b"", True
                            )
                            if last:
                                flow.bytes_out += len(last)
                                conn.write_body(last)
                        conn.end_response(event.trailers or None)
                        break
            except (
                trio.TooSlowError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                RemoteProtocolError,
            ) as exc:
                raise UpstreamError(f"upstream {flow.upstream} failed mid-body: {exc!r}") from exc
            # The upstream's answer is all here: its connection goes back to
            # the pool before the client is written to, so a slow client does
            # not hold it, and a multiplexed client's next requests find it idle.
            self.upstream = None
            if isinstance(up, H2UpstreamStream):
                up.close_nowait()  # the stream ended: this only forgets it
            elif up.codec.keep_alive:
                up.codec.start_next_cycle()
                conn.state.pool.put_idle(up, route.max_idle_per_host, route.idle_timeout_s)
            else:
                up.close_nowait()
            await conn.flush()
        except LocalProtocolError as exc:
            # The client's codec refused what the response hooks made of the
            # head (a field with CR or LF, clashing framing): theirs to answer for.
            if not self.chain.response:
                raise
            raise self._unsendable_response(exc) from exc
        if not self.request_done:
            # Answered before the client's body was all read (an early 413,
            # say): let the client take the answer before its connection ends.
            await conn.abandon_request()
            return False
        return True

    def _drop_answer(self, up: UpstreamConnection | H2UpstreamStream) -> None:
        """The upstream's answer is not relayed (a response hook replaced it).

        Its connection goes back to the pool only when the rest of the
        answer is already here (read now, never waited for); else it closes,
        its body unread (an HTTP/2 stream is reset, its connection stays).
        """
        self.upstream = None
        if isinstance(up, UpstreamConnection):
            codec = up.codec
            try:
                while (event := codec.next_event()) is not NEED_DATA:
                    if isinstance(event, EndOfMessage):
                        if codec.keep_alive:
                            route = self.route
                            assert route is not None
                            codec.start_next_cycle()
                            pool = self.conn.state.pool
                            pool.put_idle(up, route.max_idle_per_host, route.idle_timeout_s)
                            return
                        break
                    if not isinstance(event, Data):
                        break
            except RemoteProtocolError:
                pass
        up.close_nowait()

    async def _answer_instead(self, response: Response) -> bool:
        """Answer with ``response``, which a response hook put in place of
        the upstream's (already let go): a local response, body and framing
        its own, after the response body hooks as any local one."""
        await self._send_local(response)
        if not self.request_done:
            # The upstream answered before it had the whole body: as above.
            await self.conn.abandon_request()
            return False
        return True


def _target_name(flow: Flow) -> str:
    return flow.target.name if flow.target is not None else "?"


def _tls_target(route: RouteRuntime, origin: Origin) -> TlsTarget | None:
    """How to reach an https origin: the route's client context, else the default one."""
    if origin.scheme != "https":
        return None
    ctx = route.client_tls if route.client_tls is not None else default_client_context()
    return ctx, route.tls_server_name
