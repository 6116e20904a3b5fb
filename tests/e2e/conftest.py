"""Process-level fixtures: the proxy as a real ``kernel run`` child process.

``spawn_proxy(toml_text)`` writes the config to ``tmp_path``, starts
``.venv/bin/kernel run -c FILE`` with ``TRELLIS_LOG=warning`` (stderr goes to a
file, so a chatty child can never block on a full pipe) and waits until the
proxy answers HTTP. Every process it starts is killed by PID and reaped when
the test ends, whatever happened.

Ports: ``127.0.0.1:0`` cannot be seen from outside the child, so
:func:`tests.helpers.sockets.free_port` binds a socket to port 0, closes it
and hands out the number (never the same one twice in a test process).

The upstream (``tests/helpers/upstream.py``) runs in the test's own trio loop
(the ``upstream`` fixture of ``tests/conftest.py``), so tests can count the
connections and requests it saw.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import pytest
import trio

from tests.helpers import client as client_helpers
from tests.helpers.sockets import free_port

ROOT = Path(__file__).resolve().parents[2]
KERNEL = str(Path(sys.executable).with_name("kernel"))
#: How long a fresh process may take to start answering.
START_TIMEOUT = 15.0


def proxy_config(
    upstream_port: int,
    port: int,
    *,
    http1: str = "h11",
    grace: float = 5.0,
    kernel_extra: str = "",
    extra: str = "",
) -> str:
    """A reverse proxy on ``port`` in front of the test upstream, one codec on both sides."""
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = {grace}
{kernel_extra}

[server]
http1 = "{http1}"

[upstream]
http1 = "{http1}"

[[listeners]]
name = "main"
bind = "127.0.0.1:{port}"

[[routes]]
name = "default"
upstream = "http://127.0.0.1:{upstream_port}"
{extra}
"""


def _status(pid: int, name: bytes, task: int | None = None) -> int:
    """The number after ``name:`` in ``/proc/PID/status`` (or a thread's, ``task``)."""
    path = f"/proc/{pid}/status" if task is None else f"/proc/{pid}/task/{task}/status"
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(name + b":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {name.decode()} for {pid}")


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (``VmRSS`` in ``/proc/PID/status``)."""
    return _status(pid, b"VmRSS") * 1024


def sleeps(pid: int) -> int:
    """How many times the process's threads went to sleep (voluntary switches), summed."""
    return sum(
        _status(pid, b"voluntary_ctxt_switches", int(task))
        for task in os.listdir(f"/proc/{pid}/task")
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProxyProcess:
    """One ``kernel`` child process and what it wrote to stderr."""

    def __init__(self, proc: trio.Process, port: int, config: Path, stderr_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.config = config
        self.stderr_path = stderr_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        """The exit code, failing the test if the process runs past ``timeout``."""
        with trio.fail_after(timeout):
            return await self.proc.wait()

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the proxy answers an HTTP request (any status).

        A bare TCP accept is not enough: the kernel binds before its signal
        handlers are installed, and a connection is accepted by the OS as soon
        as the socket listens. A request that is refused locally (no Host
        field: 400) proves the serving tasks run, without touching the upstream.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                raise AssertionError(
                    f"proxy exited with {self.proc.returncode} before serving:\n{self.stderr()}"
                )
            try:
                with trio.fail_after(2):
                    reply = await exchange_raw(self.port, b"GET / HTTP/1.1\r\n\r\n")
                if reply.startswith(b"HTTP/1.1 "):
                    return
            except (OSError, trio.TooSlowError, trio.BrokenResourceError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"proxy not ready after {timeout}s:\n{self.stderr()}")
            await trio.sleep(0.05)

    async def kill(self) -> None:
        """Kill (if still running) and reap, by PID; safe to call twice."""
        with trio.CancelScope(shield=True):
            if self.proc.returncode is None:
                self.proc.kill()
            with trio.move_on_after(10):
                await self.proc.wait()


async def exchange_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` (without half-closing) and read until the server closes."""
    return await client_helpers.exchange(port, data, half_close=False)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment minus any ``TRELLIS_*`` of the caller's, plus ``extra``.

    The scenario configs' metrics and health listeners get free ports and
    their traffic logs a directory of the test session's, so that children
    never collide on 9090/8081 nor write into the repository's ``logs/``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    env["TRELLIS_LOG"] = "warning"
    env["TRELLIS_METRICS_LISTEN"] = f"127.0.0.1:{free_port()}"
    env["TRELLIS_HEALTH_LISTEN"] = f"127.0.0.1:{free_port()}"
    env["TRELLIS_LOG_DIR"] = str(session_log_dir())
    env.update(extra or {})
    return env


_LOG_DIR: list[Path] = []


def session_log_dir() -> Path:
    """A directory for the traffic logs of this test session's child proxies."""
    if not _LOG_DIR:
        path = Path(tempfile.mkdtemp(prefix="trellis-test-logs-"))
        atexit.register(shutil.rmtree, path, True)
        _LOG_DIR.append(path)
    return _LOG_DIR[0]


async def start_process(
    args: Sequence[str],
    *,
    stderr_path: Path,
    env: Mapping[str, str] | None = None,
) -> trio.Process:
    """Start a child with stdout/stderr into ``stderr_path`` (appending)."""
    full_env = child_env(env)
    with stderr_path.open("ab") as err:
        return await trio.lowlevel.open_process(
            list(args), stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=full_env, cwd=ROOT
        )


SpawnProxy = Callable[..., Awaitable[ProxyProcess]]


@pytest.fixture
async def spawn_proxy(tmp_path: Path) -> AsyncIterator[SpawnProxy]:
    """Start ``kernel run`` children; every one is killed and reaped at teardown."""
    started: list[ProxyProcess] = []
    counter = 0

    async def spawn(
        toml_text: str | None = None,
        *,
        port: int,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready: bool = True,
    ) -> ProxyProcess:
        nonlocal counter
        counter += 1
        if config is None:
            assert toml_text is not None
            config = tmp_path / f"proxy{counter}.toml"
            config.write_text(toml_text)
        stderr_path = tmp_path / f"proxy{counter}.stderr"
        proc = await start_process(
            [KERNEL, "run", "-c", str(config)], stderr_path=stderr_path, env=env
        )
        p = ProxyProcess(proc, port, config, stderr_path)
        started.append(p)
        if ready:
            await p.wait_ready()
        return p

    try:
        yield spawn
    finally:
        for p in started:
            await p.kill()


async def run_kernel(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> tuple[int, str, str]:
    """``kernel ARGS`` to completion: (exit code, stdout, stderr)."""
    full_env = child_env(env)
    with trio.fail_after(timeout):
        done = await trio.run_process(
            [KERNEL, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=full_env,
            cwd=ROOT,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()
