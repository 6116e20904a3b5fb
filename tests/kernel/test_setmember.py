"""A worker's side of its set (kernel/setmember.py): the generations it shares,
the snapshot it starts from."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.helpers.appconfig import get_body, local_config


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
    path.write_text(local_config("one"))
    first = App(path, handle_signals=False, environ={}, snapshots=snaps)
    await nursery.start(_serve, first)
    (snap,), _ = snapshot.scan(snaps)
    assert (snap.worker, snap.generation) == (0, 1)
    path.write_text(
        local_config("two").replace("watch_config", "shutdown_grace_s = 3\nwatch_config")
    )
    assert await first.reload("test") is True
    path.write_text(local_config("three") + "\n[kernel\n")
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
    assert await get_body(second.port(), client) == b"two"
    assert "starting from the set's generation 2 (worker 0's snapshot)" in caplog.text
    found, _ = snapshot.scan(snaps)
    assert sorted((s.worker, s.generation) for s in found) == [(0, 2), (1, 2)]
    # It goes on from there: its next reload is generation 3, as its sibling's.
    path.write_text(local_config("four"))
    assert await second.reload("test") is True
    assert second.generation.number == 3
    assert await get_body(second.port(), client) == b"four"

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
    assert await get_body(third.port(), client) == b"four"
    assert "the set's generation 2 (worker 0's snapshot) does not load here" in caplog.text
    assert "nosuch" in caplog.text
    for app in (first, second, third):
        app.stop()


async def test_a_worker_whose_supervisor_is_gone_stops_and_removes_the_set_s_snapshots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its parent is no longer the supervisor (it was re-parented): the worker
    drains, removes the directory the supervisor would have, shares no more."""
    from kernel.setmember import SetMember

    snaps = tmp_path / "set"
    snaps.mkdir()
    (snaps / "worker-0.toml").write_text("")
    member = SetMember(0, snaps, None)
    stopped: list[bool] = []
    gone = os.getppid() + 1  # not our parent: gone at the first look
    with caplog.at_level(logging.WARNING, logger="kernel.app"), trio.fail_after(5):
        await member.watch_supervisor(gone, lambda: stopped.append(True))
    assert stopped == [True]
    assert not snaps.exists()
    assert member.snapshots is None
    assert f"the supervisor (pid {gone}) is gone: shutting down" in caplog.text


def test_only_an_orphaned_worker_removes_the_sets_metrics_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kernel import metricsdir
    from kernel.setmember import SetMember

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / f"counter_{os.getpid()}.db").write_bytes(b"x")
    monkeypatch.setenv(metricsdir.MULTIPROC_ENV, str(metrics))
    monkeypatch.setenv(metricsdir.OWNED_ENV, str(metrics))
    member = SetMember(0, None, None)
    member.leave()  # its supervisor is there: it removes the directory itself
    assert metrics.exists()
    member.orphaned = True
    member.leave()
    assert not metrics.exists()
