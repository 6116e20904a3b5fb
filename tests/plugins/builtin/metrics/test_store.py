"""Store and Metrics: shared objects across instances, the facade, and multiprocess mode
with real ``kernel run`` processes (two sharing a directory, and ``[server] workers = 2``)."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import Counter, Gauge, Histogram

from plugins.builtin.metrics import MetricsConfig, MetricsPlugin, Store, reset_store, store
from plugins.builtin.metrics.store import MULTIPROC_ENV, Metrics
from tests.e2e.conftest import free_port
from tests.helpers.upstream import Upstream
from tests.plugins.builtin.metrics.conftest import SpawnKernel
from tests.plugins.builtin.metrics.support import (
    matching,
    parse,
    request,
    scrape,
    startup_context,
    value,
)


def rendered(s: Store) -> Any:
    return parse(s.render()[0].decode())


# ------------------------------------------------------------------ in-process
def test_same_name_and_shape_gives_the_same_object(fresh_store: Store) -> None:
    a = fresh_store.get(Counter, "x_total", "doc", ("route",))
    b = fresh_store.get(Counter, "x_total", "other words", ["route"])
    assert a is b
    a.labels("r").inc(3)
    assert value(rendered(fresh_store), "x_total", route="r") == 3


def test_a_new_shape_replaces_the_object(fresh_store: Store) -> None:
    old = fresh_store.get(Histogram, "d_seconds", "doc", (), buckets=(0.1, 1.0))
    old.observe(0.5)
    new = fresh_store.get(Histogram, "d_seconds", "doc", (), buckets=(0.2,))
    assert new is not old
    s = rendered(fresh_store)
    assert {dict(lbl)["le"] for lbl in matching(s, "d_seconds_bucket")} == {"0.2", "+Inf"}
    assert value(s, "d_seconds_count") == 0


def test_stores_do_not_share_series() -> None:
    one = Store()
    two = Store()
    one.get(Counter, "only_here_total", "doc").inc()
    assert value(rendered(one), "only_here_total") == 1
    assert "only_here_total" not in {name for name, _ in rendered(two)}


def test_reset_store_starts_afresh(fresh_store: Store) -> None:
    assert store() is fresh_store
    fresh_store.get(Counter, "c_total", "doc").inc()
    again = reset_store()
    assert again is store()
    assert again is not fresh_store
    assert again.names() == []


def test_render_formats() -> None:
    s = Store()
    s.get(Counter, "c_total", "doc").inc()
    text, content_type = s.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b"c_total 1.0" in text
    om, om_type = s.render("application/openmetrics-text; version=1.0.0")
    assert om_type.startswith("application/openmetrics-text")
    assert om.endswith(b"# EOF\n")


def test_a_multiprocess_dir_set_too_late_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # This test process imported prometheus_client without the variable.
    with caplog.at_level(logging.WARNING, "trellis.plugins.metrics"):
        s = Store(str(tmp_path))
    assert not s.multiprocess
    assert s.registry is not None
    assert "imported before it was" in caplog.text


def test_facade_prefix_and_buckets(fresh_store: Store) -> None:
    config = MetricsConfig(
        prefix="edge_", histogram_buckets={"traffic_log_write_duration_seconds": [1, 10]}
    )
    m = Metrics(config, fresh_store)
    assert m.prefix == "edge_"
    assert not m.multiprocess
    c = m.counter("cache_hits_total", "Hits.", ["cache"])
    g = m.gauge("queue_depth", "Depth.", multiprocess_mode="livemax")
    h = m.histogram("traffic_log_write_duration_seconds", "Writes.", ["sink"], buckets_ms=[5])
    sizes = m.histogram("batch_size_records", "Records per batch.", buckets_ms=[10, 100])
    plain = m.histogram("other_seconds", "Anything.")
    assert isinstance(c, Counter)
    assert isinstance(g, Gauge)
    assert isinstance(h, Histogram)
    c.labels("main").inc()
    g.set(4)
    h.labels("file").observe(0.002)
    sizes.observe(50)
    plain.observe(1)
    s = rendered(fresh_store)
    assert value(s, "edge_cache_hits_total", cache="main") == 1
    assert value(s, "edge_queue_depth") == 4
    # The table wins over buckets_ms; milliseconds become seconds.
    les = {dict(lbl)["le"] for lbl in matching(s, "edge_traffic_log_write_duration_seconds_bucket")}
    assert les == {"0.001", "0.01", "+Inf"}
    les = {dict(lbl)["le"] for lbl in matching(s, "edge_batch_size_records_bucket")}
    assert les == {"10.0", "100.0", "+Inf"}  # not _seconds: as given
    assert value(s, "edge_other_seconds_bucket", le="2.5") == 1  # prometheus-client's defaults
    assert m.histograms == {
        "traffic_log_write_duration_seconds",
        "batch_size_records",
        "other_seconds",
    }
    # Asking again (next generation, new facade) gives the same objects.
    again = Metrics(config, fresh_store)
    assert again.counter("cache_hits_total", "Hits.", ["cache"]) is c


def test_a_wrong_shape_for_a_taken_name_raises(fresh_store: Store) -> None:
    m = Metrics(MetricsConfig(), fresh_store)
    jobs = m.counter("jobs_total", "Jobs.")
    with pytest.raises(ValueError, match="'trellis_jobs_total' exists already as a counter"):
        m.gauge("jobs_total", "Jobs.")
    with pytest.raises(ValueError, match="with no labels"):
        m.counter("jobs_total", "Jobs.", ["queue"])
    assert m.counter("jobs_total", "Jobs.") is jobs
    # A name that another metric's samples use is refused by prometheus-client.
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        m.gauge("jobs_created", "Clash with the counter's _created sample.")


async def test_new_instances_reuse_the_objects(fresh_store: Store) -> None:
    first = MetricsPlugin(MetricsConfig(), fresh_store)
    first.trellis_startup(startup_context(1))
    second = MetricsPlugin(MetricsConfig(), fresh_store)
    second.trellis_startup(startup_context(2))
    assert first.series is not None
    assert second.series is not None
    assert first.series.requests is second.series.requests
    assert first.series.upstream_duration is second.series.upstream_duration


# ---------------------------------------------------------- multiprocess mode
def two_listeners(main: int, metrics: int, upstream: int, kernel_extra: str = "") -> str:
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = ["metrics", "health"]

[server]
http1 = "h11"
{kernel_extra}

[[listeners]]
name = "main"
bind = "127.0.0.1:{main}"

[[listeners]]
name = "metrics"
bind = "127.0.0.1:{metrics}"

[[listeners]]
name = "health"
bind = "127.0.0.2:{metrics}"

[[routes]]
name = "app"
upstream = "http://127.0.0.1:{upstream}"
"""


@pytest.mark.slow
async def test_two_processes_sharing_a_directory_add_up(
    kernels: SpawnKernel, upstream: Upstream, tmp_path: Path
) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {MULTIPROC_ENV: str(shared)}
    ports = [(free_port(), free_port()) for _ in range(2)]
    procs = [
        await kernels(two_listeners(main, metrics, upstream.port), metrics, env)
        for main, metrics in ports
    ]
    (main_a, metrics_a), (main_b, metrics_b) = ports
    for _ in range(5):
        assert (await request(main_a, "GET", "/a"))["status"] == 200
    for _ in range(3):
        assert (await request(main_b, "POST", "/b", b"xyz"))["status"] == 200
    assert len(upstream.requests) == 8

    for port in (metrics_a, metrics_b):  # either process shows both processes' counts
        s = await scrape(port)
        assert matching(s, "trellis_requests_total") == {
            (("method", "GET"), ("route", "app"), ("status_class", "2xx")): 5,
            (("method", "POST"), ("route", "app"), ("status_class", "2xx")): 3,
        }
        assert value(s, "trellis_request_duration_seconds_count", route="app") == 8
        assert (
            value(s, "trellis_upstream_duration_seconds_count", route="app", group="", target="")
            == 8
        )
        assert value(s, "trellis_bytes_total", route="app", direction="out") == 8 * 1024
        assert value(s, "trellis_bytes_total", route="app", direction="in") == 9
        # livesum: one sample, no pid label; the scrape's own connection is not
        # counted (the other process's last sample may still hold its scrape).
        assert ("trellis_active_connections", ()) in s
        assert value(s, "trellis_active_connections") <= 1
        assert value(s, "trellis_config_generation") == 1
    # Each process wrote its own files into the shared directory.
    pids = {p.pid for p in procs}
    counter_files = {int(f.stem.split("_")[-1]) for f in shared.glob("counter_*.db")}
    assert counter_files == pids


def children(pid: int) -> set[int]:
    """PIDs whose parent is ``pid``."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(entry.name))
    return out


def environ(pid: int) -> dict[str, str]:
    """The environment a process started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(): v.decode() for k, _, v in pairs}


def workers_config(main: int, metrics: int, health: int, upstream: int) -> str:
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = ["metrics", "health"]

[server]
workers = 2

[[listeners]]
name = "main"
bind = "127.0.0.1:{main}"

[[listeners]]
name = "metrics"
bind = "127.0.0.1:{metrics}"

[[listeners]]
name = "health"
bind = "127.0.0.1:{health}"

[[routes]]
name = "app"
upstream = "http://127.0.0.1:{upstream}"
"""


@pytest.mark.slow
async def test_two_workers_add_up(kernels: SpawnKernel, upstream: Upstream) -> None:
    main, metrics, health = free_port(), free_port(), free_port()
    sup = await kernels(workers_config(main, metrics, health, upstream.port), health)
    # Wait until both workers answer (each binds every listener with SO_REUSEPORT).
    seen: set[int] = set()
    with trio.fail_after(20):
        while seen != {0, 1}:
            resp = await request(health, "GET", "/health")
            if resp["status"] == 200:
                seen.add(int(json.loads(resp["body"])["worker"]))
            else:
                await trio.sleep(0.05)
    n = 40  # over 40 connections: both workers get some (all on one: 2 * 2**-40)
    for _ in range(n):
        assert (await request(main, "GET", "/w"))["status"] == 200
    assert len(upstream.requests) == n
    # Both workers counted some of them, each in its own file of the supervisor's directory.
    workers = children(sup.pid)
    assert len(workers) == 2
    (shared,) = {environ(pid)[MULTIPROC_ENV] for pid in workers}
    assert {int(f.stem.split("_")[-1]) for f in Path(shared).glob("counter_*.db")} == workers
    for _ in range(6):  # whichever worker answers the scrape, it shows both workers' counts
        s = await scrape(metrics)
        assert matching(s, "trellis_requests_total") == {
            (("method", "GET"), ("route", "app"), ("status_class", "2xx")): n
        }
        assert value(s, "trellis_request_duration_seconds_count", route="app") == n
    # The set drains and exits cleanly.
    sup.signal(signal.SIGTERM)
    assert await sup.wait(20) == 0
