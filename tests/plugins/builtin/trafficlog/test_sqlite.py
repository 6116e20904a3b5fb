"""SqliteSink: WAL, rows equal records, one transaction per batch, reopen, a busy database."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from plugins.builtin.trafficlog.sqlite import SqliteSink, is_busy
from tests.plugins.builtin.trafficlog.support import (
    hold_write_lock,
    normalise,
    sample_records,
    sqlite_rows,
)


def test_sqlite_rows_equal_records_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "traffic.db"
    sink = SqliteSink(str(path))
    sink.open()
    records = sample_records(headers=True)
    sink.write(records[:2])
    sink.write(records[2:])
    sink.close()
    assert sqlite_rows(path) == [normalise(r) for r in records]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"traffic_ts", "traffic_route", "traffic_id"} <= indexes
    assert b"s3cr3t" not in path.read_bytes()
    wal = path.with_name("traffic.db-wal")
    assert not wal.exists() or b"s3cr3t" not in wal.read_bytes()


def test_sqlite_reopen_keeps_rows_and_a_failed_batch_is_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "traffic.db"
    records = sample_records(4)
    sink = SqliteSink(str(path))
    sink.write(records[:2])  # opens on first use
    with pytest.raises(sqlite3.Error):
        sink.write([records[2], {"id": None, "ts": None}])  # NOT NULL: the whole batch fails
    sink.close()
    sink = SqliteSink(str(path))
    sink.write(records[3:])
    sink.close()
    assert [r["id"] for r in sqlite_rows(path)] == [
        records[0]["id"],
        records[1]["id"],
        records[3]["id"],
    ]


def test_a_batch_waits_for_a_database_another_writer_holds(tmp_path: Path) -> None:
    path = tmp_path / "traffic.db"
    records = sample_records(4)
    sink = SqliteSink(str(path), busy_timeout_s=0.05, wait_s=10)
    sink.write(records[:2])
    holder = hold_write_lock(path, 0.6)  # much longer than one busy timeout
    start = time.monotonic()
    sink.write(records[2:])
    assert time.monotonic() - start >= 0.4
    holder.join()
    assert sink.retries > 0
    sink.close()
    assert [r["id"] for r in sqlite_rows(path)] == [r["id"] for r in records]


def test_opening_waits_for_a_locked_database(tmp_path: Path) -> None:
    path = tmp_path / "traffic.db"
    sqlite3.connect(path).close()  # an empty file, not in WAL yet
    holder = hold_write_lock(path, 0.5, "EXCLUSIVE")
    sink = SqliteSink(str(path), busy_timeout_s=0.05, wait_s=10)
    sink.open()
    holder.join()
    sink.write(sample_records(1))
    sink.close()
    assert len(sqlite_rows(path)) == 1


def test_a_database_busy_for_longer_than_the_wait_fails_the_batch_whole(tmp_path: Path) -> None:
    path = tmp_path / "traffic.db"
    records = sample_records(3)
    sink = SqliteSink(str(path), busy_timeout_s=0.05, wait_s=0.3)
    sink.write(records[:1])
    holder = hold_write_lock(path, 1.5)
    start = time.monotonic()
    with pytest.raises(sqlite3.OperationalError) as info:
        sink.write(records[1:2])
    assert time.monotonic() - start < 1.2  # bounded: wait_s and one busy timeout
    assert is_busy(info.value)
    holder.join()
    sink.write(records[2:])  # the connection is still good
    sink.close()
    assert [r["id"] for r in sqlite_rows(path)] == [records[0]["id"], records[2]["id"]]


def test_only_busy_errors_are_tried_again(tmp_path: Path) -> None:
    sink = SqliteSink(str(tmp_path / "traffic.db"), wait_s=10)
    start = time.monotonic()
    with pytest.raises(sqlite3.IntegrityError):
        sink.write([{"id": None, "ts": None}])
    assert time.monotonic() - start < 1
    assert sink.retries == 0
    assert not is_busy(sqlite3.OperationalError("no such table: traffic"))
    assert is_busy(sqlite3.OperationalError("database is locked"))
