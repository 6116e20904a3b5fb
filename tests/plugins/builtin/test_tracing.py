"""TracingPlugin: W3C traceparent/tracestate continued or started, sent upstream, stashed."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest

import sdk
from plugins.builtin.tracing import TracingConfig, TracingPlugin, incoming
from sdk.testing import Harness, make_flow
from tests.helpers.h2client import H2Client

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
VALID = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")


def parts(traceparent: str) -> tuple[str, str, str]:
    """(trace id, span id, flags) of a traceparent this proxy wrote."""
    m = VALID.fullmatch(traceparent)
    assert m is not None, traceparent
    trace_id, span_id, flags = m.groups()
    assert trace_id != "0" * 32
    assert span_id != "0" * 16
    return trace_id, span_id, flags


class Seen:
    """A later plugin: what ``trellis_flow_done`` finds in ``flow.stash[sdk.TRACE]``."""

    def __init__(self) -> None:
        self.traces: list[sdk.TraceContext | None] = []

    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        self.traces.append(flow.stash.get(sdk.TRACE, None))


# ------------------------------------------------------------------ harness
async def run(headers: list[tuple[str, str]], **config: Any) -> sdk.Flow:
    h = Harness(TracingPlugin, config=config)
    return await h.run(h.make_flow("GET", "http://site.test/x", headers))


async def test_continues_a_valid_trace() -> None:
    flow = await run([("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)])
    ctx = flow.stash[sdk.TRACE]
    assert (ctx.trace_id, ctx.parent_id, ctx.sampled, ctx.tracestate) == (
        TRACE_ID,
        SPAN_ID,
        True,
        TRACESTATE,
    )
    assert ctx.span_id != SPAN_ID
    assert flow.request.headers.get_all("traceparent") == [ctx.traceparent]
    assert flow.request.headers.get_all("tracestate") == [TRACESTATE]
    assert flow.decisions == []  # record = false


async def test_the_unsampled_flag_is_kept_and_fields_stay_in_place() -> None:
    flow = await run(
        [("accept", "*/*"), ("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-00"), ("x-a", "1")]
    )
    ctx = flow.stash[sdk.TRACE]
    assert not ctx.sampled
    assert list(flow.request.headers) == ["host", "accept", "traceparent", "x-a"]
    assert parts(flow.request.headers["traceparent"]) == (TRACE_ID, ctx.span_id, "00")


async def test_starts_a_trace_when_absent() -> None:
    flow = await run([("accept", "*/*")])
    ctx = flow.stash[sdk.TRACE]
    assert ctx.parent_id == ""
    assert ctx.sampled
    assert ctx.tracestate == ""
    assert parts(flow.request.headers["traceparent"]) == (ctx.trace_id, ctx.span_id, "01")
    unsampled = await run([], sampled=False)
    assert parts(unsampled.request.headers["traceparent"])[2] == "00"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ([("traceparent", f"00-{TRACE_ID.upper()}-{SPAN_ID}-01")], "invalid traceparent"),
        ([("traceparent", f"00-{'0' * 32}-{SPAN_ID}-01")], "invalid traceparent"),
        ([("traceparent", f"00-{TRACE_ID}-{'0' * 16}-01")], "invalid traceparent"),
        ([("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-01-extra")], "invalid traceparent"),
        ([("traceparent", f"ff-{TRACE_ID}-{SPAN_ID}-01")], "invalid traceparent"),
        ([("traceparent", "garbage")], "invalid traceparent"),
        (
            [("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)],
            "several traceparent fields",
        ),
        ([("tracestate", TRACESTATE)], "no traceparent"),
    ],
)
async def test_invalid_headers_are_replaced(fields: list[tuple[str, str]], why: str) -> None:
    flow = await run([("accept", "*/*"), *fields, ("tracestate", TRACESTATE)], record=True)
    ctx = flow.stash[sdk.TRACE]
    assert ctx.trace_id != TRACE_ID
    assert ctx.parent_id == ""
    assert flow.request.headers.get_all("traceparent") == [ctx.traceparent]
    assert "tracestate" not in flow.request.headers
    assert flow.request.headers["accept"] == "*/*"
    assert flow.decisions == [f"tracing: new trace {ctx.trace_id} ({why})"]


async def test_a_later_version_may_carry_more_fields() -> None:
    flow = await run([("traceparent", f"01-{TRACE_ID}-{SPAN_ID}-01-future")])
    assert flow.stash[sdk.TRACE].trace_id == TRACE_ID
    assert flow.request.headers["traceparent"].startswith(f"00-{TRACE_ID}-")


async def test_several_tracestate_fields_are_forwarded_as_sent() -> None:
    fields = [("tracestate", "a=1"), ("traceparent", TRACEPARENT), ("tracestate", "b=2")]
    flow = await run(fields)
    assert flow.stash[sdk.TRACE].tracestate == "a=1,b=2"
    assert flow.request.headers.get_all("tracestate") == ["a=1", "b=2"]


async def test_an_oversized_tracestate_is_dropped() -> None:
    flow = await run([("traceparent", TRACEPARENT), ("tracestate", "a=" + "x" * 20000)])
    ctx = flow.stash[sdk.TRACE]
    assert ctx.trace_id == TRACE_ID
    assert ctx.tracestate == ""
    assert "tracestate" not in flow.request.headers


async def test_untrusted_incoming_always_starts_a_trace() -> None:
    flow = await run(
        [("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)],
        trust_incoming=False,
        record=True,
    )
    ctx = flow.stash[sdk.TRACE]
    assert ctx.trace_id != TRACE_ID
    assert ctx.parent_id == ""
    assert flow.request.headers.get_all("traceparent") == [ctx.traceparent]
    assert "tracestate" not in flow.request.headers
    assert flow.decisions == [f"tracing: new trace {ctx.trace_id} (incoming not trusted)"]


async def test_record_notes_a_continued_trace() -> None:
    flow = await run([("traceparent", TRACEPARENT)], record=True)
    assert flow.decisions == [f"tracing: continued trace {TRACE_ID} from span {SPAN_ID}"]


async def test_an_existing_context_stands() -> None:
    plugin = TracingPlugin()
    flow = make_flow("GET", "http://site.test/", [("traceparent", TRACEPARENT)])
    plugin.trellis_request(flow)
    first = flow.stash[sdk.TRACE]
    sent = flow.request.headers["traceparent"]
    TracingPlugin().trellis_request(flow)  # a second instance in another chain
    assert flow.stash[sdk.TRACE] is first
    assert flow.request.headers.get_all("traceparent") == [sent]


async def test_response_header() -> None:
    flow = await run([("traceparent", TRACEPARENT)], response_header="X-Trace-Id")
    assert flow.response is not None
    assert flow.response.headers.get_all("x-trace-id") == [TRACE_ID]
    plain = await run([("traceparent", TRACEPARENT)])
    assert plain.response is not None
    assert "x-trace-id" not in plain.response.headers


def test_incoming() -> None:
    h = sdk.Headers
    assert incoming(h([])) == (None, "no traceparent")
    assert incoming(h([("traceparent", "x")])) == (None, "invalid traceparent")
    parent, why = incoming(h([("traceparent", TRACEPARENT), ("tracestate", " a=1 ")]))
    assert why == ""
    assert parent == sdk.TraceContext(TRACE_ID, SPAN_ID, "", True, "a=1")


@pytest.mark.parametrize(("bad", "char"), [("x trace", "' '"), ("x:y", "':'"), ("é", "'é'")])
def test_config_refuses_a_bad_header_name(bad: str, char: str) -> None:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure({"response_header": bad}, TracingConfig, path="$.plugins.tracing")
    assert info.value.problems == [
        f"$.plugins.tracing.response_header: invalid header name {bad!r} ({char} is not"
        " allowed: only letters, digits and !#$%&'*+-.^_`|~)"
    ]


def test_config_takes_an_empty_header_name_as_none() -> None:
    config = sdk.structure({"response_header": ""}, TracingConfig, path="$.plugins.tracing")
    assert config.response_header == ""


def test_config_defaults() -> None:
    c = TracingConfig()
    assert (c.trust_incoming, c.sampled, c.record, c.response_header) == (True, True, False, "")


# -------------------------------------------------------------- real kernel
def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def proxy_config(upstream: Any, table: str = "", *, where: str = "route") -> str:
    chain = 'plugins = ["tracing", "seen"]'
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 2
{chain if where == "global" else ""}

[kernel.modules]
tracing = "plugins.builtin.tracing:TracingPlugin"

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[routes]]
name = "default"
upstream = "http://127.0.0.1:{upstream.port}"
{chain if where == "route" else ""}

[plugins.tracing]
{table}
"""


async def echo(
    client: Any, port: int, headers: str = "", path: str = "/echo"
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The response, and the headers the upstream saw (name -> values)."""
    raw = await client.exchange(
        port,
        f"GET {path} HTTP/1.1\r\nHost: site.test\r\n{headers}Connection: close\r\n\r\n".encode(),
    )
    (resp,) = client.parse_responses(raw)
    seen: dict[str, list[str]] = {}
    if path == "/echo":
        assert resp["status"] == 200, resp
        for name, value in json.loads(resp["body"])["headers"]:
            seen.setdefault(name, []).append(value)
    return resp, seen


@pytest.mark.parametrize("where", ["route", "global"])
async def test_real_kernel_continues_the_clients_trace(
    start_proxy: Any, upstream: Any, client: Any, where: str
) -> None:
    seen = Seen()
    app = await start_proxy(proxy_config(upstream, where=where), extra_plugins={"seen": seen})
    _, got = await echo(
        client, app.port(), f"traceparent: {TRACEPARENT}\r\ntracestate: {TRACESTATE}\r\n"
    )
    trace_id, span_id, flags = parts(got["traceparent"][0])
    assert len(got["traceparent"]) == 1
    assert (trace_id, flags) == (TRACE_ID, "01")
    assert span_id != SPAN_ID
    assert got["tracestate"] == [TRACESTATE]
    # A later plugin sees the same context in trellis_flow_done.
    (ctx,) = seen.traces
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id, ctx.parent_id) == (TRACE_ID, span_id, SPAN_ID)


async def test_real_kernel_starts_a_trace(start_proxy: Any, upstream: Any, client: Any) -> None:
    seen = Seen()
    app = await start_proxy(proxy_config(upstream), extra_plugins={"seen": seen})
    _, first = await echo(client, app.port())
    _, second = await echo(client, app.port())
    ids = [parts(got["traceparent"][0]) for got in (first, second)]
    assert ids[0][0] != ids[1][0]  # two requests, two traces
    assert [f for _, _, f in ids] == ["01", "01"]
    assert "tracestate" not in first
    assert [(c.trace_id, c.span_id, c.parent_id) for c in seen.traces if c] == [
        (t, s, "") for t, s, _ in ids
    ]


async def test_real_kernel_replaces_invalid_headers(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    seen = Seen()
    app = await start_proxy(proxy_config(upstream), extra_plugins={"seen": seen})
    bad = f"00-{TRACE_ID.upper()}-{SPAN_ID}-01"
    _, got = await echo(client, app.port(), f"traceparent: {bad}\r\ntracestate: {TRACESTATE}\r\n")
    trace_id, span_id, _ = parts(got["traceparent"][0])
    assert trace_id != TRACE_ID.lower()
    assert len(got["traceparent"]) == 1
    assert "tracestate" not in got
    (ctx,) = seen.traces
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id, ctx.parent_id) == (trace_id, span_id, "")


async def test_real_kernel_untrusted_incoming(start_proxy: Any, upstream: Any, client: Any) -> None:
    app = await start_proxy(
        proxy_config(upstream, "trust_incoming = false"), extra_plugins={"seen": Seen()}
    )
    _, got = await echo(
        client, app.port(), f"traceparent: {TRACEPARENT}\r\ntracestate: {TRACESTATE}\r\n"
    )
    trace_id, span_id, _ = parts(got["traceparent"][0])
    assert trace_id != TRACE_ID
    assert span_id != SPAN_ID
    assert "tracestate" not in got


async def test_real_kernel_response_header(start_proxy: Any, upstream: Any, client: Any) -> None:
    seen = Seen()
    app = await start_proxy(
        proxy_config(upstream, 'response_header = "x-trace-id"'), extra_plugins={"seen": seen}
    )
    resp, _ = await echo(client, app.port(), f"traceparent: {TRACEPARENT}\r\n")
    assert resp["headers"]["x-trace-id"] == TRACE_ID
    resp, _ = await echo(client, app.port(), path="/status/503")
    assert resp["status"] == 503
    ctx = seen.traces[-1]
    assert ctx is not None
    assert resp["headers"]["x-trace-id"] == ctx.trace_id


async def test_real_kernel_response_header_on_an_error_page(start_proxy: Any, client: Any) -> None:
    class Closed:
        port = dead_port()

    app = await start_proxy(
        proxy_config(Closed(), 'response_header = "x-trace-id"'), extra_plugins={"seen": Seen()}
    )
    resp, _ = await echo(client, app.port(), f"traceparent: {TRACEPARENT}\r\n", path="/x")
    assert resp["status"] == 502
    assert resp["headers"]["x-trace-id"] == TRACE_ID


async def test_real_kernel_http2_streams(start_proxy: Any, upstream: Any) -> None:
    seen = Seen()
    app = await start_proxy(proxy_config(upstream), extra_plugins={"seen": seen})
    async with await H2Client.connect(app.port()) as c:
        with_parent = await c.get(
            b"/echo",
            extra=[(b"traceparent", TRACEPARENT.encode()), (b"tracestate", TRACESTATE.encode())],
        )
        without = await c.get(b"/echo")
    got = [{n: v for n, v in json.loads(bytes(r.body))["headers"]} for r in (with_parent, without)]
    trace_id, span_id, _ = parts(got[0]["traceparent"])
    assert trace_id == TRACE_ID
    assert span_id != SPAN_ID
    assert got[0]["tracestate"] == TRACESTATE
    fresh, _, _ = parts(got[1]["traceparent"])
    assert fresh != TRACE_ID
    assert "tracestate" not in got[1]
    assert sorted(c.trace_id for c in seen.traces if c) == sorted([TRACE_ID, fresh])
