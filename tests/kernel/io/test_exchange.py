"""The life of a request through a real proxy on loopback, for both codecs.

A real upstream (tests/helpers/upstream.py) and real sockets; the proxy runs
in the test's trio loop on ephemeral ports.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from typing import Any

import pytest
import trio

import sdk
from kernel import dispatch
from tests.conftest import basic_config
from tests.helpers.answers import REQUEST_PHASE, SetsResponse, Watches
from tests.helpers.h2client import H2Client
from tests.helpers.upstream import raw_upstream

GET = b"GET /echo HTTP/1.1\r\nHost: example.test\r\n\r\n"


async def test_get_is_proxied_with_forwarding_fields(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    raw = await client.exchange(
        app.port(),
        b"GET /echo?x=1 HTTP/1.1\r\nHost: example.test\r\nConnection: close, X-Drop\r\n"
        b"X-Drop: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nVia: 1.0 other\r\n\r\n",
    )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 200
    assert resp["headers"]["via"] == "1.1 trellis"
    seen = json.loads(resp["body"])
    assert seen["method"] == "GET"
    assert seen["target"] == "/echo?x=1"
    names = [n for n, _ in seen["headers"]]
    headers = dict(seen["headers"])
    for hop in ("connection", "x-drop", "keep-alive", "proxy-authorization"):
        assert hop not in names, hop
    assert headers["host"] == "example.test"
    # An untrusted client cannot choose what the upstream believes.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["via"] == "1.0 other, 1.1 trellis"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["forwarded"] == 'for=127.0.0.1;proto=http;host="example.test"'


async def test_trusted_proxy_chain_is_appended(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    app = await start_proxy(basic_config(upstream.port).replace("[upstream]", "[upstream]") + "")
    cfg = basic_config(upstream.port).replace(
        "[server]\n", '[server]\ntrusted_proxies = ["127.0.0.0/8"]\n'
    )
    app = await start_proxy(cfg)
    raw = await client.exchange(
        app.port(),
        b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: close\r\n\r\n",
    )
    seen = json.loads(client.parse_responses(raw)[0]["body"])
    assert dict(seen["headers"])["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"


async def test_keep_alive_reuses_both_sides(start_proxy: Any, upstream: Any, codec: str) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        for _ in range(20):
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            got = b""
            while not got.endswith(b"x" * 1024):
                got += await stream.receive_some(65536)
            assert got.startswith(b"HTTP/1.1 200 ")
    assert upstream.connections == 1
    assert app.state is not None
    assert app.state.pool.statistics().opened == 1
    assert app.state.pool.statistics().reused == 19


async def test_pipelined_requests_are_answered_in_order(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    data = (
        b"".join(f"GET /echo?n={i} HTTP/1.1\r\nHost: a\r\n\r\n".encode() for i in range(5))
        + b"GET /echo?n=last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    responses = client.parse_responses(await client.exchange(app.port(), data))
    targets = [json.loads(r["body"])["target"] for r in responses]
    assert targets == [f"/echo?n={i}" for i in range(5)] + ["/echo?n=last"]


async def test_expect_100_continue(start_proxy: Any, upstream: Any, codec: str) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        await stream.send_all(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        with trio.fail_after(5):
            interim = await stream.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"hello")
        got = b""
        with trio.fail_after(5):
            while b"body_sha256" not in got:
                got += await stream.receive_some(65536)
    assert b'"body_length": 5' in got
    assert upstream.requests[-1]["body_length"] == 5
    # Asked of the HTTP/1.1 upstream too (RFC 9110 §10.1.1); this one ignores it.
    assert dict(upstream.requests[-1]["headers"])["expect"] == "100-continue"


async def test_content_length_goes_upstream_as_the_number_we_framed_by(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    raw = await client.exchange(
        app.port(),
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\nConnection: close\r\n\r\n"
        b"hello",
    )
    (resp,) = client.parse_responses(raw)
    assert json.loads(resp["body"])["body_length"] == 5
    assert dict(upstream.requests[-1]["headers"])["content-length"] == "5"


async def test_chunked_upload_and_download(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    raw = await client.exchange(
        app.port(),
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        b"GET /bytes/70000?chunked=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    up, down = client.parse_responses(raw, [b"POST", b"GET"])
    assert json.loads(up["body"])["body_length"] == 11
    assert down["body"] == b"b" * 70000


async def test_head_and_no_body_statuses(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    raw = await client.exchange(
        app.port(),
        b"HEAD /bytes/100 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    head, r204, r304, last = client.parse_responses(raw, [b"HEAD", b"GET", b"GET", b"GET"])
    assert head["status"] == 200
    assert head["body"] == b""
    assert head["headers"]["content-length"] == "100"
    assert r204["status"] == 204
    assert r304["status"] == 304
    assert last["body"] == b"bbb"


class Recorder:
    """Records the order in which instances run."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        self.log.append(f"{self.name}:request")
        flow.request.headers.add("x-chain", self.name)

    @sdk.hookimpl
    async def trellis_response(self, flow: sdk.Flow) -> None:
        await trio.sleep(0)
        self.log.append(f"{self.name}:response")

    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        self.log.append(f"{self.name}:done")


async def test_chain_order_is_configuration(start_proxy: Any, upstream: Any, client: Any) -> None:
    log: list[str] = []
    plugins = {n: Recorder(n, log) for n in ("c", "a", "b", "r")}
    cfg = basic_config(upstream.port).replace("[kernel]\n", '[kernel]\nplugins = ["c", "a"]\n')
    cfg = cfg.replace('bind = "127.0.0.1:0"', 'bind = "127.0.0.1:0"\nplugins = ["b"]')
    cfg += 'plugins = ["r", "a"]\n'
    app = await start_proxy(cfg, extra_plugins=plugins)
    (resp,) = client.parse_responses(
        await client.exchange(
            app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    )
    seen = json.loads(resp["body"])
    assert [v for n, v in seen["headers"] if n == "x-chain"] == ["c", "a", "b", "r"]
    await trio.sleep(0.05)
    order = ["c", "a", "b", "r"]
    assert log == [f"{n}:request" for n in order] + [f"{n}:response" for n in order] + [
        f"{n}:done" for n in order
    ]


class Exploding:
    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        if flow.request.path.startswith("/boom"):
            raise ValueError("kaboom")


class Hanging:
    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> None:
        if flow.request.path.startswith("/hang"):
            await trio.sleep_forever()


class DoneCounter:
    def __init__(self) -> None:
        self.flows: list[sdk.Flow] = []

    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        self.flows.append(flow)


async def test_plugin_fault_and_deadline_fail_only_their_flow(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    done = DoneCounter()
    cfg = basic_config(upstream.port).replace(
        "[kernel]\n", '[kernel]\nplugins = ["done", "boom", "hang"]\nplugin_deadline_s = 0.2\n'
    )
    app = await start_proxy(
        cfg, extra_plugins={"done": done, "boom": Exploding(), "hang": Hanging()}
    )
    port = app.port()
    results: dict[str, int] = {}

    async def get(path: str) -> None:
        raw = await client.exchange(
            port, f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
        )
        results[path] = client.parse_responses(raw)[0]["status"]

    async with trio.open_nursery() as n:
        for path in ("/boom", "/hang", "/fine", "/echo"):
            n.start_soon(get, path)
    assert results == {"/boom": 502, "/hang": 502, "/fine": 200, "/echo": 200}
    targets = [r["target"] for r in upstream.requests]
    assert "/boom" not in targets
    assert "/hang" not in targets
    # Exactly one terminal hook per flow, failed ones included.
    assert sorted(f.request.path for f in done.flows) == ["/boom", "/echo", "/fine", "/hang"]
    errors = {f.request.path: type(f.error).__name__ for f in done.flows if f.error}
    assert errors == {"/boom": "PluginError", "/hang": "PluginError"}


async def _flow_done(done: DoneCounter) -> sdk.Flow:
    with trio.fail_after(5):
        while not done.flows:
            await trio.sleep(0.01)
    (flow,) = done.flows
    return flow


async def test_a_client_leaving_mid_download_is_the_flow_s_error(
    start_proxy: Any, upstream: Any, codec: str
) -> None:
    """trellis_flow_done must tell a cut response from a whole one: the
    status sent was 200, and the flow's error says the client went away."""
    done = DoneCounter()
    cfg = basic_config(upstream.port, http1=codec).replace(
        "[kernel]\n", '[kernel]\nplugins = ["done"]\n'
    )
    app = await start_proxy(cfg, extra_plugins={"done": done})
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", app.port())
        async with stream:
            await stream.send_all(b"GET /stream/50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
            got = b""
            while len(got) < 70000:
                got += await stream.receive_some(65536)
    assert got.startswith(b"HTTP/1.1 200 ")
    flow = await _flow_done(done)
    assert isinstance(flow.error, sdk.ClientDisconnected)
    assert (str(flow.error), flow.error.status_hint) == ("the client went away", 499)
    assert flow.response is not None
    assert flow.response.status_code == 200
    assert 0 < flow.bytes_out < 50_000_000


async def test_an_http2_stream_the_client_reset_mid_download_is_the_flow_s_error(
    start_proxy: Any, upstream: Any
) -> None:
    done = DoneCounter()
    cfg = basic_config(upstream.port).replace("[kernel]\n", '[kernel]\nplugins = ["done"]\n')
    app = await start_proxy(cfg, extra_plugins={"done": done})
    async with await H2Client.connect(app.port()) as h2c:
        sid = await h2c.request(b"GET", b"/stream/50000000")
        await h2c.until(lambda: len(h2c.streams[sid].body) > 0)
        await h2c.reset(sid)
        flow = await _flow_done(done)
    assert isinstance(flow.error, sdk.ClientDisconnected)
    assert flow.response is not None
    assert flow.response.status_code == 200
    assert 0 < flow.bytes_out < 50_000_000


async def test_a_response_the_drain_cut_is_the_flow_s_error(
    start_proxy: Any, nursery: trio.Nursery
) -> None:
    stall = await raw_upstream(
        nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nbegun", hold_s=10
    )
    done = DoneCounter()
    cfg = basic_config(stall).replace(
        "shutdown_grace_s = 2\n", 'shutdown_grace_s = 0.2\nplugins = ["done"]\n'
    )
    app = await start_proxy(cfg, extra_plugins={"done": done})
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", app.port())
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            got = b""
            while not got.endswith(b"begun"):
                got += await stream.receive_some(65536)
            app.stop()  # the flow outlasts the grace period: cancelled
            flow = await _flow_done(done)
    assert got.startswith(b"HTTP/1.1 200 ")
    assert type(flow.error) is sdk.ProxyError
    assert flow.error.status_hint == 503
    assert "shutdown" in str(flow.error)
    assert flow.response is not None
    assert flow.response.status_code == 200
    assert flow.bytes_out == len(b"begun")


class Overstays:
    """Answers after its deadline: it swallowed the Cancelled, or shielded itself."""

    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> sdk.Response | None:
        if flow.request.path == "/swallow":
            try:
                await trio.sleep(1)
            except BaseException:
                return sdk.Response.make(200, body=b"late\n")
        if flow.request.path == "/shield":
            with trio.CancelScope(shield=True):
                await trio.sleep(0.4)
            return sdk.Response.make(200, body=b"late\n")
        return None


async def test_a_hook_that_overstays_its_deadline_fails_its_flow(
    start_proxy: Any, upstream: Any, client: Any, caplog: Any
) -> None:
    """Before, the late answer was sent as if in time (200 "late")."""
    cfg = basic_config(upstream.port).replace(
        "[kernel]\n", '[kernel]\nplugins = ["late"]\nplugin_deadline_s = 0.2\n'
    )
    app = await start_proxy(cfg, extra_plugins={"late": Overstays()})
    before = dispatch.plugin_error_counts["late"]
    for path in ("/swallow", "/shield"):
        with caplog.at_level(logging.ERROR):
            raw = await client.exchange(
                app.port(), f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
            )
        assert client.parse_responses(raw)[0]["status"] == 502, path
    assert caplog.text.count("plugin 'late' missed its 0.2s deadline in trellis_request") == 2
    assert dispatch.plugin_error_counts["late"] == before + 2
    assert upstream.requests == []


class HangingResponse:
    def __init__(self) -> None:
        self.calls = 0

    @sdk.hookimpl
    async def trellis_response(self, flow: sdk.Flow) -> None:
        self.calls += 1
        await trio.sleep_forever()


async def test_a_response_hook_that_hung_is_not_asked_again_for_the_error_page(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    """Before, it ran again on the 502 page and cost a second deadline."""
    hanging = HangingResponse()
    cfg = basic_config(upstream.port).replace(
        "[kernel]\n", '[kernel]\nplugins = ["hang"]\nplugin_deadline_s = 0.3\n'
    )
    app = await start_proxy(cfg, extra_plugins={"hang": hanging})
    start = trio.current_time()
    raw = await client.exchange(
        app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert client.parse_responses(raw)[0]["status"] == 502
    assert hanging.calls == 1
    assert trio.current_time() - start < 0.55


class SlowDone:
    """A terminal hook that takes longer than the old 5 s cap over them all."""

    @sdk.hookimpl
    async def trellis_flow_done(self, flow: sdk.Flow) -> None:
        await trio.sleep(5.3)


async def test_each_terminal_hook_has_its_own_deadline(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    """Before, one 5 s cap covered every async trellis_flow_done: a slow one
    within its deadline was cut, and the ones after it never ran, unlogged."""
    done = DoneCounter()
    cfg = basic_config(upstream.port, "[kernel.policy.slow]\ndeadline_s = 10\n").replace(
        "[kernel]\n", '[kernel]\nplugins = ["slow", "done"]\n'
    )
    app = await start_proxy(cfg, extra_plugins={"slow": SlowDone(), "done": done})
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        await stream.send_all(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        with trio.fail_after(5):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
        with trio.fail_after(10):
            while not done.flows:
                await trio.sleep(0.1)


async def test_fail_open_policy_skips_the_plugin(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    cfg = basic_config(upstream.port).replace("[kernel]\n", '[kernel]\nplugins = ["boom"]\n')
    cfg += '\n[kernel.policy.boom]\non_error = "fail_open"\n'
    app = await start_proxy(cfg, extra_plugins={"boom": Exploding()})
    (resp,) = client.parse_responses(
        await client.exchange(
            app.port(), b"GET /boom HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    )
    assert resp["status"] == 200


async def test_local_responses_keep_the_connection(
    start_proxy: Any, client: Any, codec: str
) -> None:
    cfg = f"""
[kernel]
watch_config = false
[server]
http1 = "{codec}"
[[listeners]]
bind = "127.0.0.1:0"
[[routes]]
name = "local"
plugins = ["respond"]
[plugins.respond]
body = "local"
"""
    app = await start_proxy(cfg)
    raw = await client.exchange(
        app.port(),
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    responses = client.parse_responses(raw, [b"GET", b"POST", b"GET"])
    assert [r["body"] for r in responses] == [b"local"] * 3
    assert "connection" not in responses[0]["headers"]


class Tagger:
    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        flow.response.headers["x-tag"] = "t"

    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes:
        return chunk.upper() + (b"!" if end else b"")


async def test_error_pages_and_local_bodies_go_through_response_hooks(
    start_proxy: Any, client: Any
) -> None:
    cfg = """
[kernel]
watch_config = false
plugins = ["tag"]
[[listeners]]
bind = "127.0.0.1:0"
[[routes]]
name = "local"
plugins = ["respond"]
[[routes]]
name = "nowhere"
[plugins.respond]
body = "local"
"""
    app = await start_proxy(cfg, extra_plugins={"tag": Tagger()})
    (local,) = client.parse_responses(
        await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    assert local["body"] == b"LOCAL!"
    assert local["headers"]["x-tag"] == "t"
    assert local["headers"]["content-length"] == "6"


class BadFraming:
    """Sets a response field the kernel must refuse to send."""

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        flow.response.headers["content-length"] = "3"
        flow.response.headers["transfer-encoding"] = "chunked"


async def test_a_response_head_a_plugin_broke_gets_the_error_page(
    start_proxy: Any, upstream: Any, client: Any, codec: str, caplog: Any
) -> None:
    """Before, the codec was dead after refusing the head: the client got no
    answer at all, and nothing was logged."""
    cfg = basic_config(upstream.port, http1=codec).replace(
        "watch_config = false\n", 'watch_config = false\nplugins = ["bad"]\n', 1
    )
    app = await start_proxy(cfg, extra_plugins={"bad": BadFraming()})
    with caplog.at_level(logging.WARNING):
        raw = await client.exchange(
            app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 500
    assert "GET /echo" in caplog.text  # the refusal is logged with the request


async def test_no_upstream_is_502_with_response_hooks(start_proxy: Any, client: Any) -> None:
    cfg = '[kernel]\nwatch_config = false\nplugins = ["tag"]\n[[listeners]]\nbind = "127.0.0.1:0"\n'
    app = await start_proxy(cfg, extra_plugins={"tag": Tagger()})
    (resp,) = client.parse_responses(
        await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    assert resp["status"] == 502
    assert resp["headers"]["x-tag"] == "t"


async def test_route_body_limit_can_be_looser_or_tighter_than_the_server_one(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    cfg = f"""
[kernel]
watch_config = false
plugins = ["router"]
[server]
http1 = "{codec}"
max_body_bytes = 10
[[listeners]]
bind = "127.0.0.1:0"
[[routes]]
name = "small"
upstream = "http://127.0.0.1:{upstream.port}"
[[routes]]
name = "big"
upstream = "http://127.0.0.1:{upstream.port}"
max_body_bytes = 100
[plugins.router]
rules = [{{ path_prefix = "/big", route = "big" }}]
"""
    app = await start_proxy(cfg)
    body = b"x" * 50

    async def post(path: str) -> int:
        raw = await client.exchange(
            app.port(),
            f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + body,
        )
        return int(client.parse_responses(raw, [b"POST"])[0]["status"])

    assert await post("/big/upload") == 200
    assert await post("/upload") == 413
    assert [r["target"] for r in upstream.requests] == ["/big/upload"]


class BrokenTransform:
    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes:
        raise RuntimeError("transform bug")


async def test_a_failing_transform_cannot_break_the_error_page(
    start_proxy: Any, client: Any, codec: str
) -> None:
    """The flow fails (no upstream: 502); the error page skips body transforms,
    so the broken transform cannot fail the flow twice or kill the connection."""
    cfg = f"""
[kernel]
watch_config = false
plugins = ["broken"]
[server]
http1 = "{codec}"
[[listeners]]
bind = "127.0.0.1:0"
"""
    app = await start_proxy(cfg, extra_plugins={"broken": BrokenTransform()})
    raw = await client.exchange(
        app.port(),
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    assert [r["status"] for r in client.parse_responses(raw)] == [502, 502]


async def test_a_transform_failing_on_the_first_chunk_is_a_502(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """Nothing of the upstream's response had gone out: the client gets the
    502 page (not an empty reply), and the connection ends."""
    text = basic_config(upstream.port, http1=codec).replace(
        "[kernel]\n", '[kernel]\nplugins = ["broken"]\n', 1
    )
    app = await start_proxy(text, extra_plugins={"broken": BrokenTransform()})
    raw = await client.exchange(app.port(), b"GET /bytes/100 HTTP/1.1\r\nHost: a\r\n\r\n")
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 502
    assert resp["headers"]["connection"] == "close"


async def test_the_flow_id_is_in_the_log_context_during_hooks(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    from kernel.log import FLOW_ID

    seen: list[tuple[str, str]] = []

    class Peek:
        @sdk.hookimpl
        def trellis_request(self, flow: sdk.Flow) -> None:
            seen.append((flow.id, FLOW_ID.get()))

        @sdk.hookimpl
        async def trellis_flow_done(self, flow: sdk.Flow) -> None:
            seen.append((flow.id, FLOW_ID.get()))

    text = basic_config(upstream.port).replace(
        'upstream = "http', 'plugins = ["peek"]\nupstream = "http'
    )
    app = await start_proxy(text, extra_plugins={"peek": Peek()})
    for _ in range(2):
        await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(seen) == 4
    assert all(flow_id == logged for flow_id, logged in seen)
    assert seen[0][0] != seen[2][0]
    assert FLOW_ID.get() == ""


# -- what the response hooks leave in flow.response ---------------------------------------------
class Alters:
    """A response hook: replaces every response (``"replace"``), spoils it in
    place (``"spoil"``), or adds a field the codec refuses (``"crlf"``,
    bypassing ``Headers``' checks)."""

    def __init__(self, how: str) -> None:
        self.how = how

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        if self.how == "replace":
            status = flow.response.status_code
            flow.response = sdk.Response.make(status + 1, b"mine %d" % status)
        elif self.how == "spoil":
            flow.response.status_code = -1
        else:
            flow.response.headers.fields.append((b"x-a", b"1\r\nx-b: 2"))


class Answers:
    """Answers requests for ``/local`` itself (201 ``local``)."""

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> sdk.Response | None:
        if flow.request.path.startswith("/local"):
            return sdk.Response.make(201, b"local")
        return None


def local_config(http1: str = "h11") -> str:
    """``/local`` answered by a plugin, anything else by an unreachable
    upstream (a 502 page); ``alter`` sees every response."""
    return basic_config(1, http1=http1).replace(
        "[kernel]\n", '[kernel]\nplugins = ["local", "alter"]\n'
    )


def plugins(how: str) -> dict[str, object]:
    return {"local": Answers(), "alter": Alters(how)}


async def get(client: Any, port: int, path: bytes) -> dict[str, Any]:
    raw = await client.exchange(
        port, b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % path
    )
    (resp,) = client.parse_responses(raw)
    return resp  # type: ignore[no-any-return]


async def test_a_local_response_and_an_error_page_a_hook_replaced_are_the_answers(
    start_proxy: Any, client: Any, codec: str
) -> None:
    """Both used to be ignored: the client got the response the hooks saw."""
    app = await start_proxy(local_config(codec), extra_plugins=plugins("replace"))
    local = await get(client, app.port(), b"/local")
    assert (local["status"], local["body"]) == (202, b"mine 201")
    page = await get(client, app.port(), b"/nowhere")  # the upstream is unreachable
    assert (page["status"], page["body"]) == (503, b"mine 502")


async def test_an_error_page_a_hook_spoilt_is_the_kernel_s_page(
    start_proxy: Any, client: Any, codec: str, caplog: Any
) -> None:
    """The spoilt page used to fail in fail(): no answer at all."""
    for how in ("spoil", "crlf"):
        app = await start_proxy(local_config(codec), extra_plugins=plugins(how))
        with caplog.at_level(logging.WARNING, logger="kernel.exchange"):
            page = await get(client, app.port(), b"/nowhere")
        assert page["status"] == 502
        assert page["body"].startswith(b"502 Bad Gateway\n")
        assert "x-a" not in page["headers"]
        assert "after the response hooks of 'alter', " in caplog.text
        assert "the kernel's page is sent instead" in caplog.text
        caplog.clear()


async def test_an_error_page_a_hook_spoilt_reaches_an_http2_client_as_the_kernel_s(
    start_proxy: Any, client: Any
) -> None:
    app = await start_proxy(local_config(), extra_plugins=plugins("crlf"))
    async with await H2Client.connect(app.port()) as h2c:
        r = await h2c.get(b"/nowhere")
        assert (r.status, r.reset) == (502, None)
        assert r.body.startswith(b"502 Bad Gateway\n")
        assert (await h2c.get(b"/local")).status == 500  # and the connection goes on


async def test_a_local_response_the_hooks_made_unsendable_is_a_500_naming_them(
    start_proxy: Any, client: Any, codec: str, caplog: Any
) -> None:
    app = await start_proxy(local_config(codec), extra_plugins=plugins("crlf"))
    with caplog.at_level(logging.WARNING, logger="kernel.exchange"):
        resp = await get(client, app.port(), b"/local")
    assert resp["status"] == 500
    assert "x-a" not in resp["headers"]
    assert "after the response hooks of 'alter', the response cannot be sent: " in caplog.text


# -- a response a request-phase hook sets in flow.response -------------------------------------
def sets_config(port: int, http1: str = "h11", policy: str = "fail_closed") -> str:
    cfg = basic_config(port, f'[kernel.policy.sets]\non_error = "{policy}"\n', http1=http1)
    return cfg.replace("[kernel]\n", '[kernel]\nplugins = ["sets", "watch"]\n')


@pytest.mark.parametrize("hook", REQUEST_PHASE)
async def test_a_response_a_request_phase_hook_sets_is_the_answer(
    hook: str, start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """It used to be ignored: the request went upstream, whose answer replaced it."""
    watch = Watches()
    plugins = {"sets": SetsResponse(hook), "watch": watch}
    app = await start_proxy(sets_config(upstream.port, codec), extra_plugins=plugins)
    resp = await get(client, app.port(), b"/echo")
    assert (resp["status"], resp["body"]) == (201, b"SET IN " + hook.upper().encode())
    assert resp["headers"]["x-seen"] == "yes"  # the response hooks and transforms ran
    assert upstream.requests == []
    await trio.sleep(0.05)
    # Later hooks of the phase did not run (the watcher comes after), later phases did.
    before = list(REQUEST_PHASE[: REQUEST_PHASE.index(hook)])
    assert watch.ran == [*before, "trellis_response", "trellis_flow_done"]
    (flow,) = watch.done
    assert flow.error is None
    assert flow.response is not None
    assert flow.response.status_code == 201
    assert (flow.route, flow.upstream) == ("default", None)


async def test_a_set_response_reaches_an_http2_client(start_proxy: Any, upstream: Any) -> None:
    watch = Watches()
    plugins = {"sets": SetsResponse("trellis_request"), "watch": watch}
    app = await start_proxy(sets_config(upstream.port), extra_plugins=plugins)
    async with await H2Client.connect(app.port()) as h2c:
        for _ in range(2):
            r = await h2c.get(b"/echo")
            assert (r.status, bytes(r.body), r.header(b"x-seen")) == (
                201,
                b"SET IN TRELLIS_REQUEST",
                b"yes",
            )
    assert upstream.requests == []


@pytest.mark.parametrize("hook", REQUEST_PHASE)
async def test_a_returned_response_wins_over_a_set_one_and_a_name_or_origin_does_not(
    hook: str, start_proxy: Any, upstream: Any, client: Any
) -> None:
    returns = {
        "trellis_route_select": "default",
        "trellis_upstream_select": sdk.Origin("http", "127.0.0.1", upstream.port),
    }.get(hook, lambda: sdk.Response.make(202, b"returned"))
    sets = SetsResponse(hook, returns=returns)
    app = await start_proxy(
        sets_config(upstream.port), extra_plugins={"sets": sets, "watch": Watches()}
    )
    resp = await get(client, app.port(), b"/echo")
    if callable(returns):
        assert (resp["status"], resp["body"]) == (202, b"RETURNED")
    else:
        assert resp["status"] == 201  # the set response answers; the route is taken
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("made", "problem"),
    [
        (lambda: sdk.Response(101), "set flow.response to a Response whose status_code is 101"),
        (lambda: sdk.Response(200, body="t"), "set flow.response to a Response whose body is str"),  # type: ignore[arg-type]
        (lambda: "deny", "set flow.response to str, not Response"),
    ],
)
@pytest.mark.parametrize("hook", REQUEST_PHASE)
async def test_a_set_response_that_cannot_be_sent_is_the_setting_plugin_s_failure(
    hook: str, made: Any, problem: str, start_proxy: Any, upstream: Any, client: Any, caplog: Any
) -> None:
    watch = Watches()
    plugins = {"sets": SetsResponse(hook, made), "watch": watch}
    app = await start_proxy(sets_config(upstream.port), extra_plugins=plugins)
    with caplog.at_level(logging.ERROR, logger="kernel.dispatch"):
        resp = await get(client, app.port(), b"/echo")
    assert resp["status"] == 502
    assert f"plugin 'sets' raised TypeError in {hook}: {problem}" in caplog.text
    assert upstream.requests == []
    await trio.sleep(0.05)
    (flow,) = watch.done
    assert isinstance(flow.error, sdk.PluginError)
    assert (flow.error.plugin, flow.error.hook) == ("sets", hook)


@pytest.mark.parametrize("hook", REQUEST_PHASE)
async def test_a_set_response_of_a_plugin_failing_open_is_dropped_and_no_other_blamed(
    hook: str, start_proxy: Any, upstream: Any, client: Any, caplog: Any
) -> None:
    watch = Watches()
    sets = SetsResponse(hook, lambda: sdk.Response(101))
    app = await start_proxy(
        sets_config(upstream.port, policy="fail_open"), extra_plugins={"sets": sets, "watch": watch}
    )
    with caplog.at_level(logging.ERROR, logger="kernel.dispatch"):
        resp = await get(client, app.port(), b"/echo")
    assert resp["status"] == 200  # skipped, as a failing call: the request went upstream
    assert len(upstream.requests) == 1
    assert "plugin 'sets' raised TypeError" in caplog.text
    assert "plugin 'watch'" not in caplog.text
    assert hook in watch.ran  # the watcher's own hook of the phase ran after it


# -------------------------------------------------- TRACE, OPTIONS and Max-Forwards
def trace_config(port: int, http1: str = "h11", *, trace: bool = True) -> str:
    cfg = basic_config(port, http1=http1)
    return cfg.replace("[server]\n", f"[server]\ntrace = {str(trace).lower()}\n")


async def test_trace_is_refused_unless_turned_on(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(trace_config(upstream.port, codec, trace=False))
    raw = await client.exchange(
        app.port(), b"TRACE /t HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\nConnection: close\r\n\r\n"
    )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 501
    assert b"s=1" not in raw
    assert upstream.requests == []


async def test_max_forwards_0_ends_a_trace_here_without_its_secrets(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(trace_config(upstream.port, codec))
    raw = await client.exchange(
        app.port(),
        b"TRACE /t?q=1 HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nX-A: b\r\n"
        b"Cookie: s=1\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n",
    )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 200
    assert resp["headers"]["content-type"] == "message/http"
    # As received (hop-by-hop Connection included), less credentials and cookies.
    assert resp["body"] == (
        b"TRACE /t?q=1 HTTP/1.1\r\nhost: a\r\nmax-forwards: 0\r\nx-a: b\r\n"
        b"connection: close\r\n\r\n"
    )
    assert upstream.requests == []


async def test_max_forwards_0_ends_an_options_here(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(trace_config(upstream.port, codec, trace=False))
    raw = await client.exchange(
        app.port(),
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n"
        b"OPTIONS /x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 00\r\nConnection: close\r\n\r\n",
    )
    assert [(r["status"], r["body"]) for r in client.parse_responses(raw)] == [
        (200, b""),
        (200, b""),
    ]
    assert upstream.requests == []


async def test_max_forwards_is_forwarded_one_less_on_trace_and_options_only(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(trace_config(upstream.port, codec))
    raw = await client.exchange(
        app.port(),
        b"TRACE /t HTTP/1.1\r\nHost: a\r\nMax-Forwards: 3\r\n\r\n"
        b"OPTIONS /o HTTP/1.1\r\nHost: a\r\nMax-Forwards: 1\r\n\r\n"
        b"GET /g HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n",
    )
    assert [r["status"] for r in client.parse_responses(raw)] == [200, 200, 200]
    seen = [(r["method"], dict(r["headers"])["max-forwards"]) for r in upstream.requests]
    assert seen == [("TRACE", "2"), ("OPTIONS", "0"), ("GET", "0")]


@pytest.mark.parametrize(
    "field", [b"Max-Forwards: -1\r\n", b"Max-Forwards: 1\r\nMax-Forwards: 1\r\n"]
)
async def test_a_bad_max_forwards_is_a_400_that_never_goes_upstream(
    field: bytes, start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(trace_config(upstream.port, codec))
    raw = await client.exchange(app.port(), b"OPTIONS / HTTP/1.1\r\nHost: a\r\n" + field + b"\r\n")
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 400
    assert upstream.requests == []


async def test_an_access_hook_answers_before_max_forwards(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    plugins = {"sets": SetsResponse("trellis_request_access"), "watch": Watches()}
    cfg = sets_config(upstream.port).replace("[server]\n", "[server]\ntrace = true\n")
    app = await start_proxy(cfg, extra_plugins=plugins)
    raw = await client.exchange(
        app.port(), b"TRACE / HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n"
    )
    (resp,) = client.parse_responses(raw)
    assert (resp["status"], resp["body"]) == (201, b"SET IN TRELLIS_REQUEST_ACCESS")


async def test_max_forwards_over_http2(start_proxy: Any, upstream: Any) -> None:
    app = await start_proxy(trace_config(upstream.port))
    async with await H2Client.connect(app.port()) as h2c:
        sid = await h2c.request(b"TRACE", b"/t", extra=[(b"max-forwards", b"0")])
        r = await h2c.response(sid)
        assert r.status == 200
        assert bytes(r.body).startswith(b"TRACE /t HTTP/2.0\r\n")
        sid = await h2c.request(b"OPTIONS", b"/o", extra=[(b"max-forwards", b"2")])
        assert (await h2c.response(sid)).status == 200
    ((method, hops),) = [
        (r["method"], dict(r["headers"])["max-forwards"]) for r in upstream.requests
    ]
    assert (method, hops) == ("OPTIONS", "1")


# ------------------------------------------------------------- Date (RFC 9110 §6.6.1)
def _dates(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [line[6:] for line in head.split(b"\r\n") if line.lower().startswith(b"date: ")]


async def test_every_response_carries_one_date(
    start_proxy: Any, upstream: Any, client: Any, codec: str, nursery: trio.Nursery
) -> None:
    upstream_date = b"Sun, 06 Nov 1994 08:49:37 GMT"
    dated = await raw_upstream(
        nursery, b"HTTP/1.1 200 OK\r\nDate: " + upstream_date + b"\r\nContent-Length: 2\r\n\r\nok"
    )
    undated = await raw_upstream(nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    # The upstream's Date is relayed as it is.
    assert (await _through(start_proxy, dated, codec, client)) == [upstream_date]
    # An upstream that sends none: ours, the time we received its answer.
    before = time.time()
    (ours,) = await _through(start_proxy, undated, codec, client)
    moment = email.utils.parsedate_to_datetime(ours.decode()).timestamp()
    assert int(before) <= moment <= time.time()
    # The kernel's own answers: an error page (a refused head), a local answer.
    port = (await start_proxy(basic_config(upstream.port, http1=codec))).port()
    raw = await client.exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n")
    assert client.parse_responses(raw)[0]["status"] == 400
    assert len(_dates(raw)) == 1
    raw = await client.exchange(
        port, b"OPTIONS * HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n"
    )
    assert len(_dates(raw)) == 1


async def _through(start_proxy: Any, port: int, codec: str, client: Any) -> list[bytes]:
    app = await start_proxy(basic_config(port, http1=codec))
    raw = await client.exchange(
        app.port(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert client.parse_responses(raw)[0]["status"] == 200
    return _dates(raw)


async def test_every_http2_response_carries_one_date(
    start_proxy: Any, upstream: Any, nursery: trio.Nursery
) -> None:
    undated = await raw_upstream(nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    app = await start_proxy(trace_config(undated))
    async with await H2Client.connect(app.port()) as h2c:
        relayed = await h2c.get(b"/")
        local = await h2c.response(
            await h2c.request(b"OPTIONS", b"/", extra=[(b"max-forwards", b"0")])
        )
    for r in (relayed, local):
        assert r.status == 200
        (date,) = [v for n, v in r.headers if n == b"date"]
        assert date.endswith(b" GMT")
