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
raised by a hook, or a missed deadline, becomes a :class:`~sdk.PluginError`
naming the plugin (the original is its ``__cause__``). Any other exception
is a bug in the plugin: the kernel would log it and answer 502, the harness
lets it propagate to the test.

This is a fake of the kernel's pipeline for unit tests; the kernel's own
behaviour (framing, hardening, deadlines) is tested with real sockets.

May import: stdlib, trio, attrs, pluggy, sdk.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import attrs
import pluggy
import trio

from sdk import hookspecs
from sdk._config import structure
from sdk._errors import PluginError, ProxyError
from sdk._flow import ClientInfo, Flow, Timings, new_flow_id
from sdk._http import Headers, Origin, Request, Response
from sdk._markers import PROJECT

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

#: Called once per chunk on the kernel's hot path, or inside a TLS handshake:
#: ``async def`` is refused.
#: Hooks the kernel refuses as ``async def``.
_SYNC_ONLY = hookspecs.SYNC_ONLY_HOOKS | frozenset(hookspecs.LIFECYCLE_HOOKS)


def _adapt(fn: Callable[..., Any], spec_args: tuple[str, ...], wanted: tuple[str, ...]) -> Any:
    """Call ``fn`` with the spec's positional arguments it asked for, by name."""
    if wanted == spec_args:
        return fn
    positions = [spec_args.index(a) for a in wanted]

    def call(*args: Any) -> Any:
        return fn(*(args[i] for i in positions))

    return call


class Harness:
    """Plugins in chain order, and the phases run on them."""

    def __init__(
        self,
        *plugins: object,
        config: Mapping[str, Any] | None = None,
        deadline: float = 5.0,
    ) -> None:
        """``plugins`` are plugin objects, or plugin classes: a class with a
        ``config_class`` is structured from ``config`` (the table's contents)
        and instantiated, as the kernel does.

        Raises :class:`pluggy.PluginValidationError` for a hook the kernel
        would refuse (unknown name, unknown argument) and :class:`TypeError`
        for an ``async def`` body transform or lifecycle hook. The same
        object given twice runs once, at its first place, as a name listed
        twice in a chain.
        """
        self.deadline = deadline
        unique = list({id(p): p for p in reversed(plugins)}.values())[::-1]
        self.plugins: list[object] = [self._instantiate(p, config) for p in unique]
        #: Route names; when set, ``trellis_route_select`` must pick one of
        #: them (or none), else the flow fails with 500, as in the kernel.
        self.routes: set[str] = set()
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        # Historic: every plugin registered below gets it, once.
        self.pm.hook.trellis_addhooks.call_historic(kwargs={"pluginmanager": self.pm})
        labels = [getattr(p, "__name__", None) or type(p).__name__ for p in self.plugins]
        for i, (plugin, label) in enumerate(zip(self.plugins, labels, strict=True)):
            # Named like kernel instances; "#i" only tells equal names apart.
            self.pm.register(plugin, name=label if labels.count(label) == 1 else f"{label}#{i}")
        self.pm.check_pending()
        for hook in _SYNC_ONLY:
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if inspect.iscoroutinefunction(impl.function):
                    raise TypeError(f"{impl.plugin_name}: {hook} must not be async")

    @staticmethod
    def _instantiate(plugin: object, config: Mapping[str, Any] | None) -> object:
        if not inspect.isclass(plugin):
            return plugin
        factory = cast(Callable[..., object], plugin)
        config_cls = getattr(plugin, "config_class", None)
        if config_cls is None:
            return factory()
        return factory(structure(dict(config or {}), config_cls, path="$.plugins"))

    make_flow = staticmethod(make_flow)

    # -- single hooks -------------------------------------------------------
    def _impls(self, hook: str) -> list[tuple[str, Callable[..., Any]]]:
        """(plugin name, callable) of every ``@hookimpl`` of ``hook``, in chain order."""
        caller = getattr(self.pm.hook, hook, None)
        if caller is None or caller.spec is None:
            raise ValueError(f"no hook named {hook!r}")
        spec_args = tuple(caller.spec.argnames)
        by_plugin = {id(impl.plugin): impl for impl in caller.get_hookimpls()}
        return [
            (impl.plugin_name, _adapt(impl.function, spec_args, tuple(impl.argnames)))
            for p in self.plugins
            if (impl := by_plugin.get(id(p))) is not None
        ]

    def _fault(self, name: str, hook: str, exc: BaseException) -> PluginError:
        if isinstance(exc, trio.TooSlowError):
            message = f"plugin {name!r} missed its {self.deadline:g}s deadline in {hook}"
        else:
            message = f"plugin {name!r} raised {type(exc).__name__} in {hook}: {exc}"
        err = PluginError(name, hook, message)
        err.__cause__ = exc
        return err

    async def _invoke(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One implementation's result, awaited under the deadline if it is one."""
        result = fn(*args)
        if inspect.isawaitable(result):
            with trio.fail_after(self.deadline):
                result = await result
        return result

    async def call(self, hook: str, *args: Any, firstresult: bool = False) -> Any:
        """Call ``hook`` on every plugin in order, awaiting async ones.

        ``args`` are the hook's arguments, in the spec's order. With
        ``firstresult`` stop at (and return) the first non-None result;
        otherwise return the list of results.
        """
        results = []
        for name, fn in self._impls(hook):
            try:
                result = await self._invoke(fn, *args)
            except (ProxyError, trio.TooSlowError) as exc:
                raise self._fault(name, hook, exc) from exc
            if firstresult and result is not None:
                return result
            results.append(result)
        return None if firstresult else results

    def transform(self, hook: str, flow: Flow, body: bytes) -> bytes:
        """Run a body-transform hook over a whole body (one chunk, then the end).

        Each implementation sees the previous one's output, as in the kernel;
        the result is the transformed body followed by what the final
        (``end=True``) calls flushed.
        """
        impls = self._impls(hook)
        out: list[bytes] = []
        for chunk, end in ((body, False), (b"", True)):
            for name, fn in impls:
                try:
                    result = fn(flow, chunk, end)
                except ProxyError as exc:
                    raise self._fault(name, hook, exc) from exc
                if result is not None:
                    chunk = result
            out.append(chunk)
        return b"".join(out)

    # -- a whole flow ---------------------------------------------------------
    async def run(
        self,
        flow: Flow,
        upstream: Upstream | Response | None = None,
        *,
        body: bytes = b"",
    ) -> Flow:
        """Drive ``flow`` through every phase, as the kernel orders them.

        ``upstream`` answers when no plugin does (default: a
        :class:`FakeUpstream`); it may raise a :class:`~sdk.UpstreamError`
        to play a failing upstream. A failure ends the flow as the kernel
        would: ``flow.error`` set (a :class:`~sdk.PluginError` for a plugin's
        :class:`~sdk.ProxyError`, the upstream's error as is),
        ``trellis_error`` asked for a response, else a plain one with the
        error's status. ``trellis_flow_done`` always runs last.
        """
        if upstream is None:
            upstream = FakeUpstream()
        elif isinstance(upstream, Response):
            upstream = FakeUpstream(upstream)
        try:
            try:
                route = await self.call("trellis_route_select", flow, firstresult=True)
                if route is not None and self.routes and route not in self.routes:
                    raise ProxyError(f"plugin chose unknown route {route!r}", status_hint=500)
                flow.route = route or "default"
                resp = await self.call("trellis_request_access", flow, firstresult=True)
                if resp is None:
                    resp = await self.call("trellis_request", flow, firstresult=True)
                if resp is None:
                    if flow.upstream is None:
                        origin = await self.call("trellis_upstream_select", flow, firstresult=True)
                        flow.upstream = origin or Origin("http", "upstream.test", 80)
                    # As in the kernel, body hooks run only for a request with a body.
                    sent = self.transform("trellis_request_body", flow, body) if body else b""
                    flow.bytes_in = len(body)
                    resp = upstream(flow.request, sent)
                flow.response = resp
                flow.timings.response_head = time.monotonic()
                await self.call("trellis_response", flow)
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
        replaces is not asked again."""
        for name, fn in self._impls("trellis_response"):
            if isinstance(exc, PluginError) and (exc.plugin, exc.hook) == (
                name,
                "trellis_response",
            ):
                continue
            try:
                await self._invoke(fn, flow)
            except (ProxyError, trio.TooSlowError):
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
