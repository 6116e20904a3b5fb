"""Plugins in chain order, and one hook called on them as the kernel calls it.

The part of :class:`sdk.testing.Harness` that stands in for the kernel's
plugin host and dispatcher: :class:`Chain` instantiates the plugins (a class
with a ``config_class`` from its table, by the kernel's strict converter),
registers them with pluggy as the kernel does, and calls one hook on them
in chain order (:meth:`Chain.call`, :meth:`Chain.transform`, and the
request phase's way of answering) through a fault boundary like the
kernel's: deadlines on awaited calls, results checked as the kernel checks
them (``sdk._results``), ``fail_closed``/``fail_open`` per plugin, every
caught failure logged and kept. :class:`~sdk.testing.Harness` adds the
phases of a whole flow.

May import: stdlib, trio, pluggy, sdk.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast, get_args

import pluggy
import trio

from sdk import hookspecs
from sdk._config import structure
from sdk._errors import PluginError, ProxyError
from sdk._flow import Flow
from sdk._http import Response
from sdk._markers import PROJECT
from sdk._results import RESULT_TYPES, response_problem, set_response_error, wrong_result

__all__ = ["Chain"]

log = logging.getLogger("sdk.testing")

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


class Chain:
    """Plugins in chain order, and one hook called on them as the kernel calls it."""

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
