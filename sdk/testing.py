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
behaviour (framing, hardening, deadlines) is tested with real sockets.

May import: stdlib, trio, attrs, pluggy, sdk.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, cast, get_args

import attrs
import pluggy
import trio

from sdk import hookspecs
from sdk._config import structure
from sdk._errors import LocalProtocolError, PluginError, ProxyError
from sdk._flow import ClientInfo, Flow, Timings, new_flow_id
from sdk._http import Headers, Origin, Request, Response
from sdk._markers import PROJECT
from sdk._results import RESULT_TYPES, response_problem, set_response_error, wrong_result

__all__ = ["FakeUpstream", "Harness", "make_flow", "make_request"]

log = logging.getLogger("sdk.testing")


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

#: A plugin's policy on failure, as ``[kernel.policy.NAME] on_error``.
_OnError = Literal["fail_closed", "fail_open"]

#: Hooks the kernel refuses as ``async def``: called once per chunk on the
#: hot path, or inside a TLS handshake, or lifecycle hooks.
_SYNC_ONLY = hookspecs.SYNC_ONLY_HOOKS | frozenset(hookspecs.LIFECYCLE_HOOKS)
_BODY_HOOKS = frozenset({"trellis_request_body", "trellis_response_body"})


class _DeadlineMissed(trio.TooSlowError):
    """The harness's per-call deadline went off (a ``TooSlowError`` of the
    plugin's own is its failure like any other, as in the kernel)."""


def _result_error(hook: str, result: object) -> TypeError | None:
    """Why the kernel would refuse ``result`` from ``hook``, or None."""
    want = RESULT_TYPES.get(hook)
    if want is None or result is None:
        return None
    if hook in _BODY_HOOKS:
        if not isinstance(result, bytes | bytearray | memoryview):  # copied to bytes
            return wrong_result(hook, result)
    elif not isinstance(result, want):
        return wrong_result(hook, result)
    if isinstance(result, Response) and (problem := response_problem(result)):
        return TypeError(f"returned a Response whose {problem}")
    return None


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
        on_error: _OnError | Mapping[str, _OnError] = "fail_closed",
    ) -> None:
        """``plugins`` are plugin objects, or plugin classes: a class with a
        ``config_class`` is structured from ``config`` (the table's contents)
        and instantiated, as the kernel does.

        ``deadline`` is every awaited call's deadline, in seconds (the
        kernel's ``plugin_deadline_s``). ``on_error`` is the policy on a
        failure: ``"fail_closed"`` (the default) or ``"fail_open"`` for every
        plugin (the kernel's ``plugin_on_error``), or a mapping from plugin
        name to policy (``[kernel.policy.NAME] on_error``; the others fail
        closed). A plugin's name is its class's (a module's ``__name__``),
        with ``#i``, its place, when two plugins share one.

        Raises :class:`pluggy.PluginValidationError` for a hook the kernel
        would refuse (unknown name, unknown argument), :class:`TypeError`
        for an ``async def`` body transform or lifecycle hook, and
        :class:`ValueError` for an unknown policy or a name in ``on_error``
        that is no plugin's. The same object given twice runs once, at its
        first place, as a name listed twice in a chain.
        """
        self.deadline = deadline
        #: Every failure the harness caught, in order, whatever the policy:
        #: what the kernel logs and reports through ``trellis_plugin_error``.
        #: A plain exception that reaches the test (``fail_closed``) is not here.
        self.failures: list[PluginError] = []
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
        names: list[str] = []
        for i, (plugin, label) in enumerate(zip(self.plugins, labels, strict=True)):
            # Named like kernel instances; "#i" only tells equal names apart.
            names.append(label if labels.count(label) == 1 else f"{label}#{i}")
            self.pm.register(plugin, name=names[-1])
        self.pm.check_pending()
        for hook in _SYNC_ONLY:
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if inspect.iscoroutinefunction(impl.function):
                    raise TypeError(f"{impl.plugin_name}: {hook} must not be async")
        self._fail_open = self._policy(on_error, names)

    @staticmethod
    def _policy(on_error: _OnError | Mapping[str, _OnError], names: list[str]) -> frozenset[str]:
        """The names of the plugins that fail open."""
        policies = get_args(_OnError)
        per_name = dict.fromkeys(names, on_error) if isinstance(on_error, str) else on_error
        for name, policy in per_name.items():
            if policy not in policies:
                raise ValueError(f"on_error: {policy!r} for {name!r} is not one of {policies}")
            if name not in names:
                raise ValueError(f"on_error: no plugin is named {name!r} (plugins: {names})")
        return frozenset(name for name, policy in per_name.items() if policy == "fail_open")

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

    def _caught(self, name: str, exc: BaseException) -> bool:
        """Whether the fault boundary takes ``exc`` from ``name``'s hook
        (else it reaches the test): the kernel's and its policy's failures."""
        if isinstance(exc, ProxyError | _DeadlineMissed):
            return True
        return isinstance(exc, Exception) and name in self._fail_open

    def _fault(self, name: str, hook: str, exc: BaseException) -> None:
        """Log and record one failure; raise its :class:`~sdk.PluginError`
        unless ``name`` fails open (then the call counts as ``None``)."""
        if isinstance(exc, _DeadlineMissed):
            message = f"plugin {name!r} missed its {self.deadline:g}s deadline in {hook}"
        else:
            message = f"plugin {name!r} raised {type(exc).__name__} in {hook}: {exc}"
        log.error("%s", message, exc_info=not isinstance(exc, _DeadlineMissed) and exc)
        err = PluginError(name, hook, message)
        err.__cause__ = exc
        self.failures.append(err)
        if name not in self._fail_open:
            raise err from exc

    async def _invoke(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One implementation's result, awaited under the deadline if it is one.

        As in the kernel, one that returns after its deadline missed it, even
        if it caught its ``Cancelled`` or shielded itself.
        """
        result = fn(*args)
        if inspect.isawaitable(result):
            with trio.move_on_after(self.deadline) as scope:
                result = await result
                if not scope.cancel_called:
                    return result
            raise _DeadlineMissed
        return result

    async def _call_one(self, name: str, hook: str, fn: Callable[..., Any], args: Any) -> Any:
        """One implementation's checked result; ``None`` if it failed open."""
        try:
            result = await self._invoke(fn, *args)
        except BaseException as exc:
            return self._failed(name, hook, exc)
        return self._checked(name, hook, result)

    def _checked(self, name: str, hook: str, result: Any) -> Any:
        """``result``, or ``None`` when the kernel would refuse it and the
        plugin fails open (failing closed raises the ``PluginError``)."""
        if (wrong := _result_error(hook, result)) is not None:
            self._fault(name, hook, wrong)
            return None
        return result

    def _failed(self, name: str, hook: str, exc: BaseException) -> None:
        """An implementation raised ``exc``: the fault boundary's, or the test's."""
        if not self._caught(name, exc):
            raise exc
        self._fault(name, hook, exc)

    async def call(self, hook: str, *args: Any, firstresult: bool = False) -> Any:
        """Call ``hook`` on every plugin in order, awaiting async ones.

        ``args`` are the hook's arguments, in the spec's order. With
        ``firstresult`` stop at (and return) the first non-None result;
        otherwise return the list of results. Only returned values count
        here: a response a request hook set is in ``flow.response``
        (:meth:`run` takes it as the answer, as the kernel does). A result is checked as the
        kernel checks it; a failing plugin raises :class:`~sdk.PluginError`
        or, failing open, counts as ``None``.
        """
        results = []
        for name, fn in self._impls(hook):
            result = await self._call_one(name, hook, fn, args)
            if firstresult and result is not None:
                return result
            results.append(result)
        return None if firstresult else results

    async def _answer(self, hook: str, flow: Flow) -> Any:
        """``call(hook, flow, firstresult=True)`` for a hook of the request
        phase, as the kernel calls it: a ``flow.response`` an implementation
        leaves set (returning no ``Response`` of its own, which would win)
        answers the request. It is checked as a returned one is, and ends the
        phase; for the access and request hooks it is the result. A failing
        implementation's response is cleared."""
        for name, fn in self._impls(hook):
            wrong = None
            try:
                result = await self._invoke(fn, flow)
                wrong = _result_error(hook, result)
                if wrong is None and flow.response is not None and not isinstance(result, Response):
                    wrong = set_response_error(flow.response)
                if wrong is not None:
                    raise wrong
            except BaseException as exc:
                if not (exc is wrong or self._caught(name, exc)):
                    raise
                flow.response = None  # a failed call answers nothing
                self._fault(name, hook, exc)
                continue
            if (answer := flow.response) is not None and not isinstance(result, Response):
                return answer if result is None and RESULT_TYPES[hook] is Response else result
            if result is not None:
                return result
        return None

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
                except BaseException as exc:
                    self._failed(name, hook, exc)
                    continue
                result = self._checked(name, hook, result)
                if result is not None:
                    chunk = bytes(result)
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
