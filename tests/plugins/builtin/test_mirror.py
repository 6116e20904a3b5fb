"""MirrorPlugin: sampling, body capture, the bounded queue, config errors, real kernel."""

from __future__ import annotations

import random
import re
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import sdk
from plugins.builtin.mirror import MirrorConfig, MirrorPlugin, ShadowRequest
from sdk.testing import Harness
from tests.helpers.upstream import Upstream

SHADOW = "http://127.0.0.1:9"


class NoWorkers:
    """A startup context that starts nothing: copies stay in the queue."""

    generation = 1
    groups: dict[str, sdk.Group] = {}

    def __init__(self) -> None:
        self.receive: trio.MemoryReceiveChannel[ShadowRequest] | None = None

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self.receive = args[0]


CONTEXTS: dict[int, NoWorkers] = {}


def plugin(**config: Any) -> MirrorPlugin:
    config.setdefault("upstream", SHADOW)
    p = MirrorPlugin(sdk.structure(config, MirrorConfig, path=PATH), rng=random.Random(7))
    CONTEXTS[id(p)] = context = NoWorkers()
    p.trellis_startup(context)  # type: ignore[arg-type]
    return p


def queued(p: MirrorPlugin) -> list[ShadowRequest]:
    """Take every copy waiting in the plugin's queue."""
    receive = CONTEXTS[id(p)].receive
    assert receive is not None
    out = []
    while True:
        try:
            out.append(receive.receive_nowait())
        except trio.WouldBlock:
            return out


# ----------------------------------------------------------------- harness
async def test_get_is_queued_with_host_and_marker_and_base_path() -> None:
    p = plugin(upstream="http://127.0.0.1:9/shadow")
    flow = await Harness(p).run(
        Harness.make_flow("GET", "http://site.test/a?b=1", [("connection", "keep-alive, x-hop")])
    )
    assert flow.decisions == ["mirror: queued"]
    (copy,) = queued(p)
    assert (copy.method, copy.target, copy.body) == ("GET", "/shadow/a?b=1", b"")
    headers = dict(copy.headers)
    assert headers["host"] == "site.test"
    assert headers["x-mirrored-by"] == "trellis"
    assert headers["connection"] == "close"
    assert "content-length" not in headers
    assert (p.queued, p.dropped) == (1, 0)


async def test_small_body_is_copied_and_large_body_drops_the_copy() -> None:
    p = plugin(max_body_bytes=10)
    h = Harness(p)
    small = Harness.make_flow("POST", "http://site.test/up", [("content-length", "5")])
    flow = await h.run(small, body=b"hello")
    assert flow.decisions == ["mirror: queued"]
    (copy,) = queued(p)
    assert copy.body == b"hello"
    assert ("content-length", "5") in copy.headers
    big = Harness.make_flow("POST", "http://site.test/up", [("content-length", "11")])
    flow = await h.run(big, body=b"x" * 11)
    assert flow.decisions == ["mirror: dropped (body over 10 bytes)"]
    assert queued(p) == []
    assert p.dropped == 1


async def test_body_hook_never_changes_the_body() -> None:
    p = plugin()
    flow = Harness.make_flow("POST", "http://site.test/up")
    assert Harness(p).transform("trellis_request_body", flow, b"abc") == b"abc"


async def test_queue_full_drops_and_counts() -> None:
    p = plugin(queue=3)
    h = Harness(p)
    decisions = [
        (await h.run(Harness.make_flow("GET", f"http://site.test/{i}"))).decisions for i in range(5)
    ]
    assert decisions == [["mirror: queued"]] * 3 + [["mirror: dropped (queue full)"]] * 2
    assert (p.queued, p.dropped) == (3, 2)


async def test_percent_zero_and_partial_and_local_answers() -> None:
    zero = plugin(percent=0)
    flow = await Harness(zero).run(Harness.make_flow())
    assert flow.decisions == ["mirror: not sampled (0%)"]
    half = plugin(percent=50, queue=1000)
    h = Harness(half)
    for i in range(400):
        await h.run(Harness.make_flow("GET", f"http://site.test/{i}"))
    assert 150 <= half.queued <= 250, half.queued

    class Answer:
        @sdk.hookimpl
        def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
            return sdk.Response.make(204, b"")

    p = plugin()
    flow = await Harness(Answer(), p).run(Harness.make_flow())
    assert flow.decisions == []
    assert (p.queued, p.dropped) == (0, 0)


async def test_not_started_drops() -> None:
    p = MirrorPlugin(MirrorConfig(upstream=SHADOW))
    flow = await Harness(p).run(Harness.make_flow())
    assert flow.decisions == ["mirror: dropped (not started)"]


# ------------------------------------------------------------ config errors
PATH = "$.plugins.mirror"


def test_defaults() -> None:
    c = sdk.structure({"upstream": SHADOW}, MirrorConfig, path=PATH)
    assert (c.percent, c.max_in_flight, c.queue, c.max_body_bytes, c.timeout_s) == (
        100.0,
        8,
        64,
        65536,
        5.0,
    )


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        ({}, "", "set exactly one of upstream \\(a URL\\) and group"),
        ({"upstream": "ftp://x"}, "upstream", "must be an http URL"),
        ({"upstream": "https://x"}, "upstream", "https shadows are not supported"),
        ({"upstream": "http://x:0"}, "upstream", "out of range"),
        ({"upstream": SHADOW, "percent": 101}, "percent", "between 0 and 100"),
        ({"upstream": SHADOW, "percent": float("nan")}, "percent", "between 0 and 100"),
        ({"upstream": SHADOW, "max_in_flight": 0}, "max_in_flight", "at least 1"),
        ({"upstream": SHADOW, "queue": -1}, "queue", "at least 0"),
        ({"upstream": SHADOW, "max_body_bytes": -5}, "max_body_bytes", "at least 0"),
        ({"upstream": SHADOW, "timeout_s": 0}, "timeout_s", "positive"),
        ({"upstream": SHADOW, "timeout_s": float("inf")}, "timeout_s", "positive"),
        ({"upstream": SHADOW, "queue": "8"}, "queue", "integer|int"),
        ({"upstream": SHADOW, "shadow": 1}, "", "shadow: unknown key"),
    ],
)
def test_config_errors_have_paths(table: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(table, MirrorConfig, path=PATH)
    text = "\n".join(info.value.problems)
    assert (f"{PATH}.{where}" if where else PATH) in text, text
    assert re.search(message, text), text


# ------------------------------------------------------------- real kernel
def config(primary: int, shadow: int, extra: str = "") -> str:
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 1

[kernel.modules]
mirror = "plugins.builtin.mirror:MirrorPlugin"

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[routes]]
name = "default"
upstream = "http://127.0.0.1:{primary}"
plugins = ["mirror"]

[plugins.mirror]
upstream = "http://127.0.0.1:{shadow}"
{extra}
"""


async def send(client: Any, port: int, method: str, path: str, body: bytes = b"") -> float:
    """One request through the proxy; returns its duration, asserts a 200."""
    head = f"{method} {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    start = time.monotonic()
    raw = await client.exchange(port, (head + "\r\n").encode() + body)
    elapsed = time.monotonic() - start
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 200
    return elapsed


async def wait_for(predicate: Callable[[], bool], seconds: float = 2.0) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


async def test_real_kernel_copies_reach_the_shadow(
    start_proxy: Any, upstream: Any, client: Any, nursery: trio.Nursery
) -> None:
    shadow = await nursery.start(Upstream().serve)
    app = await start_proxy(config(upstream.port, shadow.port))
    for i in range(20):
        await send(client, app.port(), "GET", f"/get/{i}")
    await send(client, app.port(), "POST", "/echo", b"0123456789")
    assert len(upstream.requests) == 21
    await wait_for(lambda: len(shadow.requests) == 21)
    by_target = {r["target"]: r for r in shadow.requests}
    assert set(by_target) == {f"/get/{i}" for i in range(20)} | {"/echo"}
    post = by_target["/echo"]
    assert (post["method"], post["body_length"]) == ("POST", 10)
    for r in shadow.requests:
        headers = dict(r["headers"])
        assert headers["x-mirrored-by"] == "trellis"
        assert headers["host"] == "site.test"
    mirror = app.generation.host.instances["mirror"]
    await wait_for(lambda: mirror.sent == 21)
    assert (mirror.dropped, mirror.failed) == (0, 0)


async def test_real_kernel_silent_shadow_neither_slows_nor_queues_unbounded(
    start_proxy: Any, upstream: Any, client: Any, nursery: trio.Nursery
) -> None:
    # A shadow that accepts connections and never answers.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    nursery.start_soon(trio.serve_listeners, hold, listeners)
    port = listeners[0].socket.getsockname()[1]
    app = await start_proxy(config(upstream.port, port, "max_in_flight = 1\nqueue = 2\n"))
    durations = [await send(client, app.port(), "GET", f"/x/{i}") for i in range(10)]
    assert max(durations) < 0.5, durations
    mirror = app.generation.host.instances["mirror"]
    # One copy is with the (stuck) worker, two wait, the rest were dropped.
    assert mirror.queued + mirror.dropped == 10
    assert mirror.dropped >= 6, (mirror.queued, mirror.dropped)
    assert mirror.sent == 0
    await wait_for(lambda: len(held) == 1)


async def test_real_kernel_refused_shadow_never_fails_the_request(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    app = await start_proxy(config(upstream.port, closed))
    for i in range(3):
        assert await send(client, app.port(), "POST", f"/up/{i}", b"abc") < 0.5
    mirror = app.generation.host.instances["mirror"]
    await wait_for(lambda: mirror.failed == 3)
    assert (mirror.sent, mirror.dropped) == (0, 0)
    assert len(upstream.requests) == 3


async def test_real_kernel_copies_spread_over_a_shadow_group(
    start_proxy: Any, upstream: Any, client: Any, nursery: trio.Nursery
) -> None:
    """Copies go round-robin to the group's available targets, with their base paths;
    a target the kernel took out of rotation gets none."""
    shadows = [await nursery.start(Upstream().serve) for _ in range(2)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    text = (
        config(upstream.port, 0).replace('upstream = "http://127.0.0.1:0"', 'group = "shadow"')
        + f"""
[[groups]]
name = "shadow"
urls = "http://127.0.0.1:{shadows[0].port}/s0 http://127.0.0.1:{shadows[1].port}/s1 http://127.0.0.1:{dead}"
[groups.health]
path = "/status/200"
interval_s = 0.05
unhealthy_threshold = 1
"""
    )
    app = await start_proxy(text)
    group = app.generation.groups["shadow"]
    await wait_for(lambda: len(group.candidates) == 2)
    for i in range(10):
        await send(client, app.port(), "GET", f"/g/{i}")
    mirror = app.generation.host.instances["mirror"]
    await wait_for(lambda: mirror.sent == 10)
    copies = [r for r in shadows[0].requests + shadows[1].requests if "/g/" in r["target"]]
    assert len(copies) == 10
    assert {r["target"][:3] for r in copies} == {"/s0", "/s1"}
    assert abs(sum("/s0" in r["target"] for r in copies) - 5) <= 1
    assert mirror.failed == 0


async def test_a_mirror_group_must_exist(start_proxy: Any, upstream: Any) -> None:
    from kernel.config import loads_config
    from kernel.generation import build_generation

    text = config(upstream.port, 0).replace('upstream = "http://127.0.0.1:0"', 'group = "nope"')
    settings = loads_config(text, base_dir=Path("."), environ={}).settings
    with pytest.raises(sdk.ConfigError) as info:
        build_generation(settings, modules=settings.kernel.modules)
    assert "$.plugins.mirror.group: no group named 'nope'" in str(info.value)
