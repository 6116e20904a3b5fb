"""kernel/early.py: SIGHUP is held from the ``kernel`` command's first moment."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from kernel import early
from tests.e2e.conftest import KERNEL, child_env, free_port


@pytest.fixture
def _restore_sighup() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, previous)
    early.take_sighup()


@pytest.mark.usefixtures("_restore_sighup")
def test_a_held_sighup_is_remembered_once() -> None:
    early.hold_sighup()
    assert early.take_sighup() is False
    os.kill(os.getpid(), signal.SIGHUP)
    assert early.take_sighup() is True
    assert early.take_sighup() is False


def _catches_sighup(pid: int) -> bool:
    """Has ``pid`` a handler for SIGHUP (bit 0 of SigCgt in /proc)?"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & 1)
    return False


async def test_kernel_run_survives_a_sighup_while_it_starts(tmp_path: Path) -> None:
    """The signal comes as soon as the command holds it, long before the app
    listens (the kernel is still being imported): the process used to die of
    it; now it serves, then reloads."""
    port = free_port()
    config = tmp_path / "p.toml"
    config.write_text(
        f'[kernel]\nwatch_config = false\n[[listeners]]\nbind = "127.0.0.1:{port}"\n'
        '[[routes]]\nname = "r"\nplugins = ["respond"]\n'
    )
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        proc = await trio.lowlevel.open_process(
            [KERNEL, "run", "-c", str(config)], stderr=err, env=child_env({"TRELLIS_LOG": "info"})
        )
    try:
        with trio.fail_after(10):
            while not _catches_sighup(proc.pid):
                assert proc.poll() is None, stderr.read_text()
                await trio.sleep(0.001)
        proc.send_signal(signal.SIGHUP)
        with trio.fail_after(20):
            while "reloaded (SIGHUP during start-up)" not in stderr.read_text():
                assert proc.poll() is None, stderr.read_text()
                await trio.sleep(0.05)
        assert "serving generation 1" in stderr.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0
