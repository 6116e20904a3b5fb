"""The shutdown (kernel/shutdown.py): a drain cut ``shutdown_abort_s`` after the cancel.

The delay, the grace period and the signals of a real process:
tests/e2e/test_signals.py.
"""

from __future__ import annotations

import logging
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

import sdk
from tests.helpers.appconfig import get_body, local_config


class Stubborn:
    """Ignores its cancellation until told to stop."""

    def __init__(self) -> None:
        self.release = False
        self.running = trio.Event()

    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> None:
        self.running.set()
        while not self.release:
            try:
                await trio.sleep(0.01)
            except trio.Cancelled:
                pass


async def test_an_embedded_app_says_what_holds_its_shutdown_and_does_not_exit(
    tmp_path: Path, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Only ``kernel run`` (``exit_on_abort``) leaves the process; an app in
    someone else's process logs the same report and goes on waiting."""
    from kernel.app import App

    stubborn = Stubborn()
    cfg = local_config("x").replace(
        "[kernel]\n",
        '[kernel]\nplugins = ["stubborn"]\nshutdown_grace_s = 0.1\nshutdown_abort_s = 0.3\n',
    )
    path = tmp_path / "proxy.toml"
    path.write_text(cfg)
    app = App(path, handle_signals=False, extra_plugins={"stubborn": stubborn})
    with caplog.at_level(logging.ERROR), trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            nursery.start_soon(get_body, app.port(), client)
            await stubborn.running.wait()
            app.stop()
            while "shutdown cut" not in caplog.text:
                await trio.sleep(0.05)
            stubborn.release = True
    (record,) = [r for r in caplog.records if "shutdown cut" in r.message]
    lines = record.getMessage().splitlines()
    assert lines[0] == (
        "shutdown cut 0.3s (shutdown_abort_s) after cancelling, with 1 flow(s) left"
        " (a plugin swallowing trio.Cancelled?): not exiting; still running:"
    )
    assert re.fullmatch(
        rf"  plugin 'stubborn' in trellis_request \(flow [0-9a-f-]+\), at {re.escape(__file__)}:"
        r"\d+ in trellis_request",
        lines[1],
    )
    assert len(lines) == 2


async def test_a_second_signal_ends_the_delay_and_the_drain_follows(
    tmp_path: Path, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """During ``shutdown_delay_s`` the app reports draining and still serves;
    a second SIGTERM ends the delay: the listeners stop, the run returns 0."""
    from kernel.app import App

    path = tmp_path / "proxy.toml"
    path.write_text(local_config("x").replace("[kernel]\n", "[kernel]\nshutdown_delay_s = 30\n"))
    app = App(path, handle_signals=False)
    codes: list[int] = []

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        codes.append(await app.run(task_status=task_status))

    with caplog.at_level(logging.INFO, logger="kernel.app"), trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            port = app.port()
            app.stop()
            while not app.server_info().draining():
                await trio.sleep(0.01)
            assert await get_body(port, client) == b"x"  # lame duck: still serving
            app._shutdown.signalled(signal.SIGTERM)
    assert codes == [0]
    assert "second SIGTERM: ending shutdown_delay_s, draining now" in caplog.text
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
