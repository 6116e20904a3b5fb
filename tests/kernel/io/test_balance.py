"""Routes that send to a group, end to end in one process with real upstreams on loopback.

Covers kernel.io.balance and the group parts of the relay: failover on
connection failures (any method), retries that move to another target,
503 with Retry-After or panic when nothing is available, the sticky cookie,
per-target transport, ``flow.group`` chosen by a plugin, ``flow.target``
in the terminal hook, ``trellis_target_health``, and groups that keep their
state across a reload.
"""

from __future__ import annotations

import socket
from typing import Any

import trio

import sdk
from tests.helpers import client
from tests.helpers.upstream import Upstream


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(urls: list[str], group_extra: str = "", route_extra: str = "", top: str = "") -> str:
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 1
{top}
[[listeners]]
bind = "127.0.0.1:0"

[[routes]]
name = "r"
group = "app"
{route_extra}

[[groups]]
name = "app"
strategy = "roundrobin"
urls = "{" ".join(urls)}"
{group_extra}
"""


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


async def fetch(
    port: int, method: str = "GET", path: str = "/", body: bytes = b"", headers: str = ""
) -> dict[str, Any]:
    head = f"{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{headers}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    raw = await client.exchange(port, head.encode() + b"\r\n" + body)
    (resp,) = client.parse_responses(raw)
    return resp


def header(resp: dict[str, Any], name: str) -> str | None:
    value = resp["headers"].get(name)
    return None if value is None else str(value)


async def two(nursery: trio.Nursery) -> tuple[Upstream, Upstream]:
    a = await nursery.start(Upstream().serve)
    b = await nursery.start(Upstream().serve)
    return a, b


async def test_requests_are_spread_over_the_targets(
    start_proxy: Any, nursery: trio.Nursery
) -> None:
    a, b = await two(nursery)
    app = await start_proxy(config([url(a.port), url(b.port)]))
    for _ in range(10):
        assert (await fetch(app.port()))["status"] == 200
    assert (len(a.requests), len(b.requests)) == (5, 5)


async def test_a_refused_connection_fails_over_for_any_method(
    start_proxy: Any, nursery: trio.Nursery
) -> None:
    a = await nursery.start(Upstream().serve)
    app = await start_proxy(config([url(dead_port()), url(a.port)]))
    for _ in range(4):
        resp = await fetch(app.port(), "POST", "/upload", b"payload")
        assert resp["status"] == 200
    # Each POST reached the live target exactly once.
    assert [r["method"] for r in a.requests] == ["POST"] * 4
    group = app.generation.groups["app"]
    dead, live = group.targets
    assert dead.requests >= 2  # tried first at least every other time, never twice a flow
    assert live.requests == 4
    assert live.active == 0
    assert dead.active == 0


async def test_passive_checks_eject_a_dead_target(start_proxy: Any, nursery: trio.Nursery) -> None:
    a = await nursery.start(Upstream().serve)
    passive = "[groups.passive]\nfailures = 2\ncooldown_s = 60"
    app = await start_proxy(config([url(dead_port()), url(a.port)], passive))
    for _ in range(10):
        assert (await fetch(app.port()))["status"] == 200
    dead, _live = app.generation.groups["app"].targets
    assert not dead.available
    assert dead.requests == 2  # two failures, then out of rotation


async def test_a_retry_goes_to_another_target(start_proxy: Any, nursery: trio.Nursery) -> None:
    a, b = await two(nursery)
    retry = "[routes.transport.retry]\nattempts = 3\nbackoff_s = 0.001"
    app = await start_proxy(config([url(a.port), url(b.port)], route_extra=retry))
    resp = await fetch(app.port(), path="/flaky/1/503?id=x")
    assert resp["status"] == 200
    # Each target answers its first "x" with 503: a (503), then b (503), then a (200).
    assert (a.flaky.get("x"), b.flaky.get("x")) == (2, 1)
    # A POST with a body is never sent twice.
    resp = await fetch(app.port(), "POST", "/flaky/1/503?id=p", b"body")
    assert resp["status"] == 503
    assert a.flaky.get("p", 0) + b.flaky.get("p", 0) == 1


async def test_nothing_available_is_503_with_retry_after(
    start_proxy: Any, nursery: trio.Nursery
) -> None:
    a = await nursery.start(Upstream().serve)
    health = '[groups.health]\npath = "/status/500"\ninterval_s = 0.05\nunhealthy_threshold = 1'
    app = await start_proxy(config([url(a.port)], "retry_after_s = 7\n" + health))
    group = app.generation.groups["app"]
    with trio.fail_after(5):
        while group.candidates:
            await trio.sleep(0.02)
    resp = await fetch(app.port(), path="/echo")
    assert resp["status"] == 503
    assert header(resp, "retry-after") == "7"
    assert not any(r["target"] == "/echo" for r in a.requests)
    # Panic mode tries them all the same.
    panic = await start_proxy(config([url(a.port)], 'when_none_available = "panic"\n' + health))
    group = panic.generation.groups["app"]
    with trio.fail_after(5):
        while group.candidates:
            await trio.sleep(0.02)
    assert (await fetch(panic.port(), path="/echo"))["status"] == 200


async def test_the_sticky_cookie(start_proxy: Any, nursery: trio.Nursery) -> None:
    a, b = await two(nursery)
    sticky = '[groups.sticky]\ncookie = "srv"'
    app = await start_proxy(config([url(a.port), url(b.port)], sticky))
    first = await fetch(app.port())
    cookie = header(first, "set-cookie")
    assert cookie is not None
    assert cookie.startswith("srv=")
    pin = cookie.split(";")[0]
    before = (len(a.requests), len(b.requests))
    for _ in range(6):
        resp = await fetch(app.port(), headers=f"Cookie: {pin}\r\n")
        assert header(resp, "set-cookie") is None  # already pinned: not set again
    after = (len(a.requests) - before[0], len(b.requests) - before[1])
    assert sorted(after) == [0, 6]


async def test_a_target_transport_override(start_proxy: Any, nursery: trio.Nursery) -> None:
    a = await nursery.start(Upstream().serve)
    text = config([], route_extra="").replace(
        'urls = ""',
        f'[[groups.targets]]\nurl = "{url(a.port)}"\n'
        "[groups.targets.transport]\nresponse_timeout_s = 0.2",
    )
    app = await start_proxy(text)
    assert (await fetch(app.port(), path="/sleep/2"))["status"] == 504
    assert (await fetch(app.port()))["status"] == 200


class Tracker:
    """Sees flow.target at the end, sends /other to another group, hears health changes."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.health: list[tuple[str, bool]] = []

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        if flow.request.path.startswith("/other"):
            flow.group = "other"

    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        if flow.target is not None:
            self.targets.append(f"{flow.target.group}/{flow.target.name}")

    @sdk.hookimpl
    def trellis_target_health(self, target: sdk.Target, available: bool, reason: str) -> None:
        self.health.append((target.name, available))


async def test_plugins_see_targets_choose_groups_and_hear_health(
    start_proxy: Any, nursery: trio.Nursery
) -> None:
    a, b = await two(nursery)
    tracker = Tracker()
    text = (
        config([url(a.port)], top='plugins = ["tracker"]')
        + f"""
[[groups]]
name = "other"
[[groups.targets]]
name = "b"
url = "{url(b.port)}"
[groups.health]
path = "/status/503"
interval_s = 0.05
unhealthy_threshold = 1
"""
    )
    app = await start_proxy(text, extra_plugins={"tracker": tracker})
    assert (await fetch(app.port(), path="/x"))["status"] == 200
    with trio.fail_after(5):
        while not tracker.health:
            await trio.sleep(0.02)
    assert tracker.health[0] == ("b", False)
    resp = await fetch(app.port(), path="/other")
    assert resp["status"] == 503  # the other group has nothing available
    assert tracker.targets == [f"app/127.0.0.1:{a.port}"]


async def test_a_reload_keeps_an_unchanged_group_and_its_state(
    start_proxy: Any, nursery: trio.Nursery, tmp_path: Any
) -> None:
    a, b = await two(nursery)
    text = config([url(a.port), url(b.port)])
    app = await start_proxy(text)
    group = app.generation.groups["app"]
    assert (await fetch(app.port()))["status"] == 200  # round-robin: a next is b
    path = app.config_path
    path.write_text(text.replace('name = "r"', 'name = "r2"'))
    assert await app.reload("test")
    assert app.generation.groups["app"] is group
    assert (await fetch(app.port()))["status"] == 200
    assert (len(a.requests), len(b.requests)) == (1, 1)  # the counter went on
    # A changed group is a new object.
    path.write_text(text.replace('strategy = "roundrobin"', 'strategy = "random"'))
    assert await app.reload("test")
    assert app.generation.groups["app"] is not group


async def test_a_dead_pooled_connection_then_a_refused_connect_fails_over(
    start_proxy: Any, nursery: trio.Nursery
) -> None:
    """The target dies with idle pooled connections: the GET that finds one
    dead, then gets its fresh connection refused, goes to another target
    (nothing reached the dead one), without any retry configured."""
    b = await nursery.start(Upstream().serve)
    a = Upstream()
    async with trio.open_nursery() as inner:
        await inner.start(a.serve)
        app = await start_proxy(config([url(a.port), url(b.port)]))
        for _ in range(4):
            assert (await fetch(app.port(), headers="Connection: keep-alive\r\n"))["status"] == 200
        assert len(a.requests) == 2
        assert app.state.pool.statistics().idle >= 1
        inner.cancel_scope.cancel()
    await trio.sleep(0.05)  # the proxy's idle connections to a see EOF
    for _ in range(4):
        assert (await fetch(app.port()))["status"] == 200
    assert len(b.requests) == 6


async def test_http2_both_sides_on_a_group(start_proxy: Any, nursery: trio.Nursery) -> None:
    """h2c clients on a group route whose targets are HTTP/2-only origins
    (``force_http2`` as a per-target transport): every stream is balanced,
    and a dead target fails over like on HTTP/1.1."""
    from tests.helpers.h2client import H2Client
    from tests.helpers.h2origin import H2Origin

    a = await nursery.start(H2Origin().serve)
    b = await nursery.start(H2Origin().serve)

    def target(port: int) -> str:
        return (
            f'[[groups.targets]]\nurl = "http://127.0.0.1:{port}"\n'
            "[groups.targets.transport]\nforce_http2 = true\n"
        )

    text = config([]).replace('urls = ""', target(a.port) + target(b.port) + target(dead_port()))
    app = await start_proxy(text)
    async with await H2Client.connect(app.port()) as h2:
        results = [await h2.get(f"/x/{i}".encode()) for i in range(12)]
    assert [r.status for r in results] == [200] * 12
    # Round-robin over three targets, the dead one's turns failing over: a and b share all.
    assert len(a.requests) + len(b.requests) == 12
    assert abs(len(a.requests) - len(b.requests)) <= 4
    assert a.connections == 1  # one multiplexed connection per target
    assert b.connections == 1
