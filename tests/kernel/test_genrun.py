"""A generation's run (kernel/genrun.py): its plugins' startup, tasks and shutdown.

A ``trellis_startup`` that fails ends the start (exit 1, or 3 for I/O) or
refuses the reload.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

import sdk
from tests.helpers.appconfig import get_body, local_config


class FailsToStart:
    """A plugin whose ``trellis_startup`` raises ``error`` once it is set."""

    def __init__(self) -> None:
        self.error: Exception | None = None

    @sdk.hookimpl
    def trellis_startup(self, context: sdk.StartupContext) -> None:
        if self.error is not None:
            raise self.error


async def test_a_reload_whose_plugin_fails_to_start_keeps_the_old_generation(
    start_proxy: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = FailsToStart()
    cfg = local_config("one").replace("[kernel]\n", '[kernel]\nplugins = ["fails"]\n')
    app = await start_proxy(cfg, extra_plugins={"fails": plugin})
    plugin.error = RuntimeError("no database")
    app.config_path.write_text(cfg.replace('"one"', '"two"'))
    with caplog.at_level(logging.ERROR):
        assert await app.reload("test") is False
    assert (
        "generation 1 keeps serving: plugin 'fails' failed to start: RuntimeError: no database"
        in (caplog.text)
    )
    assert app.generation.number == 1
    assert await get_body(app.port(), client) == b"one"
    plugin.error = None
    assert await app.reload("test") is True
    assert await get_body(app.port(), client) == b"two"


@pytest.mark.parametrize(
    ("error", "code"),
    [(PermissionError("cannot write in '/logs'"), 3), (RuntimeError("a bug"), 1)],
    ids=["storage", "other"],
)
async def test_a_plugin_that_fails_to_start_ends_the_start(
    tmp_path: Path, error: Exception, code: int
) -> None:
    """I/O errors are storage errors (exit 3); anything else is the config's (exit 1)."""
    from kernel.app import App

    plugin = FailsToStart()
    plugin.error = error
    path = tmp_path / "proxy.toml"
    path.write_text(local_config("x").replace("[kernel]\n", '[kernel]\nplugins = ["fails"]\n'))
    app = App(path, handle_signals=False, extra_plugins={"fails": plugin})
    with trio.fail_after(10):
        assert await app.run() == code


async def test_startup_hook_tasks_live_with_their_generation(start_proxy: Any, client: Any) -> None:
    import sdk

    events: list[str] = []

    class Background:
        @sdk.hookimpl
        def trellis_startup(self, context: sdk.StartupContext) -> None:
            events.append(f"start {context.generation}")
            context.start_soon(self.tick, context.generation)

        async def tick(self, generation: int) -> None:
            try:
                await trio.sleep_forever()
            finally:
                events.append(f"cancelled {generation}")

        @sdk.hookimpl
        def trellis_shutdown(self) -> None:
            events.append("shutdown")

    cfg = local_config("x").replace("[kernel]\n", '[kernel]\nplugins = ["bg"]\n')
    app = await start_proxy(cfg, extra_plugins={"bg": Background()})
    assert events == ["start 1"]
    assert await app.reload("test") is True
    await trio.sleep(0.05)
    assert events == ["start 1", "start 2", "cancelled 1", "shutdown"]


async def test_a_failing_background_task_is_logged_and_ends_nothing_else(
    start_proxy: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A task a plugin started that raises is logged with its generation; the
    plugin's other tasks and the generation go on."""
    ticks: list[int] = []

    class Tasks:
        @sdk.hookimpl
        def trellis_startup(self, context: sdk.StartupContext) -> None:
            context.start_soon(self.fails)
            context.start_soon(self.ticks)

        async def fails(self) -> None:
            raise RuntimeError("task broke")

        async def ticks(self) -> None:
            while True:
                ticks.append(1)
                await trio.sleep(0.01)

    cfg = local_config("x").replace("[kernel]\n", '[kernel]\nplugins = ["tasks"]\n')
    with caplog.at_level(logging.ERROR, logger="kernel.app"):
        app = await start_proxy(cfg, extra_plugins={"tasks": Tasks()})
        with trio.fail_after(5):
            while "task broke" not in caplog.text:
                await trio.sleep(0.01)
    (record,) = [r for r in caplog.records if "of generation 1 failed" in r.getMessage()]
    assert "Tasks.fails" in record.getMessage()
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "task broke"
    before = len(ticks)
    await trio.sleep(0.05)
    assert len(ticks) > before
    assert await get_body(app.port(), client) == b"x"
