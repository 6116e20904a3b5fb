"""The ``[plugins.trafficlog]`` table: :class:`TrafficLogConfig`, and where it sends records.

Every key is checked here, so a bad value is reported at config time with its
path (``$.plugins.trafficlog.queue: must be at least 1, got 0``).
:func:`database_target` splits ``database`` into the sink kind and its
address; :func:`sink_keys` says which sinks a configuration writes to (a
sink is identified by what it writes to: an absolute directory, an absolute
SQLite path, a PostgreSQL conninfo).

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, Literal

import attrs

import sdk

__all__ = [
    "DEFAULT_REDACT",
    "SinkKey",
    "TrafficLogConfig",
    "check_environment",
    "database_target",
    "sink_keys",
]

#: Header fields whose values never reach a sink unless ``redact`` says otherwise.
DEFAULT_REDACT = ("authorization", "proxy-authorization", "cookie", "set-cookie")

#: ``(kind, address)``: ``("file", "/abs/dir")``, ``("sqlite", "/abs/x.db")``,
#: ``("postgresql", "postgresql://...")``.
SinkKey = tuple[Literal["file", "sqlite", "postgresql"], str]

_MIB = 1024 * 1024


def database_target(database: str) -> SinkKey:
    """``"sqlite:logs/t.db"`` -> ``("sqlite", "/abs/logs/t.db")``; a PostgreSQL URL stays as is.

    Raises :class:`ValueError` for anything else. Relative SQLite paths are
    relative to the process's working directory.
    """
    if database.startswith(("postgresql://", "postgres://")):
        return ("postgresql", database)
    if database.startswith("sqlite:"):
        path = database.removeprefix("sqlite:")
        if path.startswith("//"):  # sqlite:///abs/path, as SQLAlchemy writes it
            path = path[2:]
        if not path or path == ":memory:":
            raise ValueError(
                f"needs a file path such as 'sqlite:logs/traffic.db', got {database!r}"
            )
        return ("sqlite", os.path.abspath(path))
    raise ValueError(
        "must be 'sqlite:PATH' or a PostgreSQL URL 'postgresql://user@host:port/db',"
        f" got {database!r}"
    )


# -------------------------------------------------------------- validators
def _at_least(low: int) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
        if value < low:
            raise ValueError(f"must be at least {low}, got {value!r}")

    return check


def _seconds(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"must be a positive number of seconds, got {value!r}")


def _directory(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError("must name a directory, got ''")


def _database(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    database_target(value)


def _lower(names: list[str]) -> list[str]:
    return [n.lower() for n in names]


@attrs.frozen(kw_only=True)
class TrafficLogConfig:
    """The ``[plugins.trafficlog]`` table: where one record per flow goes, and what it holds."""

    #: ``"file"`` (JSON lines), ``"database"`` (``database``) or ``"both"``.
    type: Literal["file", "database", "both"] = "file"
    #: Directory of the JSON-lines files, relative to the working directory.
    directory: str = attrs.field(default="logs", validator=_directory)
    #: A file reaching this size is continued in the next one of the same day
    #: (``traffic-DATE.1.log``, ``.2.log``, ...); 0 turns size rotation off.
    max_file_bytes: int = attrs.field(default=100 * _MIB, validator=_at_least(0))
    #: Files of days older than this many days are deleted (at start and at
    #: every day change); 0 keeps every file.
    retention_days: int = attrs.field(default=7, validator=_at_least(0))
    #: ``"sqlite:PATH"`` (WAL, the embedded default) or ``"postgresql://..."``
    #: (a libpq URL, through psycopg).
    database: str = attrs.field(default="sqlite:logs/traffic.db", validator=_database)
    #: Records waiting for the writer, per sink; when full, new records are
    #: dropped and counted (``dropped``), never waited for.
    queue: int = attrs.field(default=10000, validator=_at_least(1))
    #: Records written at once (one file write, one database transaction).
    batch: int = attrs.field(default=500, validator=_at_least(1))
    #: Longest wait for a batch to fill once a record is waiting.
    flush_interval_s: float = attrs.field(default=1.0, validator=_seconds)
    #: Log the request and response header fields (values of ``redact`` fields
    #: replaced by ``"[redacted]"``). Bodies are never logged.
    headers: bool = False
    #: Header fields (any case) whose values are replaced when ``headers`` is on.
    redact: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_REDACT),
        converter=_lower,
        # One name per item: each bad one is listed at its own index
        # (``redact[2]``), even beside one that is no string.
        validator=attrs.validators.deep_iterable(sdk.header_name_validator()),
    )
    #: Keep the query string in ``path`` (``false``: tokens in queries stay out of logs).
    query: bool = True
    #: Log the decisions plugins recorded on the flow (``flow.decisions``).
    include_decisions: bool = True
    #: Listeners whose flows are not logged (a metrics or health listener:
    #: scrapes and probes would drown the traffic).
    exclude_listeners: list[str] = attrs.field(factory=list)


def sink_keys(config: TrafficLogConfig) -> list[SinkKey]:
    """The sinks ``config`` writes to, files first."""
    keys: list[SinkKey] = []
    if config.type in ("file", "both"):
        keys.append(("file", os.path.abspath(config.directory)))
    if config.type in ("database", "both"):
        keys.append(database_target(config.database))
    return keys


def check_environment(config: TrafficLogConfig) -> list[str]:
    """Problems the table cannot show alone: a PostgreSQL sink without psycopg."""
    wants_postgres = any(kind == "postgresql" for kind, _ in sink_keys(config))
    if wants_postgres and importlib.util.find_spec("psycopg") is None:
        return [
            "database: the PostgreSQL sink needs psycopg (pip install 'trellis-proxy[postgres]')"
        ]
    return []
