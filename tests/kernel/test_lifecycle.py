"""Lifecycle hooks one implementation at a time (kernel/lifecycle.py), with pluggy."""

from __future__ import annotations

import logging

import pluggy
import pytest

import sdk
import sdk.hookspecs
from kernel import lifecycle


class Life:
    """Records its startup and shutdown in ``log``; fails where told."""

    def __init__(self, name: str, log: list[str], fail: str = "") -> None:
        self.name, self.log, self.fail = name, log, fail

    @sdk.hookimpl
    def trellis_startup(self, context: object) -> None:
        if self.fail == "startup":
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    @sdk.hookimpl
    def trellis_shutdown(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail == "shutdown":
            raise OSError(f"{self.name} cannot stop")


def manager(*plugins: Life) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    for plugin in plugins:
        pm.register(plugin, name=plugin.name)
    return pm


def test_startup_runs_in_pluggys_order() -> None:
    log: list[str] = []
    lifecycle.start(manager(Life("a", log), Life("b", log)), context=None)
    assert log == ["start b", "start a"]  # the last registered first, as pluggy calls


def test_a_failed_startup_shuts_down_those_that_started(caplog: pytest.LogCaptureFixture) -> None:
    """Before, they were never shut down: whatever they opened leaked."""
    log: list[str] = []
    pm = manager(Life("a", log), Life("b", log, fail="startup"), Life("c", log), Life("d", log))
    with caplog.at_level(logging.DEBUG), pytest.raises(lifecycle.StartupFailed) as info:
        lifecycle.start(pm, context=None)
    assert info.value.plugin == "b"
    assert str(info.value) == "plugin 'b' failed to start: RuntimeError: b cannot start"
    assert log == ["start d", "start c", "stop c", "stop d"]  # a never started
    assert "plugin 'b' failed in trellis_startup" in caplog.text
    assert 'raise RuntimeError(f"{self.name} cannot start")' in caplog.text  # traceback, for -v


def test_one_failing_shutdown_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    pm = manager(Life("a", log), Life("b", log, fail="shutdown"), Life("c", log))
    with caplog.at_level(logging.ERROR):
        lifecycle.shut_down(pm)
    assert log == ["stop c", "stop b", "stop a"]
    assert "plugin 'b' failed in trellis_shutdown" in caplog.text


class Listener:
    def __init__(self, name: str, heard: list[str], fail: bool = False) -> None:
        self.name, self.heard, self.fail = name, heard, fail

    @sdk.hookimpl
    def trellis_plugin_error(self, plugin: str, hook: str) -> None:  # a subset of the arguments
        self.heard.append(f"{self.name}: {plugin} in {hook}")
        if self.fail:
            raise ValueError("listener bug")


def test_notify_reaches_every_listener(caplog: pytest.LogCaptureFixture) -> None:
    heard: list[str] = []
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(Listener("x", heard), name="x")
    pm.register(Listener("y", heard, fail=True), name="y")
    with caplog.at_level(logging.ERROR):
        lifecycle.notify(
            pm,
            "trellis_plugin_error",
            plugin="p",
            hook="trellis_request",
            error=None,
            fail_open=False,
        )
    assert heard == ["y: p in trellis_request", "x: p in trellis_request"]
    assert "plugin 'y' failed in trellis_plugin_error" in caplog.text


class AsyncLife:
    @sdk.hookimpl
    async def trellis_startup(self, context: object) -> None:
        raise AssertionError("never awaited")

    @sdk.hookimpl
    async def trellis_config_check(self) -> list[str]:
        return []


def test_async_lifecycle_hooks_are_problems() -> None:
    """Before, they passed kernel check and never ran."""
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(AsyncLife(), name="al")
    never = "must be a plain def (lifecycle hooks are never awaited)"
    assert lifecycle.async_problems(pm) == [
        f"$.plugins.al: trellis_config_check {never}",
        f"$.plugins.al: trellis_startup {never}",
    ]


class _Weird(BaseException):
    """Neither an Exception nor a real cancellation, and it cannot say what it is."""

    def __str__(self) -> str:
        raise SystemExit(9)


class Hostile:
    """Raises ``error`` from every lifecycle hook."""

    def __init__(self, name: str, error: BaseException) -> None:
        self.name, self.error = name, error

    @sdk.hookimpl
    def trellis_startup(self, context: object) -> None:
        raise self.error

    @sdk.hookimpl
    def trellis_shutdown(self) -> None:
        raise self.error

    @sdk.hookimpl
    def trellis_plugin_error(self, plugin: str) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error", [SystemExit(3), KeyboardInterrupt(), _Weird()], ids=["SystemExit", "KI", "weird"]
)
def test_a_base_exception_from_a_plugin_never_leaves_the_lifecycle(
    caplog: pytest.LogCaptureFixture, error: BaseException
) -> None:
    """They used to go through (only ``Exception`` was caught) and end the
    process: a ``trellis_plugin_error`` raising ``SystemExit`` did on the
    first request whose plugin failed."""
    heard: list[str] = []
    log: list[str] = []
    pm = manager(Life("a", log))
    pm.register(Listener("x", heard), name="x")
    pm.register(Hostile("h", error), name="h")
    with caplog.at_level(logging.DEBUG):
        lifecycle.notify(
            pm, "trellis_plugin_error", plugin="p", hook="trellis_request", error=None,
            fail_open=False,
        )  # fmt: skip
        lifecycle.shut_down(pm)
        with pytest.raises(lifecycle.StartupFailed) as info:
            lifecycle.start(pm, context=None)
    assert heard == ["x: p in trellis_request"]  # registered before h: called after it
    assert log == ["stop a"]  # after h's failed shutdown
    assert info.value.plugin == "h"
    assert info.value.error is error
    assert "plugin 'h' failed in trellis_plugin_error" in caplog.text
    assert "plugin 'h' failed in trellis_shutdown" in caplog.text
    if isinstance(error, _Weird):
        assert "whose str() failed" in str(info.value)
