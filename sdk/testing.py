"""The plugin test kit: drive a flow through the hook phases without sockets.

A plugin author writes::

    from sdk.testing import Harness

    async def test_adds_header() -> None:
        h = Harness(AddHeaderPlugin())
        flow = await h.run(h.make_flow("GET", "http://example.test/"))
        assert flow.response.headers["x-hello"] == "world"

:meth:`Harness.run` calls the flow hooks in the kernel's order (route
selection, access, request, upstream selection, response, body transforms,
done) on the given plugins in the given order, and stands in for the
upstream with :class:`FakeUpstream` (or any callable returning a
:class:`~sdk.Response`). Plugins with a ``config_class`` can be given as a
class plus a config mapping; the table is structured with the same strict
converter the kernel uses.

As in the kernel, the plugins are registered with pluggy first: only
``@sdk.hookimpl`` methods are hooks, a misspelled hook name or an unknown
argument raises :class:`pluggy.PluginValidationError`, and an
implementation may take a subset of the hook's arguments. As at the
kernel's fault boundary (policy ``fail_closed``), a :class:`~sdk.ProxyError`
raised by a hook, a missed deadline, or a result the kernel refuses (of the
wrong type, or a ``Response`` that cannot be written: the kernel's own
checks, shared through ``sdk._results``) becomes a :class:`~sdk.PluginError`
naming the plugin and the hook (the original is its ``__cause__``), with the
kernel's message. Any other exception is a bug in the plugin: the kernel
would log it and answer 502, the harness lets it propagate to the test. A
plugin given policy ``fail_open`` (``on_error=``) is skipped instead, on any
``Exception``, as in the kernel. Every failure the harness caught is logged
and kept in :attr:`Harness.failures`.

This is a fake of the kernel's pipeline for unit tests; the kernel's own
behaviour (framing, hardening, deadlines) is tested with real sockets. The
plugins' registration and the fault boundary, one hook at a time, are
``sdk._chain``'s (:class:`Harness` extends its ``Chain``); the phases of a
whole flow are here.

May import: stdlib, trio, attrs, pluggy, sdk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import attrs
import trio

from sdk._chain import Chain
from sdk._errors import LocalProtocolError, PluginError, ProxyError
from sdk._flow import ClientInfo, Flow, Timings, new_flow_id
from sdk._http import Headers, Origin, Request, Response
from sdk._results import response_problem

__all__ = ["FakeUpstream", "Harness", "make_flow", "make_request"]


def make_request(
    method: str = "GET",
    url: str = "http://example.test/",
    headers: Iterable[tuple[str, str]] = (),
) -> Request:
    """A :class:`~sdk.Request` from an absolute URL; sets ``Host`` from it."""
    scheme, _, rest = url.partition("://")
    rest = rest.partition("#")[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:end], rest[end:]
    h = Headers([("host", authority), *headers])
    return Request(
        method=method,
        path=target if target.startswith("/") else "/" + target,
        headers=h,
        scheme=scheme,
        authority=authority,
    )


def make_flow(
    method: str = "GET",
    url: str = "http://example.test/",
    headers: Iterable[tuple[str, str]] = (),
    *,
    client: tuple[str, int] = ("127.0.0.1", 40000),
    listener: str = "main",
) -> Flow:
    """A fresh :class:`~sdk.Flow` as the kernel would build it for this request."""
    now = time.monotonic()
    return Flow(
        id=new_flow_id(),
        request=make_request(method, url, headers),
        client=ClientInfo(address=client[0], port=client[1], listener=listener),
        timings=Timings(started_at=time.time(), request_head=now),
    )


@attrs.define
class FakeUpstream:
    """Answers every request with ``response`` and remembers what it received."""

    response: Response = attrs.field(factory=lambda: Response.make(200, b"upstream\n"))
    #: Requests as the upstream saw them, with their bodies.
    received: list[tuple[Request, bytes]] = attrs.field(factory=list)

    def __call__(self, request: Request, body: bytes) -> Response:
        self.received.append((request, body))
        return Response(
            status_code=self.response.status_code,
            headers=self.response.headers.copy(),
            body=self.response.body,
            reason=self.response.reason,
        )


Upstream = Callable[[Request, bytes], Response]


class Harness(Chain):
    """Plugins in chain order, and the phases run on them.

    The constructor, :meth:`call` and :meth:`transform` are :class:`.Chain`'s
    (``sdk._chain``): one hook at a time through the fault boundary.
    """

    make_flow = staticmethod(make_flow)

    # -- a whole flow ---------------------------------------------------------
    async def run(
        self,
        flow: Flow,
        upstream: Upstream | Response | None = None,
        *,
        body: bytes = b"",
    ) -> Flow:
        """Drive ``flow`` through every phase, as the kernel orders them.

        ``flow`` is a fresh one (:meth:`make_flow`): as in the kernel, a
        request-phase hook answers by returning a response or by setting
        ``flow.response``, so one already there would answer.
        ``upstream`` answers when no plugin does (default: a
        :class:`FakeUpstream`); it may raise a :class:`~sdk.UpstreamError`
        to play a failing upstream. A failure ends the flow as the kernel
        would: ``flow.error`` set (a :class:`~sdk.PluginError` for a plugin's
        failure, a :class:`~sdk.LocalProtocolError` for a response the
        response hooks left unsendable, the upstream's error as is),
        ``trellis_error`` asked for a response, else a plain one with the
        error's status. ``trellis_flow_done`` always runs last.
        """
        if upstream is None:
            upstream = FakeUpstream()
        elif isinstance(upstream, Response):
            upstream = FakeUpstream(upstream)
        try:
            try:
                # A request-phase hook answers by returning a response or by
                # setting flow.response (_answer), as in the kernel.
                route = await self._answer("trellis_route_select", flow)
                if route is not None and self.routes and route not in self.routes:
                    raise ProxyError(f"plugin chose unknown route {route!r}", status_hint=500)
                flow.route = route or "default"
                resp = flow.response
                if resp is None:
                    resp = await self._answer("trellis_request_access", flow)
                if resp is None:
                    resp = await self._answer("trellis_request", flow)
                if resp is None and flow.upstream is None:
                    origin = await self._answer("trellis_upstream_select", flow)
                    resp = flow.response
                    if resp is None:
                        flow.upstream = origin or Origin("http", "upstream.test", 80)
                if resp is None:
                    # As in the kernel, body hooks run only for a request with a body.
                    sent = self.transform("trellis_request_body", flow, body) if body else b""
                    flow.bytes_in = len(body)
                    resp = upstream(flow.request, sent)
                    # The test's own stand-in: a bad answer is its bug, not a plugin's.
                    if not isinstance(resp, Response):
                        raise TypeError(f"the upstream returned {type(resp).__name__}")
                    if problem := response_problem(resp):
                        raise TypeError(f"the upstream's response {problem}")
                flow.response = resp
                flow.timings.response_head = time.monotonic()
                if hooked := self._impls("trellis_response"):
                    await self.call("trellis_response", flow)
                    # As in the kernel: refused before a byte would go out,
                    # naming the plugins whose hooks had it.
                    after: object = flow.response  # a hook may have put anything there
                    if not isinstance(after, Response):
                        problem = f"flow.response is {type(after).__name__}, not sdk.Response"
                    elif wrong := response_problem(after):
                        problem = f"the response's {wrong}"
                    else:
                        problem = ""
                    if problem:
                        names = ", ".join(dict.fromkeys(repr(name) for name, _ in hooked))
                        raise LocalProtocolError(f"after the response hooks of {names}, {problem}")
                if flow.response.body is not None:
                    flow.response.body = self.transform(
                        "trellis_response_body", flow, flow.response.body
                    )
                    flow.bytes_out = len(flow.response.body)
            except ProxyError as exc:
                flow.error = exc
                try:
                    resp = await self.call("trellis_error", flow, exc, firstresult=True)
                except ProxyError:
                    resp = None  # as in the kernel: a failing error hook is ignored
                flow.response = resp or Response.make(exc.status_hint, f"{exc.status_hint}\n")
                await self._respond_to_error(flow, exc)
        finally:
            flow.timings.done = time.monotonic()
            await self._done(flow)
        return flow

    async def _respond_to_error(self, flow: Flow, exc: ProxyError) -> None:
        """Response hooks see the error response too, as in the kernel; one
        failing there is ignored, and one that failed on the response this
        replaces is not asked again. None after a response that could not be
        written: they may be what spoilt it."""
        if isinstance(exc, LocalProtocolError):
            return
        for name, fn in self._impls("trellis_response"):
            if isinstance(exc, PluginError) and (exc.plugin, exc.hook) == (
                name,
                "trellis_response",
            ):
                continue
            try:
                await self._call_one(name, "trellis_response", fn, (flow,))
            except PluginError:
                pass

    async def _done(self, flow: Flow) -> None:
        """Every ``trellis_flow_done`` runs, as in the kernel, even after one
        failed; then the first failure is raised, for the test to see."""
        failure: BaseException | None = None
        for _, fn in self._impls("trellis_flow_done"):
            try:
                await self._invoke(fn, flow)
            except BaseException as exc:  # SystemExit too: the others still run
                if isinstance(exc, trio.Cancelled):
                    raise
                if failure is None:
                    failure = exc
        if failure is not None:
            raise failure
