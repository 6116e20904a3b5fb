"""MetricsPlugin: exact series after a known mix of requests, in a real kernel and the Harness."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

import sdk
from plugins.builtin.metrics import MetricsConfig, MetricsPlugin, Store
from plugins.builtin.metrics.plugin import method_label, status_class
from sdk.testing import Harness, make_flow
from tests.helpers import client
from tests.helpers.upstream import Upstream, raw_upstream
from tests.plugins.builtin.metrics.support import (
    label_values,
    matching,
    parse,
    request,
    scrape,
    startup_context,
    total,
    value,
)


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


KERNEL = """
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = ["metrics"]
{kernel_extra}
"""


#: Each listener on its own loopback address (two binds to ``127.0.0.1:0`` are refused).
HOSTS = {
    "main": "127.0.0.1",
    "dead": "127.0.0.2",
    "local": "127.0.0.3",
    "metrics": "127.0.0.4",
    "health": "127.0.0.5",
}


def listener(name: str, route: str = "") -> str:
    default = f'default_route = "{route}"\n' if route else ""
    return f'[[listeners]]\nname = "{name}"\nbind = "{HOSTS[name]}:0"\n{default}\n'


def at(app: Any, name: str) -> tuple[str, int]:
    """Where listener ``name`` of ``app`` listens."""
    return HOSTS[name], app.port(name)


def mix_config(upstream_port: int, dead: int, extra: str = "", kernel_extra: str = "") -> str:
    """Listeners main (route app), dead (route dead), local (route local), metrics."""
    return (
        KERNEL.format(kernel_extra=kernel_extra)
        + listener("main", "app")
        + listener("dead", "dead")
        + listener("local", "local")
        + listener("metrics")
        + f"""
[[routes]]
name = "app"
upstream = "http://127.0.0.1:{upstream_port}"

[[routes]]
name = "dead"
upstream = "http://127.0.0.1:{dead}"

[[routes]]
name = "local"
plugins = ["respond"]

[plugins.respond]
body = "local answer\\n"
{extra}
"""
    )


async def send_mix(app: Any) -> dict[str, int]:
    """7 GET 200, 3 POST 404 (10-byte bodies), 2 refused upstream 502, 1 local GET,
    1 local BREW; returns the response body bytes per route."""
    out = {"app": 0, "dead": 0, "local": 0}
    for _ in range(7):
        resp = await request(at(app, "main"), "GET", "/bytes/100")
        assert resp["status"] == 200
        out["app"] += len(resp["body"])
    for _ in range(3):
        resp = await request(at(app, "main"), "POST", "/status/404", b"0123456789")
        assert resp["status"] == 404
        out["app"] += len(resp["body"])
    for _ in range(2):
        resp = await request(at(app, "dead"), "GET", "/x")
        assert resp["status"] == 502
        out["dead"] += len(resp["body"])
    for method in ("GET", "BREW"):
        resp = await request(at(app, "local"), method, "/here")
        assert resp["status"] == 200
        assert resp["body"] == b"local answer\n"
        out["local"] += len(resp["body"])
    return out


# ------------------------------------------------------------- real kernel
async def test_exact_counts_after_a_known_mix(start_proxy: Any, upstream: Upstream) -> None:
    app = await start_proxy(mix_config(upstream.port, dead_port()))
    body_bytes = await send_mix(app)
    assert out_of(upstream) == 10  # the refused and local ones never got there

    s = await scrape(at(app, "metrics"))
    p = "trellis_"
    assert matching(s, p + "requests_total") == {
        (("method", "GET"), ("route", "app"), ("status_class", "2xx")): 7,
        (("method", "POST"), ("route", "app"), ("status_class", "4xx")): 3,
        (("method", "GET"), ("route", "dead"), ("status_class", "5xx")): 2,
        (("method", "GET"), ("route", "local"), ("status_class", "2xx")): 1,
        (("method", "OTHER"), ("route", "local"), ("status_class", "2xx")): 1,
    }
    # Durations: one observation per flow; upstream ones only for the upstream's answers.
    assert value(s, p + "request_duration_seconds_count", route="app") == 10
    assert value(s, p + "request_duration_seconds_count", route="dead") == 2
    assert value(s, p + "request_duration_seconds_count", route="local") == 2
    assert matching(s, p + "upstream_duration_seconds_count") == {
        (("group", ""), ("route", "app"), ("target", "")): 10
    }
    assert (
        value(
            s, p + "upstream_duration_seconds_bucket", route="app", group="", target="", le="+Inf"
        )
        == 10
    )
    assert 0 < value(s, p + "request_duration_seconds_sum", route="app") < 10
    # Bytes: request bodies in, response bodies out (error pages included).
    assert value(s, p + "bytes_total", route="app", direction="in") == 30
    assert value(s, p + "bytes_total", route="app", direction="out") == body_bytes["app"] == 700
    assert value(s, p + "bytes_total", route="dead", direction="out") == body_bytes["dead"] > 0
    assert value(s, p + "bytes_total", route="local", direction="out") == 26
    assert value(s, p + "bytes_total", route="local", direction="in") == 0
    # Gauges read from the kernel, the scrape's own connection and request aside.
    assert value(s, p + "active_connections") == 0
    assert value(s, p + "active_requests") == 0
    assert value(s, p + "config_generation") == 1
    assert total(s, p + "plugin_errors_total") == 0
    # Labels are configuration names and fixed words, never paths or hosts.
    labels = label_values(s, p)
    assert labels <= {
        "app",
        "dead",
        "local",
        "GET",
        "POST",
        "OTHER",
        "2xx",
        "4xx",
        "5xx",
        "in",
        "out",
        "",
    }
    assert not any("/" in v or "127.0.0.1" in v or "site.test" in v for v in labels)

    # Scraping is not counted: a second scrape sees the same request counts.
    again = await scrape(at(app, "metrics"))
    assert matching(again, p + "requests_total") == matching(s, p + "requests_total")
    assert value(again, p + "request_duration_seconds_count", route="app") == 10


async def read_head_then_leave(where: tuple[str, int], path: str) -> bytes:
    """GET ``path``, read until the response head and a little body came, then close."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(*where)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n".encode())
            got = b""
            while b"\r\n\r\n" not in got or len(got) < 70000:
                got += await stream.receive_some(65536)
    return got


async def test_a_response_cut_after_its_head_counts_by_its_error(
    start_proxy: Any, upstream: Upstream, nursery: trio.Nursery
) -> None:
    """The head said 200, then the upstream broke off (short body, read
    timeout) or the client left: counted by the error, not as 2xx."""
    short = await raw_upstream(
        nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50000
    )
    stall = await raw_upstream(
        nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000, hold_s=10
    )
    config = (
        KERNEL.format(kernel_extra="")
        + listener("main", "short")
        + listener("dead", "stall")
        + listener("local", "app")
        + listener("metrics")
        + f"""
[[routes]]
name = "short"
upstream = "http://127.0.0.1:{short}"

[[routes]]
name = "stall"
upstream = "http://127.0.0.1:{stall}"
[routes.transport]
read_timeout_s = 0.3

[[routes]]
name = "app"
upstream = "http://127.0.0.1:{upstream.port}"
"""
    )
    app = await start_proxy(config)
    for name in ("main", "dead"):
        host, port = at(app, name)
        raw = await client.exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", host=host)
        assert raw.startswith(b"HTTP/1.1 200 ")  # the head went out, the body was cut
        assert client.parse_responses(raw) == []
    # A client that leaves mid-download (50 MB, generated as it goes).
    got = await read_head_then_leave(at(app, "local"), "/stream/50000000")
    assert got.startswith(b"HTTP/1.1 200 ")
    port = at(app, "metrics")
    with trio.fail_after(5):
        while total(s := await scrape(port), "trellis_requests_total", route="app") == 0:
            await trio.sleep(0.02)
    assert matching(s, "trellis_requests_total") == {
        (("method", "GET"), ("route", "short"), ("status_class", "5xx")): 1,
        (("method", "GET"), ("route", "stall"), ("status_class", "5xx")): 1,
        (("method", "GET"), ("route", "app"), ("status_class", "4xx")): 1,
    }
    # What did go out is counted, and the client's leaving is no upstream failure.
    assert value(s, "trellis_bytes_total", route="short", direction="out") == 50000
    assert matching(s, "trellis_upstream_duration_seconds_count") == {
        (("group", ""), ("route", "app"), ("target", "")): 1
    }


async def test_in_flight_requests_are_counted_but_not_the_scrape(
    start_proxy: Any, upstream: Upstream, nursery: trio.Nursery
) -> None:
    app = await start_proxy(mix_config(upstream.port, dead_port()))
    port = at(app, "metrics")
    s = await scrape(port)
    assert value(s, "trellis_active_connections") == 0
    assert value(s, "trellis_active_requests") == 0
    nursery.start_soon(request, at(app, "main"), "GET", "/sleep/1")
    with trio.fail_after(5):
        while not upstream.requests:
            await trio.sleep(0.01)
    s = await scrape(port)
    assert value(s, "trellis_active_connections") == 1
    assert value(s, "trellis_active_requests") == 1


def out_of(upstream: Upstream) -> int:
    return len(upstream.requests)


async def test_metrics_listener_answers_only_metrics(start_proxy: Any, upstream: Upstream) -> None:
    app = await start_proxy(mix_config(upstream.port, dead_port()))
    port = at(app, "metrics")
    head = await request(port, "HEAD", "/metrics")
    assert head["status"] == 200
    assert head["body"] == b""
    assert head["headers"]["content-type"].startswith("text/plain")
    query = await request(port, "GET", "/metrics?x=1")
    assert query["status"] == 200
    post = await request(port, "POST", "/metrics", b"x")
    assert post["status"] == 405
    assert post["headers"]["allow"] == "GET, HEAD"
    for path in ("/", "/metrics/", "/health", "/bytes/5"):
        resp = await request(port, "GET", path)
        assert resp["status"] == 404, path
    assert upstream.requests == []  # nothing on the metrics listener went upstream
    # OpenMetrics when the scraper asks for it.
    om = await request(
        port, "GET", "/metrics", headers=[("Accept", "application/openmetrics-text")]
    )
    assert om["headers"]["content-type"].startswith("application/openmetrics-text")
    assert om["body"].endswith(b"# EOF\n")
    s = await scrape(port)
    assert total(s, "trellis_requests_total") == 0


class Boom:
    """Fails in trellis_request (policy fail_open: the flow goes on)."""

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        raise RuntimeError("boom")


async def test_a_failing_fail_open_plugin_is_counted(start_proxy: Any, upstream: Upstream) -> None:
    config = mix_config(
        upstream.port,
        dead_port(),
        kernel_extra='plugins = ["metrics", "boom"]\n[kernel.policy.boom]\non_error = "fail_open"',
    ).replace('plugins = ["metrics"]\n', "", 1)
    app = await start_proxy(config, extra_plugins={"boom": Boom()})
    for _ in range(4):
        assert (await request(at(app, "main"), "GET", "/a"))["status"] == 200
    s = await scrape(at(app, "metrics"))
    assert matching(s, "trellis_plugin_errors_total") == {
        (("hook", "trellis_request"), ("plugin", "boom")): 4
    }
    assert value(s, "trellis_requests_total", route="app", method="GET", status_class="2xx") == 4


async def test_target_health_and_probe_durations(
    start_proxy: Any, upstream: Upstream, nursery: trio.Nursery
) -> None:
    other = await nursery.start(Upstream().serve)
    config = (
        KERNEL.format(kernel_extra="")
        + listener("main", "good")
        + listener("metrics")
        + f"""
[[routes]]
name = "good"
group = "good"

[[groups]]
name = "good"
[[groups.targets]]
name = "g1"
url = "http://127.0.0.1:{upstream.port}"
[groups.health]
path = "/status/200"
interval_s = 0.05
unhealthy_threshold = 1

[[groups]]
name = "bad"
[[groups.targets]]
name = "b1"
url = "http://127.0.0.1:{other.port}"
[groups.health]
path = "/status/500"
interval_s = 0.05
unhealthy_threshold = 1
"""
    )
    app = await start_proxy(config)
    port = at(app, "metrics")
    s = await scrape(port)
    assert value(s, "trellis_target_healthy", group="good", target="g1") == 1
    with trio.fail_after(5):
        while value(s, "trellis_target_healthy", group="bad", target="b1") != 0:
            await trio.sleep(0.02)
            s = await scrape(port)
    assert value(s, "trellis_target_healthy", group="good", target="g1") == 1
    # Probes are timed, whatever their verdict; failures are counted too.
    with trio.fail_after(5):
        while value(s, "trellis_health_check_duration_seconds_count", group="bad", target="b1") < 3:
            await trio.sleep(0.05)
            s = await scrape(port)
    first = value(s, "trellis_health_check_duration_seconds_count", group="good", target="g1")
    assert first >= 1
    assert value(s, "trellis_health_check_failures_total", group="bad", target="b1") >= 3
    assert value(s, "trellis_health_check_failures_total", group="good", target="g1") == 0
    # Default health-check buckets: 1 ms .. 5 s.
    les = {
        dict(lbl)["le"]
        for lbl in matching(s, "trellis_health_check_duration_seconds_bucket", group="good")
    }
    assert les == {
        "0.001",
        "0.0025",
        "0.005",
        "0.01",
        "0.025",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "1.0",
        "2.5",
        "5.0",
        "+Inf",
    }
    await trio.sleep(0.3)
    later = await scrape(port)
    assert (
        value(later, "trellis_health_check_duration_seconds_count", group="good", target="g1")
        > first
    )
    # A request through the group is labelled with its group and target.
    assert (await request(at(app, "main"), "GET", "/a"))["status"] == 200
    s = await scrape(port)
    assert matching(s, "trellis_upstream_duration_seconds_count") == {
        (("group", "good"), ("route", "good"), ("target", "g1")): 1
    }


async def test_a_reload_keeps_the_counts(start_proxy: Any, upstream: Upstream) -> None:
    dead = dead_port()
    app = await start_proxy(mix_config(upstream.port, dead))
    for _ in range(3):
        await request(at(app, "main"), "GET", "/a")
    before = await scrape(at(app, "metrics"))
    assert (
        value(before, "trellis_requests_total", route="app", method="GET", status_class="2xx") == 3
    )
    # Same listeners, one more route: a new generation with new plugin instances.
    Path(app.config_path).write_text(
        mix_config(
            upstream.port, dead, '\n[[routes]]\nname = "more"\nupstream = "http://127.0.0.1:1"\n'
        )
    )
    assert await app.reload("test")
    for _ in range(2):
        await request(at(app, "main"), "GET", "/a")
    after = await scrape(at(app, "metrics"))
    assert (
        value(after, "trellis_requests_total", route="app", method="GET", status_class="2xx") == 5
    )
    assert value(after, "trellis_request_duration_seconds_count", route="app") == 5
    assert value(after, "trellis_bytes_total", route="app", direction="out") == 5 * 1024
    assert value(after, "trellis_config_generation") == 2


async def test_custom_prefix_and_buckets(start_proxy: Any, upstream: Upstream) -> None:
    extra = """
[plugins.metrics]
prefix = "edge_"

[plugins.metrics.histogram_buckets]
request_duration_seconds = [5, 50, 500]
upstream_duration_seconds = [1000]
"""
    app = await start_proxy(mix_config(upstream.port, dead_port(), extra))
    await request(at(app, "main"), "GET", "/a")
    s = await scrape(at(app, "metrics"))
    assert not [name for name, _ in s if not name.startswith("edge_")]
    assert value(s, "edge_requests_total", route="app", method="GET", status_class="2xx") == 1
    les = {
        dict(lbl)["le"] for lbl in matching(s, "edge_request_duration_seconds_bucket", route="app")
    }
    assert les == {"0.005", "0.05", "0.5", "+Inf"}
    les = {dict(lbl)["le"] for lbl in matching(s, "edge_upstream_duration_seconds_bucket")}
    assert les == {"1.0", "+Inf"}


async def test_health_listener_flows_are_not_counted(start_proxy: Any, upstream: Upstream) -> None:
    config = mix_config(upstream.port, dead_port()) + listener("health")
    app = await start_proxy(
        config.replace('plugins = ["metrics"]', 'plugins = ["metrics", "health"]')
    )
    assert (await request(at(app, "health"), "GET", "/health"))["status"] == 200
    assert (await request(at(app, "health"), "GET", "/nope"))["status"] == 404
    await request(at(app, "main"), "GET", "/a")
    s = await scrape(at(app, "metrics"))
    assert total(s, "trellis_requests_total") == 1


async def test_unknown_listener_is_a_config_error(tmp_path: Path) -> None:
    from kernel.generation import load_generation

    path = tmp_path / "bad.toml"
    path.write_text(
        KERNEL.format(kernel_extra="")
        + listener("main")
        + '[[routes]]\nname = "r"\nupstream = "http://127.0.0.1:1"\n'
        + '[plugins.metrics]\nexclude_listeners = ["main", "admin"]\n'
    )
    with pytest.raises(sdk.ConfigError) as info:
        load_generation(path)
    assert info.value.problems == [
        "$.plugins.metrics.listener: no listener named 'metrics' (listeners: main)",
        "$.plugins.metrics.exclude_listeners[1]: no listener named 'admin' (listeners: main)",
    ]


# ------------------------------------------------------------------ Harness
def plugin(store: Store, **config: Any) -> MetricsPlugin:
    return MetricsPlugin(sdk.structure(config, MetricsConfig, path="$.plugins.metrics"), store)


async def started(store: Store, **config: Any) -> tuple[Harness, MetricsPlugin]:
    p = plugin(store, **config)
    h = Harness(p)
    await h.call("trellis_startup", startup_context())
    return h, p


def rendered(store: Store) -> Any:
    return parse(store.render()[0].decode())


@pytest.mark.parametrize(
    ("method", "label"),
    [
        ("GET", "GET"),
        ("PATCH", "PATCH"),
        ("CONNECT", "CONNECT"),
        ("get", "OTHER"),
        ("BREW", "OTHER"),
    ],
)
def test_method_label(method: str, label: str) -> None:
    assert method_label(method) == label


@pytest.mark.parametrize(
    ("status", "label"),
    [(100, "1xx"), (204, "2xx"), (308, "3xx"), (451, "4xx"), (599, "5xx"), (None, "error")],
)
def test_status_class(status: int | None, label: str) -> None:
    flow = make_flow()
    if status is not None:
        flow.response = sdk.Response.make(status)
    assert status_class(flow) == label


@pytest.mark.parametrize(
    ("error", "status", "label"),
    [
        (sdk.UpstreamError("broke off mid-body"), 200, "5xx"),  # the head went out, then this
        (sdk.ClientDisconnected("the client went away"), 200, "4xx"),
        (sdk.ClientDisconnected("the client went away"), None, "4xx"),
        (sdk.ProxyError("cut by the shutdown", status_hint=503), None, "5xx"),
        (sdk.UpstreamTimeout("no answer"), 504, "5xx"),  # the error page
        (sdk.RemoteProtocolError("too large", status_hint=413), 413, "4xx"),
        (sdk.ProxyError("odd", status_hint=999), None, "error"),
    ],
)
def test_a_failed_flow_counts_by_its_error(
    error: sdk.ProxyError, status: int | None, label: str
) -> None:
    flow = make_flow()
    flow.error = error
    if status is not None:
        flow.response = sdk.Response.make(status)
    assert status_class(flow) == label


async def test_harness_flows_upstream_and_local(fresh_store: Store) -> None:
    h, _ = await started(fresh_store)
    await h.run(h.make_flow("POST", "http://a.test/x"), body=b"12345")
    flow = h.make_flow("GET", "http://a.test/y")
    flow.timings.upstream_connected = flow.timings.request_head  # as the kernel's relay does
    await h.run(flow, sdk.Response.make(503, b"down"))
    s = rendered(fresh_store)
    assert matching(s, "trellis_requests_total") == {
        (("method", "POST"), ("route", "default"), ("status_class", "2xx")): 1,
        (("method", "GET"), ("route", "default"), ("status_class", "5xx")): 1,
    }
    assert value(s, "trellis_bytes_total", route="default", direction="in") == 5
    assert (
        value(s, "trellis_bytes_total", route="default", direction="out") == len(b"upstream\n") + 4
    )
    # Only the flow whose upstream connection was timed has an upstream duration.
    assert total(s, "trellis_upstream_duration_seconds_count") == 1


async def test_a_flow_without_response_is_an_error(fresh_store: Store) -> None:
    h, _ = await started(fresh_store)
    flow = h.make_flow()
    flow.route = "r"
    flow.timings.done = flow.timings.request_head + 0.25
    await h.call("trellis_flow_done", flow)
    s = rendered(fresh_store)
    assert value(s, "trellis_requests_total", route="r", method="GET", status_class="error") == 1
    assert value(s, "trellis_request_duration_seconds_sum", route="r") == pytest.approx(0.25)
    assert value(s, "trellis_request_duration_seconds_bucket", route="r", le="0.25") == 1
    assert value(s, "trellis_request_duration_seconds_bucket", route="r", le="0.1") == 0


async def test_flows_on_excluded_listeners_are_not_counted(fresh_store: Store) -> None:
    h, _ = await started(fresh_store, listener="stats", exclude_listeners=["admin"])
    for name in ("stats", "admin", "main", "health"):
        flow = make_flow(listener=name)
        flow.route = "r"
        await h.call("trellis_flow_done", flow)
    s = rendered(fresh_store)
    # "health" is excluded only by default; an explicit list replaces the default.
    assert total(s, "trellis_requests_total") == 2


async def test_nothing_is_counted_before_startup(fresh_store: Store) -> None:
    p = plugin(fresh_store)
    await Harness(p).run(make_flow())
    assert fresh_store.names() == []  # no metric objects before trellis_startup


async def test_answers_on_its_listener_through_the_harness(fresh_store: Store) -> None:
    h, _ = await started(fresh_store)
    flow = await h.run(make_flow("GET", "http://x/metrics", listener="metrics"))
    assert flow.response is not None
    assert flow.response.status_code == 200
    assert flow.response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"trellis_requests_total" in (flow.response.body or b"")
    missing = await h.run(make_flow("GET", "http://x/other", listener="metrics"))
    assert missing.response is not None
    assert missing.response.status_code == 404
    elsewhere = await h.run(make_flow("GET", "http://x/metrics", listener="main"))
    assert elsewhere.response is not None
    assert elsewhere.response.body == b"upstream\n"
    assert total(rendered(fresh_store), "trellis_requests_total") == 1


async def test_live_gauges_are_sampled(fresh_store: Store) -> None:
    numbers = {"connections": 3, "flows": 2}
    server = sdk.ServerInfo(
        active_connections=lambda: numbers["connections"], active_flows=lambda: numbers["flows"]
    )
    tasks: list[Any] = []
    p = plugin(fresh_store, sample_interval_s=0.01)
    await Harness(p).call("trellis_startup", startup_context(server=server, tasks=tasks))
    assert value(rendered(fresh_store), "trellis_active_connections") == 3
    assert len(tasks) == 1
    numbers["connections"] = 7
    numbers["flows"] = 5
    with trio.move_on_after(0.1):
        fn, args = tasks[0]
        await fn(*args)  # the sampler: runs until cancelled
    s = rendered(fresh_store)
    assert value(s, "trellis_active_connections") == 7
    assert value(s, "trellis_active_requests") == 5


def targets(*states: tuple[str, bool]) -> dict[str, sdk.Group]:
    made = tuple(
        sdk.Target(
            group="g", name=name, origin=sdk.Origin("http", "10.0.0.1", 80 + i), available=up
        )
        for i, (name, up) in enumerate(states)
    )
    return {"g": sdk.Group("g", made)}


async def test_target_healthy_follows_the_hook_and_drops_gone_targets(fresh_store: Store) -> None:
    groups = targets(("a", True), ("b", False))
    h = Harness(plugin(fresh_store))
    await h.call("trellis_startup", startup_context(groups=groups))
    s = rendered(fresh_store)
    assert value(s, "trellis_target_healthy", group="g", target="a") == 1
    assert value(s, "trellis_target_healthy", group="g", target="b") == 0
    a, b = groups["g"].targets
    await h.call("trellis_target_health", a, False, "health check: 1 failure")
    await h.call("trellis_target_health", b, True, "health check: 2 successes")
    s = rendered(fresh_store)
    assert value(s, "trellis_target_healthy", group="g", target="a") == 0
    assert value(s, "trellis_target_healthy", group="g", target="b") == 1
    # The next generation has only "a": "b"'s series goes away.
    next_gen = Harness(plugin(fresh_store))
    await next_gen.call("trellis_startup", startup_context(2, groups=targets(("a", True))))
    assert matching(rendered(fresh_store), "trellis_target_healthy") == {
        (("group", "g"), ("target", "a")): 1
    }


async def test_plugin_errors_and_probes_through_the_hooks(fresh_store: Store) -> None:
    h, _ = await started(fresh_store)
    err = sdk.PluginError("auth", "trellis_request_access", "boom")
    await h.call("trellis_plugin_error", "auth", "trellis_request_access", err, False)
    await h.call("trellis_plugin_error", "auth", "trellis_request_access", err, True)
    (t,) = targets(("a", True))["g"].targets
    await h.call("trellis_health_probe", t, True, 0.003, "status 200")
    await h.call("trellis_health_probe", t, False, 0.2, "status 500")
    s = rendered(fresh_store)
    assert (
        value(s, "trellis_plugin_errors_total", plugin="auth", hook="trellis_request_access") == 2
    )
    assert value(s, "trellis_health_check_duration_seconds_count", group="g", target="a") == 2
    assert (
        value(s, "trellis_health_check_duration_seconds_bucket", group="g", target="a", le="0.005")
        == 1
    )
    assert value(s, "trellis_health_check_failures_total", group="g", target="a") == 1


async def test_config_check(fresh_store: Store) -> None:
    h = Harness(plugin(fresh_store))
    assert await h.call("trellis_config_check", ("r",), (), ("main", "metrics")) == [[]]
    assert await h.call("trellis_config_check", ("r",), (), ()) == [
        ["listener: no listener named 'metrics' (listeners: none)"]
    ]


def test_label_sets_stay_bounded_with_odd_methods(fresh_store: Store) -> None:
    p = plugin(fresh_store)
    p.trellis_startup(startup_context())
    for i in range(50):
        flow = make_flow(f"M{i}")
        flow.route = "r"
        p.trellis_flow_done(flow)
    s = rendered(fresh_store)
    assert matching(s, "trellis_requests_total") == {
        (("method", "OTHER"), ("route", "r"), ("status_class", "error")): 50
    }
    assert len(p._children) == 1


def test_docstring_lists_every_series(fresh_store: Store) -> None:
    import plugins.builtin.metrics as package

    p = plugin(fresh_store)
    p.trellis_startup(startup_context())
    doc = package.__doc__ or ""
    for full in fresh_store.names():
        name = full.removeprefix("trellis_")
        assert re.search(rf"``{name}[{{`]", doc) or f"``{name}``" in doc or f"{name}``" in doc, name
