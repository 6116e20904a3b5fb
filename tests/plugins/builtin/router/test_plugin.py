"""RouterPlugin through sdk.testing.Harness: route, upstream, path, decisions, config check."""

from __future__ import annotations

from typing import Any

import pluggy
import pytest

import sdk
import sdk.hookspecs
from plugins.builtin.router import RouterPlugin
from plugins.builtin.router.config import RouterConfig
from sdk.testing import FakeUpstream, Harness

RULES: list[dict[str, Any]] = [
    {"route": "admin", "path_prefix": "/admin", "methods": ["GET"]},
    {
        "route": "api",
        "host": "*.example.com",
        "path_prefix": "/api",
        "upstream": "http://10.0.0.2:8080/v1",
        "strip_prefix": True,
    },
    {
        "route": "health",
        "path_prefix": "/healthz",
        "upstream": "http://10.0.0.3/status",
        "replace_path": True,
    },
    {"route": "canary", "headers": {"x-canary": "*"}},
]


def harness(rules: list[dict[str, Any]] = RULES) -> Harness:
    return Harness(RouterPlugin, config={"rules": rules})


async def test_strip_prefix_with_upstream_base() -> None:
    h, up = harness(), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://a.example.com:8443/api/users?page=2"), up)
    assert flow.route == "api"
    assert flow.upstream == sdk.Origin("http", "10.0.0.2", 8080)
    assert flow.decisions == ["router: rule 1 -> api"]
    assert [r.path for r, _ in up.received] == ["/v1/users?page=2"]
    # The Host field is the client's: the router moves the request, not its identity.
    assert up.received[0][0].headers["host"] == "a.example.com:8443"


async def test_replace_path_keeps_the_query() -> None:
    h, up = harness(), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://any.test/healthz/deep?verbose=1"), up)
    assert flow.route == "health"
    assert flow.upstream == sdk.Origin("http", "10.0.0.3", 80)
    assert up.received[0][0].path == "/status?verbose=1"


async def test_route_only_leaves_upstream_and_path_alone() -> None:
    h, up = harness(), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://any.test/admin/x?y"), up)
    assert flow.route == "admin"
    assert flow.decisions == ["router: rule 0 -> admin"]
    # The Harness stands in for the kernel's route upstream here.
    assert flow.upstream == sdk.Origin("http", "upstream.test", 80)
    assert up.received[0][0].path == "/admin/x?y"


async def test_first_match_wins_and_rules_are_checked_in_order() -> None:
    h = harness()
    # Matches rule 3 (header) and would match nothing earlier: POST skips rule 0.
    flow = await h.run(h.make_flow("POST", "http://any.test/admin", [("X-Canary", "1")]))
    assert flow.route == "canary"
    flow = await h.run(h.make_flow("GET", "http://any.test/admin", [("X-Canary", "1")]))
    assert flow.route == "admin"
    assert flow.decisions == ["router: rule 0 -> admin"]


async def test_no_match_declines() -> None:
    h = harness()
    flow = h.make_flow("GET", "http://example.com/api/x")  # not a subdomain: no rule
    assert await h.call("trellis_route_select", flow, firstresult=True) is None
    assert flow.decisions == []
    assert flow.upstream is None
    assert flow.request.path == "/api/x"


async def test_no_rules_at_all() -> None:
    h = Harness(RouterPlugin, config={})
    flow = await h.run(h.make_flow())
    assert flow.route == "default"  # the Harness's stand-in for the listener's default
    assert flow.decisions == []


def test_direct_construction() -> None:
    plugin = RouterPlugin(RouterConfig())
    assert plugin.trellis_config_check(("a",)) == []
    assert RouterPlugin().config == RouterConfig()


def test_config_check_names_missing_routes() -> None:
    plugin = RouterPlugin(sdk.structure({"rules": RULES}, RouterConfig))
    assert plugin.trellis_config_check(("admin", "api", "health", "canary")) == []
    assert plugin.trellis_config_check(("admin", "health")) == [
        "rules[1].route: no route named 'api' (routes: admin, health)",
        "rules[3].route: no route named 'canary' (routes: admin, health)",
    ]
    assert plugin.trellis_config_check(()) == [
        f"rules[{i}].route: no route named {r['route']!r} (routes: none configured)"
        for i, r in enumerate(RULES)
    ]


def test_bad_table_fails_in_the_harness_as_in_the_kernel() -> None:
    with pytest.raises(sdk.ConfigError) as info:
        Harness(RouterPlugin, config={"rules": [{"route": "a"}, {"route": "b", "path_regex": "*"}]})
    (problem,) = info.value.problems
    assert problem.startswith("$.plugins.rules[1].path_regex: invalid regular expression '*'")


def test_summary_line() -> None:
    doc = RouterPlugin.__doc__ or ""
    assert (
        doc.splitlines()[0]
        == "Pick a route by host, path, method and headers; the first matching rule wins."
    )


def test_hookimpls_match_the_specs() -> None:
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(RouterPlugin())  # validates every hookimpl's name and arguments
