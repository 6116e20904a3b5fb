"""HealthPlugin: /health and /ready documents, every readiness check, config errors, and
/ready flipping in a real kernel when the only target of the only group goes down and back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio

import sdk
from plugins.builtin.health import HealthConfig, HealthPlugin
from sdk.testing import Harness, make_flow
from tests.helpers.statusorigin import Origin
from tests.helpers.upstream import Upstream

PATH = "$.plugins.health"
BOUND = {"main": "127.0.0.1:8080", "health": "127.0.0.1:8081"}


def target(name: str, available: bool = True, **state: Any) -> sdk.Target:
    return sdk.Target(
        group="app",
        name=name,
        origin=sdk.Origin("http", "10.0.0.1", 9000),
        base_path="/v1",
        available=available,
        **state,
    )


def context(
    groups: dict[str, tuple[sdk.Target, ...]] | None = None,
    *,
    listeners: dict[str, str] | None = None,
    draining: bool = False,
    worker: int = 0,
) -> sdk.StartupContext:
    bound = BOUND if listeners is None else listeners
    server = sdk.ServerInfo(
        listeners=lambda: bound, draining=lambda: draining, worker=worker, workers=2
    )
    made = {name: sdk.Group(name, ts) for name, ts in (groups or {}).items()}
    return sdk.StartupContext(3, start_soon_impl=lambda fn, args: None, groups=made, server=server)


async def harness(ctx: sdk.StartupContext, **config: Any) -> Harness:
    h = Harness(HealthPlugin, config=config)
    groups = tuple(ctx.groups)
    await h.call("trellis_config_check", ("r",), groups, ("main", "health"))
    await h.call("trellis_startup", ctx)
    return h


async def get(h: Harness, path: str, method: str = "GET", listener: str = "health") -> sdk.Response:
    flow = await h.run(make_flow(method, f"http://x{path}", listener=listener))
    assert flow.response is not None
    return flow.response


def doc(resp: sdk.Response) -> Any:
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["cache-control"] == "no-store"
    return json.loads(resp.body or b"")


# ------------------------------------------------------------------ Harness
async def test_liveness() -> None:
    h = await harness(context(worker=1))
    resp = await get(h, "/health")
    assert resp.status_code == 200
    assert doc(resp) == {"status": "ok", "generation": 3, "worker": 1}
    assert (await get(h, "/health?probe=k8s")).status_code == 200


async def test_ready_document() -> None:
    a = target("a", active=2, requests=10)
    b = target("b", available=False, healthy=False, ejected_until=0.0)
    c = target("c", available=False, ejected_until=1e12)
    h = await harness(context({"app": (a, b, c)}))
    resp = await get(h, "/ready")
    assert resp.status_code == 200
    body = doc(resp)
    assert body["ready"] is True
    assert body["generation"] == 3
    assert body["worker"] == 0
    assert body["checks"] == {
        "config": {"ok": True, "detail": "generation 3 is live"},
        "listeners": {"ok": True, "detail": "main on 127.0.0.1:8080, health on 127.0.0.1:8081"},
        "draining": {"ok": True, "detail": "not draining"},
        "groups": {"ok": True, "detail": "1 group(s) with an available target"},
    }
    assert body["groups"] == {
        "app": {
            "available": 1,
            "total": 3,
            "targets": [
                {
                    "name": "a",
                    "url": "http://10.0.0.1:9000/v1",
                    "available": True,
                    "healthy": True,
                    "ejected": False,
                    "active": 2,
                    "requests": 10,
                },
                {
                    "name": "b",
                    "url": "http://10.0.0.1:9000/v1",
                    "available": False,
                    "healthy": False,
                    "ejected": False,
                    "active": 0,
                    "requests": 0,
                },
                {
                    "name": "c",
                    "url": "http://10.0.0.1:9000/v1",
                    "available": False,
                    "healthy": True,
                    "ejected": True,
                    "active": 0,
                    "requests": 0,
                },
            ],
        }
    }


async def test_state_is_read_live_at_each_request() -> None:
    a = target("a")
    h = await harness(context({"app": (a,)}))
    assert (await get(h, "/ready")).status_code == 200
    a.available = False  # the kernel writes the live state
    resp = await get(h, "/ready")
    assert resp.status_code == 503
    body = doc(resp)
    assert body["ready"] is False
    assert body["checks"]["groups"] == {"ok": False, "detail": "no available target in: app"}
    assert body["groups"]["app"]["available"] == 0
    a.available = True
    assert (await get(h, "/ready")).status_code == 200


async def test_a_missing_listener_is_not_ready() -> None:
    h = await harness(context(listeners={"health": "127.0.0.1:8081"}))
    resp = await get(h, "/ready")
    assert resp.status_code == 503
    assert doc(resp)["checks"]["listeners"] == {"ok": False, "detail": "not bound: main"}


async def test_draining_is_not_ready() -> None:
    h = await harness(context(draining=True))
    resp = await get(h, "/ready")
    assert resp.status_code == 503
    assert doc(resp)["checks"]["draining"] == {"ok": False, "detail": "draining"}
    assert (await get(h, "/health")).status_code == 200  # alive all the same


async def test_before_startup_nothing_is_ready() -> None:
    h = Harness(HealthPlugin())
    resp = await get(h, "/ready")
    assert resp.status_code == 503
    assert doc(resp)["checks"]["config"] == {"ok": False, "detail": "no configuration is live yet"}


async def test_require_groups_and_counted_groups() -> None:
    down = {"app": (target("a", available=False),), "batch": (target("b"),)}
    relaxed = await harness(context(down), require_groups=False)
    resp = await get(relaxed, "/ready")
    assert resp.status_code == 200
    assert doc(resp)["checks"]["groups"] == {"ok": True, "detail": "not required"}
    only_batch = await harness(context(down), groups=["batch"])
    assert (await get(only_batch, "/ready")).status_code == 200
    both = await harness(context(down))
    assert (await get(both, "/ready")).status_code == 503
    no_groups = await harness(context())
    assert (await get(no_groups, "/ready")).status_code == 200


async def test_methods_paths_and_other_listeners() -> None:
    h = await harness(context(), health_path="/live", ready_path="/readyz")
    assert (await get(h, "/live")).status_code == 200
    assert (await get(h, "/readyz")).status_code == 200
    head = await get(h, "/live", "HEAD")
    assert head.status_code == 200
    post = await get(h, "/readyz", "POST")
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    for path in ("/health", "/ready", "/", "/live/x"):
        missing = await get(h, path)
        assert missing.status_code == 404, path
        assert missing.headers["cache-control"] == "no-store"
    # On another listener the plugin stays out of the way.
    elsewhere = await get(h, "/live", listener="main")
    assert elsewhere.body == b"upstream\n"


# ------------------------------------------------------------ config errors
def problems(**table: Any) -> list[str]:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(table, HealthConfig, path=PATH)
    return info.value.problems


def test_defaults() -> None:
    c = sdk.structure({}, HealthConfig, path=PATH)
    assert c == HealthConfig()
    assert (c.listener, c.health_path, c.ready_path) == ("health", "/health", "/ready")
    assert c.require_groups is True
    assert c.groups == []


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        ({"listener": ""}, "listener", "is not a name"),
        ({"listener": 8081}, "listener", "must be a string"),
        ({"health_path": "health"}, "health_path", "not a request path"),
        ({"ready_path": "/r?x"}, "ready_path", "not a request path"),
        ({"ready_path": "/health"}, "", "health_path and ready_path must differ"),
        ({"require_groups": "yes"}, "require_groups", "must be true or false"),
        ({"groups": ["a b"]}, "groups[0]", "'a b' is not a name"),
        ({"port": 8081}, "port", "unknown key"),
    ],
)
def test_config_errors_have_paths(table: dict[str, Any], where: str, message: str) -> None:
    found = problems(**table)
    path = f"{PATH}.{where}" if where else PATH
    assert any(p.startswith(path + ":") and re.search(message, p) for p in found), found


def test_every_bad_group_name_beside_one_of_the_wrong_type() -> None:
    """The names were checked by one loop over the list, which does not run
    on a list with an item missing: a wrongly typed name hid the bad ones
    (and two bad ones made one message). Each is checked alone now."""
    assert problems(groups=["app", 5, "a b", "x/y"]) == [
        f"{PATH}.groups[1]: must be a string, got 5",
        f"{PATH}.groups[2]: 'a b' is not a name (letters, digits, '_', '-', '.')",
        f"{PATH}.groups[3]: 'x/y' is not a name (letters, digits, '_', '-', '.')",
    ]


async def test_config_check() -> None:
    h = Harness(HealthPlugin, config={"groups": ["app", "gone"]})
    assert await h.call("trellis_config_check", ("r",), ("app",), ("main",)) == [
        [
            "listener: no listener named 'health' (listeners: main)",
            "groups[1]: no group named 'gone' (groups: app)",
        ]
    ]


async def test_unknown_listener_fails_the_configuration(tmp_path: Path) -> None:
    from kernel.generation import load_generation

    path = tmp_path / "bad.toml"
    path.write_text(
        '[kernel]\nplugins = ["health"]\n[[listeners]]\nname = "main"\nbind = "127.0.0.1:0"\n'
        '[[routes]]\nname = "r"\nupstream = "http://127.0.0.1:1"\n'
    )
    with pytest.raises(sdk.ConfigError) as info:
        load_generation(path)
    assert info.value.problems == [
        "$.plugins.health.listener: no listener named 'health' (listeners: main)"
    ]


# ------------------------------------------------------------- real kernel
#: The kernel, a main and a health listener, and a route to group "app";
#: each test appends its groups.
KERNEL_WITH_HEALTH = """
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = ["health"]

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[listeners]]
name = "health"
bind = "127.0.0.2:0"

[[routes]]
name = "r"
group = "app"
"""


async def http(port: int, path: str, host: str = "127.0.0.2") -> tuple[int, Any]:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
            )
            raw = b""
            while chunk := await stream.receive_some(65536):
                raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else body


async def wait_ready(port: int, want: int) -> Any:
    with trio.fail_after(10):
        while True:
            status, body = await http(port, "/ready")
            if status == want:
                return body
            await trio.sleep(0.02)


async def test_ready_flips_when_the_only_target_goes_down_and_back(
    start_proxy: Any, nursery: trio.Nursery
) -> None:
    switch = await nursery.start(Origin({}).serve)
    app = await start_proxy(
        KERNEL_WITH_HEALTH
        + f"""
[[groups]]
name = "app"
[[groups.targets]]
name = "only"
url = "http://127.0.0.1:{switch.port}"
[groups.health]
path = "/healthz"
interval_s = 0.05
healthy_threshold = 1
unhealthy_threshold = 2
"""
    )
    port = app.port("health")
    body = await wait_ready(port, 200)
    assert body["ready"] is True
    assert body["checks"]["listeners"]["ok"] is True
    assert body["groups"]["app"]["targets"][0]["name"] == "only"
    assert body["groups"]["app"]["targets"][0]["url"] == f"http://127.0.0.1:{switch.port}"

    switch.default = 500
    body = await wait_ready(port, 503)
    assert body["ready"] is False
    assert body["checks"]["groups"] == {"ok": False, "detail": "no available target in: app"}
    assert body["groups"]["app"]["available"] == 0
    assert body["groups"]["app"]["targets"][0]["healthy"] is False
    status, live = await http(port, "/health")
    assert (status, live) == (200, {"status": "ok", "generation": 1, "worker": 0})

    switch.default = 200
    body = await wait_ready(port, 200)
    assert body["groups"]["app"]["available"] == 1
    assert len(switch.paths) >= 4


async def test_ready_with_a_dead_target_and_the_404(start_proxy: Any, upstream: Upstream) -> None:
    app = await start_proxy(
        KERNEL_WITH_HEALTH
        + f"""
[[groups]]
name = "app"
[[groups.targets]]
name = "dead"
url = "http://127.0.0.1:1"
[groups.health]
interval_s = 0.05
unhealthy_threshold = 1

[[groups]]
name = "spare"
urls = "http://127.0.0.1:{upstream.port}"
"""
    )
    port = app.port("health")
    body = await wait_ready(port, 503)
    assert body["groups"]["app"]["targets"][0]["available"] is False
    assert body["groups"]["spare"]["available"] == 1
    assert (await http(port, "/nope"))[0] == 404
    assert upstream.requests == []


def test_every_bad_group_name_is_listed() -> None:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure({"groups": ["a b", "ok", "c/d"]}, HealthConfig, path=PATH)
    assert info.value.problems == [
        f"{PATH}.groups[0]: 'a b' is not a name (letters, digits, '_', '-', '.')",
        f"{PATH}.groups[2]: 'c/d' is not a name (letters, digits, '_', '-', '.')",
    ]
