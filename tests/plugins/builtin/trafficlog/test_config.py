"""TrafficLogConfig: defaults, every key's errors with their paths, and the sinks a table names."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

import sdk
from plugins.builtin.trafficlog import TrafficLogConfig
from plugins.builtin.trafficlog.config import check_environment, database_target, sink_keys

PATH = "$.plugins.trafficlog"
#: What a bad name or method is told it may hold.
TOKEN = "only letters, digits and !#$%&'*+-.^_`|~"


def test_defaults() -> None:
    c = sdk.structure({}, TrafficLogConfig, path=PATH)
    assert (c.type, c.directory, c.max_file_bytes, c.retention_days) == (
        "file",
        "logs",
        100 * 1024 * 1024,
        7,
    )
    assert (c.database, c.queue, c.batch, c.flush_interval_s) == (
        "sqlite:logs/traffic.db",
        10000,
        500,
        1.0,
    )
    assert c.redact == ["authorization", "proxy-authorization", "cookie", "set-cookie"]
    assert (c.headers, c.query, c.include_decisions) == (False, True, True)


def test_redact_names_are_lower_cased() -> None:
    c = sdk.structure({"redact": ["X-Api-Key", "Cookie"]}, TrafficLogConfig, path=PATH)
    assert c.redact == ["x-api-key", "cookie"]


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        ({"type": "syslog"}, "type", "one of 'file', 'database', 'both'"),
        ({"directory": " "}, "directory", "must name a directory"),
        ({"max_file_bytes": -1}, "max_file_bytes", "at least 0"),
        ({"retention_days": -1}, "retention_days", "at least 0"),
        ({"database": "mysql://x"}, "database", "must be 'sqlite:PATH' or a PostgreSQL URL"),
        ({"database": "sqlite:"}, "database", "needs a file path"),
        ({"database": "sqlite::memory:"}, "database", "needs a file path"),
        ({"queue": 0}, "queue", "at least 1"),
        ({"batch": 0}, "batch", "at least 1"),
        ({"flush_interval_s": 0}, "flush_interval_s", "positive"),
        ({"flush_interval_s": float("nan")}, "flush_interval_s", "positive"),
        (
            {"redact": ["bad name"]},
            "redact[0]",
            f"invalid header name 'bad name' (' ' is not allowed: {TOKEN})",
        ),
        ({"headers": "yes"}, "headers", "true or false"),
        ({"queue": "8"}, "queue", "an integer"),
        ({"rotation": "daily"}, "", "rotation: unknown key"),
    ],
)
def test_config_errors_have_paths(table: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(table, TrafficLogConfig, path=PATH)
    text = "\n".join(info.value.problems)
    assert (f"{PATH}.{where}" if where else PATH) in text, text
    assert re.search(re.escape(message), text), text


def test_every_bad_redact_name_beside_one_of_the_wrong_type() -> None:
    """The names were checked by one loop, which stopped at the first bad
    one and did not run at all beside a name of the wrong type (the others'
    problems showed only once it was fixed). Each is checked alone now."""
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure({"redact": ["Cookie", 5, "bad name", "x:y"]}, TrafficLogConfig, path=PATH)
    assert info.value.problems == [
        f"{PATH}.redact[1]: must be a string, got 5",
        f"{PATH}.redact[2]: invalid header name 'bad name' (' ' is not allowed: {TOKEN})",
        f"{PATH}.redact[3]: invalid header name 'x:y' (':' is not allowed: {TOKEN})",
    ]


def test_database_targets() -> None:
    assert database_target("sqlite:/var/log/t.db") == ("sqlite", "/var/log/t.db")
    assert database_target("sqlite:///var/log/t.db") == ("sqlite", "/var/log/t.db")
    assert database_target("sqlite:logs/t.db") == ("sqlite", os.path.abspath("logs/t.db"))
    url = "postgresql://log@db.internal:5432/traffic?sslmode=require"
    assert database_target(url) == ("postgresql", url)
    assert database_target("postgres://x/y") == ("postgresql", "postgres://x/y")


def test_sink_keys_per_type() -> None:
    def keys(**table: Any) -> list[Any]:
        return sink_keys(sdk.structure(table, TrafficLogConfig, path=PATH))

    assert keys(directory="/l") == [("file", "/l")]
    assert keys(type="database", database="sqlite:/d.db") == [("sqlite", "/d.db")]
    assert keys(type="both", directory="/l", database="postgresql://h/db") == [
        ("file", "/l"),
        ("postgresql", "postgresql://h/db"),
    ]


def test_postgres_needs_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    config = TrafficLogConfig(type="database", database="postgresql://h/db")
    assert check_environment(config) == []
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    assert check_environment(config) == [
        "database: the PostgreSQL sink needs psycopg (pip install 'trellis-proxy[postgres]')"
    ]
    assert check_environment(TrafficLogConfig()) == []
