"""The fleet database sink: :class:`PostgresSink`, through psycopg (sync, in a worker thread).

psycopg's async API runs on asyncio only, so the writer calls the blocking
API from its worker thread (one call at a time). The table and indexes of
:mod:`.schema` are created when missing on every new connection. Each batch
is one ``executemany`` in one transaction.

When the server cannot be reached or a batch fails, the error propagates
(the writer counts the batch as dropped and waits before trying again) and
the connection is thrown away; the next write reconnects. Every network
wait is bounded so a dead server cannot hold the writer (and so shutdown)
for long: ``connect_timeout``, TCP keepalives, ``tcp_user_timeout`` and a
``statement_timeout``.

psycopg is imported when the sink opens, so the plugin loads without it
(``pip install 'trellis-proxy[postgres]'``).

May import: stdlib, psycopg, .record, .schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .record import Record
from .schema import create_statements, insert_statement, row

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresSink"]

_INSERT = insert_statement("postgresql")


class PostgresSink:
    """Records into the ``traffic`` table of a PostgreSQL database."""

    label = "postgresql"

    def __init__(self, conninfo: str, *, timeout_s: float = 5.0) -> None:
        self.conninfo = conninfo
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        """Connect (creating the table and indexes as needed)."""
        if self._conn is not None:
            return
        import psycopg

        timeout = max(1, round(self.timeout_s))
        conn = psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=timeout,
            keepalives=1,
            keepalives_idle=max(1, timeout),
            keepalives_interval=1,
            keepalives_count=3,
            tcp_user_timeout=timeout * 1000,
            options=f"-c statement_timeout={timeout * 2000}",
            application_name="trellis-trafficlog",
        )
        try:
            with conn.transaction():
                for statement in create_statements("postgresql"):
                    conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def write(self, records: Iterable[Record]) -> None:
        """Insert the records in one transaction; raises :class:`psycopg.Error` on failure."""
        if self._conn is None:
            self.open()
        conn = self._conn
        assert conn is not None
        rows = [row(r) for r in records]
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_INSERT, rows)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
