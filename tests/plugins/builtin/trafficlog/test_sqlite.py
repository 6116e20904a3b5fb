"""SqliteSink: WAL, rows equal records, one transaction per batch, reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from plugins.builtin.trafficlog.sqlite import SqliteSink
from tests.plugins.builtin.trafficlog.support import normalise, sample_records, sqlite_rows


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
