"""The flow-hook dispatcher: compiled chains and the plugin fault boundary.

pluggy cannot await (pluggy#320), so flow hooks are called here. For every
(listener, route) pair of a generation, :func:`compile_chain` turns the
configured instance names into one tuple of :class:`Impl` per hook, in chain
order; a request never looks plugins up, and a hook nobody implements is an
empty tuple that costs one loop over nothing.

This module is also the *one* place where a plugin's exception is caught
(ARCHITECTURE.md, "Fault boundary"): it is attributed to the instance,
logged with the dispatcher's own frames cut off, counted, and turned into a
:class:`~sdk.PluginError` (``fail_closed``) or ignored (``fail_open``).
The log line is limited per instance, hook and error class
(kernel/lograte.py); the count and the report are not.
What a hook may return (:data:`RESULT_TYPES`, :func:`response_problem`) is
``sdk._results``'s, shared with the test kit (``sdk.testing``).

The two TLS hooks are compiled the same way but called per connection, with
no flow: :func:`connection_first_result` (``trellis_tls_passthrough``) and
:func:`certificate_provider` (``trellis_tls_certificate``, synchronous: it
runs inside the handshake).

May import: stdlib, trio, pluggy, attrs, sdk, kernel.config, kernel.lifecycle,
kernel.lograte.
"""

from __future__ import annotations

import collections
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
import pluggy
import trio

from kernel import lifecycle, lograte
from kernel.config.model import Settings
from sdk import Flow, PluginError, Response, TlsCertificate, hookspecs
from sdk._results import RESULT_TYPES, response_problem, set_response_error
from sdk._results import wrong_result as _wrong_result

__all__ = [
    "FLOW_HOOKS",
    "RESULT_TYPES",
    "Chain",
    "DeadlineMissed",
    "Impl",
    "call_all",
    "call_done",
    "call_done_sync",
    "certificate_provider",
    "collect_impls",
    "compile_chain",
    "connection_first_result",
    "error_reporter",
    "first_answer",
    "first_result",
    "plugin_error_counts",
    "response_problem",
    "transform",
]

log = logging.getLogger("kernel.dispatch")

#: Flow hooks, in the order a flow meets them (the two TLS hooks, per
#: connection and without a flow, run on the listener's routing chain).
FLOW_HOOKS = (
    "trellis_tls_passthrough",
    "trellis_tls_certificate",
    "trellis_route_select",
    "trellis_request_access",
    "trellis_request",
    "trellis_upstream_select",
    "trellis_request_body",
    "trellis_response",
    "trellis_response_body",
    "trellis_error",
    "trellis_flow_done",
)
#: Hooks called synchronously (per body chunk, or inside a TLS handshake);
#: ``async def`` is refused for them.
_SYNC_ONLY = hookspecs.SYNC_ONLY_HOOKS

#: Failures per plugin instance since the process started (metrics read this).
plugin_error_counts: collections.Counter[str] = collections.Counter()

#: ``report(instance, hook, error, fail_open)``: tells a generation's plugins.
Reporter = Callable[[str, str, PluginError, bool], None]


@attrs.frozen(slots=True)
class Impl:
    """One plugin instance's implementation of one hook, ready to call."""

    instance: str
    fn: Callable[..., Any]
    is_async: bool
    deadline: float
    fail_open: bool
    #: Where a caught failure is reported (``trellis_plugin_error``).
    report: Reporter | None = None


@attrs.frozen(slots=True)
class Chain:
    """The compiled chain of one route on one listener."""

    #: Instance names in call order (global, listener, route; duplicates dropped).
    names: tuple[str, ...]
    tls_passthrough: tuple[Impl, ...] = ()
    tls_certificate: tuple[Impl, ...] = ()
    route_select: tuple[Impl, ...] = ()
    request_access: tuple[Impl, ...] = ()
    request: tuple[Impl, ...] = ()
    upstream_select: tuple[Impl, ...] = ()
    request_body: tuple[Impl, ...] = ()
    response: tuple[Impl, ...] = ()
    response_body: tuple[Impl, ...] = ()
    error: tuple[Impl, ...] = ()
    flow_done: tuple[Impl, ...] = ()


#: instance name -> hook name -> the callable the dispatcher calls.
HookTable = Mapping[str, Mapping[str, Callable[..., Any]]]


def collect_impls(pm: pluggy.PluginManager) -> dict[str, dict[str, Callable[..., Any]]]:
    """The flow-hook implementations pluggy validated, per instance name.

    Only ``@sdk.hookimpl``-marked methods count, as for lifecycle hooks. An
    implementation may take a subset of the spec's arguments (as in pytest);
    it gets an adapter, built here once, that passes only what it asked for.
    """
    table: dict[str, dict[str, Callable[..., Any]]] = {}
    for hook in FLOW_HOOKS:
        caller = getattr(pm.hook, hook)
        spec_args = tuple(caller.spec.argnames) if caller.spec else ()
        for impl in caller.get_hookimpls():
            fn = impl.function
            if tuple(impl.argnames) != spec_args:
                fn = _adapter(fn, spec_args, tuple(impl.argnames))
            table.setdefault(impl.plugin_name, {})[hook] = fn
    return table


def _adapter(
    fn: Callable[..., Any], spec_args: tuple[str, ...], wanted: tuple[str, ...]
) -> Callable[..., Any]:
    positions = [spec_args.index(a) for a in wanted]
    if inspect.iscoroutinefunction(fn):

        async def call_async(*args: Any) -> Any:
            return await fn(*(args[i] for i in positions))

        return call_async

    def call(*args: Any) -> Any:
        return fn(*(args[i] for i in positions))

    return call


def compile_chain(
    names: Iterable[str],
    impls: HookTable,
    settings: Settings,
    problems: list[str] | None = None,
    report: Reporter | None = None,
) -> Chain:
    """Resolve instance names to callables once, in order, without duplicates.

    Names without any flow hook are kept in :attr:`Chain.names` (they may
    only have lifecycle hooks).
    """
    ordered: list[str] = []
    for name in names:
        if name not in ordered:
            ordered.append(name)
    per_hook: dict[str, list[Impl]] = {h: [] for h in FLOW_HOOKS}
    ksec = settings.kernel
    for name in ordered:
        hooks = impls.get(name, {})
        # A named instance's policy, then its plugin's, then the kernel's.
        own = ksec.policy.get(name)
        base = ksec.policy.get(name.partition(".")[0]) if "." in name else None
        deadline = (own and own.deadline_s) or (base and base.deadline_s) or ksec.plugin_deadline_s
        on_error = (own and own.on_error) or (base and base.on_error) or ksec.plugin_on_error
        for hook in FLOW_HOOKS:
            fn = hooks.get(hook)
            if fn is None:
                continue
            is_async = inspect.iscoroutinefunction(fn)
            if is_async and hook in _SYNC_ONLY:
                # Said once per instance, however many chains it is on.
                problem = f"$.plugins.{name}: {hook} must not be async (it is never awaited)"
                if problems is not None and problem not in problems:
                    problems.append(problem)
                continue
            per_hook[hook].append(
                Impl(name, fn, is_async, deadline, on_error == "fail_open", report)
            )
    return Chain(
        names=tuple(ordered),
        **{hook.removeprefix("trellis_"): tuple(impls) for hook, impls in per_hook.items()},
    )


def _passes(exc: BaseException) -> bool:
    """Whether ``exc`` must go through the fault boundary untouched.

    Only a real cancellation does (a scope around the call was cancelled: the
    connection ends, the process drains). Anything else a plugin raises,
    ``SystemExit``, ``KeyboardInterrupt`` (SIGINT is ours: trio never raises
    it here) and a ``trio.Cancelled`` no scope asked for included, is its
    failure, not the process's.
    """
    return isinstance(exc, trio.Cancelled) and trio.current_effective_deadline() == -math.inf


def _fault(impl: Impl, hook: str, flow: Flow | None, exc: BaseException) -> PluginError | None:
    """Log and count one plugin failure; the error to raise, or None (fail_open).

    Every failure is counted and reported; the log line is limited
    (kernel/lograte.py) per instance, hook and error class: a plugin that
    fails on every request under load would write a line per request.
    """
    plugin_error_counts[impl.instance] += 1
    prefix = f"[{flow.id}] " if flow else ""
    key = (impl.instance, hook, type(exc).__name__)
    if isinstance(exc, DeadlineMissed):
        message = f"plugin {impl.instance!r} missed its {impl.deadline:g}s deadline in {hook}"
        lograte.log(log, logging.ERROR, key, "%s%s", prefix, message)
    else:
        # The exception's text is the plugin's code too (lifecycle.describe).
        text = lifecycle.describe(exc)
        message = f"plugin {impl.instance!r} raised {type(exc).__name__} in {hook}: {text}"
        # Formatted only if the line is logged (most are not, under load).
        trimmed = _Traceback(exc)
        lograte.log(log, logging.ERROR, key, "%s%s\n%s", prefix, message, trimmed)
    err = PluginError(impl.instance, hook, message)
    err.__cause__ = exc
    if impl.report is not None:
        impl.report(impl.instance, hook, err, impl.fail_open)
    return None if impl.fail_open else err


class _Traceback:
    """A failure's traceback for a log line, formatted when the line is."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __str__(self) -> str:
        # Cut the dispatcher's own frame: the reader wants the plugin's frames.
        tb = self.exc.__traceback__
        return lifecycle.traceback_text(self.exc, tb.tb_next if tb else None)


def error_reporter(pm: pluggy.PluginManager) -> Reporter:
    """Report caught plugin failures to every instance of ``pm`` (``trellis_plugin_error``)."""

    def report(plugin: str, hook: str, error: PluginError, fail_open: bool) -> None:
        lifecycle.notify(
            pm, "trellis_plugin_error", plugin=plugin, hook=hook, error=error, fail_open=fail_open
        )

    return report


class DeadlineMissed(trio.TooSlowError):
    """An implementation ran past its deadline (a ``TooSlowError`` of the
    plugin's own is its failure like any other, and is not reported as this)."""


async def _call(impl: Impl, args: tuple[Any, ...]) -> Any:
    result = impl.fn(*args)
    if impl.is_async or (result is not None and inspect.isawaitable(result)):
        return await _await(impl, result)
    return result


async def _await(impl: Impl, awaitable: Awaitable[Any]) -> Any:
    """An implementation's coroutine (or what a plain ``def`` returned to be
    awaited), under its deadline.

    The deadline is missed also when the implementation returns after it was
    due, cancelled or not: one that caught its ``Cancelled`` (``except
    BaseException``), shielded itself or blocked without awaiting is not
    given its late result. (``cancel_called`` of the still active scope also
    reads the clock: a deadline that passed while nothing awaited counts.)
    """
    with trio.move_on_after(impl.deadline) as scope:
        result = await awaitable
        if not scope.cancel_called:
            return result
    raise DeadlineMissed


async def first_result(impls: tuple[Impl, ...], hook: str, flow: Flow, *args: Any) -> Any:
    """Call ``impls`` in order until one returns non-``None``; return that."""
    return await _first(impls, hook, flow, (flow, *args))


async def first_answer(impls: tuple[Impl, ...], hook: str, flow: Flow) -> Any:
    """:func:`first_result` for a hook of the request phase (routing, access,
    request, upstream selection), where a plugin may answer by setting
    ``flow.response`` instead of returning it.

    Called while ``flow.response`` is ``None``. An implementation that leaves
    a response there (and returns no ``Response`` of its own, which would
    win) has answered: the response is checked as a returned one is, a
    failure attributed to that implementation, and no later one runs. For
    ``trellis_request_access`` and ``trellis_request`` the response is then
    the result; for the others the result is what the implementation
    returned (``None``, a route name, an origin) and the caller finds the
    answer in ``flow.response``. A failing implementation's response is
    cleared: a failed call answers nothing.
    """
    return await _first(impls, hook, flow, (flow,), answering=True)


async def connection_first_result(impls: tuple[Impl, ...], hook: str, *args: Any) -> Any:
    """:func:`first_result` for a per-connection hook, which has no flow."""
    return await _first(impls, hook, None, args)


async def _first(
    impls: tuple[Impl, ...],
    hook: str,
    flow: Flow | None,
    call_args: Any,
    *,
    answering: bool = False,
) -> Any:
    # _call is inlined for plain ``def`` implementations: a coroutine per
    # implementation and call costs about a microsecond, more than most hooks.
    for impl in impls:
        try:
            if impl.is_async:
                result = await _call(impl, call_args)
            else:
                result = impl.fn(*call_args)
                if result is not None and inspect.isawaitable(result):
                    result = await _await(impl, result)
            if result is not None:
                if not isinstance(result, RESULT_TYPES[hook]):
                    raise _wrong_result(hook, result)
                if isinstance(result, Response) and (problem := response_problem(result)):
                    raise TypeError(f"returned a Response whose {problem}")
            # A response the implementation set rather than returned answers
            # (first_answer); one it returned wins.
            if (
                answering
                and flow is not None
                and (answer := flow.response) is not None
                and not isinstance(result, Response)
            ):
                if (wrong := set_response_error(answer)) is not None:
                    raise wrong
                return answer if result is None and RESULT_TYPES[hook] is Response else result
        except BaseException as exc:
            if _passes(exc):
                raise
            if answering and flow is not None:
                flow.response = None
            err = _fault(impl, hook, flow, exc)
            if err is not None:
                raise err from exc
            continue
        if result is not None:
            return result
    return None


def certificate_provider(
    impls: tuple[Impl, ...],
) -> Callable[[str], tuple[bytes, bytes] | None] | None:
    """``trellis_tls_certificate`` as a :meth:`kernel.tls.ServerTls.set_certificate_provider`.

    Synchronous, without a deadline (it runs inside the handshake). A failing
    implementation raises :class:`~sdk.PluginError` (``fail_closed``: the
    handshake is aborted) or is skipped (``fail_open``). ``None`` when no
    implementation exists, so a listener without one never calls out.
    """
    if not impls:
        return None
    hook = "trellis_tls_certificate"

    def provide(server_name: str) -> tuple[bytes, bytes] | None:
        for impl in impls:
            try:
                result = impl.fn(server_name)
                if result is not None and not isinstance(result, TlsCertificate):
                    raise TypeError(f"returned {type(result).__name__}, not sdk.TlsCertificate")
            except BaseException as exc:
                if _passes(exc):
                    raise
                err = _fault(impl, hook, None, exc)
                if err is not None:
                    raise err from exc
                continue
            if result is not None:
                return result.cert_chain_pem, result.key_pem
        return None

    return provide


async def call_all(impls: tuple[Impl, ...], hook: str, flow: Flow) -> None:
    """Call every implementation in order (results ignored)."""
    for impl in impls:
        try:
            if impl.is_async:
                await _call(impl, (flow,))
            else:
                result = impl.fn(flow)
                if result is not None and inspect.isawaitable(result):
                    await _await(impl, result)
        except BaseException as exc:
            if _passes(exc):
                raise
            err = _fault(impl, hook, flow, exc)
            if err is not None:
                raise err from exc


def transform(impls: tuple[Impl, ...], hook: str, flow: Flow, chunk: bytes, end: bool) -> bytes:
    """Thread a body chunk through every synchronous body transform."""
    for impl in impls:
        try:
            out = impl.fn(flow, chunk, end)
            if out is not None and type(out) is not bytes:
                if not isinstance(out, bytes | bytearray | memoryview):
                    raise _wrong_result(hook, out)
                out = bytes(out)
        except BaseException as exc:
            if _passes(exc):
                raise
            err = _fault(impl, hook, flow, exc)
            if err is not None:
                raise err from exc
            continue
        if out is not None:
            chunk = out
    return chunk


def call_done_sync(impls: tuple[Impl, ...], flow: Flow) -> tuple[int, Awaitable[Any] | None]:
    """The terminal hook's synchronous part, without any cancel scope.

    Plain ``def`` implementations are called in order, right here (most
    terminal hooks - metrics, traffic logs - are, and a shielded deadline
    scope per flow costs more than they do). Stops at the first ``async def``
    one, or after a ``def`` that returned an awaitable; returns where
    :func:`call_done` should go on from and that awaitable (or ``None``).
    """
    for i, impl in enumerate(impls):
        if impl.is_async:
            return i, None
        try:
            result = impl.fn(flow)
        except BaseException as exc:
            if _passes(exc):
                raise
            _fault(attrs.evolve(impl, fail_open=True), "trellis_flow_done", flow, exc)
            continue
        if result is not None and inspect.isawaitable(result):
            return i, result
    return len(impls), None


async def call_done(
    impls: tuple[Impl, ...], flow: Flow, pending: Awaitable[Any] | None = None
) -> None:
    """The terminal hook: every implementation runs; failures are only logged.

    ``pending`` is the awaitable the first of ``impls`` already returned
    (see :func:`call_done_sync`): it is awaited instead of calling it again.
    """
    for i, impl in enumerate(impls):
        try:
            if i == 0 and pending is not None:
                await _await(impl, pending)
            else:
                await _call(impl, (flow,))
        except BaseException as exc:
            if _passes(exc):
                raise
            _fault(attrs.evolve(impl, fail_open=True), "trellis_flow_done", flow, exc)
