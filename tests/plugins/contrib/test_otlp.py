"""OtlpPlugin: spans of traced flows reach a real OTLP/HTTP collector, without slowing requests.

The collector is a stand-in: an ``http.server`` on a thread that accepts
``POST /v1/traces`` and decodes the protobuf body with the collector's own
message type (``ExportTraceServiceRequest``, shipped with the exporter). The
proxy is a real in-process kernel with ``tracing`` and ``otlp`` loaded by
their entry points, in front of the real test upstream whose ``/echo`` says
which ``traceparent`` it received.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

import sdk
from plugins.contrib.otlp import OtlpConfig, OtlpPlugin, sampled_by_ratio
from sdk.testing import make_flow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
SERVER = Span.SpanKind.SPAN_KIND_SERVER
ERROR = Status.StatusCode.STATUS_CODE_ERROR
UNSET = Status.StatusCode.STATUS_CODE_UNSET
ROOT = Path(__file__).resolve().parents[3]


# ------------------------------------------------------------ the collector
class Collector:
    """An OTLP/HTTP traces endpoint on 127.0.0.1:0, on a thread.

    ``hold`` makes every export wait until it is set (a hanging collector).
    """

    def __init__(self, *, hang: bool = False) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.hold = threading.Event()
        if not hang:
            self.hold.set()
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                collector.hold.wait(30)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                with collector._lock:
                    collector.exports.append(export)
                    collector.headers.append({k.lower(): v for k, v in self.headers.items()})
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every span received: (its resource's attributes, the span)."""
        with self._lock:
            exports = list(self.exports)
        return [
            (attributes(rs.resource.attributes), span)
            for export in exports
            for rs in export.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        assert isinstance(kv, KeyValue)
        out[kv.key] = value(kv.value)
    return out


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ------------------------------------------------------------- the proxy
def proxy_config(upstream_port: int, otlp: str, *, tracing: str = "") -> str:
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = ["tracing", "otlp"]

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[routes]]
name = "default"
upstream = "http://127.0.0.1:{upstream_port}"

[plugins.tracing]
{tracing}

[plugins.otlp]
{otlp}
"""


async def get(client: Any, port: int, path: str, headers: str = "") -> dict[str, Any]:
    raw = await client.exchange(
        port,
        f"GET {path} HTTP/1.1\r\nHost: site.test\r\nUser-Agent: probe/1\r\n"
        f"{headers}Connection: close\r\n\r\n".encode(),
    )
    (resp,) = client.parse_responses(raw)
    result: dict[str, Any] = resp
    return result


def sent_upstream(upstream: Any) -> dict[str, tuple[str, str]]:
    """Request target -> (trace id, span id) of the traceparent the upstream got."""
    out = {}
    for record in upstream.requests:
        (tp,) = [v for n, v in record["headers"] if n == "traceparent"]
        m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", tp)
        assert m is not None, tp
        out[record["target"]] = (m[1], m[2])
    return out


async def stop(app: Any) -> OtlpPlugin:
    """Stop the proxy gracefully and wait for the exporter's final flush."""
    plugin = app.generation.host.instances["otlp"]
    assert isinstance(plugin, OtlpPlugin)
    app.stop()
    await until(lambda: plugin.flusher is not None)
    assert plugin.flusher is not None
    await trio.to_thread.run_sync(plugin.flusher.join, 20)
    return plugin


# -------------------------------------------------------------------- tests
async def test_spans_carry_the_ids_the_upstream_saw(
    start_proxy: Any, upstream: Any, client: Any, collector: Collector
) -> None:
    app = await start_proxy(
        proxy_config(
            upstream.port,
            f"""
endpoint = "{collector.url}"
service_name = "edge"
resource = {{ "deployment.environment" = "test" }}
headers = {{ authorization = "Bearer t0k" }}
flush_interval_s = 0.05
""",
        )
    )
    before = time.time()
    continued = await get(
        client,
        app.port(),
        "/echo?a=1",
        f"traceparent: {TRACEPARENT}\r\ntracestate: {TRACESTATE}\r\n",
    )
    fresh = await get(client, app.port(), "/echo")
    failing = await get(client, app.port(), "/status/503")
    after = time.time()
    assert [r["status"] for r in (continued, fresh, failing)] == [200, 200, 503]
    await until(lambda: len(collector.spans()) == 3)
    ids = sent_upstream(upstream)
    assert ids["/echo?a=1"][0] == TRACE_ID
    by_span = {span.span_id.hex(): (resource, span) for resource, span in collector.spans()}
    assert len(by_span) == 3

    for target, parent in (("/echo?a=1", SPAN_ID), ("/echo", ""), ("/status/503", "")):
        trace_id, span_id = ids[target]
        resource, span = by_span[span_id]
        assert span.trace_id.hex() == trace_id
        assert span.parent_span_id.hex() == parent
        assert span.kind == SERVER
        assert span.name == "GET default"
        assert before * 1e9 - 1e6 <= span.start_time_unix_nano <= span.end_time_unix_nano
        assert span.end_time_unix_nano <= after * 1e9 + 1e6
        assert [e.name for e in span.events] == ["upstream.connected", "response.head"]
        assert all(
            span.start_time_unix_nano <= e.time_unix_nano <= span.end_time_unix_nano
            for e in span.events
        )
        assert resource["service.name"] == "edge"
        assert resource["deployment.environment"] == "test"
        got = attributes(span.attributes)
        path = target.partition("?")[0]
        assert got == {
            "http.request.method": "GET",
            "http.response.status_code": 503 if path == "/status/503" else 200,
            "url.scheme": "http",
            "url.path": path,
            "server.address": "site.test",
            "server.port": 80,
            "client.address": "127.0.0.1",
            "client.port": got["client.port"],
            "network.protocol.version": "1.1",
            "user_agent.original": "probe/1",
            "http.request.body.size": 0,
            "http.response.body.size": got["http.response.body.size"],
            "trellis.route": "default",
            "trellis.target": f"http://127.0.0.1:{upstream.port}",
            "trellis.listener": "main",
            "trellis.flow_id": got["trellis.flow_id"],
            **({"error.type": "503"} if path == "/status/503" else {}),
        }
        assert got["client.port"] > 0
        if path == "/status/503":
            assert span.status.code == ERROR
        else:
            assert span.status.code == UNSET
            assert got["http.response.body.size"] > 0
    assert by_span[ids["/echo?a=1"][1]][1].trace_state == TRACESTATE
    assert by_span[ids["/echo"][1]][1].trace_state == ""
    assert {h["authorization"] for h in collector.headers} == {"Bearer t0k"}
    assert {h["content-type"] for h in collector.headers} == {"application/x-protobuf"}
    plugin = await stop(app)
    assert (plugin.queued, plugin.not_sampled) == (3, 0)


async def test_a_failed_flow_is_an_error_span(
    start_proxy: Any, client: Any, collector: Collector
) -> None:
    app = await start_proxy(
        proxy_config(dead_port(), f'endpoint = "{collector.url}"\nflush_interval_s = 0.05')
    )
    resp = await get(client, app.port(), "/x", f"traceparent: {TRACEPARENT}\r\n")
    assert resp["status"] == 502
    await until(lambda: len(collector.spans()) == 1)
    ((_, span),) = collector.spans()
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == SPAN_ID
    assert span.status.code == ERROR
    assert span.status.message
    got = attributes(span.attributes)
    assert got["http.response.status_code"] == 502
    assert got["error.type"].startswith("Upstream")
    await stop(app)


async def test_unsampled_and_ratio(
    start_proxy: Any, upstream: Any, client: Any, collector: Collector
) -> None:
    # sample_ratio = 0.5: trace ids whose low 64 bits are below 2**63 are kept.
    keep, drop = "0" * 16 + "7" + "f" * 15, "0" * 16 + "8" + "0" * 15
    app = await start_proxy(
        proxy_config(
            upstream.port,
            f'endpoint = "{collector.url}"\nflush_interval_s = 0.05\nsample_ratio = 0.5',
        )
    )
    for trace_id, flags in ((keep, "01"), (drop, "01"), (keep, "00")):
        tp = f"00-{trace_id}-{SPAN_ID}-{flags}"
        assert (await get(client, app.port(), "/echo", f"traceparent: {tp}\r\n"))["status"] == 200
    plugin = await stop(app)
    assert (plugin.queued, plugin.not_sampled) == (1, 2)
    ((_, span),) = collector.spans()
    assert span.trace_id.hex() == keep


async def test_shutdown_flushes_the_queue(
    start_proxy: Any, upstream: Any, client: Any, collector: Collector
) -> None:
    app = await start_proxy(
        proxy_config(upstream.port, f'endpoint = "{collector.url}"\nflush_interval_s = 60')
    )
    for _ in range(3):
        assert (await get(client, app.port(), "/echo"))["status"] == 200
    await trio.sleep(0.2)
    assert collector.spans() == []  # waiting for the next flush, a minute away
    await stop(app)
    assert len(collector.spans()) == 3


@pytest.mark.parametrize("down", ["refused", "hanging"])
async def test_a_down_collector_never_slows_a_request(
    start_proxy: Any, upstream: Any, client: Any, down: str
) -> None:
    hanging = Collector(hang=True)
    endpoint = hanging.url if down == "hanging" else f"http://127.0.0.1:{dead_port()}/v1/traces"
    try:
        app = await start_proxy(
            proxy_config(
                upstream.port,
                f'endpoint = "{endpoint}"\nflush_interval_s = 0.01\nmax_queue = 4\ntimeout_s = 1',
            )
        )
        slowest = 0.0
        for i in range(40):
            start = time.monotonic()
            resp = await get(client, app.port(), f"/echo?i={i}")
            slowest = max(slowest, time.monotonic() - start)
            assert resp["status"] == 200
        # Each request takes a few ms; an export waits up to timeout_s (1 s).
        assert slowest < 0.5, slowest
        plugin = app.generation.host.instances["otlp"]
        assert isinstance(plugin, OtlpPlugin)
        assert plugin.queued == 40  # handed over; the processor dropped what it could not send
        with trio.fail_after(1):  # the shutdown itself does not wait on the event loop
            app.stop()
            await until(lambda: plugin.flusher is not None)
        # The final flush gives up after timeout_s + 1 s (the collector still hangs).
        start = time.monotonic()
        await stop(app)
        assert time.monotonic() - start < 3.5
    finally:
        hanging.close()


# ----------------------------------------------------------------- units
def test_sampled_by_ratio_is_otels_rule() -> None:
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    for ratio in (0.0, 0.001, 0.25, 0.5, 0.999, 1.0):
        sampler = TraceIdRatioBased(ratio)
        bound = round(ratio * (1 << 64))
        assert bound == sampler.bound
        for trace_id in ("0" * 32, "f" * 32, TRACE_ID, "1" * 16 + "3" * 16, "a" * 16 + "0" * 16):
            assert sampled_by_ratio(trace_id, bound) == (
                int(trace_id, 16) & ((1 << 64) - 1) < sampler.bound
            ), (ratio, trace_id)


def test_span_without_startup_parent_or_response() -> None:
    plugin = OtlpPlugin()
    flow = make_flow("PURGE", "http://site.test/cache/x?secret=1", [])
    flow.route = "default"
    flow.timings.done = flow.timings.request_head + 0.25
    ctx = sdk.TraceContext.new()
    span = plugin.span(flow, ctx)
    assert span.name == "HTTP default"
    assert span.parent is None
    assert span.context is not None
    assert f"{span.context.trace_id:032x}" == ctx.trace_id
    assert f"{span.context.span_id:016x}" == ctx.span_id
    assert span.attributes is not None
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "PURGE"
    assert span.attributes["url.path"] == "/cache/x"
    assert "http.response.status_code" not in span.attributes
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.end_time - span.start_time == pytest.approx(0.25e9, abs=1e3)
    # Not started: nothing is queued, nothing fails.
    plugin.trellis_flow_done(flow)
    assert plugin.queued == 0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"endpoint": "grpc://collector:4317"}, r"endpoint: must be an http\(s\) URL"),
        ({"sample_ratio": 1.5}, r"sample_ratio: must be between 0 and 1"),
        ({"max_queue": 0}, r"max_queue: must be >= 1"),
        ({"timeout_s": 0}, r"timeout_s: must be > 0"),
        ({"service_name": ""}, r"service_name: must not be empty"),
        (
            {"headers": {"bad name": "x"}},
            r"headers\[\"bad name\"\]: invalid header name 'bad name' \(' ' is not allowed",
        ),
        (
            {"headers": {"x-a": "1\r\nx-b: 2"}},
            r"headers\.x-a: invalid header value \(a control character; the value is not shown\)",
        ),
        # Sent as written (requests refuses leading whitespace, http.client
        # anything outside ISO-8859-1): refused at load, not at every export.
        (
            {"headers": {"authorization": " Bearer x"}},
            r"headers\.authorization: invalid header value \(whitespace at the start; the value",
        ),
        (
            {"headers": {"authorization": "Bearer \u20ac"}},
            r"headers\.authorization: invalid header value \(a character outside ISO-8859-1;",
        ),
        ({"port": 4318}, r"port: unknown key"),
    ],
)
def test_config_errors(table: dict[str, Any], message: str) -> None:
    with pytest.raises(sdk.ConfigError, match=message):
        sdk.structure(table, OtlpConfig, path="$.plugins.otlp")


def test_every_bad_header_beside_one_of_the_wrong_type() -> None:
    """The headers were checked by one loop, which stopped at the first bad
    one and did not run at all beside a value of the wrong type (the others'
    problems showed only once it was fixed). Each entry is checked alone
    now, at its own key."""
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(
            {"headers": {"authorization": 5, "bad name": "x", "x-a": "1\nx-b: 2", "ok": "1"}},
            OtlpConfig,
            path="$.plugins.otlp",
        )
    assert info.value.problems == [
        "$.plugins.otlp.headers.authorization: must be a string, got 5",
        "$.plugins.otlp.headers[\"bad name\"]: invalid header name 'bad name' (' ' is not"
        " allowed: only letters, digits and !#$%&'*+-.^_`|~)",
        "$.plugins.otlp.headers.x-a: invalid header value (a control character; the value is"
        " not shown)",
    ]


def test_config_defaults() -> None:
    c = OtlpConfig()
    assert c.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert (c.service_name, c.sample_ratio, c.max_queue, c.headers) == ("trellis", 1.0, 2048, {})


def test_without_the_extra_the_config_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail, as when the package is absent.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(sdk.ConfigError, match=r"pip install 'trellis-proxy\[otlp\]'"):
        OtlpPlugin()


def test_importing_the_module_does_not_import_opentelemetry() -> None:
    # The kernel imports every installed plugin to list them: that must stay cheap.
    code = (
        "import sys, plugins.contrib.otlp\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
