"""PostgresSink against a real server (tests/helpers/postgres.py): rows, schema, reconnects."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins.builtin.trafficlog.postgres import PostgresSink
from plugins.builtin.trafficlog.schema import COLUMNS
from tests.plugins.builtin.trafficlog.support import normalise, postgres_rows, sample_records


def test_postgres_rows_equal_records(postgres_url: str) -> None:
    import psycopg

    sink = PostgresSink(postgres_url)
    sink.open()
    records = sample_records(headers=True)
    sink.write(records[:3])
    sink.write(records[3:])
    sink.close()
    expected = sorted((normalise(r) for r in records), key=lambda r: (r["ts"], r["id"]))
    assert postgres_rows(postgres_url) == expected
    with psycopg.connect(postgres_url) as conn:
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'traffic'"
            ).fetchall()
        )
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        secrets = conn.execute("SELECT count(*) FROM traffic WHERE traffic::text LIKE '%s3cr3t%'")
        assert secrets.fetchone() == (0,)
    assert set(types) == set(COLUMNS)
    assert types["ts"] == "timestamp with time zone"
    assert types["decisions"] == "jsonb"
    assert {"traffic_ts", "traffic_route", "traffic_id"} <= indexes


def test_postgres_reconnects_after_losing_the_connection(postgres_url: str) -> None:
    import psycopg

    records = sample_records(4)
    sink = PostgresSink(postgres_url)
    sink.write(records[:1])
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'trellis-trafficlog'"
        )
    with pytest.raises(psycopg.Error):
        sink.write(records[1:2])  # the writer counts this batch as dropped
    sink.write(records[2:])  # a new connection
    sink.close()
    ids = {r["id"] for r in postgres_rows(postgres_url)}
    assert ids == {records[0]["id"], records[2]["id"], records[3]["id"]}


def test_postgres_unreachable_raises_quickly(tmp_path: Path) -> None:
    import psycopg

    from tests.e2e.conftest import free_port

    sink = PostgresSink(f"postgresql://postgres@127.0.0.1:{free_port()}/none", timeout_s=1)
    with pytest.raises(psycopg.OperationalError):
        sink.write(sample_records(1))
