"""The embedded database sink: :class:`SqliteSink` (one connection, WAL, batched inserts).

The database file and its directory are created when missing, then the
``traffic`` table (:mod:`.schema`). The connection is opened with
``journal_mode=WAL`` (readers never block the writer, nor the writer them)
and ``synchronous=NORMAL`` (no fsync per transaction; a power cut may lose
the last transactions, never corrupt the file). Each batch is one
``executemany`` in one transaction.

The connection belongs to the writer: every method blocks and is called
from the writer's worker threads, one call at a time (hence
``check_same_thread=False``).

May import: stdlib, .record, .schema.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable

from .record import Record
from .schema import create_statements, insert_statement, row

__all__ = ["SqliteSink"]

_INSERT = insert_statement("sqlite")


class SqliteSink:
    """Records into the ``traffic`` table of an SQLite file."""

    label = "sqlite"

    def __init__(self, path: str, *, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (creating file, table and indexes as needed)."""
        if self._conn is not None:
            return
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, check_same_thread=False, isolation_level=None
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN")
            for statement in create_statements("sqlite"):
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def write(self, records: Iterable[Record]) -> None:
        """Insert the records in one transaction; raises :class:`sqlite3.Error` or OSError."""
        if self._conn is None:
            self.open()
        conn = self._conn
        assert conn is not None
        rows = [row(r) for r in records]
        conn.execute("BEGIN")
        try:
            conn.executemany(_INSERT, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
