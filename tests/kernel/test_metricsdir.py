"""kernel/metricsdir.py: the last worker out removes the supervisor's metrics directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kernel import metricsdir


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def test_owned_only_when_the_supervisor_made_it(tmp_path: Path) -> None:
    d = str(tmp_path)
    made = {metricsdir.MULTIPROC_ENV: d, metricsdir.OWNED_ENV: d}
    assert metricsdir.owned(made) == tmp_path
    # The operator's own directory (no mark, or a mark for another one): never.
    assert metricsdir.owned({metricsdir.MULTIPROC_ENV: d}) is None
    assert metricsdir.owned({metricsdir.MULTIPROC_ENV: d, metricsdir.OWNED_ENV: d + "x"}) is None
    assert metricsdir.owned({metricsdir.OWNED_ENV: d}) is None
    assert metricsdir.owned({}) is None


def test_a_leaving_worker_takes_its_files_and_dead_ones_not_a_live_siblings(
    tmp_path: Path,
) -> None:
    me, sibling, dead = 4242, os.getpid(), _dead_pid()
    for name in (
        f"counter_{me}.db",
        f"gauge_livesum_{me}.db",
        f"histogram_{dead}.db",
        f"counter_{sibling}.db",
    ):
        (tmp_path / name).write_bytes(b"x")
    assert metricsdir.leave(tmp_path, pid=me) is False  # the sibling is still there
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{sibling}.db"]
    # The sibling leaves last: the directory goes.
    assert metricsdir.leave(tmp_path, pid=sibling) is True
    assert not tmp_path.exists()
    # Gone already: nothing to do, nothing raised.
    assert metricsdir.leave(tmp_path) is False


def test_a_file_that_is_not_a_workers_keeps_the_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("the operator's")
    (tmp_path / f"counter_{os.getpid()}.db").write_bytes(b"x")
    assert metricsdir.leave(tmp_path) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
