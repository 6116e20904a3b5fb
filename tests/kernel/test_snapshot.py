"""kernel.snapshot: the config a set of workers shares, one file per worker.

The processes that write and read them are in tests/e2e/test_workers.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kernel.config import KernelSection, load_config, load_document
from kernel.snapshot import (
    SNAPSHOTS_ENV,
    Snapshot,
    newest,
    scan,
    snapshot_dir,
    write,
    written_by,
)

CONFIG = """
include = "base.toml"

[kernel]
shutdown_grace_s = 7

[[routes]]
name = "r"
plugins = ["respond"]

[plugins.respond]
body = "${BODY:-none} from ${TRELLIS_WORKER:-?}, $${literal}"
"""

BASE = """
[kernel]
shutdown_abort_s = 2

[plugins.respond]
when = 1979-05-27T07:32:00Z
"""


def _config(tmp_path: Path) -> Path:
    (tmp_path / "base.toml").write_text(BASE)
    main = tmp_path / "main.toml"
    main.write_text(CONFIG)
    return main


def test_a_snapshot_loads_as_its_files_did_without_them(tmp_path: Path) -> None:
    """What the files said (includes merged) comes back from the snapshot, and
    substitution and overrides are applied to it from the environment, as a
    load of the files would: a worker restarted from it runs what its
    predecessor ran, even once the files are broken or gone."""
    env = {"BODY": "B", "TRELLIS_WORKER": "1", "TRELLIS_KERNEL_SHUTDOWN_DELAY_S": "3"}
    loaded = load_config(_config(tmp_path), environ=env)
    assert loaded.document is not None
    snaps = tmp_path / "set"
    snaps.mkdir()
    write(snaps, worker=1, generation=4, document=loaded.document, kernel=loaded.settings.kernel)
    (tmp_path / "main.toml").write_text("[kernel\n")
    (tmp_path / "base.toml").unlink()

    found, problems = scan(snaps)
    assert problems == []
    (snap,) = found
    assert (snap.generation, snap.worker) == (4, 1)
    assert (snap.shutdown_delay_s, snap.shutdown_grace_s, snap.shutdown_abort_s) == (3, 7, 2)
    assert snap.document.files == loaded.files
    again = load_document(snap.document, environ=env)
    assert again.settings == loaded.settings
    assert again.files == loaded.files
    assert again.settings.plugins["respond"]["body"] == "B from 1, ${literal}"
    # Another environment, another result: the document is what the files said.
    other = load_document(snap.document, environ={"BODY": "C"})
    assert other.settings.plugins["respond"]["body"] == "C from ?, ${literal}"
    assert other.settings.kernel.shutdown_delay_s == 0


def _write(directory: Path, worker: int, generation: int, grace: float = 1.0) -> Snapshot:
    loaded = load_config(_config(directory.parent), environ={})
    assert loaded.document is not None
    kernel = KernelSection(shutdown_grace_s=grace)
    return write(
        directory, worker=worker, generation=generation, document=loaded.document, kernel=kernel
    )


def _newest_worker(found: list[Snapshot]) -> int:
    snap = newest(found)
    assert snap is not None
    return snap.worker


def test_the_newest_is_the_highest_generation_then_the_last_written(tmp_path: Path) -> None:
    snaps = tmp_path / "set"
    snaps.mkdir()
    assert scan(snaps) == ([], [])
    assert newest([]) is None
    _write(snaps, 0, 3)
    _write(snaps, 1, 5)
    found, _ = scan(snaps)
    assert [(s.worker, s.generation) for s in found] == [(0, 3), (1, 5)]
    assert _newest_worker(found) == 1
    # Equal numbers (workers that reloaded on their own, watch_config): the
    # one written last.
    _write(snaps, 0, 5)
    found, _ = scan(snaps)
    assert _newest_worker(found) == 0
    # Each worker replaces its own file, atomically (nothing else is left).
    _write(snaps, 0, 6)
    assert sorted(p.name for p in snaps.iterdir()) == ["worker-0.toml", "worker-1.toml"]


def test_what_cannot_be_read_is_said_and_skipped(tmp_path: Path) -> None:
    snaps = tmp_path / "set"
    snaps.mkdir()
    _write(snaps, 0, 2)
    (snaps / "worker-1.toml").write_text("[snapshot\n")
    (snaps / ".worker-1.toml.123.tmp").write_text("half writ")
    found, problems = scan(snaps)
    assert [s.worker for s in found] == [0]
    assert len(problems) == 1
    assert "worker-1.toml" in problems[0]
    assert scan(tmp_path / "gone")[1][0].startswith(str(tmp_path / "gone"))


def test_a_document_toml_cannot_carry_is_refused_and_the_old_snapshot_kept(
    tmp_path: Path,
) -> None:
    snaps = tmp_path / "set"
    snaps.mkdir()
    _write(snaps, 0, 2)
    loaded = load_config(_config(tmp_path), environ={})
    assert loaded.document is not None
    odd = type(loaded.document)({"x": float("nan")}, (), "odd.toml")
    with pytest.raises(ValueError):
        write(snaps, worker=0, generation=3, document=odd, kernel=KernelSection())
    (snap,), _ = scan(snaps)
    assert snap.generation == 2
    assert sorted(p.name for p in snaps.iterdir()) == ["worker-0.toml"]


def test_snapshot_dir_comes_from_the_environment(tmp_path: Path) -> None:
    assert snapshot_dir({}) is None
    assert snapshot_dir({SNAPSHOTS_ENV: str(tmp_path)}) == tmp_path
    assert snapshot_dir({SNAPSHOTS_ENV: ""}) is None


def test_written_by_tells_whether_a_process_served(tmp_path: Path) -> None:
    """The supervisor's test for "this worker process started" (it wrote its snapshot)."""
    snaps = tmp_path / "set"
    snaps.mkdir()
    assert not written_by(snaps, 0, os.getpid())
    _write(snaps, 0, 1)
    assert written_by(snaps, 0, os.getpid())
    assert not written_by(snaps, 0, os.getpid() + 1)
    assert not written_by(snaps, 1, os.getpid())
    (snaps / "worker-1.toml").write_text("[snapshot\n")
    assert not written_by(snaps, 1, os.getpid())
