"""Reloads (kernel/reload.py): the requests and the config watcher, an empty
file refused, listeners bound and swapped, the settings read only at start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers.appconfig import get_body, local_config, until_generation, watched_config


async def test_a_reload_names_the_settings_read_only_at_start(
    start_proxy: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``log_level``, ``log_format`` and ``workers`` are read when the process
    starts: a reload that changes them says so, rather than only "is live"."""
    app = await start_proxy(local_config("one"))
    changed = local_config("two").replace(
        "[kernel]\n", '[kernel]\nlog_level = "debug"\nlog_format = "json"\n'
    )
    app.config_path.write_text(changed)
    with caplog.at_level(logging.WARNING, logger="kernel.app"):
        assert await app.reload("SIGHUP") is True
    assert await get_body(app.port(), client) == b"two"
    (record,) = [r for r in caplog.records if "only after a restart" in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "reload (SIGHUP)" in message
    assert "[kernel] log_level ('info' -> 'debug')" in message
    assert "[kernel] log_format ('console' -> 'json')" in message
    # Compared with what the process started with: back to it, nothing to say;
    # the same change again, said again.
    caplog.clear()
    for config, warned in ((local_config("three"), False), (changed, True)):
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
    app = await start_proxy(local_config("one"))
    app.config_path.write_text("\n  \n")
    with caplog.at_level(logging.ERROR):
        assert await app.reload("test") is False
    assert f"generation 1 keeps serving: {app.config_path} is empty" in caplog.text
    assert await get_body(app.port(), client) == b"one"


async def test_reload_binds_new_listeners_and_closes_removed(start_proxy: Any, client: Any) -> None:
    app = await start_proxy(local_config("one"))
    old_port = app.port()
    cfg = local_config("two").replace(
        '[[listeners]]\nbind = "127.0.0.1:0"\n',
        '[[listeners]]\nname = "other"\nbind = "127.0.0.1:0"\n',
    )
    app.config_path.write_text(cfg)
    assert await app.reload("test") is True
    new_port = app.port("other")
    assert await get_body(new_port, client) == b"two"
    await trio.sleep(0.05)
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", old_port)


async def test_a_renamed_listener_keeps_its_socket(start_proxy: Any, client: Any) -> None:
    """Same address, new name: the reload takes over the bound socket (binding
    it again would collide with itself)."""
    from tests.helpers.sockets import free_port

    port = free_port()
    app = await start_proxy(local_config("one").replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    app.config_path.write_text(
        local_config("two").replace(
            '[[listeners]]\nbind = "127.0.0.1:0"\n',
            f'[[listeners]]\nname = "public"\nbind = "127.0.0.1:{port}"\n',
        )
    )
    assert await app.reload("test") is True
    assert list(app.listeners) == ["public"]
    assert app.port("public") == port
    assert await get_body(port, client) == b"two"


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
    assert (await get_body(a, client), await get_body(b, client)) == (b"x", b"y")
    app.config_path.write_text(config(b, a))
    assert await app.reload("test") is True
    assert (await get_body(a, client), await get_body(b, client)) == (b"y", b"x")
    assert (app.port("x"), app.port("y")) == (b, a)


async def test_config_file_change_triggers_reload(start_proxy: Any, client: Any) -> None:
    app = await start_proxy(watched_config("one"))
    await trio.sleep(0.3)  # let the watcher start
    app.config_path.write_text(watched_config("two"))
    with trio.fail_after(10):
        while app.generation.number < 2:
            await trio.sleep(0.05)
    assert await get_body(app.port(), client) == b"two"


async def test_a_reload_turns_watching_on_and_off(start_proxy: Any, client: Any) -> None:
    """``watch_config`` used to be read at start only: a reload that turned
    it on or off changed nothing until a restart."""
    app = await start_proxy(local_config("one"))
    app.config_path.write_text(watched_config("two"))
    assert await app.reload("SIGHUP") is True  # watching from now on
    await trio.sleep(0.3)  # let the watcher start
    app.config_path.write_text(local_config("three"))  # seen; turns it off
    await until_generation(app, 3)
    assert await get_body(app.port(), client) == b"three"
    await trio.sleep(0.3)
    app.config_path.write_text(local_config("four"))  # not seen any more
    await trio.sleep(2)
    assert app.generation.number == 3
    assert await get_body(app.port(), client) == b"three"


@pytest.mark.parametrize("how", ["stop", "cancel"])
async def test_config_watcher_does_not_hold_up_the_end(tmp_path: Path, how: str) -> None:
    """The watcher's thread ends within a step of its own, by stop or by cancel.

    It would otherwise keep the app waiting until its rust_timeout (a minute).
    """
    from kernel.app import App
    from kernel.watch import WATCH_STEP_MS, WATCH_TIMEOUT_MS

    path = tmp_path / "proxy.toml"
    path.write_text(watched_config("one"))
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
        app = await start_proxy(watched_config("one"))
        await trio.sleep(0.1)
    assert "watching the config files failed; SIGHUP still reloads" in caplog.text
    assert "OS file watch limit reached" in caplog.text
    assert await get_body(app.port(), client) == b"one"
    app.config_path.write_text(local_config("two"))
    assert await app.reload("test") is True
    assert await get_body(app.port(), client) == b"two"


def test_only_a_blank_readable_file_is_empty(tmp_path: Path) -> None:
    from kernel.reload import config_is_empty

    path = tmp_path / "proxy.toml"
    path.write_text("\n \t\n")
    assert config_is_empty(path)
    path.write_text("# a comment\n")
    assert not config_is_empty(path)
    assert not config_is_empty(tmp_path / "missing.toml")  # the load says what is wrong
