"""kernel.supervisor's pure parts (the process behaviour is in tests/e2e/test_workers.py)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import trio

from kernel.supervisor import (
    WORKER_ENV,
    WORKERS_ENV,
    Supervisor,
    _describe,
    worker_argv,
    worker_identity,
)


def test_worker_identity() -> None:
    assert worker_identity({}) == (0, 1)
    assert worker_identity({WORKER_ENV: "2", WORKERS_ENV: "4"}) == (2, 4)
    assert worker_identity({WORKER_ENV: "x"}) == (0, 1)
    assert worker_identity({WORKER_ENV: "1", WORKERS_ENV: "0"}) == (1, 1)


def test_worker_argv_runs_this_python() -> None:
    assert worker_argv(["run", "-c", "x.toml"]) == [
        sys.executable,
        "-m",
        "kernel",
        "run",
        "-c",
        "x.toml",
    ]


def test_describe_exit() -> None:
    assert _describe(3) == "exit code 3"
    assert _describe(-signal.SIGKILL) == "signal SIGKILL"
    assert _describe(-200) == "signal 200"


def test_supervisor_pid_comes_from_the_environment(monkeypatch: Any) -> None:
    import os

    from kernel.supervisor import SUPERVISOR_ENV, supervisor_pid

    monkeypatch.setenv(SUPERVISOR_ENV, "4242")
    assert supervisor_pid() == 4242
    monkeypatch.delenv(SUPERVISOR_ENV)
    assert supervisor_pid() == os.getppid()


class _FakeWorker:
    """Stands in for a worker ``trio.Process``: records the signals it was sent."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.sent: list[tuple[int, float]] = []

    def send_signal(self, signum: int) -> None:
        self.sent.append((signum, trio.current_time()))


async def test_the_kill_deadline_includes_the_shutdown_delay(autojump_clock: Any) -> None:
    """Workers serve on for ``shutdown_delay_s`` before their drain: the
    supervisor must not kill them before delay + grace + abort + 5 s."""
    sup = Supervisor(["unused"], 1, grace_s=10.0, abort_s=2.0, delay_s=30.0)
    worker = _FakeWorker()
    sup.processes[0] = worker  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup._signals, nursery.cancel_scope)
        await trio.sleep(1)  # the signal receiver is installed
        start = trio.current_time()
        os.kill(os.getpid(), signal.SIGTERM)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert [(s, t - start) for s, t in worker.sent] == [
        (signal.SIGTERM, 0.0),
        (signal.SIGKILL, 30.0 + 10.0 + 2.0 + 5.0),
    ]
