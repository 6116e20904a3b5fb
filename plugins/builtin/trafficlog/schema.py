"""The ``traffic`` table shared by the SQLite and PostgreSQL sinks: DDL, INSERT, rows.

One table, the same column names as the record keys (:data:`.record.FIELDS`),
in both databases::

    id TEXT, ts (TEXT ISO 8601 in SQLite, timestamptz in PostgreSQL),
    client_ip, method, host, path TEXT, status INTEGER, route, "group",
    target, upstream TEXT, duration_ms, upstream_ms (REAL / double precision),
    bytes_in, bytes_out (INTEGER / bigint), decisions (JSON text / jsonb),
    error, trace_id, user_agent TEXT, generation INTEGER,
    request_headers, response_headers (JSON text / jsonb, NULL unless
    ``headers = true``)

``group`` is an SQL keyword: quote it (``SELECT "group" FROM traffic``).
Indexes: ``traffic_ts`` on ``ts``, ``traffic_route`` on ``route``,
``traffic_id`` on ``id``. Both sinks create the table and indexes when
missing (``IF NOT EXISTS``) and never alter an existing table. Rows keep no
primary key of their own: flow ids are unique per process, and a fleet's
instances may share one table.

May import: stdlib, .record.
"""

from __future__ import annotations

import json
from typing import Any

from .record import FIELDS, Record

__all__ = ["COLUMNS", "create_statements", "insert_statement", "row"]

COLUMNS = FIELDS

_JSON = frozenset({"decisions", "request_headers", "response_headers"})

#: Column types: (SQLite, PostgreSQL).
_TYPES: dict[str, tuple[str, str]] = {
    "id": ("TEXT NOT NULL", "text NOT NULL"),
    "ts": ("TEXT NOT NULL", "timestamptz NOT NULL"),
    "status": ("INTEGER", "integer"),
    "duration_ms": ("REAL", "double precision"),
    "upstream_ms": ("REAL", "double precision"),
    "bytes_in": ("INTEGER", "bigint"),
    "bytes_out": ("INTEGER", "bigint"),
    "decisions": ("TEXT", "jsonb"),
    "generation": ("INTEGER", "integer"),
    "request_headers": ("TEXT", "jsonb"),
    "response_headers": ("TEXT", "jsonb"),
}


def _quote(name: str) -> str:
    return f'"{name}"'


def create_statements(dialect: str) -> list[str]:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements for ``"sqlite"`` or ``"postgresql"``."""
    which = 0 if dialect == "sqlite" else 1
    columns = ",\n  ".join(f"{_quote(c)} {_TYPES.get(c, ('TEXT', 'text'))[which]}" for c in COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS traffic (\n  {columns}\n)",
        "CREATE INDEX IF NOT EXISTS traffic_ts ON traffic (ts)",
        "CREATE INDEX IF NOT EXISTS traffic_route ON traffic (route)",
        "CREATE INDEX IF NOT EXISTS traffic_id ON traffic (id)",
    ]


def insert_statement(dialect: str) -> str:
    """The parameterised INSERT of one row (``?`` for SQLite, ``%s`` with casts for PostgreSQL)."""
    names = ", ".join(_quote(c) for c in COLUMNS)
    if dialect == "sqlite":
        marks = ", ".join("?" for _ in COLUMNS)
    else:
        casts = {"ts": "::timestamptz", **{c: "::jsonb" for c in _JSON}}
        marks = ", ".join(f"%s{casts.get(c, '')}" for c in COLUMNS)
    return f"INSERT INTO traffic ({names}) VALUES ({marks})"


def row(record: Record) -> tuple[Any, ...]:
    """A record's values in :data:`COLUMNS` order; lists as JSON text, absent keys as NULL."""
    out: list[Any] = []
    for c in COLUMNS:
        value = record.get(c)
        if c in _JSON and value is not None:
            value = json.dumps(value, separators=(",", ":"))
        out.append(value)
    return tuple(out)
