"""CanaryPlugin: percent split, client stickiness, header/cookie forcing, config errors, kernel."""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

import pytest
import trio

import sdk
from plugins.builtin.canary import BUCKETS, CanaryConfig, CanaryPlugin, bucket_of
from sdk.testing import Harness, make_flow
from tests.helpers.upstream import Upstream

CANARY = "http://canary.test:8080"
CANARY_ORIGIN = sdk.Origin("http", "canary.test", 8080)
STABLE = sdk.Origin("http", "upstream.test", 80)  # the Harness's stand-in route upstream


def harness(**config: Any) -> Harness:
    config.setdefault("upstream", CANARY)
    return Harness(CanaryPlugin, config=config)


async def goes(
    h: Harness,
    headers: list[tuple[str, str]] | None = None,
    client: str = "10.0.0.1",
    path: str = "/x?q=1",
) -> sdk.Flow:
    return await h.run(
        h.make_flow("GET", f"http://site.test{path}", headers or [], client=(client, 5000))
    )


def client_address(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


# ------------------------------------------------------------------ percent
@pytest.mark.parametrize("by", ["client", "random"])
async def test_ten_percent_share_over_10000_distinct_clients(by: str) -> None:
    h = harness(percent=10, by=by)
    n = 10_000
    hits = 0
    for i in range(n):
        flow = await goes(h, client=client_address(i))
        hits += flow.upstream == CANARY_ORIGIN
    share = 100 * hits / n
    # Tolerance: 10% +- 1.5 percentage points (binomial sd is 0.3 points: 5 sd).
    assert 8.5 <= share <= 11.5, share


async def test_percent_zero_and_hundred() -> None:
    zero, hundred = harness(percent=0), harness(percent=100)
    for i in range(200):
        assert (await goes(zero, client=client_address(i))).upstream == STABLE
        assert (await goes(hundred, client=client_address(i))).upstream == CANARY_ORIGIN
    flow = await goes(zero)
    assert flow.decisions == ["canary: 0% -> stable"]
    flow = await goes(hundred)
    assert flow.decisions == [f"canary: 100% -> {CANARY}"]


async def test_client_is_sticky_across_calls_and_fresh_instances() -> None:
    config = CanaryConfig(upstream=CANARY, percent=50)
    first, second = CanaryPlugin(config), CanaryPlugin(CanaryConfig(upstream=CANARY, percent=50))
    sides = set()
    for i in range(50):
        addr = client_address(i * 7919)
        flow = make_flow(client=(addr, 1000 + i))
        side, note = first.decide(flow)
        for plugin in (first, second, first):
            again = make_flow(client=(addr, 2000 + i))  # another port: same client
            assert plugin.decide(again) == (side, note)
        sides.add(side)
    assert sides == {True, False}  # 50%: both sides occur among 50 clients


def test_bucket_is_a_fixed_unsalted_function() -> None:
    # Pinned values: Python's hash() of a str changes per process (PYTHONHASHSEED).
    assert bucket_of("10.0.0.1") == bucket_of("10.0.0.1")
    assert 0 <= bucket_of("") < BUCKETS
    assert {bucket_of(client_address(i)) for i in range(100)} != {bucket_of("10.0.0.1")}
    digest = hashlib.blake2b(b"192.0.2.1", digest_size=8).digest()
    assert bucket_of("192.0.2.1") == int.from_bytes(digest, "big") % BUCKETS


async def test_decision_notes() -> None:
    h = harness(percent=5)
    flow = await goes(h, client="192.0.2.1")
    bucket = bucket_of("192.0.2.1")
    side = CANARY if bucket < 500 else "stable"
    assert flow.decisions == [f"canary: 5% client bucket {bucket / 100:.2f} -> {side}"]
    r = Harness(
        CanaryPlugin(CanaryConfig(upstream=CANARY, percent=5, by="random"), random.Random(1))
    )
    (note,) = (await goes(r)).decisions
    assert note.startswith("canary: 5% random ")


# ----------------------------------------------------------------- forcing
async def test_header_forces_the_canary() -> None:
    h = harness(header={"name": "X-Canary", "value": "1"})
    flow = await goes(h, [("x-canary", "1")])
    assert flow.upstream == CANARY_ORIGIN
    assert flow.decisions == [f"canary: header 'X-Canary' matched -> {CANARY}"]
    assert (await goes(h, [("x-canary", "2")])).upstream == STABLE
    assert (await goes(h, [("x-canary", "2"), ("X-CANARY", "1")])).upstream == CANARY_ORIGIN
    assert (await goes(h)).upstream == STABLE


async def test_header_any_value() -> None:
    h = harness(header={"name": "x-canary", "value": "*"})
    assert (await goes(h, [("x-canary", "")])).upstream == CANARY_ORIGIN
    assert (await goes(h, [("x-canary", "whatever")])).upstream == CANARY_ORIGIN
    assert (await goes(h, [("x-other", "1")])).upstream == STABLE


async def test_cookie_forces_the_canary_among_several() -> None:
    h = harness(cookie={"name": "canary", "value": "yes"})
    forced = await goes(h, [("cookie", 'session=abc; canary="yes"; theme=dark')])
    assert forced.upstream == CANARY_ORIGIN
    assert forced.decisions == [f"canary: cookie 'canary' matched -> {CANARY}"]
    # Across several Cookie fields (as HTTP/2 sends them), without spaces.
    several = [("cookie", "session=abc"), ("cookie", "theme=dark;canary=yes")]
    assert (await goes(h, several)).upstream == CANARY_ORIGIN
    assert (await goes(h, [("cookie", "canary=no; x=yes")])).upstream == STABLE
    assert (await goes(h, [("cookie", "notcanary=yes; Canary=yes")])).upstream == STABLE
    assert (await goes(h, [("x-cookie", "canary=yes")])).upstream == STABLE
    any_value = harness(cookie={"name": "canary", "value": "*"})
    assert (await goes(any_value, [("cookie", "a=1; canary=; b")])).upstream == CANARY_ORIGIN
    assert (await goes(any_value, [("cookie", "a=1; canary")])).upstream == STABLE


async def test_exclude_header_wins() -> None:
    h = harness(
        percent=100,
        header={"name": "x-canary", "value": "1"},
        cookie={"name": "canary", "value": "*"},
        exclude_header={"name": "x-stable", "value": "*"},
    )
    flow = await goes(h, [("x-canary", "1"), ("cookie", "canary=1"), ("x-stable", "yes")])
    assert flow.upstream == STABLE
    assert flow.decisions == ["canary: exclude_header 'x-stable' matched -> stable"]
    assert (await goes(h)).upstream == CANARY_ORIGIN


async def test_base_path_is_prefixed_and_stable_side_untouched() -> None:
    h = harness(upstream="https://canary.test/v2/", header={"name": "x-canary", "value": "*"})
    flow = await goes(h, [("x-canary", "1")], path="/users?page=2")
    assert flow.upstream == sdk.Origin("https", "canary.test", 443)
    assert flow.request.path == "/v2/users?page=2"
    assert flow.decisions == ["canary: header 'x-canary' matched -> https://canary.test/v2"]
    stable = await goes(h, path="/users?page=2")
    assert stable.upstream == STABLE
    assert stable.request.path == "/users?page=2"


async def test_an_upstream_already_set_is_left_alone() -> None:
    class Pin:
        @sdk.hookimpl
        def trellis_request(self, flow: sdk.Flow) -> None:
            flow.upstream = sdk.Origin("http", "pinned.test", 80)

    plugin = CanaryPlugin(CanaryConfig(upstream=CANARY, percent=100))
    flow = await Harness(Pin(), plugin).run(make_flow())
    assert flow.upstream == sdk.Origin("http", "pinned.test", 80)
    assert flow.decisions == []


# ------------------------------------------------------------ config errors
PATH = "$.plugins.canary"


def problems(**table: Any) -> list[str]:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(table, CanaryConfig, path=PATH)
    return info.value.problems


def test_defaults_and_int_percent() -> None:
    c = sdk.structure({"upstream": CANARY, "percent": 10}, CanaryConfig, path=PATH)
    assert c == CanaryConfig(upstream=CANARY, percent=10.0, by="client")
    assert c.header is c.cookie is c.exclude_header is None


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        ({}, "", "set exactly one of upstream \\(a URL\\) and group"),
        ({"upstream": CANARY, "group": "g"}, "", "set exactly one of upstream"),
        ({"upstream": "ftp://x"}, "upstream", "must be an http\\(s\\) URL"),
        ({"upstream": "http://"}, "upstream", "must be an http\\(s\\) URL"),
        ({"upstream": "http://x/?a=1"}, "upstream", "query or fragment"),
        ({"upstream": "http://x:0"}, "upstream", "out of range"),
        ({"upstream": CANARY, "percent": -1}, "percent", "between 0 and 100, got -1"),
        ({"upstream": CANARY, "percent": 100.5}, "percent", "between 0 and 100"),
        ({"upstream": CANARY, "percent": float("nan")}, "percent", "between 0 and 100"),
        ({"upstream": CANARY, "percent": "10"}, "percent", "must be a number"),
        ({"upstream": CANARY, "by": "ip"}, "by", "must be one of 'random', 'client'"),
        (
            {"upstream": CANARY, "header": {"name": "x canary", "value": "1"}},
            "header.name",
            "token",
        ),
        ({"upstream": CANARY, "header": {"name": "x"}}, "header.value", "required"),
        ({"upstream": CANARY, "cookie": {"name": "c", "value": ""}}, "cookie.value", "'\\*'"),
        ({"upstream": CANARY, "cookie": {"name": "c=", "value": "1"}}, "cookie.name", "token"),
        (
            {"upstream": CANARY, "exclude_header": {"name": "", "value": "1"}},
            "exclude_header.name",
            "token",
        ),
        (
            {"upstream": CANARY, "header": {"name": "x", "value": "a\nb"}},
            "header.value",
            "a control character",
        ),
        # Values no received field can have: they would never match.
        ({"upstream": CANARY, "header": {"name": "x", "value": " 1"}}, "header.value", "space"),
        (
            {"upstream": CANARY, "exclude_header": {"name": "x", "value": "\u20ac"}},
            "exclude_header.value",
            "ISO-8859-1",
        ),
        ({"upstream": CANARY, "cookie": {"name": "c", "value": "a;b"}}, "cookie.value", "';'"),
        ({"upstream": CANARY, "cookie": {"name": "c", "value": '"a"'}}, "cookie.value", "quotes"),
        (
            {"upstream": CANARY, "header": {"name": "x", "value": "1", "v": 2}},
            "header",
            "unknown key",
        ),
        ({"upstream": CANARY, "weight": 5}, "", "weight: unknown key"),
    ],
)
def test_config_errors_have_paths(table: dict[str, Any], where: str, message: str) -> None:
    text = "\n".join(problems(**table))
    path = f"{PATH}.{where}" if where else PATH
    assert path in text, text
    assert re.search(message, text), text


# ------------------------------------------------------------- real kernel
async def test_real_kernel_header_reaches_the_canary_origin(
    start_proxy: Any, upstream: Any, client: Any, nursery: trio.Nursery
) -> None:
    canary = await nursery.start(Upstream().serve)
    app = await start_proxy(
        f"""
[kernel]
watch_config = false
shutdown_grace_s = 2

[kernel.modules]
canary = "plugins.builtin.canary:CanaryPlugin"

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[routes]]
name = "default"
upstream = "http://127.0.0.1:{upstream.port}"
plugins = ["canary"]

[plugins.canary]
upstream = "http://127.0.0.1:{canary.port}"
percent = 0
header = {{ name = "x-canary", value = "1" }}
"""
    )

    async def get(path: str, extra: str = "") -> int:
        raw = await client.exchange(
            app.port(),
            f"GET {path} HTTP/1.1\r\nHost: site.test\r\n{extra}Connection: close\r\n\r\n".encode(),
        )
        (resp,) = client.parse_responses(raw)
        status: int = resp["status"]
        return status

    assert await get("/to-canary", "X-Canary: 1\r\n") == 200
    assert await get("/to-stable") == 200
    assert await get("/also-stable", "X-Canary: 2\r\n") == 200
    assert [r["target"] for r in canary.requests] == ["/to-canary"]
    assert [r["target"] for r in upstream.requests] == ["/to-stable", "/also-stable"]


async def test_a_group_canary_sets_flow_group() -> None:
    h = Harness(
        CanaryPlugin,
        config={"group": "next", "percent": 0, "header": {"name": "x-c", "value": "1"}},
    )
    flow = await goes(h, [("x-c", "1")])
    assert flow.group == "next"
    assert flow.decisions[-1] == "canary: header 'x-c' matched -> group next"
    stable = await goes(h)
    assert stable.group == ""


async def test_a_group_canary_must_name_a_group() -> None:
    h = Harness(CanaryPlugin, config={"group": "next"})
    assert await h.call("trellis_config_check", ("default",), ("next", "app")) == [None]
    assert await h.call("trellis_config_check", ("default",), ("app",)) == [
        ["group: no group named 'next' (groups: app)"]
    ]


async def test_real_kernel_split_between_two_groups(
    start_proxy: Any, client: Any, nursery: trio.Nursery
) -> None:
    stable = [await nursery.start(Upstream().serve) for _ in range(2)]
    canary = [await nursery.start(Upstream().serve) for _ in range(2)]

    def urls(ups: list[Upstream]) -> str:
        return " ".join(f"http://127.0.0.1:{u.port}" for u in ups)

    app = await start_proxy(
        f"""
[kernel]
watch_config = false
shutdown_grace_s = 2

[[listeners]]
bind = "127.0.0.1:0"

[[routes]]
name = "default"
group = "stable"
plugins = ["canary"]

[[groups]]
name = "stable"
urls = "{urls(stable)}"

[[groups]]
name = "next"
urls = "{urls(canary)}"

[plugins.canary]
group = "next"
percent = 25
by = "random"
"""
    )
    for _ in range(400):
        raw = await client.exchange(
            app.port(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        assert client.parse_responses(raw)[0]["status"] == 200
    to_canary = sum(len(u.requests) for u in canary)
    # 25% of 400 = 100; binomial sd ~8.7: within 4 sd.
    assert 65 <= to_canary <= 135, to_canary
    # Each group balances its own share round-robin.
    assert abs(len(canary[0].requests) - len(canary[1].requests)) <= 1
    assert abs(len(stable[0].requests) - len(stable[1].requests)) <= 1
