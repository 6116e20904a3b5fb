"""Traffic-log test helpers: a controlled clock, a generation, file readers, gated sinks,
another SQLite writer."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import sdk
from plugins.builtin.trafficlog import TrafficLogConfig, TrafficLogPlugin
from plugins.builtin.trafficlog.filesink import FileSink
from plugins.builtin.trafficlog.record import RecordOptions, build_record
from plugins.builtin.trafficlog.schema import COLUMNS
from plugins.builtin.trafficlog.writer import Sink
from sdk.testing import make_flow

PATH = "$.plugins.trafficlog"


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def make_plugin(
    tmp_path: Path, *, clock: Callable[[], dt.datetime] | None = None, **table: Any
) -> TrafficLogPlugin:
    """A plugin instance from a table (``directory`` and ``database`` default into tmp_path)."""
    table.setdefault("directory", str(tmp_path / "logs"))
    table.setdefault("database", f"sqlite:{tmp_path / 'traffic.db'}")
    table.setdefault("flush_interval_s", 0.01)
    config = sdk.structure(table, TrafficLogConfig, path=PATH)
    if clock is None:
        return TrafficLogPlugin(config)
    return TrafficLogPlugin(config, clock=clock)


@asynccontextmanager
async def generation(*plugins: Any, stopping: bool = True) -> AsyncIterator[sdk.StartupContext]:
    """Start the plugins as a generation; on exit cancel their tasks and shut them down.

    ``stopping`` is what ``context.server.draining()`` answers at shutdown
    (true: the process is stopping; false: a reload retired the generation).
    """
    async with trio.open_nursery() as nursery:
        context = sdk.StartupContext(
            1,
            start_soon_impl=lambda fn, args: nursery.start_soon(fn, *args),
            server=sdk.ServerInfo(draining=lambda: stopping),
        )
        for p in plugins:
            p.trellis_startup(context)
        try:
            yield context
        finally:
            nursery.cancel_scope.cancel()
    for p in plugins:
        p.trellis_shutdown()


def read_lines(directory: Path) -> list[dict[str, Any]]:
    """Every record of every traffic file in the directory, files in name order."""
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob("traffic-*.log")):
        out.extend(json.loads(line) for line in path.read_text().splitlines())
    return out


async def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.005)


class GatedFileSink(FileSink):
    """A file sink whose writes wait until ``gate`` is set (a stuck disk)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def write(self, records: list[dict[str, Any]]) -> None:  # type: ignore[override]
        self.entered.set()
        if not self.gate.wait(10):
            raise TimeoutError("gate never opened")
        self.batches.append(len(records))
        super().write(records)


class GatedPlugin(TrafficLogPlugin):
    """The traffic log with gated file sinks (``sinks`` lists them)."""

    def __init__(self, config: TrafficLogConfig) -> None:
        super().__init__(config)
        self.sinks: list[GatedFileSink] = []

    def _make_sink(self, key: Any) -> Sink:
        kind, address = key
        assert kind == "file"
        sink = GatedFileSink(address, max_bytes=0, retention_days=0)
        self.sinks.append(sink)
        return sink


class Generation:
    """Plugins started as one configuration generation, in its own task (as the kernel does).

    ``await gen.start(nursery)``, then ``await gen.retire(stopping=...)``:
    cancel the generation's background tasks, then call ``trellis_shutdown``.
    """

    def __init__(self, *plugins: Any) -> None:
        self.plugins = plugins
        self.stopping = False
        self._retire = trio.Event()
        self._done = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self._run)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as tasks:
            context = sdk.StartupContext(
                1,
                start_soon_impl=lambda fn, args: tasks.start_soon(fn, *args),
                server=sdk.ServerInfo(draining=lambda: self.stopping),
            )
            for p in self.plugins:
                p.trellis_startup(context)
            task_status.started()
            await self._retire.wait()
            tasks.cancel_scope.cancel()
        for p in self.plugins:
            p.trellis_shutdown()
        self._done.set()

    async def retire(self, *, stopping: bool) -> None:
        self.stopping = stopping
        self._retire.set()
        await self._done.wait()


# ------------------------------------------------------------ databases
REDACT = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def sample_records(n: int = 5, *, headers: bool = False) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        flow = make_flow(
            "GET",
            f"http://site.test/r/{i}?q={i}",
            [("user-agent", "t/1"), ("cookie", "s=s3cr3t")],
        )
        flow.route = "default"
        flow.upstream = sdk.Origin("http", "10.0.0.1", 8080)
        flow.response = sdk.Response.make(200 + i, b"", [("set-cookie", "a=s3cr3t")])
        flow.timings.done = flow.timings.request_head + 0.001 * (i + 1)
        flow.bytes_out = 10 * i
        flow.record(f"rule {i}")
        if i % 2:
            flow.stash[sdk.TRACE] = sdk.TraceContext.new()
        out.append(build_record(flow, RecordOptions(headers=headers, redact=REDACT)))
    out[0]["status"] = None
    out[0]["error"] = "connect refused"
    return out


def normalise(record: dict[str, Any]) -> dict[str, Any]:
    """A record as a row reads back: every column, JSON decoded, the time as UTC ISO text."""
    out = {c: record.get(c) for c in COLUMNS}
    ts = out["ts"]
    if isinstance(ts, dt.datetime):
        out["ts"] = ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    for c in ("decisions", "request_headers", "response_headers"):
        value = out[c]
        if isinstance(value, str):
            out[c] = json.loads(value)
    return out


def sqlite_rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM traffic ORDER BY rowid").fetchall()
    return [normalise(dict(r)) for r in rows]


def postgres_rows(url: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM traffic ORDER BY ts, id").fetchall()
    return [normalise(r) for r in rows]


def hold_write_lock(path: Path, seconds: float, how: str = "IMMEDIATE") -> threading.Thread:
    """Another writer (a user's ``sqlite3`` shell, another worker) holding the
    database's write lock for ``seconds`` in a thread; returns once it is held."""
    held = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute(f"BEGIN {how}")
        held.set()
        time.sleep(seconds)  # noqa: TID251 - a plain thread, no trio loop
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold, name="sqlite-lock-holder")
    thread.start()
    held.wait()
    return thread


def count_rows(path: Path, like: str = "%") -> int:
    """Rows of ``traffic`` whose path is ``LIKE`` the pattern."""
    with sqlite3.connect(path, timeout=30) as conn:
        (n,) = conn.execute("SELECT count(*) FROM traffic WHERE path LIKE ?", (like,)).fetchone()
    return int(n)
