"""The app: generations, reload (good, bad, during a download), file watching."""

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

import attrs
import pytest
import trio

import sdk
from tests.conftest import basic_config


def _respond(body: str) -> str:
    return (
        f'\n[[routes]]\nname = "local"\nplugins = ["respond"]\n[plugins.respond]\nbody = "{body}"\n'
    )


def _local_config(body: str) -> str:
    return '[kernel]\nwatch_config = false\n[[listeners]]\nbind = "127.0.0.1:0"\n' + _respond(body)


def _watched_config(body: str) -> str:
    return _local_config(body).replace("watch_config = false", "watch_config = true")


async def _get(port: int, client: Any, path: str = "/") -> bytes:
    raw = await client.exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
    )
    return client.parse_responses(raw)[0]["body"]


async def test_reload_switches_generation(start_proxy: Any, client: Any, tmp_path: Path) -> None:
    app = await start_proxy(_local_config("one"))
    assert await _get(app.port(), client) == b"one"
    app.config_path.write_text(_local_config("two"))
    assert await app.reload("test") is True
    assert app.generation.number == 2
    assert await _get(app.port(), client) == b"two"


async def test_bad_reload_keeps_old_generation_and_lists_every_problem(
    start_proxy: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start_proxy(_local_config("one"))
    app.config_path.write_text(
        _local_config("two").replace("[kernel]\n", '[kernel]\nplugins = ["nosuch"]\n')
        + "[server]\nmax_body_bytes = -1\nbogus = 1\n"
    )
    with caplog.at_level(logging.ERROR):
        assert await app.reload("test") is False
    assert app.generation.number == 1
    assert await _get(app.port(), client) == b"one"
    text = caplog.text
    assert "generation 1 keeps serving" in text
    assert "$.server.max_body_bytes" in text
    assert "$.server.bogus" in text


async def test_a_reload_names_the_settings_read_only_at_start(
    start_proxy: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``log_level``, ``log_format`` and ``workers`` are read when the process
    starts: a reload that changes them says so, rather than only "is live"."""
    app = await start_proxy(_local_config("one"))
    changed = _local_config("two").replace(
        "[kernel]\n", '[kernel]\nlog_level = "debug"\nlog_format = "json"\n'
    )
    app.config_path.write_text(changed)
    with caplog.at_level(logging.WARNING, logger="kernel.app"):
        assert await app.reload("SIGHUP") is True
    assert await _get(app.port(), client) == b"two"
    (record,) = [r for r in caplog.records if "only after a restart" in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "reload (SIGHUP)" in message
    assert "[kernel] log_level ('info' -> 'debug')" in message
    assert "[kernel] log_format ('console' -> 'json')" in message
    # Compared with what the process started with: back to it, nothing to say;
    # the same change again, said again.
    caplog.clear()
    for config, warned in ((_local_config("three"), False), (changed, True)):
        app.config_path.write_text(config)
        with caplog.at_level(logging.WARNING, logger="kernel.app"):
            assert await app.reload("test") is True
        assert ("only after a restart" in caplog.text) is warned, caplog.text
        caplog.clear()


async def test_a_reload_to_an_empty_file_is_refused(
    start_proxy: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty file is a valid config (every default), but on a reload it is
    almost always a save caught half-way."""
    app = await start_proxy(_local_config("one"))
    app.config_path.write_text("\n  \n")
    with caplog.at_level(logging.ERROR):
        assert await app.reload("test") is False
    assert f"generation 1 keeps serving: {app.config_path} is empty" in caplog.text
    assert await _get(app.port(), client) == b"one"


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
            _local_config("after").replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{port}"')
        )
        assert await app.reload("test") is True
        assert await _get(port, client) == b"after"
        got = len(first)
        while chunk := await stream.receive_some(1 << 20):
            got += len(chunk)
    head_len = first.index(b"\r\n\r\n") + 4
    assert got - head_len == size


async def test_reload_binds_new_listeners_and_closes_removed(start_proxy: Any, client: Any) -> None:
    app = await start_proxy(_local_config("one"))
    old_port = app.port()
    cfg = _local_config("two").replace(
        '[[listeners]]\nbind = "127.0.0.1:0"\n',
        '[[listeners]]\nname = "other"\nbind = "127.0.0.1:0"\n',
    )
    app.config_path.write_text(cfg)
    assert await app.reload("test") is True
    new_port = app.port("other")
    assert await _get(new_port, client) == b"two"
    await trio.sleep(0.05)
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", old_port)


async def test_a_renamed_listener_keeps_its_socket(start_proxy: Any, client: Any) -> None:
    """Same address, new name: the reload takes over the bound socket (binding
    it again would collide with itself)."""
    from tests.helpers.sockets import free_port

    port = free_port()
    app = await start_proxy(_local_config("one").replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    app.config_path.write_text(
        _local_config("two").replace(
            '[[listeners]]\nbind = "127.0.0.1:0"\n',
            f'[[listeners]]\nname = "public"\nbind = "127.0.0.1:{port}"\n',
        )
    )
    assert await app.reload("test") is True
    assert list(app.listeners) == ["public"]
    assert app.port("public") == port
    assert await _get(port, client) == b"two"


def _two_listeners(second: str, port: int) -> str:
    """Listener "a" answers "open"; listener ``second`` on ``port`` has a
    route whose chain denies (403)."""
    return (
        "[kernel]\nwatch_config = false\n"
        '[[listeners]]\nname = "a"\nbind = "127.0.0.1:0"\ndefault_route = "open"\n'
        f'[[listeners]]\nname = "{second}"\nbind = "127.0.0.1:{port}"\n'
        'default_route = "guarded"\n'
        '[[routes]]\nname = "open"\nplugins = ["respond.ok"]\n'
        '[[routes]]\nname = "guarded"\nplugins = ["respond.deny"]\n'
        '[plugins.respond.ok]\nbody = "open"\n'
        '[plugins.respond.deny]\nstatus = 403\nbody = "denied"\n'
    )


async def _keep_alive_get(stream: trio.SocketStream) -> bytes:
    """One request on a kept connection; the whole answer ("" if closed)."""
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    got = b""
    with trio.fail_after(5):
        while not (b"\r\n\r\n" in got and got.endswith((b"open", b"denied", b"</html>\n"))):
            data = await stream.receive_some(65536)
            if not data:
                break
            got += data
    return got


async def test_a_removed_listener_s_connections_never_borrow_another_chain(
    start_proxy: Any,
) -> None:
    """Before, a kept connection of a removed listener went on, served with
    another listener's routing chain: the route's plugins (here a deny)
    never ran. Now its next request gets 503 and the connection closes."""
    from tests.helpers.sockets import free_port

    port = free_port()
    app = await start_proxy(_two_listeners("b", port))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        assert b" 403 " in await _keep_alive_get(stream)
        cfg = _two_listeners("b", port).split('[[listeners]]\nname = "b"')[0]
        cfg += '[[routes]]\nname = "open"\nplugins = ["respond.ok"]\n'
        cfg += '[plugins.respond.ok]\nbody = "open"\n'
        app.config_path.write_text(cfg)
        assert await app.reload("test") is True
        answer = await _keep_alive_get(stream)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nconnection: close\r\n" in answer.lower()  # says what it does
        with trio.fail_after(5):
            assert await stream.receive_some(65536) == b""  # closed


async def test_a_renamed_listener_s_connections_go_on_under_its_new_name(
    start_proxy: Any,
) -> None:
    from tests.helpers.sockets import free_port

    port = free_port()
    app = await start_proxy(_two_listeners("b", port))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        assert b" 403 " in await _keep_alive_get(stream)
        app.config_path.write_text(_two_listeners("c", port))
        assert await app.reload("test") is True
        for _ in range(2):
            assert b" 403 " in await _keep_alive_get(stream)  # the route's chain still runs


async def test_two_listeners_can_swap_ports(start_proxy: Any, client: Any) -> None:
    from tests.helpers.sockets import free_port

    a, b = free_port(), free_port()

    def config(port_x: int, port_y: int) -> str:
        return (
            "[kernel]\nwatch_config = false\n"
            f'[[listeners]]\nname = "x"\nbind = "127.0.0.1:{port_x}"\ndefault_route = "rx"\n'
            f'[[listeners]]\nname = "y"\nbind = "127.0.0.1:{port_y}"\ndefault_route = "ry"\n'
            '[[routes]]\nname = "rx"\nplugins = ["respond.x"]\n'
            '[[routes]]\nname = "ry"\nplugins = ["respond.y"]\n'
            '[plugins.respond.x]\nbody = "x"\n[plugins.respond.y]\nbody = "y"\n'
        )

    app = await start_proxy(config(a, b))
    assert (await _get(a, client), await _get(b, client)) == (b"x", b"y")
    app.config_path.write_text(config(b, a))
    assert await app.reload("test") is True
    assert (await _get(a, client), await _get(b, client)) == (b"y", b"x")
    assert (app.port("x"), app.port("y")) == (b, a)


async def test_config_file_change_triggers_reload(start_proxy: Any, client: Any) -> None:
    app = await start_proxy(_watched_config("one"))
    await trio.sleep(0.3)  # let the watcher start
    app.config_path.write_text(_watched_config("two"))
    with trio.fail_after(10):
        while app.generation.number < 2:
            await trio.sleep(0.05)
    assert await _get(app.port(), client) == b"two"


async def _until_generation(app: Any, number: int) -> None:
    with trio.fail_after(10):
        while app.generation.number < number:
            await trio.sleep(0.05)


async def test_a_reload_turns_watching_on_and_off(start_proxy: Any, client: Any) -> None:
    """``watch_config`` used to be read at start only: a reload that turned
    it on or off changed nothing until a restart."""
    app = await start_proxy(_local_config("one"))
    app.config_path.write_text(_watched_config("two"))
    assert await app.reload("SIGHUP") is True  # watching from now on
    await trio.sleep(0.3)  # let the watcher start
    app.config_path.write_text(_local_config("three"))  # seen; turns it off
    await _until_generation(app, 3)
    assert await _get(app.port(), client) == b"three"
    await trio.sleep(0.3)
    app.config_path.write_text(_local_config("four"))  # not seen any more
    await trio.sleep(2)
    assert app.generation.number == 3
    assert await _get(app.port(), client) == b"three"


@pytest.mark.parametrize("how", ["stop", "cancel"])
async def test_config_watcher_does_not_hold_up_the_end(tmp_path: Path, how: str) -> None:
    """The watcher's thread ends within a step of its own, by stop or by cancel.

    It would otherwise keep the app waiting until its rust_timeout (a minute).
    """
    from kernel.app import App
    from kernel.watch import WATCH_STEP_MS, WATCH_TIMEOUT_MS

    path = tmp_path / "proxy.toml"
    path.write_text(_watched_config("one"))
    app = App(path, handle_signals=False)
    assert WATCH_TIMEOUT_MS / 1000 > 10 * WATCH_STEP_MS / 1000
    with trio.fail_after(10 * WATCH_STEP_MS / 1000):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await trio.sleep(0.3)  # the watcher's thread is in its wait
            if how == "stop":
                app.stop()
            else:
                nursery.cancel_scope.cancel()


async def test_a_failing_config_watcher_only_stops_the_watching(
    start_proxy: Any, client: Any, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    import watchfiles

    def awatch(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("OS file watch limit reached")

    monkeypatch.setattr(watchfiles, "awatch", awatch)
    with caplog.at_level(logging.ERROR):
        app = await start_proxy(_watched_config("one"))
        await trio.sleep(0.1)
    assert "watching the config files failed; SIGHUP still reloads" in caplog.text
    assert "OS file watch limit reached" in caplog.text
    assert await _get(app.port(), client) == b"one"
    app.config_path.write_text(_local_config("two"))
    assert await app.reload("test") is True
    assert await _get(app.port(), client) == b"two"


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
    cfg = _local_config("one").replace("[kernel]\n", '[kernel]\nplugins = ["fails"]\n')
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
    assert await _get(app.port(), client) == b"one"
    plugin.error = None
    assert await app.reload("test") is True
    assert await _get(app.port(), client) == b"two"


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
    cfg = _local_config("one").replace("[kernel]\n", '[kernel]\nplugins = ["counts"]\n')
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
    assert await _get(app.port(), client) == b"three"
    # The startup that failed was told the number the next good one got.
    assert plugin.numbers == [1, 2, 2]


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
    path.write_text(_local_config("x").replace("[kernel]\n", '[kernel]\nplugins = ["fails"]\n'))
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

    cfg = _local_config("x").replace("[kernel]\n", '[kernel]\nplugins = ["bg"]\n')
    app = await start_proxy(cfg, extra_plugins={"bg": Background()})
    assert events == ["start 1"]
    assert await app.reload("test") is True
    await trio.sleep(0.05)
    assert events == ["start 1", "start 2", "cancelled 1", "shutdown"]


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
    path.write_text(_local_config("one"))
    app = App(path, handle_signals=False, settle_heap=True)
    caplog.set_level(logging.DEBUG, logger="kernel.app")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            assert gc.get_freeze_count() > 0
            first = weakref.ref(app.generation)
            assert await _get(app.port(), client) == b"one"
            path.write_text(_local_config("two"))
            assert await app.reload("test") is True
            with trio.fail_after(5):
                while first() is not None or "generation 1 gone" not in caplog.text:
                    await trio.sleep(0.01)
            # Its plugins and registrations left cycles: collected, not frozen.
            collected = r"generation 1 gone: [1-9]\d* objects in cycles collected"
            assert re.search(collected, caplog.text)
            assert gc.get_freeze_count() > 0  # and the heap frozen again
            assert await _get(app.port(), client) == b"two"
            app.stop()
    finally:
        gc.unfreeze()


async def test_an_embedded_app_leaves_the_collector_alone(start_proxy: Any, client: Any) -> None:
    app = await start_proxy(_local_config("one"))
    assert await _get(app.port(), client) == b"one"
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
    path.write_text(_local_config("one"))
    try:
        early.hold_sighup()
        os.kill(os.getpid(), signal.SIGHUP)  # still starting: nothing listens yet
        app = app_mod.App(path, handle_signals=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await _until_generation(app, 2)
            assert await _get(app.port(), client) == b"one"
            app.stop()
    finally:
        signal.signal(signal.SIGHUP, previous)


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
    cfg = _local_config("x").replace(
        "[kernel]\n",
        '[kernel]\nplugins = ["stubborn"]\nshutdown_grace_s = 0.1\nshutdown_abort_s = 0.3\n',
    )
    path = tmp_path / "proxy.toml"
    path.write_text(cfg)
    app = App(path, handle_signals=False, extra_plugins={"stubborn": stubborn})
    with caplog.at_level(logging.ERROR), trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            nursery.start_soon(_get, app.port(), client)
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


async def test_a_reload_turns_the_loop_watchdog_on_and_off(start_proxy: Any) -> None:
    app = await start_proxy(
        _local_config("one").replace("[kernel]\n", "[kernel]\nstall_warning_s = 0\n")
    )
    assert app._watchdog is None
    app.config_path.write_text(
        _local_config("two").replace("[kernel]\n", "[kernel]\nstall_warning_s = 3\n")
    )
    assert await app.reload("test") is True
    dog = app._watchdog
    assert dog is not None
    assert dog.threshold == 3
    assert app.state.timers.pulse is dog
    app.config_path.write_text(_local_config("three"))  # the default: 1 s
    assert await app.reload("test") is True
    assert app._watchdog is dog
    assert dog.threshold == 1
    app.config_path.write_text(
        _local_config("four").replace("[kernel]\n", "[kernel]\nstall_warning_s = 0\n")
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
    path.write_text(_local_config("x"))
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


async def _serve(app: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    assert await app.run(task_status=task_status) == 0


async def test_a_worker_shares_its_generations_and_a_restarted_one_starts_from_the_newest(
    nursery: trio.Nursery, client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under ``[server] workers`` (kernel/snapshot.py): each generation that
    goes live is written for the set, and a worker that starts from the set's
    newest runs it with its number, whatever the file says now; one that does
    not load leaves the worker to the file, said with a warning."""
    from kernel import snapshot
    from kernel.app import App

    snaps = tmp_path / "set"
    snaps.mkdir()
    path = tmp_path / "proxy.toml"
    path.write_text(_local_config("one"))
    first = App(path, handle_signals=False, environ={}, snapshots=snaps)
    await nursery.start(_serve, first)
    (snap,), _ = snapshot.scan(snaps)
    assert (snap.worker, snap.generation) == (0, 1)
    path.write_text(
        _local_config("two").replace("watch_config", "shutdown_grace_s = 3\nwatch_config")
    )
    assert await first.reload("test") is True
    path.write_text(_local_config("three") + "\n[kernel\n")
    assert await first.reload("test") is False  # refused: nothing written
    found, _ = snapshot.scan(snaps)
    start = snapshot.newest(found)
    assert start is not None
    assert (start.generation, start.shutdown_grace_s) == (2, 3)

    with caplog.at_level(logging.INFO, logger="kernel.app"):
        second = App(
            path, handle_signals=False, environ={}, snapshots=snaps, worker=1, start_from=start
        )
        await nursery.start(_serve, second)
    assert second.generation.number == 2
    assert await _get(second.port(), client) == b"two"
    assert "starting from the set's generation 2 (worker 0's snapshot)" in caplog.text
    found, _ = snapshot.scan(snaps)
    assert sorted((s.worker, s.generation) for s in found) == [(0, 2), (1, 2)]
    # It goes on from there: its next reload is generation 3, as its sibling's.
    path.write_text(_local_config("four"))
    assert await second.reload("test") is True
    assert second.generation.number == 3
    assert await _get(second.port(), client) == b"four"

    # A snapshot that does not load here: the file, numbered as at a first start.
    broken = attrs.evolve(
        start,
        document=attrs.evolve(
            start.document, data={**start.document.data, "kernel": {"plugins": ["nosuch"]}}
        ),
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kernel.app"):
        third = App(
            path, handle_signals=False, environ={}, snapshots=snaps, worker=2, start_from=broken
        )
        await nursery.start(_serve, third)
    assert third.generation.number == 1
    assert await _get(third.port(), client) == b"four"
    assert "the set's generation 2 (worker 0's snapshot) does not load here" in caplog.text
    assert "nosuch" in caplog.text
    for app in (first, second, third):
        app.stop()
