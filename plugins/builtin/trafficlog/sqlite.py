"""The embedded database sink: :class:`SqliteSink` (one connection, WAL, batched inserts).

The database file and its directory are created when missing, then the
``traffic`` table (:mod:`.schema`). The connection is opened with
``journal_mode=WAL`` (readers never block the writer, nor the writer them)
and ``synchronous=NORMAL`` (no fsync per transaction; a power cut may lose
the last transactions, never corrupt the file). Each batch is one
``executemany`` in one ``BEGIN IMMEDIATE`` transaction.

**Several writers, one file.** Under ``[server] workers = N`` every worker
has its own sink on the same file (one file is what a user queries), and a
user's ``sqlite3`` shell may hold a write lock too. SQLite lets one writer
in at a time; the others get ``SQLITE_BUSY`` ("database is locked"). A
batch therefore waits for the lock: SQLite's busy handler retries each
statement for up to ``busy_timeout_s``, and a batch (or the opening) that
still finds the database busy is rolled back and tried again, for up to
``wait_s`` in all (:data:`WAIT_S`), before it fails and its records are
counted as dropped. ``BEGIN IMMEDIATE`` takes the write lock first, so a
transaction never has to upgrade a read lock (which SQLite refuses without
waiting). Only the writer's thread waits: the event loop never does
(:mod:`.writer`).

The connection belongs to the writer: every method blocks and is called
from the writer's worker threads, one call at a time (hence
``check_same_thread=False``).

May import: stdlib, .record, .schema.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable

from .record import Record
from .schema import create_statements, insert_statement, row

__all__ = ["BUSY_TIMEOUT_S", "WAIT_S", "SqliteSink", "is_busy"]

_INSERT = insert_statement("sqlite")

#: SQLite's own busy handler: how long one statement waits for a lock.
BUSY_TIMEOUT_S = 5.0
#: How long one batch (or the opening) may wait for the database in all.
WAIT_S = 30.0
#: Pause between two tries of a batch that found the database busy.
_PAUSE_S = 0.05
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (busy or locked, any extended code)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteSink:
    """Records into the ``traffic`` table of an SQLite file."""

    label = "sqlite"

    def __init__(
        self, path: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S, wait_s: float = WAIT_S
    ) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.wait_s = wait_s
        #: Tries that found the database busy and were made again.
        self.retries = 0
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (creating file, table and indexes as needed), waiting for a busy database."""
        self._retrying(self._open)

    def _open(self) -> None:
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
            conn.execute("BEGIN IMMEDIATE")
            for statement in create_statements("sqlite"):
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def write(self, records: Iterable[Record]) -> None:
        """Insert the records in one transaction; raises :class:`sqlite3.Error` or OSError.

        A busy database is waited for (see the module's docstring); the
        batch is written whole or not at all.
        """
        rows = [row(r) for r in records]
        self._retrying(self._insert, rows)

    def _insert(self, rows: list[tuple[object, ...]]) -> None:
        self._open()
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is in an unknown state: start over with a new one.
            self.close()

    def _retrying(self, attempt: Callable[..., None], *args: object) -> None:
        """``attempt(*args)``, made again while the database is busy, up to ``wait_s``."""
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                attempt(*args)
                return
            except sqlite3.OperationalError as exc:
                left = deadline - time.monotonic()
                if not is_busy(exc) or left <= 0:
                    raise
            self.retries += 1
            time.sleep(min(_PAUSE_S, left))  # noqa: TID251 - the writer's thread, never the loop

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
