"""The traffic table's statements and rows: the same columns as the record keys, both dialects."""

from __future__ import annotations

import json

from plugins.builtin.trafficlog.record import FIELDS
from plugins.builtin.trafficlog.schema import COLUMNS, create_statements, insert_statement, row


def test_statements_name_every_field() -> None:
    assert COLUMNS == FIELDS
    for dialect in ("sqlite", "postgresql"):
        table = create_statements(dialect)[0]
        assert all(f'"{c}"' in table for c in COLUMNS)
    assert insert_statement("sqlite").count("?") == len(COLUMNS)
    assert "%s::timestamptz" in insert_statement("postgresql")
    assert "%s::jsonb" in insert_statement("postgresql")


def test_row_order_json_and_absent_keys() -> None:
    record = {"id": "f-1", "ts": "2026-11-22T07:47:55.109Z", "decisions": ["a: b"], "status": 200}
    values = row(record)
    assert len(values) == len(COLUMNS)
    by_name = dict(zip(COLUMNS, values, strict=True))
    assert (by_name["id"], by_name["status"]) == ("f-1", 200)
    assert json.loads(by_name["decisions"]) == ["a: b"]
    assert by_name["request_headers"] is None
    assert by_name["route"] is None
