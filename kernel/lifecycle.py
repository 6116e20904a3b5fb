"""The lifecycle hooks, called one implementation at a time.

pluggy calls all of a hook's implementations in one go and stops at the
first that raises. For the hooks around a generation's life that is wrong:

- :func:`start`: when one ``trellis_startup`` fails, those that already ran
  have opened things (files, connections, tasks) that only their
  ``trellis_shutdown`` closes; they get it at once, and the failure names
  the instance that failed.
- :func:`shut_down` and :func:`notify`: one failing implementation must not
  keep the others from closing their resources or hearing the news; each
  failure is logged with its instance's name.

A failure is anything an implementation raises, ``SystemExit``,
``KeyboardInterrupt`` and other ``BaseException`` subclasses included: these calls are
synchronous, so no real cancellation can come out of them, and a plugin
must not end the process (a ``trellis_plugin_error`` that raised
``SystemExit`` used to, on the first request whose plugin failed). What a
plugin's exception says is the plugin's code too: :func:`describe` and
:func:`traceback_text` never raise.

The order is pluggy's own (the last registered first, ``tryfirst`` and
``trylast`` honoured; hook wrappers are not called for these hooks). They
are synchronous: pluggy never awaits,
so an ``async def`` one would never run; :func:`async_problems` lists them
for ``kernel check`` and reload.

May import: stdlib, pluggy, sdk.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from types import TracebackType
from typing import Any

import pluggy

from sdk import hookspecs

__all__ = [
    "StartupFailed",
    "async_problems",
    "describe",
    "notify",
    "shut_down",
    "start",
    "traceback_text",
]

log = logging.getLogger("kernel.lifecycle")


def describe(obj: object, *, as_repr: bool = False) -> str:
    """``str(obj)`` (``repr`` with ``as_repr``) of a plugin's object, or a
    stand-in when its own ``__str__``/``__repr__`` raises (anything at all)."""
    try:
        return repr(obj) if as_repr else str(obj)
    except BaseException:  # the plugin's code: nothing may escape
        return f"<{type(obj).__name__} whose {'repr' if as_repr else 'str'}() failed>"


def traceback_text(exc: BaseException, tb: TracebackType | None) -> str:
    """``exc``'s traceback from ``tb`` on, as text; never raises (the
    traceback module calls the exception's ``__str__``, which may)."""
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
    except BaseException:  # see describe()
        return f"{type(exc).__name__}: {describe(exc)} (its traceback could not be formatted)"


class StartupFailed(Exception):
    """``plugin``'s ``trellis_startup`` raised ``__cause__``."""

    def __init__(self, plugin: str, error: BaseException) -> None:
        super().__init__(
            f"plugin {plugin!r} failed to start: {type(error).__name__}: {describe(error)}"
        )
        self.plugin = plugin
        self.error = error


def _in_call_order(pm: pluggy.PluginManager, hook: str) -> list[Any]:
    caller = getattr(pm.hook, hook)
    return [impl for impl in reversed(caller.get_hookimpls()) if not _wraps(impl)]


def _wraps(impl: Any) -> bool:
    return bool(impl.hookwrapper or getattr(impl, "wrapper", False))


def _call(impl: Any, kwargs: dict[str, Any]) -> Any:
    return impl.function(*(kwargs[name] for name in impl.argnames))


def async_problems(pm: pluggy.PluginManager) -> list[str]:
    """One problem per ``async def`` implementation of a lifecycle hook."""
    problems = []
    for hook in hookspecs.LIFECYCLE_HOOKS:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            if inspect.iscoroutinefunction(impl.function):
                problems.append(
                    f"$.plugins.{impl.plugin_name}: {hook} must be a plain def"
                    " (lifecycle hooks are never awaited)"
                )
    return problems


def start(pm: pluggy.PluginManager, **kwargs: Any) -> None:
    """Call every ``trellis_startup``; on a failure, shut down the instances
    that had started (latest first) and raise :class:`StartupFailed`."""
    started: list[str] = []
    for impl in _in_call_order(pm, "trellis_startup"):
        try:
            _call(impl, kwargs)
        except BaseException as exc:  # see the module docstring
            # The caller reports the failure (its message names the
            # instance); the traceback is for -v.
            log.debug(
                "plugin %r failed in trellis_startup\n%s",
                impl.plugin_name,
                traceback_text(exc, exc.__traceback__),
            )
            shut_down(pm, only=started[::-1])
            raise StartupFailed(impl.plugin_name, exc) from exc
        started.append(impl.plugin_name)


def shut_down(pm: pluggy.PluginManager, only: list[str] | None = None) -> None:
    """Call every ``trellis_shutdown`` (of the ``only`` instances, in that
    order, when given); a failure is logged and the others still run."""
    impls = _in_call_order(pm, "trellis_shutdown")
    if only is not None:
        by_name = {impl.plugin_name: impl for impl in impls}
        impls = [by_name[name] for name in only if name in by_name]
    for impl in impls:
        try:
            _call(impl, {})
        except BaseException as exc:  # see the module docstring
            _failed(impl.plugin_name, "trellis_shutdown", exc)


def notify(pm: pluggy.PluginManager, hook_name: str, /, **kwargs: Any) -> None:
    """Call every implementation of an announcing hook (results ignored); a
    failure is logged and the others still hear it."""
    for impl in _in_call_order(pm, hook_name):
        try:
            _call(impl, kwargs)
        except BaseException as exc:  # see the module docstring
            _failed(impl.plugin_name, hook_name, exc)


def _failed(plugin: str, hook: str, exc: BaseException) -> None:
    log.error("plugin %r failed in %s\n%s", plugin, hook, traceback_text(exc, exc.__traceback__))
