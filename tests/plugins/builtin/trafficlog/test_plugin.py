"""TrafficLogPlugin: records through the hooks, lifecycle and reloads, metrics, a real kernel.

The kernel tests run the proxy in-process (``start_proxy``) in front of the
real test upstream; the SIGTERM test runs ``kernel run`` as a child process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

import sdk
from plugins.builtin.trafficlog import TrafficLogPlugin, writer
from plugins.builtin.trafficlog.sqlite import SqliteSink
from sdk.testing import Harness
from tests.e2e.conftest import SpawnProxy, free_port, proxy_config
from tests.helpers import client as client_helpers
from tests.plugins.builtin.trafficlog.support import (
    PATH,
    GatedPlugin,
    Generation,
    count_rows,
    generation,
    hold_write_lock,
    make_plugin,
    postgres_rows,
    read_lines,
    sqlite_rows,
    wait_for,
)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "_BACKOFF_FIRST_S", 0.01)


# ------------------------------------------------------------------ records
async def test_plugin_writes_one_line_per_flow(tmp_path: Path) -> None:
    p = make_plugin(tmp_path)
    h = Harness(p)
    async with generation(p):
        flows = [
            await h.run(Harness.make_flow("GET", f"http://site.test/r/{i}")) for i in range(20)
        ]
        await wait_for(lambda: p.written == {"file": 20})
    lines = read_lines(tmp_path / "logs")
    assert [r["id"] for r in lines] == [f.id for f in flows]
    assert [r["path"] for r in lines] == [f"/r/{i}" for i in range(20)]
    assert p.dropped == {"file": 0}


async def test_a_worker_of_several_writes_files_of_its_own(tmp_path: Path) -> None:
    """``[server] workers = 2``: worker 1's records go to ``traffic-DATE.w1.log``."""
    p = make_plugin(tmp_path)
    h = Harness(p)
    async with trio.open_nursery() as nursery:
        context = sdk.StartupContext(
            1,
            start_soon_impl=lambda fn, args: nursery.start_soon(fn, *args),
            server=sdk.ServerInfo(draining=lambda: True, worker=1, workers=2),
        )
        p.trellis_startup(context)
        flow = await h.run(Harness.make_flow("GET", "http://site.test/w"))
        await wait_for(lambda: p.written == {"file": 1})
        nursery.cancel_scope.cancel()
    p.trellis_shutdown()
    (name,) = [f.name for f in (tmp_path / "logs").iterdir()]
    assert re.fullmatch(r"traffic-\d{4}-\d{2}-\d{2}\.w1\.log", name)
    assert [r["id"] for r in read_lines(tmp_path / "logs")] == [flow.id]


async def test_excluded_listeners_are_not_logged(tmp_path: Path) -> None:
    p = make_plugin(tmp_path, exclude_listeners=["metrics"])
    h = Harness(p)
    async with generation(p):
        await h.run(Harness.make_flow("GET", "http://site.test/scrape", listener="metrics"))
        kept = await h.run(Harness.make_flow("GET", "http://site.test/real"))
        await wait_for(lambda: p.written == {"file": 1})
    assert [r["id"] for r in read_lines(tmp_path / "logs")] == [kept.id]
    assert p.trellis_config_check(("main",)) == [
        "exclude_listeners[0]: no listener named 'metrics' (listeners: main)"
    ]
    assert p.trellis_config_check(("main", "metrics")) is None


async def test_shutdown_flushes_the_queue(tmp_path: Path) -> None:
    p = make_plugin(tmp_path, flush_interval_s=60, batch=1000)
    h = Harness(p)
    async with generation(p, stopping=True):
        for i in range(50):
            await h.run(Harness.make_flow("GET", f"http://site.test/{i}"))
        await trio.sleep(0.05)
        assert p.written == {"file": 0}  # still waiting for the batch to fill
    assert len(read_lines(tmp_path / "logs")) == 50
    assert p.written == {"file": 50}


async def test_overflow_through_the_plugin_missing_equals_dropped(tmp_path: Path) -> None:
    """A stuck sink and a burst of flows: every flow is either in the file or counted."""
    config = sdk.structure(
        {"directory": str(tmp_path), "queue": 8, "batch": 3, "flush_interval_s": 0.001},
        TrafficLogPlugin.config_class,
        path=PATH,
    )
    p = GatedPlugin(config)
    h = Harness(p)
    n = 300
    async with generation(p):
        (sink,) = p.sinks
        flows = [await h.run(Harness.make_flow("GET", "http://site.test/first"))]
        await wait_for(sink.entered.is_set)  # the writer is stuck with the first record
        for i in range(n - 1):
            flows.append(await h.run(Harness.make_flow("GET", f"http://site.test/{i}")))
            if i % 50 == 0:
                await trio.sleep(0)  # let the (stuck) writer run: nothing changes
        dropped = p.dropped["file"]
        assert dropped == n - 1 - 8
        sink.gate.set()
        await wait_for(lambda: p.written["file"] + p.dropped["file"] == n)
    written = {r["id"] for r in read_lines(tmp_path)}
    missing = [f.id for f in flows if f.id not in written]
    assert len(written) == p.written["file"] == n - dropped
    assert len(missing) == dropped
    assert missing == [f.id for f in flows[9:]]  # the first, 8 queued, then drops


async def test_reload_with_the_same_sink_keeps_the_pipeline(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    old, new = make_plugin(tmp_path), make_plugin(tmp_path, queue=50)
    h_old, h_new = Harness(old), Harness(new)
    gen1 = Generation(old)
    await gen1.start(nursery)
    await h_old.run(Harness.make_flow("GET", "http://site.test/old"))
    gen2 = Generation(new)
    await gen2.start(nursery)
    assert new.pipelines["file"] is old.pipelines["file"]
    pipeline = new.pipelines["file"]
    assert (pipeline.holders, pipeline.capacity) == (2, 50)
    await h_old.run(Harness.make_flow("GET", "http://site.test/old-late"))
    await h_new.run(Harness.make_flow("GET", "http://site.test/new"))
    await gen1.retire(stopping=False)
    assert not writer.pipelines()[pipeline.key].closed
    assert pipeline.holders == 1
    await h_new.run(Harness.make_flow("GET", "http://site.test/new-2"))
    await wait_for(lambda: pipeline.written == 4)  # the new generation's writer took over
    await gen2.retire(stopping=True)
    assert pipeline.closed
    assert sorted(r["path"] for r in read_lines(tmp_path / "logs")) == [
        "/new",
        "/new-2",
        "/old",
        "/old-late",
    ]


async def test_reload_to_another_directory_drains_the_old_sink(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    old = make_plugin(tmp_path, directory=str(tmp_path / "a"), flush_interval_s=60)
    new = make_plugin(tmp_path, directory=str(tmp_path / "b"), flush_interval_s=60)
    gen1 = Generation(old)
    await gen1.start(nursery)
    for i in range(5):
        await Harness(old).run(Harness.make_flow("GET", f"http://site.test/{i}"))
    gen2 = Generation(new)
    await gen2.start(nursery)
    a = old.pipelines["file"]
    await gen1.retire(stopping=False)  # drained and closed in a thread
    a.join(5)
    assert a.closed
    assert len(read_lines(tmp_path / "a")) == 5
    await Harness(new).run(Harness.make_flow("GET", "http://site.test/b"))
    await gen2.retire(stopping=True)
    assert [r["path"] for r in read_lines(tmp_path / "b")] == ["/b"]


async def test_sqlite_through_the_plugin_in_batches(tmp_path: Path) -> None:
    p = make_plugin(tmp_path, type="database", batch=7, flush_interval_s=0.05)
    h = Harness(p)
    async with generation(p):
        sink = p.pipelines["sqlite"].sink
        assert isinstance(sink, SqliteSink)
        calls: list[int] = []
        write = sink.write

        def counting(records: Any) -> None:
            calls.append(len(records))
            write(records)

        sink.write = counting  # type: ignore[method-assign]
        flows = []
        for i in range(30):
            flows.append(await h.run(Harness.make_flow("GET", f"http://site.test/{i}")))
        await wait_for(lambda: p.written == {"sqlite": 30})
    assert max(calls) <= 7
    assert len(calls) <= 6  # batched: not one transaction per record
    rows = sqlite_rows(tmp_path / "traffic.db")
    assert [r["id"] for r in rows] == [f.id for f in flows]


async def test_both_sinks_through_the_plugin(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The start checks the file sink's directory, and makes none for the URL
    # (it made "postgresql:/postgres@127.0.0.1:PORT" in the working directory).
    monkeypatch.chdir(tmp_path)
    p = make_plugin(tmp_path, type="both", database=postgres_url, headers=True)
    h = Harness(p)
    flows = []
    async with generation(p):
        for i in range(12):
            flow = Harness.make_flow(
                "GET", f"http://site.test/{i}", [("authorization", "Bearer s3cr3t")]
            )
            flows.append(await h.run(flow))
        await wait_for(lambda: p.written == {"file": 12, "postgresql": 12})
    rows = postgres_rows(postgres_url)
    assert sorted(r["id"] for r in rows) == sorted(f.id for f in flows)
    for row in rows:
        assert ["authorization", "[redacted]"] in row["request_headers"]
    text = "".join(path.read_text() for path in (tmp_path / "logs").iterdir())
    assert "s3cr3t" not in text
    assert text.count('"[redacted]"') == 12
    assert sorted(path.name for path in tmp_path.iterdir()) == ["logs"]


# ----------------------------------------------------------------- metrics
class FakeSeries:
    def __init__(self, name: str, kind: str, **options: Any) -> None:
        self.name, self.kind, self.options = name, kind, options
        self.values: dict[str, list[float]] = {}

    def labels(self, *, sink: str) -> Any:
        values = self.values.setdefault(sink, [])

        class Child:
            def inc(self, n: float = 1) -> None:
                values.append(n)

            def observe(self, v: float) -> None:
                values.append(v)

        return Child()


class FakeMetrics:
    def __init__(self) -> None:
        self.series: dict[str, FakeSeries] = {}

    def counter(self, name: str, documentation: str, labelnames: Any = ()) -> FakeSeries:
        assert tuple(labelnames) == ("sink",)
        assert documentation
        self.series[name] = FakeSeries(name, "counter")
        return self.series[name]

    def histogram(
        self, name: str, documentation: str, labelnames: Any = (), buckets_ms: Any = None
    ) -> FakeSeries:
        assert tuple(labelnames) == ("sink",)
        self.series[name] = FakeSeries(name, "histogram", buckets_ms=buckets_ms)
        return self.series[name]


async def test_metrics_register(tmp_path: Path) -> None:
    p = make_plugin(tmp_path, queue=2, batch=100, flush_interval_s=60)
    metrics = FakeMetrics()
    h = Harness(p)
    async with generation(p):
        p.trellis_metrics_register(metrics)
        for i in range(5):
            await h.run(Harness.make_flow("GET", f"http://site.test/{i}"))
    s = metrics.series
    assert set(s) == {
        "traffic_log_write_duration_seconds",
        "traffic_log_records_total",
        "traffic_log_dropped_records_total",
    }
    assert s["traffic_log_write_duration_seconds"].options["buckets_ms"][0] == 0.25
    assert s["traffic_log_dropped_records_total"].values == {"file": [1, 1, 1]}
    assert s["traffic_log_records_total"].values == {"file": [2]}
    (seconds,) = s["traffic_log_write_duration_seconds"].values["file"]
    assert 0 <= seconds < 1


def test_metrics_hook_is_optional() -> None:
    import pluggy

    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(TrafficLogPlugin())
    pm.check_pending()  # no metrics plugin: the hook is optional


async def test_records_before_start_or_after_shutdown_are_ignored(tmp_path: Path) -> None:
    p = make_plugin(tmp_path)
    await Harness(p).run(Harness.make_flow())
    assert p.written == {}
    async with generation(p):
        pass
    await Harness(p).run(Harness.make_flow())
    assert p.written == {"file": 0}
    assert p.dropped == {"file": 0}


async def test_startup_fails_when_the_directory_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    context = sdk.StartupContext(1, start_soon_impl=lambda fn, args: None)
    p = make_plugin(tmp_path, directory=str(tmp_path / "file" / "logs"))
    with pytest.raises(NotADirectoryError):
        p.trellis_startup(context)
    assert p.pipelines == {}
    q = make_plugin(tmp_path, type="database", database=f"sqlite:{tmp_path}/file/x.db")
    with pytest.raises(FileExistsError):
        q.trellis_startup(context)


async def test_a_generation_that_never_went_live_gives_its_pipeline_back(tmp_path: Path) -> None:
    """Another plugin failed to start: the kernel cancels the tasks and calls no shutdown."""
    p = make_plugin(tmp_path, flush_interval_s=60)
    async with trio.open_nursery() as tasks:
        context = sdk.StartupContext(
            1, start_soon_impl=lambda fn, args: tasks.start_soon(fn, *args)
        )
        p.trellis_startup(context)
        pipeline = p.pipelines["file"]
        await Harness(p).run(Harness.make_flow())
        tasks.cancel_scope.cancel()
    pipeline.join(5)  # not stopping: drained in a thread
    assert pipeline.closed
    assert pipeline.holders == 0
    assert pipeline.key not in writer.pipelines()
    assert len(read_lines(tmp_path / "logs")) == 1
    p.trellis_shutdown()  # nothing left to give back
    assert pipeline.holders == 0


async def test_one_instance_in_two_generations(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A ready-made object kept across a reload: one record per flow, closed once at the end."""
    p = make_plugin(tmp_path)
    gen1, gen2 = Generation(p), Generation(p)
    await gen1.start(nursery)
    await gen2.start(nursery)
    pipeline = p.pipelines["file"]
    assert pipeline.holders == 2
    await Harness(p).run(Harness.make_flow("GET", "http://site.test/a"))
    await gen1.retire(stopping=False)
    assert pipeline.holders == 1
    await Harness(p).run(Harness.make_flow("GET", "http://site.test/b"))
    await gen2.retire(stopping=True)
    assert pipeline.closed
    assert [r["path"] for r in read_lines(tmp_path / "logs")] == ["/a", "/b"]


# ------------------------------------------------------------ real kernel
SECRET = "s3cr3t-value"


class Tracer:
    """Sets a trace context on every flow; refuses ``/blocked``; adds a Set-Cookie."""

    def __init__(self) -> None:
        self.traces: dict[str, str] = {}

    @sdk.hookimpl
    def trellis_request_access(self, flow: sdk.Flow) -> sdk.Response | None:
        trace = sdk.TraceContext.new()
        flow.stash[sdk.TRACE] = trace
        self.traces[flow.request.path] = trace.trace_id
        if flow.request.path.startswith("/blocked"):
            flow.record("tracer: blocked by rule 7")
            return sdk.Response.make(403, "no\n")
        return None

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        flow.response.headers.add("set-cookie", f"sid={SECRET}")


def config(tmp_path: Path, upstream_port: int, table: str = "", chain: str = "") -> str:
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = [{chain or '"tracer", "trafficlog"'}]

[kernel.modules]
trafficlog = "plugins.builtin.trafficlog:TrafficLogPlugin"

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[routes]]
name = "app-route"
group = "app"

[[groups]]
name = "app"
urls = "http://127.0.0.1:{upstream_port}"

[plugins.trafficlog]
directory = "{tmp_path / "logs"}"
database = "sqlite:{tmp_path / "traffic.db"}"
flush_interval_s = 0.01
{table}
"""


async def request(client: Any, port: int, method: str, path: str, body: bytes = b"") -> int:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n"
        f"Authorization: Bearer {SECRET}\r\nCookie: session={SECRET}\r\n"
        f"User-Agent: test-agent/1.0\r\n"
    )
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    raw = await client.exchange(port, (head + "\r\n").encode() + body)
    (resp,) = client.parse_responses(raw)
    return int(resp["status"])


async def stop(app: Any, plugin: TrafficLogPlugin) -> None:
    pipelines = list(plugin.pipelines.values())
    app.stop()
    await wait_for(lambda: all(p.closed for p in pipelines))


async def test_records_of_a_group_route(
    start_proxy: Any, upstream: Any, client: Any, tmp_path: Path
) -> None:
    tracer = Tracer()
    app = await start_proxy(
        config(tmp_path, upstream.port, 'type = "both"\nheaders = true'),
        extra_plugins={"tracer": tracer},
    )
    plugin = app.generation.host.instances["trafficlog"]
    port = app.port()
    assert await request(client, port, "GET", "/get/1?x=1") == 200
    assert await request(client, port, "POST", "/echo", b"0123456789") == 200
    assert await request(client, port, "GET", "/blocked/2") == 403
    await wait_for(lambda: plugin.written == {"file": 3, "sqlite": 3})
    await stop(app, plugin)

    records = {r["path"]: r for r in read_lines(tmp_path / "logs")}
    assert set(records) == {"/get/1?x=1", "/echo", "/blocked/2"}
    target = f"127.0.0.1:{upstream.port}"
    get = records["/get/1?x=1"]
    assert get["method"] == "GET"
    assert (get["client_ip"], get["host"], get["user_agent"]) == (
        "127.0.0.1",
        "site.test",
        "test-agent/1.0",
    )
    assert (get["status"], get["route"], get["group"], get["target"]) == (
        200,
        "app-route",
        "app",
        target,
    )
    assert get["upstream"] == f"http://{target}"
    assert (get["bytes_in"], get["bytes_out"]) == (0, 1024)
    assert get["duration_ms"] > 0
    assert get["upstream_ms"] is not None
    assert get["upstream_ms"] <= get["duration_ms"]
    assert (get["error"], get["generation"]) == (None, 1)
    assert get["trace_id"] == tracer.traces["/get/1?x=1"]
    echo = records["/echo"]
    assert (echo["method"], echo["bytes_in"], echo["status"]) == ("POST", 10, 200)
    assert echo["bytes_out"] > 10
    blocked = records["/blocked/2"]
    assert (blocked["status"], blocked["target"], blocked["upstream"]) == (403, None, None)
    assert blocked["upstream_ms"] is None
    assert blocked["decisions"] == ["tracer: blocked by rule 7"]
    assert blocked["trace_id"] == tracer.traces["/blocked/2"]
    # Headers are logged, the secrets are not.
    assert ["authorization", "[redacted]"] in get["request_headers"]
    assert ["cookie", "[redacted]"] in get["request_headers"]
    assert ["set-cookie", "[redacted]"] in get["response_headers"]
    assert ["user-agent", "test-agent/1.0"] in get["request_headers"]
    files = b"".join(p.read_bytes() for p in (tmp_path / "logs").iterdir())
    assert SECRET.encode() not in files
    # The database holds the same records.
    with sqlite3.connect(tmp_path / "traffic.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM traffic")]
    assert len(rows) == 3
    for row in rows:
        expected = records[row["path"]]
        for key, value in expected.items():
            got = row[key]
            if key in ("decisions", "request_headers", "response_headers"):
                got = json.loads(got)
            assert got == value, key
    db = b"".join(p.read_bytes() for p in tmp_path.glob("traffic.db*"))
    assert SECRET.encode() not in db


async def test_a_client_leaving_mid_download_is_logged_as_cut(
    start_proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    """The status sent was 200; the record says the response did not finish."""
    app = await start_proxy(config(tmp_path, upstream.port, chain='"trafficlog"'))
    plugin = app.generation.host.instances["trafficlog"]
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", app.port())
        async with stream:
            await stream.send_all(b"GET /stream/50000000 HTTP/1.1\r\nHost: site.test\r\n\r\n")
            got = b""
            while len(got) < 70000:
                got += await stream.receive_some(65536)
    await wait_for(lambda: plugin.written == {"file": 1})
    await stop(app, plugin)
    (record,) = read_lines(tmp_path / "logs")
    assert (record["path"], record["status"]) == ("/stream/50000000", 200)
    assert record["error"] == "the client went away"
    assert 0 < record["bytes_out"] < 50_000_000


async def test_overflow_under_load_missing_equals_dropped(
    start_proxy: Any, upstream: Any, client: Any, tmp_path: Path
) -> None:
    """Concurrent clients while the sink is stuck: every answered request is written or counted."""
    table = {"directory": str(tmp_path / "logs"), "queue": 4, "batch": 2, "flush_interval_s": 0.001}
    plugin = GatedPlugin(sdk.structure(table, TrafficLogPlugin.config_class, path=PATH))
    app = await start_proxy(
        config(tmp_path, upstream.port, chain='"trafficlog"'),
        extra_plugins={"trafficlog": plugin},
    )
    port = app.port()
    statuses: list[int] = []

    async def one(i: int) -> None:
        statuses.append(await request(client, port, "GET", f"/load/{i}"))

    async with trio.open_nursery() as n:
        for i in range(60):
            n.start_soon(one, i)
    assert statuses == [200] * 60  # the stuck sink slowed no request
    (sink,) = plugin.sinks
    assert sink.entered.is_set()
    dropped = plugin.dropped["file"]
    assert dropped >= 60 - 2 - 4  # at most one batch with the writer, four queued
    sink.gate.set()
    await stop(app, plugin)
    paths = [r["path"] for r in read_lines(tmp_path / "logs")]
    assert len(paths) == len(set(paths)) == plugin.written["file"]
    missing = {f"/load/{i}" for i in range(60)} - set(paths)
    assert len(missing) == dropped
    assert plugin.written["file"] + dropped == 60


def open_fds(path: Path) -> int:
    """How many descriptors of this process point at ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            continue
    return count


async def test_reload_keeps_one_open_file(
    start_proxy: Any, upstream: Any, client: Any, tmp_path: Path
) -> None:
    text = config(tmp_path, upstream.port, chain='"trafficlog"')
    app = await start_proxy(text)
    first = app.generation.host.instances["trafficlog"]
    port = app.port()
    sent: list[str] = []
    stop_load = trio.Event()

    async def load(worker: int) -> None:
        i = 0
        while not stop_load.is_set():
            path = f"/w{worker}/{i}"
            assert await request(client, port, "GET", path) == 200
            sent.append(path)
            i += 1

    async with trio.open_nursery() as n:
        for w in range(4):
            n.start_soon(load, w)
        await wait_for(lambda: len(sent) >= 20)
        for batch in (50, 60):
            app.config_path.write_text(text.replace("flush_interval_s", f"batch = {batch}\n#"))
            assert await app.reload("test")
            enough = 20 + batch
            await wait_for(lambda: len(sent) >= enough)  # noqa: B023 (awaited right here)
        stop_load.set()
    plugin = app.generation.host.instances["trafficlog"]
    assert plugin is not first
    assert app.generation.number == 3
    pipeline = plugin.pipelines["file"]
    assert pipeline is first.pipelines["file"]
    assert pipeline.batch == 60
    log_file = tmp_path / "logs" / os.listdir(tmp_path / "logs")[0]
    await wait_for(lambda: pipeline.written == len(sent))
    assert open_fds(log_file) == 1
    await stop(app, plugin)
    assert open_fds(log_file) == 0
    records = read_lines(tmp_path / "logs")
    paths = [r["path"] for r in records]
    assert sorted(paths) == sorted(sent)  # none lost, none twice
    assert {r["generation"] for r in records} == {1, 2, 3}
    assert pipeline.dropped == 0


# ------------------------------------------------------------------ SIGTERM
@pytest.mark.slow
async def test_sigterm_flushes_the_queue(
    spawn_proxy: SpawnProxy, upstream: Any, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    port = free_port()
    text = proxy_config(
        upstream.port,
        port,
        grace=5.0,
        kernel_extra='plugins = ["trafficlog"]\n\n[kernel.modules]\n'
        'trafficlog = "plugins.builtin.trafficlog:TrafficLogPlugin"\n',
        # Nothing is written before the end: batches never fill, the interval is long.
        extra=f'\n[plugins.trafficlog]\ndirectory = "{logs}"\n'
        "batch = 100000\nqueue = 100000\nflush_interval_s = 60\n",
    )
    proxy = await spawn_proxy(text, port=port)
    answered: list[str] = []
    refused = trio.Event()

    async def load(worker: int) -> None:
        i = 0
        while True:
            path = f"/bytes/100?slow=0.02&w={worker}&i={i}"
            head = f"GET {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n"
            try:
                raw = await client_helpers.exchange(port, head.encode())
            except (OSError, trio.BrokenResourceError):
                refused.set()
                return
            responses = client_helpers.parse_responses(raw)
            if responses and responses[0]["status"] == 200:
                answered.append(path)
            i += 1

    async with trio.open_nursery() as n:
        for w in range(8):
            n.start_soon(load, w)
        with trio.fail_after(10):
            while len(answered) < 100:
                await trio.sleep(0.01)
        assert not list(logs.glob("traffic-*.log"))  # all still queued
        proxy.signal(signal.SIGTERM)
        assert await proxy.wait(15) == 0
    assert refused.is_set()
    paths = [r["path"] for r in read_lines(logs)]
    assert len(paths) == len(set(paths))
    missing = set(answered) - set(paths)
    assert not missing, f"{len(missing)} answered requests have no record"
    # Every request the upstream saw (those in flight at SIGTERM included) is logged.
    proxied = [p for p in paths if p.startswith("/bytes/")]
    assert sorted(proxied) == sorted(r["target"] for r in upstream.requests)
    assert len(proxied) >= len(answered)
    assert "dropped" not in proxy.stderr()


# ------------------------------------------------------ workers, one SQLite file
@pytest.mark.slow
async def test_workers_share_one_sqlite_file_and_lose_no_record(
    spawn_proxy: SpawnProxy, tmp_path: Path
) -> None:
    """``[server] workers = 2``, both writing ``traffic.db``: one row per request.

    While the load runs, another writer (a user's ``sqlite3`` shell) holds the
    write lock for longer than SQLite's busy timeout; at SIGTERM it holds it
    again, and the workers' last writes wait for it without stalling their
    event loops (the stall watchdog would say so).
    """
    db = tmp_path / "logs" / "traffic.db"
    port = free_port()
    text = f"""
[kernel]
watch_config = false
shutdown_grace_s = 5
plugins = ["trafficlog"]

[server]
workers = 2

[[listeners]]
bind = "127.0.0.1:{port}"

[[routes]]
name = "r"
plugins = ["respond"]

[plugins.respond]
body = "logged"

[plugins.trafficlog]
type = "database"
database = "sqlite:{db}"
batch = 50
flush_interval_s = 0.05
"""
    proxy = await spawn_proxy(text, port=port, ready=False)
    await proxy.wait_ready(60)  # two workers start at once on a small, busy machine
    answered: list[str] = []
    target = 2000

    async def load(worker: int) -> None:
        i = 0
        while len(answered) < target:
            path = f"/w{worker}/{i}"
            head = f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            raw = await client_helpers.exchange(port, head.encode())
            (resp,) = client_helpers.parse_responses(raw)
            assert resp["status"] == 200
            answered.append(path)
            i += 1

    async with trio.open_nursery() as n:
        for w in range(20):
            n.start_soon(load, w)
        await wait_for(lambda: db.exists() and len(answered) > 200, 30)
        # Longer than a statement's busy timeout (5 s): batches must wait, not drop.
        holder = await trio.to_thread.run_sync(hold_write_lock, db, 6.0)
        await trio.to_thread.run_sync(holder.join)
    # (The readiness probes are logged too: they are not the load's.)
    await wait_for(lambda: count_rows(db, "/w%") == len(answered), 30)
    holder = await trio.to_thread.run_sync(hold_write_lock, db, 2.0)
    for w in range(2):
        assert await request(client_helpers, port, "GET", f"/last/{w}") == 200
    proxy.signal(signal.SIGTERM)
    assert await proxy.wait(30) == 0
    await trio.to_thread.run_sync(holder.join)
    paths = [r["path"] for r in sqlite_rows(db) if r["path"] != "/"]  # "/": the probes
    assert sorted(paths) == sorted([*answered, "/last/0", "/last/1"])  # none lost, none twice
    # Both workers wrote (a flow id starts with its process's own prefix).
    assert len({r["id"].rsplit("-", 1)[0] for r in sqlite_rows(db)}) == 2
    err = proxy.stderr()
    assert "dropped" not in err
    assert "locked" not in err
    assert "event loop has not turned" not in err
