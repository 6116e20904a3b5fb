"""Signals and exit codes of a real ``kernel run`` process.

SIGTERM and SIGINT drain: the listener closes at once (new connections are
refused), flows in flight finish within ``shutdown_grace_s``, and the process
exits 0; past the grace period what is left is cut, and code that ignores
that cancellation is abandoned ``shutdown_abort_s`` later (exit 4, naming
it). With ``shutdown_delay_s`` the listeners first keep serving that long
while ``/ready`` says 503 (a second signal ends the delay). SIGHUP reloads:
a bad config is reported with every problem and the old generation keeps
serving; a good one serves the next requests. Exit codes: 1
for a config error, 2 for a bind failure, 3 for a storage error, 4 for a
shutdown cut (ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.conftest import (
    ROOT,
    ProxyProcess,
    SpawnProxy,
    exchange_raw,
    free_port,
    proxy_config,
    run_kernel,
)
from tests.helpers import client
from tests.helpers.upstream import Upstream

pytestmark = pytest.mark.slow


async def get(port: int, path: str = "/") -> tuple[int, bytes]:
    raw = await client.exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n".encode()
    )
    (resp,) = client.parse_responses(raw)
    return resp["status"], resp["body"]


async def wait_for_request(upstream: Any, target: str, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not any(r["target"] == target for r in upstream.requests):
            await trio.sleep(0.01)


async def wait_refused(proxy: ProxyProcess, timeout: float = 3.0) -> None:
    """Wait until connecting to the proxy fails (its listener is closed)."""
    with trio.fail_after(timeout):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            except OSError:
                return
            await stream.aclose()
            await trio.sleep(0.01)


async def read_all(stream: trio.SocketStream) -> bytes:
    """Everything until EOF; a reset counts as the end."""
    out = b""
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return out
        if not chunk:
            return out
        out += chunk


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_drain_finishes_in_flight_and_refuses_new(
    spawn_proxy: SpawnProxy, upstream: Any, signum: signal.Signals
) -> None:
    port = free_port()
    proxy = await spawn_proxy(proxy_config(upstream.port, port, grace=5), port=port)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /sleep/1 HTTP/1.1\r\nHost: e2e\r\n\r\n")
        await wait_for_request(upstream, "/sleep/1")
        proxy.signal(signum)
        t0 = time.monotonic()
        await wait_refused(proxy)
        assert proxy.returncode is None, "the process must still be draining"
        assert time.monotonic() - t0 < 0.9, "the listener must close before the flow ends"
        with trio.fail_after(5):
            raw = await read_all(stream)
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 200
    assert resp["body"] == b"slept\n"
    # A keep-alive connection is not kept once the drain began.
    assert resp["headers"].get("connection") == "close"
    assert await proxy.wait(timeout=5) == 0
    assert "Traceback" not in proxy.stderr()


def lame_duck_config(upstream_port: int, port: int, health_port: int, delay: float) -> str:
    """:func:`proxy_config` with ``shutdown_delay_s`` and the health plugin on a listener."""
    return proxy_config(
        upstream_port,
        port,
        kernel_extra=f'shutdown_delay_s = {delay}\nplugins = ["health"]',
        extra=f"""
[[listeners]]
name = "health"
bind = "127.0.0.1:{health_port}"

[plugins.health]
listener = "health"
""",
    )


async def ready(health_port: int) -> tuple[int, dict[str, Any]]:
    raw = await client.exchange(
        health_port, b"GET /ready HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n"
    )
    (resp,) = client.parse_responses(raw)
    return resp["status"], json.loads(resp["body"])


async def test_shutdown_delay_keeps_serving_while_not_ready(
    spawn_proxy: SpawnProxy, upstream: Any
) -> None:
    port, health_port = free_port(), free_port()
    proxy = await spawn_proxy(lame_duck_config(upstream.port, port, health_port, 1), port=port)
    status, doc = await ready(health_port)
    assert status == 200, doc
    assert doc["checks"]["draining"] == {"ok": True, "detail": "not draining"}
    # A keep-alive connection, idle when the signal comes.
    idle = await trio.open_tcp_stream("127.0.0.1", port)
    async with idle:
        await idle.send_all(b"GET /one HTTP/1.1\r\nHost: e2e\r\n\r\n")
        with trio.fail_after(5):
            first = b""
            while b"\r\n\r\n" not in first:
                first += await idle.receive_some(65536)
        assert b"connection: close" not in first.lower()

        proxy.signal(signal.SIGTERM)
        t0 = time.monotonic()
        await trio.sleep(0.1)
        # Not ready, and saying so on the health listener, which still serves.
        status, doc = await ready(health_port)
        assert status == 503, doc
        assert doc["checks"]["draining"] == {"ok": False, "detail": "draining"}
        # The main listener still accepts and answers; a keep-alive request
        # gets its answer with Connection: close (the server closes: no hang).
        raw = await exchange_raw(port, b"GET /two HTTP/1.1\r\nHost: e2e\r\n\r\n")
        (resp,) = client.parse_responses(raw)
        assert resp["status"] == 200
        assert resp["headers"].get("connection") == "close"
        # So does the connection that was idle: one more answer, then closed.
        await idle.send_all(b"GET /three HTTP/1.1\r\nHost: e2e\r\n\r\n")
        with trio.fail_after(5):
            raw = await read_all(idle)
        (resp,) = client.parse_responses(raw)
        assert resp["status"] == 200
        assert resp["headers"].get("connection") == "close"
        assert time.monotonic() - t0 < 0.9, "all of that within the delay"
        assert proxy.returncode is None

    await wait_refused(proxy)
    assert time.monotonic() - t0 >= 0.9, "the listener must serve for the whole delay"
    assert await proxy.wait(timeout=5) == 0
    assert [r["target"] for r in upstream.requests] == ["/one", "/two", "/three"]
    assert "Traceback" not in proxy.stderr()


async def test_a_second_signal_ends_the_shutdown_delay(
    spawn_proxy: SpawnProxy, upstream: Any
) -> None:
    port, health_port = free_port(), free_port()
    proxy = await spawn_proxy(lame_duck_config(upstream.port, port, health_port, 30), port=port)
    proxy.signal(signal.SIGTERM)
    with trio.fail_after(5):
        while (await ready(health_port))[0] != 503:
            await trio.sleep(0.02)
    assert (await get(port, "/still"))[0] == 200
    proxy.signal(signal.SIGTERM)
    await wait_refused(proxy)
    assert await proxy.wait(timeout=5) == 0
    assert "ending shutdown_delay_s" in proxy.stderr()


async def test_grace_period_cuts_what_is_left(spawn_proxy: SpawnProxy, upstream: Any) -> None:
    port = free_port()
    proxy = await spawn_proxy(proxy_config(upstream.port, port, grace=0.5), port=port)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /sleep/5 HTTP/1.1\r\nHost: e2e\r\n\r\n")
        await wait_for_request(upstream, "/sleep/5")
        proxy.signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = await proxy.wait(timeout=5)
        elapsed = time.monotonic() - t0
        with trio.fail_after(2):
            raw = await read_all(stream)
    assert code == 0, proxy.stderr()
    assert 0.4 <= elapsed < 2.0, f"exited {elapsed:.2f}s after SIGTERM with a 0.5 s grace"
    assert raw == b"", "the client must see the connection cut, not a response"
    assert "grace period over" in proxy.stderr()


#: Plugins that ignore their cancellation, as a module of their own on the
#: child's path (``[kernel.modules]``).
STUBBORN = """
import logging

import trio

import sdk


async def ignore_cancellation():
    logging.getLogger("stubborn").warning("stubborn code runs")
    while True:
        try:
            await trio.sleep(1)
        except trio.Cancelled:
            pass


class StubbornFlow:
    @sdk.hookimpl
    async def trellis_request(self, flow):
        if flow.request.path == "/stubborn":
            await ignore_cancellation()


class StubbornTask:
    @sdk.hookimpl
    def trellis_startup(self, context):
        context.start_soon(ignore_cancellation)
"""


def stubborn(
    tmp_path: Path, upstream_port: int, port: int, kind: str, *, abort: float, grace: float = 0.5
) -> tuple[str, dict[str, str]]:
    """A config whose plugin ``stubborn`` is ``Stubborn<kind>``, and the env to find it."""
    (tmp_path / "stubborn_plugins.py").write_text(STUBBORN)
    toml = proxy_config(
        upstream_port,
        port,
        grace=grace,
        kernel_extra=f'shutdown_abort_s = {abort}\nplugins = ["stubborn"]',
        extra=f"""
[kernel.modules]
stubborn = "stubborn_plugins:Stubborn{kind}"

[kernel.policy.stubborn]
deadline_s = 60
""",
    )
    # The tested tree first (not the one the venv has installed), as for ours.
    path = os.pathsep.join([str(ROOT), str(tmp_path)])
    return toml, {"PYTHONPATH": path}


async def test_a_flow_that_ignores_its_cancellation_cannot_hold_the_shutdown(
    spawn_proxy: SpawnProxy, upstream: Any, tmp_path: Path
) -> None:
    """Before, the process kept running (spinning) until SIGKILL."""
    port = free_port()
    toml, env = stubborn(tmp_path, upstream.port, port, "Flow", abort=1)
    proxy = await spawn_proxy(toml, port=port, env=env)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /stubborn HTTP/1.1\r\nHost: e2e\r\n\r\n")
        await wait_stderr(proxy, "stubborn code runs")
        proxy.signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = await proxy.wait(timeout=10)
        elapsed = time.monotonic() - t0
        with trio.fail_after(2):
            assert await read_all(stream) == b""
    err = proxy.stderr()
    assert code == 4, err
    # 0.5 s of grace, then 1 s for what was cancelled.
    assert 1.4 <= elapsed < 3.5, f"exited {elapsed:.2f}s after SIGTERM"
    (line,) = [x for x in err.splitlines() if "shutdown cut" in x]
    assert "shutdown cut 1s (shutdown_abort_s) after cancelling, with 1 flow(s) left" in line
    assert "exiting with code 4; still running:" in line
    # Which plugin, in which hook, for which flow, and where it is.
    # Which plugin, in which hook, for which flow, and where it is: only
    # that (the generation that waits for the flow is not listed).
    said = err[err.index(line) :].splitlines()[1:]
    assert len(said) == 1, said
    assert re.fullmatch(
        r"  plugin 'stubborn' in trellis_request \(flow [0-9a-f-]+\),"
        r" at .*stubborn_plugins\.py:\d+ in ignore_cancellation",
        said[0],
    )
    assert "Traceback" not in err


async def test_a_plugin_task_that_ignores_its_cancellation_cannot_hold_the_shutdown(
    spawn_proxy: SpawnProxy, upstream: Any, tmp_path: Path
) -> None:
    """A background task (``StartupContext.start_soon``) held the generation,
    and so the process, the same way."""
    port = free_port()
    toml, env = stubborn(tmp_path, upstream.port, port, "Task", abort=1)
    proxy = await spawn_proxy(toml, port=port, env=env)
    await wait_stderr(proxy, "stubborn code runs")
    proxy.signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = await proxy.wait(timeout=10)
    elapsed = time.monotonic() - t0
    err = proxy.stderr()
    assert code == 4, err
    assert 0.9 <= elapsed < 3.0, f"exited {elapsed:.2f}s after SIGTERM"
    said = err[err.index("shutdown cut") :].splitlines()
    assert "with 0 flow(s) left" in said[0]
    assert re.fullmatch(
        r"  background task ignore_cancellation of generation 1,"
        r" at .*stubborn_plugins\.py:\d+ in ignore_cancellation",
        said[1],
    )


async def test_a_signal_after_the_cancel_exits_at_once(
    spawn_proxy: SpawnProxy, upstream: Any, tmp_path: Path
) -> None:
    port = free_port()
    toml, env = stubborn(tmp_path, upstream.port, port, "Flow", abort=30, grace=0.2)
    proxy = await spawn_proxy(toml, port=port, env=env)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /stubborn HTTP/1.1\r\nHost: e2e\r\n\r\n")
        await wait_stderr(proxy, "stubborn code runs")
        proxy.signal(signal.SIGTERM)
        await wait_stderr(proxy, "grace period over")
        proxy.signal(signal.SIGTERM)
        code = await proxy.wait(timeout=5)
    err = proxy.stderr()
    assert code == 4, err
    assert re.search(r"shutdown cut by SIGTERM [\d.]+s after cancelling, with 1 flow\(s\)", err)
    assert "plugin 'stubborn' in trellis_request" in err


RESPOND = """
[kernel]
watch_config = false
shutdown_grace_s = 2

[[listeners]]
name = "main"
bind = "127.0.0.1:{port}"

[[routes]]
name = "default"
plugins = ["respond"]

[plugins.respond]
body = "{body}"
"""

#: Problems the loader finds ([kernel], [server], [[listeners]]), each with its path.
BAD_SETTINGS = """
[kernel]
watch_config = false
no_such_key = 1

[server]
keepalive_timeout_s = -1

[[listeners]]
name = "main"
bind = "127.0.0.1:{port}"
http1 = "h3"

[[routes]]
name = "default"
plugins = ["respond"]

[plugins.respond]
body = "broken"
"""
SETTINGS_PROBLEMS = ("$.kernel.no_such_key", "$.server.keepalive_timeout_s", "$.listeners[0].http1")

#: Problems only the plugin host finds (its own table).
BAD_PLUGIN = RESPOND.replace("[plugins.respond]", "[plugins.respond]\nstatus = 9\nbogus = true")
PLUGIN_PROBLEMS = ("$.plugins.respond.status", "$.plugins.respond.bogus")


async def wait_stderr(
    proxy: ProxyProcess, text: str, *, after: int = 0, timeout: float = 5.0
) -> str:
    """The child's stderr from offset ``after``, once it contains ``text``."""
    with trio.fail_after(timeout):
        while text not in (err := proxy.stderr()[after:]):
            await trio.sleep(0.02)
    return err


async def test_sighup_with_a_bad_config_keeps_serving_then_a_good_one_applies(
    spawn_proxy: SpawnProxy, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "hup.toml"
    config.write_text(RESPOND.format(port=port, body="one"))
    proxy = await spawn_proxy(config=config, port=port)
    assert await get(port) == (200, b"one")

    for bad, problems in ((BAD_SETTINGS, SETTINGS_PROBLEMS), (BAD_PLUGIN, PLUGIN_PROBLEMS)):
        config.write_text(bad.format(port=port, body="broken"))
        mark = len(proxy.stderr())
        proxy.signal(signal.SIGHUP)
        err = await wait_stderr(proxy, "rejected", after=mark)
        assert "generation 1 keeps serving" in err
        for path in problems:
            assert path in err, f"{path} missing from:\n{err}"
        assert await get(port) == (200, b"one")
        assert proxy.returncode is None

    config.write_text(RESPOND.format(port=port, body="two"))
    proxy.signal(signal.SIGHUP)
    with trio.fail_after(5):
        while (got := await get(port)) != (200, b"two"):
            assert got == (200, b"one")
            await trio.sleep(0.02)
    proxy.signal(signal.SIGTERM)
    assert await proxy.wait(timeout=5) == 0


async def test_sighup_switches_the_route_upstream(
    spawn_proxy: SpawnProxy, upstream: Any, nursery: trio.Nursery, tmp_path: Path
) -> None:
    other = await nursery.start(Upstream().serve)
    port = free_port()
    config = tmp_path / "hup.toml"
    config.write_text(proxy_config(upstream.port, port))
    proxy = await spawn_proxy(config=config, port=port)
    assert (await get(port, "/echo?n=1"))[0] == 200
    assert [r["target"] for r in upstream.requests] == ["/echo?n=1"]

    config.write_text(proxy_config(other.port, port))
    proxy.signal(signal.SIGHUP)
    with trio.fail_after(5):
        n = 1
        while not other.requests:
            n += 1
            assert (await get(port, f"/echo?n={n}"))[0] == 200
            await trio.sleep(0.02)
    # Once switched, every new request goes to the new upstream.
    before = len(upstream.requests)
    for i in range(3):
        assert (await get(port, f"/echo?after={i}"))[0] == 200
    assert len(upstream.requests) == before
    assert [r["target"] for r in other.requests][-3:] == [f"/echo?after={i}" for i in range(3)]


async def test_kernel_run_freezes_its_heap_and_collects_a_retired_generation(
    spawn_proxy: SpawnProxy, upstream: Any, tmp_path: Path
) -> None:
    """``kernel run`` owns its process, so it freezes the long-lived heap
    (kernel/heap.py); a reload's retired generation is collected anyway."""
    port = free_port()
    config = tmp_path / "heap.toml"
    config.write_text(proxy_config(upstream.port, port))
    proxy = await spawn_proxy(config=config, port=port, env={"TRELLIS_LOG": "debug"})
    assert (await get(port, "/"))[0] == 200
    assert re.search(r"heap frozen: [1-9]\d{3,} objects", proxy.stderr())
    proxy.signal(signal.SIGHUP)  # the same config: still a new generation
    with trio.fail_after(10):
        while "generation 1 gone" not in proxy.stderr():
            await trio.sleep(0.05)
    assert re.search(r"generation 1 gone: [1-9]\d* objects in cycles collected", proxy.stderr())
    assert (await get(port, "/"))[0] == 200


@pytest.mark.parametrize(
    ("bad", "problems"),
    [(BAD_SETTINGS, SETTINGS_PROBLEMS), (BAD_PLUGIN, PLUGIN_PROBLEMS)],
    ids=["settings", "plugin"],
)
async def test_config_error_exits_1_listing_every_problem(
    tmp_path: Path, bad: str, problems: tuple[str, ...]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(bad.format(port=free_port(), body="x"))
    code, _, err = await run_kernel("run", "-c", str(config))
    assert code == 1, err
    for path in problems:
        assert path in err, f"{path} missing from:\n{err}"
    assert "Traceback" not in err


async def test_settings_and_plugin_problems_are_listed_together(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        BAD_SETTINGS.format(port=free_port()).replace(
            '[plugins.respond]\nbody = "broken"', "[plugins.respond]\nstatus = 9\nbogus = true"
        )
    )
    code, _, err = await run_kernel("run", "-c", str(config))
    assert code == 1, err
    for path in SETTINGS_PROBLEMS + PLUGIN_PROBLEMS:
        assert path in err, f"{path} missing from:\n{err}"


async def test_port_in_use_exits_2(tmp_path: Path, upstream: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "busy.toml"
        config.write_text(proxy_config(upstream.port, port))
        code, _, err = await run_kernel("run", "-c", str(config))
    assert code == 2, err
    assert f"127.0.0.1:{port}" in err


async def test_an_unusable_log_directory_exits_3(tmp_path: Path) -> None:
    """config/reverse.toml's traffic log cannot make its directory: a storage error."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {
        "TRELLIS_LISTEN": f"127.0.0.1:{free_port()}",
        "TRELLIS_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "TRELLIS_HEALTH_LISTEN": f"127.0.0.1:{free_port()}",
        "TRELLIS_LOG_DIR": str(blocker / "logs"),
    }
    config = Path(__file__).resolve().parents[2] / "config" / "reverse.toml"
    code, _, err = await run_kernel("run", "-c", str(config), env=env)
    assert code == 3, err
    assert "failed to start: NotADirectoryError" in err
    assert "Traceback" not in err
