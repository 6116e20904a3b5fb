"""The app: generations, reload (good, bad, during a download), plugins' view.

Also the heap settled by the process's owner, a SIGHUP during start-up and
the loop watchdog following the live generation.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
import socket
import weakref
from pathlib import Path
from typing import Any

import pytest
import trio

import sdk
from tests.conftest import basic_config
from tests.helpers.appconfig import get_body, local_config, until_generation
from tests.kernel.test_genrun import FailsToStart


async def test_reload_switches_generation(start_proxy: Any, client: Any, tmp_path: Path) -> None:
    app = await start_proxy(local_config("one"))
    assert await get_body(app.port(), client) == b"one"
    app.config_path.write_text(local_config("two"))
    assert await app.reload("test") is True
    assert app.generation.number == 2
    assert await get_body(app.port(), client) == b"two"


async def test_bad_reload_keeps_old_generation_and_lists_every_problem(
    start_proxy: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start_proxy(local_config("one"))
    app.config_path.write_text(
        local_config("two").replace("[kernel]\n", '[kernel]\nplugins = ["nosuch"]\n')
        + "[server]\nmax_body_bytes = -1\nbogus = 1\n"
    )
    with caplog.at_level(logging.ERROR):
        assert await app.reload("test") is False
    assert app.generation.number == 1
    assert await get_body(app.port(), client) == b"one"
    text = caplog.text
    assert "generation 1 keeps serving" in text
    assert "$.server.max_body_bytes" in text
    assert "$.server.bogus" in text


async def test_reload_during_a_long_download_lets_it_finish(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    app = await start_proxy(basic_config(upstream.port))
    port = app.port()
    size = 8 * 1024 * 1024
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET /stream/{size} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
        )
        first = await stream.receive_some(65536)
        assert first.startswith(b"HTTP/1.1 200")
        # Reload to a config where every request is answered locally.
        app.config_path.write_text(
            local_config("after").replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{port}"')
        )
        assert await app.reload("test") is True
        assert await get_body(port, client) == b"after"
        got = len(first)
        while chunk := await stream.receive_some(1 << 20):
            got += len(chunk)
    head_len = first.index(b"\r\n\r\n") + 4
    assert got - head_len == size


class CountsStarts(FailsToStart):
    """Also records the generation number of every ``trellis_startup``."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: list[int] = []

    @sdk.hookimpl
    def trellis_startup(self, context: sdk.StartupContext) -> None:
        self.numbers.append(context.generation)
        super().trellis_startup(context)


async def test_a_rejected_reload_uses_no_generation_number(
    start_proxy: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, a reload refused after loading (a bind failure, a plugin that
    failed to start) used up a number: the next good generation was 4, not 2."""
    plugin = CountsStarts()
    cfg = local_config("one").replace("[kernel]\n", '[kernel]\nplugins = ["counts"]\n')
    app = await start_proxy(cfg, extra_plugins={"counts": plugin})
    plugin.error = RuntimeError("no database")
    app.config_path.write_text(cfg.replace('"one"', '"two"'))
    with caplog.at_level(logging.ERROR):
        assert await app.reload("startup fails") is False
    plugin.error = None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        second = f'[[listeners]]\nname = "taken"\nbind = "127.0.0.1:{port}"\n'
        app.config_path.write_text(cfg.replace("[[routes]]", second + "[[routes]]", 1))
        with caplog.at_level(logging.ERROR):
            assert await app.reload("bind fails") is False
    assert "cannot bind listener 'taken'" in caplog.text
    assert app.generation.number == 1
    app.config_path.write_text(cfg.replace('"one"', '"three"'))
    with caplog.at_level(logging.INFO):
        assert await app.reload("good") is True
    assert app.generation.number == 2
    assert "reloaded (good): generation 2 is live" in caplog.text
    assert await get_body(app.port(), client) == b"three"
    # The startup that failed was told the number the next good one got.
    assert plugin.numbers == [1, 2, 2]


class Observer:
    """Sees the startup context, caught plugin failures and health probes."""

    def __init__(self) -> None:
        self.context: sdk.StartupContext | None = None
        self.errors: list[tuple[str, str, bool]] = []
        self.probes: list[tuple[str, bool, str]] = []

    @sdk.hookimpl
    def trellis_startup(self, context: sdk.StartupContext) -> None:
        self.context = context

    @sdk.hookimpl
    def trellis_plugin_error(
        self, plugin: str, hook: str, error: sdk.PluginError, fail_open: bool
    ) -> None:
        self.errors.append((plugin, hook, fail_open))

    @sdk.hookimpl
    def trellis_health_probe(
        self, target: sdk.Target, healthy: bool, duration_s: float, detail: str
    ) -> None:
        assert duration_s >= 0
        self.probes.append((target.name, healthy, detail))


class Broken:
    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        raise RuntimeError("boom")


async def test_plugins_see_server_info_errors_and_probes(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    observer = Observer()
    text = (
        basic_config(upstream.port)
        .replace("[[routes]]", '[kernel.policy.broken]\non_error = "fail_open"\n\n[[routes]]', 1)
        .replace('upstream = "http', 'plugins = ["observer", "broken"]\nupstream = "http')
    )
    text += f"""
[[groups]]
name = "g"
urls = "http://127.0.0.1:{upstream.port}"
[groups.health]
path = "/status/204"
interval_s = 0.05
"""
    app = await start_proxy(text, extra_plugins={"observer": observer, "broken": Broken()})
    ctx = observer.context
    assert ctx is not None
    server = ctx.server
    assert server.listeners() == {"main": f"127.0.0.1:{app.port()}"}
    assert (server.worker, server.workers, server.draining()) == (0, 1, False)
    assert set(ctx.groups) == {"g"}
    raw = await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client.parse_responses(raw)[0]["status"] == 200  # fail_open: the flow went on
    assert observer.errors == [("broken", "trellis_request", True)]
    assert server.plugin_errors()["broken"] >= 1
    with trio.fail_after(5):
        while not observer.probes:
            await trio.sleep(0.02)
    assert observer.probes[0] == (f"127.0.0.1:{upstream.port}", True, "status 204")


async def test_the_process_owner_freezes_the_heap_and_a_retired_generation_is_still_collected(
    tmp_path: Path, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``settle_heap`` (kernel/heap.py): everything alive once serving is
    frozen, so the collector stops walking it; a generation retired later
    is thawed and collected, not kept for ever with the frozen heap."""
    from kernel.app import App

    path = tmp_path / "proxy.toml"
    path.write_text(local_config("one"))
    app = App(path, handle_signals=False, settle_heap=True)
    caplog.set_level(logging.DEBUG, logger="kernel.app")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            assert gc.get_freeze_count() > 0
            first = weakref.ref(app.generation)
            assert await get_body(app.port(), client) == b"one"
            path.write_text(local_config("two"))
            assert await app.reload("test") is True
            with trio.fail_after(5):
                while first() is not None or "generation 1 gone" not in caplog.text:
                    await trio.sleep(0.01)
            # Its plugins and registrations left cycles: collected, not frozen.
            collected = r"generation 1 gone: [1-9]\d* objects in cycles collected"
            assert re.search(collected, caplog.text)
            assert gc.get_freeze_count() > 0  # and the heap frozen again
            assert await get_body(app.port(), client) == b"two"
            app.stop()
    finally:
        gc.unfreeze()


async def test_an_embedded_app_leaves_the_collector_alone(start_proxy: Any, client: Any) -> None:
    app = await start_proxy(local_config("one"))
    assert await get_body(app.port(), client) == b"one"
    assert gc.get_freeze_count() == 0


async def test_a_sighup_during_start_up_is_a_reload_once_serving(
    tmp_path: Path, client: Any
) -> None:
    """``kernel`` holds SIGHUP from its first moment (kernel/early.py):
    one that comes before the app listens for signals (while the config
    loads, the listeners bind) used to end the process; now the app reloads
    once it serves."""
    from kernel import app as app_mod
    from kernel import early

    previous = signal.getsignal(signal.SIGHUP)
    path = tmp_path / "proxy.toml"
    path.write_text(local_config("one"))
    try:
        early.hold_sighup()
        os.kill(os.getpid(), signal.SIGHUP)  # still starting: nothing listens yet
        app = app_mod.App(path, handle_signals=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await until_generation(app, 2)
            assert await get_body(app.port(), client) == b"one"
            app.stop()
    finally:
        signal.signal(signal.SIGHUP, previous)


async def test_a_reload_turns_the_loop_watchdog_on_and_off(start_proxy: Any) -> None:
    app = await start_proxy(
        local_config("one").replace("[kernel]\n", "[kernel]\nstall_warning_s = 0\n")
    )
    assert app._watchdog is None
    app.config_path.write_text(
        local_config("two").replace("[kernel]\n", "[kernel]\nstall_warning_s = 3\n")
    )
    assert await app.reload("test") is True
    dog = app._watchdog
    assert dog is not None
    assert dog.threshold == 3
    assert app.state.timers.pulse is dog
    app.config_path.write_text(local_config("three"))  # the default: 1 s
    assert await app.reload("test") is True
    assert app._watchdog is dog
    assert dog.threshold == 1
    app.config_path.write_text(
        local_config("four").replace("[kernel]\n", "[kernel]\nstall_warning_s = 0\n")
    )
    assert await app.reload("test") is True
    assert app._watchdog is None
    assert app.state.timers.pulse is None
    assert dog._thread is not None
    dog._thread.join(2)
    assert not dog._thread.is_alive()


async def test_the_watchdog_thread_ends_with_the_app(tmp_path: Path) -> None:
    from kernel.app import App

    path = tmp_path / "proxy.toml"
    path.write_text(local_config("x"))
    app = App(path, handle_signals=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run)
        dog = app._watchdog
        assert dog is not None
        assert dog._thread is not None
        assert dog._thread.is_alive()
        app.stop()
    dog._thread.join(2)
    assert not dog._thread.is_alive()
