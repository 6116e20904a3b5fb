"""kernel.supervisor's pure parts (the process behaviour is in tests/e2e/test_workers.py)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pytest
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
    assert _describe(1) == "exit code 1 (config error)"
    assert _describe(2) == "exit code 2 (bind failure)"
    assert _describe(3) == "exit code 3 (storage error)"
    assert _describe(4) == "exit code 4 (drain cut)"
    assert _describe(70) == "exit code 70 (crashed: see its traceback)"
    assert _describe(9) == "exit code 9"
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


@pytest.mark.parametrize("delay", [0.0, 30.0])
async def test_a_second_signal_is_heard_while_the_workers_drain(
    autojump_clock: Any, delay: float
) -> None:
    """It used to wait in line behind the kill deadline (grace + abort + 5 s):
    "a second signal kills the workers" came only when they were killed anyway.
    With a shutdown_delay_s, the second ends the workers' delay (a SIGTERM, as
    in one process) and the third kills them."""
    sup = Supervisor(["unused"], 1, grace_s=60.0, abort_s=5.0, delay_s=delay)
    worker = _FakeWorker()
    sup.processes[0] = worker  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup._signals, nursery.cancel_scope)
        await trio.sleep(1)  # the signal receiver is installed
        start = trio.current_time()
        for _ in range(3 if delay else 2):
            os.kill(os.getpid(), signal.SIGTERM)
            await trio.sleep(2)
        nursery.cancel_scope.cancel()
    expected = [(signal.SIGTERM, 0.0)]
    if delay:
        expected.append((signal.SIGTERM, 2.0))
    expected.append((signal.SIGKILL, 4.0 if delay else 2.0))
    assert [(s, t - start) for s, t in worker.sent] == expected


def _snapshot(directory: Any, worker: int, **limits: float) -> None:
    from kernel.config import Document, KernelSection
    from kernel.snapshot import write

    document = Document({}, (), "t.toml")
    write(directory, worker=worker, generation=1, document=document, kernel=KernelSection(**limits))


async def test_drain_limits_follow_what_the_workers_run(tmp_path: Any) -> None:
    """The supervisor drains by the limits in the workers' snapshots (what
    each runs), not by the config file: a reload the workers refused must
    not change them (it once re-read the file on SIGHUP, whatever they did)."""
    path = tmp_path / "t.toml"
    path.write_text("[kernel]\nshutdown_grace_s = 2\nshutdown_abort_s = 1\n")
    sup = Supervisor(["x"], 2, 2.0, 1.0, config=path)
    sup.snapshots = tmp_path / "set"
    sup.snapshots.mkdir()
    # No snapshot yet (the set is starting): the limits read at start.
    await sup.follow_workers()
    assert (sup.delay_s, sup.grace_s, sup.abort_s) == (0, 2, 1)
    assert sup.kill_after() == 2 + 1 + 5
    # The file is not read again, whatever it says.
    path.write_text("[kernel]\nshutdown_grace_s = 0.5\nshutdown_abort_s = 0.5\n")
    await sup.follow_workers()
    assert sup.kill_after() == 2 + 1 + 5
    # Each limit: the largest any worker runs (one may lag behind a reload).
    _snapshot(sup.snapshots, 0, shutdown_grace_s=30, shutdown_abort_s=3)
    _snapshot(sup.snapshots, 1, shutdown_grace_s=4, shutdown_delay_s=7)
    await sup.follow_workers()
    assert (sup.delay_s, sup.grace_s, sup.abort_s) == (7, 30, 5)
    assert sup.kill_after() == 7 + 30 + 5 + 5
    # Lowered by a reload both accepted: lowered.
    _snapshot(sup.snapshots, 0, shutdown_grace_s=4)
    _snapshot(sup.snapshots, 1, shutdown_grace_s=4)
    await sup.follow_workers()
    assert sup.kill_after() == 4 + 5 + 5
    # Without a snapshot directory, the limits given are all there is.
    bare = Supervisor(["x"], 2, 3.0, 2.0)
    await bare.follow_workers()
    assert bare.kill_after() == 3 + 2 + 5


def test_workers_are_told_the_snapshot_directory(tmp_path: Any) -> None:
    from kernel.snapshot import SNAPSHOTS_ENV

    sup = Supervisor(["x"], 2, 2.0)
    assert SNAPSHOTS_ENV not in sup._environment(0)
    sup.snapshots = tmp_path
    env = sup._environment(1)
    assert env[SNAPSHOTS_ENV] == str(tmp_path)
    assert (env[WORKER_ENV], env[WORKERS_ENV]) == ("1", "2")
