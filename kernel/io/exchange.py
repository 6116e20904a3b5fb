"""One exchange: a request head in, a response (or an error) out.

The life of a request, in order (docs/architecture.md draws it):

1. build the :class:`~sdk.Flow` (hop-by-hop fields dropped) on the current
   generation, which the flow keeps until it ends;
2. ``trellis_route_select`` on the global + listener chain picks the route;
3. ``trellis_request_access``, then ``trellis_request`` on the route's full
   chain; either may answer locally (returning a response, or setting
   ``flow.response``, as 2 and 4 may too);
4. ``trellis_upstream_select`` (unless a plugin set ``flow.upstream``), else
   a target of ``flow.group`` (the route's ``group`` unless a plugin named
   another), else the route's ``upstream``;
5. the request head goes upstream with Via and forwarding fields, then the
   body streams through ``trellis_request_body``;
6. the response head comes back; ``trellis_response`` may change it, or
   put a response of its own in its place (then answered as a local one,
   and the upstream's body is dropped); the body streams through
   ``trellis_response_body``;
7. ``trellis_flow_done``, exactly once, whatever happened.

Steps 4-6 are :class:`kernel.io.relay.UpstreamRelay`, which this module's
exchange class extends with the request phase, local answers and errors.

A request the connection layer refuses before it becomes an exchange (a
head that does not parse, a limit, a stalled head: the kernel answers it
itself) is a flow too, a :class:`Refusal`: only ``trellis_flow_done`` of
the listener's chain sees it, so traffic logs and metrics count it.

A failure before the response head was sent becomes an error response
(``trellis_error`` may supply it); after that the connection is cut, since
the client can no longer be told, unless none of it reached the socket yet
(then the kernel's page replaces it: ``Downstream.retract_response``). A
message the kernel cannot write after plugin hooks edited it is a ``500``
naming them (:meth:`~kernel.io.exchangebase.ExchangeBase._spoilt`); an error
page the response hooks spoilt gives way to the kernel's own.

May import: stdlib, trio, sdk, kernel.protocol, kernel.dispatch,
kernel.generation, kernel.io.relay, kernel.io.balance, kernel.io.state,
kernel.log, kernel.lograte.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from kernel import dispatch, lograte
from kernel.dispatch import Chain
from kernel.io import balance
from kernel.io.relay import Abort, ClientGone, UpstreamRelay
from kernel.log import FLOW_ID
from kernel.protocol import maxforwards
from kernel.protocol.errorpage import error_body
from kernel.protocol.events import RequestHead
from kernel.protocol.forwarding import strip_hop_by_hop
from sdk import (
    ClientDisconnected,
    ClientInfo,
    Flow,
    Headers,
    LocalProtocolError,
    PluginError,
    ProtocolError,
    ProxyError,
    RemoteProtocolError,
    Request,
    Response,
    UpstreamError,
    UpstreamUnavailable,
)
from sdk._flow import Timings, new_flow_id

if TYPE_CHECKING:
    from kernel.generation import ListenerRuntime
    from kernel.io.downstream import Downstream
    from kernel.io.state import ServerState

__all__ = ["ClientGone", "Refusal", "run_exchange"]

log = logging.getLogger("kernel.exchange")

_now = time.monotonic
#: How much of an unread request body we read and drop to keep a connection
#: alive after answering locally; more than this and we close instead.
_DISCARD_LIMIT = 256 * 1024


#: The chain of a flow whose listener a reload removed: none.
_NO_CHAIN = Chain(names=())


class _ListenerGone(ProxyError):
    """A reload removed the connection's listener: 503, and the connection ends."""


async def run_exchange(conn: Downstream, head: RequestHead) -> bool:
    """Serve one request; returns whether the connection may carry another."""
    state = conn.state
    gen = state.generation
    # A reload that removed (or renamed) the connection's listener took its
    # chains away: such a connection gets a 503 without plugins, never
    # another listener's chain, and closes (see the end).
    lst = gen.listener_for(conn.listener)
    flow = Flow(
        id=new_flow_id(),
        request=_make_request(head, conn.client),
        client=conn.client,
        timings=Timings(started_at=time.time(), request_head=_now()),
        generation=gen.number,
    )
    pre = gen.pre_route[lst.name] if lst is not None else _NO_CHAIN
    # ex.chain is the routing chain until a route is chosen, then the route's.
    ex = _Exchange(conn, gen, flow, head, pre)
    gen.acquire()
    state.flow_started()
    keep = False
    # Every log record about this flow (kernel or plugin) carries its id.
    token = FLOW_ID.set(flow.id)
    try:
        try:
            if lst is None:
                raise _ListenerGone("its listener was removed by a reload", status_hint=503)
            if head.method == b"CONNECT":
                raise ProxyError("CONNECT is not supported here", status_hint=501)
            if head.method == b"TRACE" and not gen.forwarding.trace:
                raise ProxyError("TRACE is disabled ([server] trace)", status_hint=501)
            name = (
                await dispatch.first_answer(pre.route_select, "trellis_route_select", flow)
                if pre.route_select
                else None
            )
            route_name = name if name is not None else lst.default_route
            route = gen.routes.get(route_name)
            if route is None:
                raise ProxyError(f"plugin chose unknown route {route_name!r}", status_hint=500)
            flow.route = route_name
            if not flow.group:
                flow.group = route.group
            ex.chain = gen.chains[(lst.name, route_name)]
            ex.route = route
            keep = await ex.run()
        except ProxyError as exc:
            keep = await ex.fail(exc)
    except ClientGone:
        if flow.error is None:  # flow_done must see that the response was not finished
            flow.error = ClientDisconnected("the client went away")
        keep = False
    except Abort:
        conn.cut()  # a response begun and not finished: the client must see it cut
        keep = False
    except trio.Cancelled:
        if flow.error is None:  # a drain past its grace, or the client reset the stream
            flow.error = _cancelled(state.closing)
        raise
    finally:
        flow.timings.done = _now()
        if ex.upstream is not None:
            ex.upstream.close_nowait()
        if flow.target is not None:
            balance.release(flow)
        done = ex.chain.flow_done
        if done:
            start, pending = dispatch.call_done_sync(done, flow)
            if start < len(done):
                # Shielded: the terminal hook runs even when the flow was
                # cancelled, each implementation under its own deadline (a
                # cap over them all cut the later ones off, unlogged).
                with trio.CancelScope(shield=True):
                    await dispatch.call_done(done[start:], flow, pending)
        gen.release()
        state.flow_ended()
        FLOW_ID.reset(token)
    if keep and state.generation is not gen:
        # Reloaded meanwhile: a connection whose listener is gone now ends
        # quietly rather than answer its next request with a 503.
        keep = state.generation.listener_for(conn.listener) is not None
    return keep and lst is not None


def _cancelled(closing: bool) -> ProxyError:
    """What ended a cancelled flow: the shutdown, else the client (HTTP/2 resets,
    a connection that broke under its streams). ``closing``: the drain proper
    (a cancel during ``shutdown_delay_s`` is not the shutdown's)."""
    if closing:
        return ProxyError("cut by the shutdown (shutdown_grace_s was over)", status_hint=503)
    return ClientDisconnected("the client reset the stream")


def _make_request(head: RequestHead, client: ClientInfo) -> Request:
    target = head.target.decode("latin-1")
    fields = strip_hop_by_hop(head.headers, keep_proxy_auth=True)
    headers = Headers.from_wire(fields)
    authority = ""
    for n, v in fields:
        if n == b"host":
            authority = v.decode("latin-1")
            break
    if not target.startswith("/") and "://" in target:
        # Absolute form (RFC 9112 §3.2.2): the target's authority wins over
        # Host. Its scheme does not: what the upstream is told the client used
        # (X-Forwarded-Proto, Forwarded) is what this connection is.
        rest = target.partition("://")[2]
        # The authority ends where the path or the query begins.
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, target = rest[:end], rest[end:]
        if not target.startswith("/"):
            # "http://a?q" is "/?q"; "OPTIONS http://a" asks about the server (§3.2.4).
            target = "*" if not target and head.method == b"OPTIONS" else "/" + target
        headers["host"] = authority
    return Request(
        method=head.method.decode("ascii"),
        path=target,
        headers=headers,
        scheme="https" if client.tls else "http",
        authority=authority,
        http_version=head.http_version.decode("ascii"),
    )


class Refusal:
    """A request the connection layer refused and answered itself: a flow
    that only ``trellis_flow_done`` of the listener's chain sees.

    Made when the refusal is decided (the page carries the flow's id), with
    ``flow.error`` the protocol error, ``flow.response`` the page and
    ``flow.request`` what could be told of the request (``head``: the
    codec's :func:`~kernel.protocol.validate.salvage_request_head`, or
    HTTP/2's); ``flow.route`` stays empty. No other hook runs: the request
    was never accepted, and never reaches an upstream. :meth:`end` must
    follow, exactly once, whatever happened to the page.
    """

    __slots__ = ("_chain", "_gen", "_state", "flow")

    def __init__(
        self,
        state: ServerState,
        listener: ListenerRuntime,
        client: ClientInfo,
        error: RemoteProtocolError,
        head: RequestHead,
    ) -> None:
        gen = self._gen = state.generation
        lst = gen.listener_for(listener)
        self._chain = gen.pre_route[lst.name] if lst is not None else _NO_CHAIN
        self._state = state
        status = error.status_hint
        flow = self.flow = Flow(
            id=new_flow_id(),
            request=_make_request(head, client),
            client=client,
            timings=Timings(started_at=time.time(), request_head=_now()),
            generation=gen.number,
            error=error,
        )
        flow.response = Response.make(
            status, error_body(status, flow.id), content_type="text/plain; charset=utf-8"
        )
        flow.timings.response_head = flow.timings.request_head
        gen.acquire()
        state.flow_started()

    def log(self, logger: logging.Logger, where: str) -> None:
        """Say so at INFO, the record carrying the flow's id."""
        flow, error = self.flow, self.flow.error
        assert error is not None
        token = FLOW_ID.set(flow.id)
        try:
            logger.info(
                "refused %s from %s:%d: %s (%d)",
                where, flow.client.address, flow.client.port, error, error.status_hint,
            )  # fmt: skip
        finally:
            FLOW_ID.reset(token)

    def sent(self) -> None:
        """The page went out whole: its body counts as sent."""
        body = self.flow.response.body if self.flow.response is not None else None
        self.flow.bytes_out = len(body or b"")

    async def end(self) -> None:
        """``trellis_flow_done`` (shielded, each under its deadline), then the
        flow is over: the generation and the drain stop waiting for it."""
        flow = self.flow
        flow.timings.done = _now()
        token = FLOW_ID.set(flow.id)
        try:
            done = self._chain.flow_done
            if done:
                start, pending = dispatch.call_done_sync(done, flow)
                if start < len(done):
                    with trio.CancelScope(shield=True):
                        await dispatch.call_done(done[start:], flow, pending)
        finally:
            self._gen.release()
            self._state.flow_ended()
            FLOW_ID.reset(token)


class _Exchange(UpstreamRelay):
    """One exchange: the request phase, local answers and errors."""

    __slots__ = ()

    # -- the main line ------------------------------------------------------
    async def run(self) -> bool:
        flow, chain = self.flow, self.chain
        route = self.route
        assert route is not None
        if route.max_body_bytes and (self.content_length or 0) > route.max_body_bytes:
            raise RemoteProtocolError("request body too large", status_hint=413)
        # Empty hook tuples are skipped here: even an empty coroutine costs ~1 µs.
        # A hook answers by returning a response or by setting flow.response
        # (dispatch.first_answer): a trellis_route_select one has already.
        response = flow.response
        if response is None and chain.request_access:
            response = await dispatch.first_answer(
                chain.request_access, "trellis_request_access", flow
            )
        if response is None and chain.request:
            response = await dispatch.first_answer(chain.request, "trellis_request", flow)
        if response is None and flow.request.method in maxforwards.METHODS:
            response = self._last_hop()
        if response is not None:
            return await self.respond_locally(response)
        if flow.upstream is None:
            origin = None
            if chain.upstream_select:
                origin = await dispatch.first_answer(
                    chain.upstream_select, "trellis_upstream_select", flow
                )
                if flow.response is not None:  # answered: the origin, if any, is moot
                    return await self.respond_locally(flow.response)
            if origin is not None:
                flow.upstream = origin
            elif flow.group:
                balance.choose(self)
            elif route.upstream is not None:
                flow.upstream = route.upstream
                if route.base_path:
                    flow.request.path = route.base_path + flow.request.path
            else:
                raise UpstreamError(f"no upstream for route {route.name!r}")
        return await self.proxy()

    def _last_hop(self) -> Response | None:
        """A TRACE or OPTIONS request's ``Max-Forwards`` (RFC 9110 §7.6.2):
        at 0 the answer is ours (None: forward it, one hop less).

        Checked after the request hooks: an access plugin's refusal comes
        first, and the field is read as they left it.
        """
        headers = self.flow.request.headers
        try:
            hops = maxforwards.hops_left(headers.get_all("max-forwards"))
        except ValueError as exc:
            raise RemoteProtocolError(str(exc), status_hint=400) from None
        if hops is None:
            return None
        if hops:
            headers["max-forwards"] = str(hops - 1)
            return None
        if self.flow.request.method == "OPTIONS":
            return Response.make(200)
        head = self.head
        body = maxforwards.trace_body(head.method, head.target, head.http_version, head.headers)
        return Response.make(200, body, content_type="message/http")

    # -- local responses ----------------------------------------------------
    async def respond_locally(self, response: Response) -> bool:
        flow = self.flow
        flow.response = response
        flow.timings.response_head = _now()
        if self.chain.response:
            await dispatch.call_all(self.chain.response, "trellis_response", flow)
            # What the hooks left (a replacement too), refused when unsendable.
            response = self._hooked_response()
        await self._discard_request_body()
        await self._send_local(response)
        return True

    async def _discard_request_body(self) -> None:
        """Read and drop a small unread request body so the connection survives.

        A client waiting for ``100 Continue`` is not sent one: it will not send
        the body, and the codec then closes the connection after the response.
        """
        if self.request_done or (self.has_body and self.head.expect_continue):
            return
        budget = _DISCARD_LIMIT
        with trio.move_on_after(self.conn.listener.body_timeout_s):
            while (data := await self._next_body_chunk()) is not None:
                budget -= len(data)
                if budget < 0:
                    return

    # -- errors ---------------------------------------------------------------
    async def fail(self, exc: ProxyError) -> bool:
        """Turn a failure into an error response, if the client can still get one."""
        flow = self.flow
        flow.error = exc
        status = exc.status_hint
        if isinstance(exc, PluginError):
            status = 502
        if not isinstance(exc, PluginError | RemoteProtocolError):
            # (The record carries the flow id: kernel/log.py adds it.) A
            # LocalProtocolError is a message we refused to send, most often
            # made so by a plugin's edit: the operator must see which. At
            # most lograte.BURST lines per route and error class in a window:
            # a dead upstream fails every request alike.
            lograte.log(
                log, logging.WARNING, (flow.route or "-", type(exc).__name__),
                "%s %s: %s", flow.request.method, flow.request.path, exc,
            )  # fmt: skip
        if self.head_sent:
            # Too late for an answer, unless none of the response went out
            # yet (a body that failed at its first bytes): then the page
            # replaces it, and the connection ends.
            if await self.conn.retract_response(status, flow.id):
                flow.response = Response.make(status, error_body(status, flow.id))
                return False
            raise Abort
        if self.upstream is not None:
            self.upstream.close_nowait()
            self.upstream = None
        response: Response | None = None
        try:
            response = await dispatch.first_result(self.chain.error, "trellis_error", flow, exc)
        except PluginError:
            response = None  # already logged; fall back to the kernel's page
        # The plugins that made the page, when one can be spoilt.
        makers = self.chain.error if response is not None else ()
        if response is None:
            response = Response.make(status, error_body(status, flow.id))
            if isinstance(exc, UpstreamUnavailable) and exc.retry_after_s:
                response.headers["retry-after"] = str(exc.retry_after_s)
        flow.response = response
        flow.timings.response_head = _now()
        # Response hooks see error pages too (security headers, tags), but a
        # failure there cannot fail the flow a second time. Not after a
        # response we refused to send: they may be what made it unsendable,
        # and would spoil the error page the same way.
        response_hooks = () if isinstance(exc, LocalProtocolError) else self.chain.response
        for impl in response_hooks:
            if (
                isinstance(exc, PluginError)
                and exc.hook == "trellis_response"
                and exc.plugin == impl.instance
            ):
                continue  # it failed (or hung) on this very response: not again
            try:
                await dispatch.call_all((impl,), "trellis_response", flow)
            except PluginError:
                pass
        if response_hooks:
            makers += response_hooks
            # Their replacement is the page; one they spoilt is not sent.
            try:
                response = self._hooked_response()
            except LocalProtocolError as spoilt:
                response = self._kernel_page(status, spoilt)
        if not isinstance(exc, ProtocolError):
            try:
                await self._discard_request_body()
            except ProxyError:
                pass
        # Framing or body state in doubt, or nothing left to serve the
        # connection: answer, then close.
        close = isinstance(exc, ProtocolError | _ListenerGone) or not self.request_done
        try:
            await self._send_local(response, error=True, close=close)
        except LocalProtocolError as refused:
            if not makers:
                raise  # the kernel's own page: a bug, not a plugin's edit
            # A field the codec refuses (set by trellis_error or a response
            # hook): the kernel's page goes out in its place.
            page = self._kernel_page(
                status,
                self._spoilt(makers, "response", f"the response cannot be sent: {refused.message}"),
            )
            if await self.conn.retract_response(status, flow.id):
                return False  # HTTP/2 refuses a head at its flush: still ours to replace
            await self._send_local(page, error=True, close=close)  # HTTP/1.1: nothing went
        if close:
            if not self.request_done:
                await self.conn.abandon_request()
            return False
        return True

    def _kernel_page(self, status: int, spoilt: LocalProtocolError) -> Response:
        """The kernel's plain page, for an error page plugins made unsendable
        (logged: a failure there cannot fail the flow a second time)."""
        flow = self.flow
        lograte.log(
            log, logging.WARNING, (flow.route or "-", "spoilt error page"),
            "%s %s: %s; the kernel's page is sent instead", flow.request.method, flow.request.path,
            spoilt,
        )  # fmt: skip
        flow.response = page = Response.make(status, error_body(status, flow.id))
        return page
