"""kernel.supervisor's pure parts (the process behaviour is in tests/e2e/test_workers.py)."""

from __future__ import annotations

import signal
import sys
from typing import Any

from kernel.supervisor import WORKER_ENV, WORKERS_ENV, _describe, worker_argv, worker_identity


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
