"""InterceptPlugin: host matching, exclusion, actions, config errors, named instances, kernel."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import sdk
from plugins.builtin.intercept import InterceptConfig, InterceptPlugin, host_of, parse_domain
from sdk.testing import FakeUpstream, Harness

MODULE = 'intercept = "plugins.builtin.intercept:InterceptPlugin"'


def harness(**config: Any) -> Harness:
    config.setdefault("intercept_domains", ["*.example.com", "api.test"])
    return Harness(InterceptPlugin, config=config)


async def status(h: Harness, authority: str, up: FakeUpstream | None = None) -> int:
    """Run one request with this Host; the response status (200 is the upstream's)."""
    flow = h.make_flow("GET", "http://placeholder/")
    flow.request.authority = authority
    flow = await h.run(flow, up)
    assert flow.response is not None
    return flow.response.status_code


# ----------------------------------------------------------------- matching
@pytest.mark.parametrize(
    ("authority", "intercepted"),
    [
        ("a.example.com", True),
        ("a.b.example.com", True),  # any depth
        ("A.Example.COM", True),  # case-insensitive
        ("a.example.com.", True),  # trailing dot ignored
        ("a.example.com:8443", True),  # port ignored
        ("a.example.com.:8443", True),
        ("api.test", True),  # exact
        ("API.TEST:80", True),
        ("example.com", False),  # *.example.com does not match the apex (unlike Dispa)
        ("badexample.com", False),  # dot boundary (Dispa's bare suffix matched it)
        ("a.badexample.com", False),
        ("example.com.evil.test", False),
        (".example.com", False),  # no label before the suffix
        ("x.api.test", False),  # an exact name has no subdomains
        ("", False),  # empty Host: never intercepted
        ("[::1]:8080", False),
    ],
)
async def test_matching(authority: str, intercepted: bool) -> None:
    h, up = harness(), FakeUpstream()
    assert await status(h, authority, up) == (200 if intercepted else 403)
    assert len(up.received) == (1 if intercepted else 0)


async def test_apex_is_intercepted_when_listed_too() -> None:
    h = harness(intercept_domains=["example.com", "*.example.com"])
    assert await status(h, "example.com") == 200
    assert await status(h, "www.example.com") == 200
    assert await status(h, "badexample.com") == 403


async def test_ipv6_literals() -> None:
    h = harness(intercept_domains=["[2001:DB8::1]", "::2"])
    assert await status(h, "[2001:db8::1]:8080") == 200
    assert await status(h, "[2001:db8::1]") == 200
    assert await status(h, "[::2]") == 200
    assert await status(h, "[2001:db8::3]") == 403
    assert host_of("[2001:DB8::1]:443") == "2001:db8::1"
    assert host_of("") == ""


async def test_exclusion_wins_exact_and_wildcard() -> None:
    h = harness(
        intercept_domains=["*.example.com", "admin.example.com", "www.test", "*.corp.test"],
        exclude_domains=["admin.example.com", "*.internal.example.com", "*.test"],
    )
    assert await status(h, "app.example.com") == 200
    # exact in both lists
    assert await status(h, "admin.example.com") == 403
    # exact excluded from a wildcard
    assert await status(h, "Admin.Example.com.:1") == 403
    # wildcard excluded from a wildcard
    assert await status(h, "db.internal.example.com") == 403
    assert await status(h, "internal.example.com") == 200  # the apex is not *.internal...
    # wildcard excluded from an exact name and from a narrower wildcard
    assert await status(h, "www.test") == 403
    assert await status(h, "a.corp.test") == 403


# ------------------------------------------------------------------ actions
async def test_reject_answers_with_status_and_names_the_host() -> None:
    h, up = harness(reject_status=421), FakeUpstream()
    flow = h.make_flow("GET", "http://BadExample.com:8080/x")
    flow = await h.run(flow, up)
    assert up.received == []
    assert flow.response is not None
    assert flow.response.status_code == 421
    assert flow.response.body == b"421 host not served by this proxy: badexample.com\n"
    assert flow.response.headers["content-type"] == "text/plain; charset=utf-8"
    assert flow.decisions == ["intercept: 'badexample.com' not intercepted -> 421"]


async def test_reject_without_host() -> None:
    h = harness()
    flow = h.make_flow("GET", "http://x/")
    flow.request.authority = ""
    flow = await h.run(flow)
    assert flow.response is not None
    assert flow.response.body == b"403 host not served by this proxy: (no host)\n"
    assert flow.decisions == ["intercept: (no host) not intercepted -> 403"]


async def test_intercepted_host_records_the_pattern() -> None:
    h = harness(exclude_domains=["*.in.example.com"])
    flow = await h.run(h.make_flow("GET", "http://a.b.example.com/"))
    assert flow.decisions == ["intercept: 'a.b.example.com' intercepted by '*.example.com'"]
    flow = await h.run(h.make_flow("GET", "http://x.in.example.com/"))
    assert flow.decisions == ["intercept: 'x.in.example.com' excluded by '*.in.example.com' -> 403"]


async def test_pass_lets_the_flow_continue_untouched() -> None:
    h, up = harness(action="pass"), FakeUpstream()
    flow = await h.run(h.make_flow("GET", "http://other.test/p?q"), up)
    assert flow.response is not None
    assert flow.response.status_code == 200
    assert [r.path for r, _ in up.received] == ["/p?q"]
    assert up.received[0][0].headers["host"] == "other.test"
    assert flow.route == "default"
    assert flow.decisions == ["intercept: 'other.test' not intercepted -> pass"]


async def test_route_action_picks_the_route_for_hosts_not_intercepted() -> None:
    h, up = harness(action="route: parked "), FakeUpstream()
    h.routes = {"default", "parked"}
    flow = await h.run(h.make_flow("GET", "http://other.test/"), up)
    assert flow.route == "parked"
    assert flow.decisions == ["intercept: 'other.test' not intercepted -> route 'parked'"]
    # intercepted: declines, so another plugin or the listener's default route decides
    flow = await h.run(h.make_flow("GET", "http://a.example.com/"), up)
    assert flow.route == "default"
    assert flow.decisions == ["intercept: 'a.example.com' intercepted by '*.example.com'"]
    assert len(up.received) == 2  # neither is rejected


def test_config_check_names_a_missing_route() -> None:
    plugin = InterceptPlugin(InterceptConfig(intercept_domains=["a"], action="route:parked"))
    assert plugin.trellis_config_check(("parked", "main")) is None
    assert plugin.trellis_config_check(("main",)) == [
        "action: no route named 'parked' (routes: main)"
    ]
    assert (
        InterceptPlugin(InterceptConfig(intercept_domains=["a"])).trellis_config_check(()) is None
    )


# ------------------------------------------------------------ config errors
PATH = "$.plugins.intercept"


def problems(**table: Any) -> list[str]:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(table, InterceptConfig, path=PATH)
    return info.value.problems


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("", "empty domain ''"),
        ("  ", "empty domain"),
        (".", "empty domain"),
        ("*.", "'\\*.' needs a domain after it"),
        ("*", "invalid domain '\\*'"),
        ("a.*.com", "wildcard is only allowed as the whole first label"),
        ("**.x", "wildcard is only allowed as the whole first label"),
        ("*x.com", "wildcard is only allowed as the whole first label"),
        ("*.*.x", "wildcard is only allowed as the whole first label"),
        ("example.com:8080", "give the host without a port"),
        ("*.[::1]", "invalid domain"),
        ("a..b", "expected a name such as 'example.com' or '\\*.example.com'"),
        ("http://a.com", "without a port|expected"),
        ("a b", "expected"),
    ],
)
def test_bad_domains_in_either_list(domain: str, message: str) -> None:
    for key in ("intercept_domains", "exclude_domains"):
        table: dict[str, Any] = {"intercept_domains": ["ok.test"], key: ["fine.test", domain]}
        (problem,) = problems(**table)
        assert problem.startswith(f"{PATH}.{key}[1]: "), problem
        assert re.search(message, problem), problem


def test_every_problem_at_once_with_its_path() -> None:
    assert problems(exclude_domains=["a", "A."], action="drop", reject_status=200, extra=1) == [
        f"{PATH}.intercept_domains: required",
        f"{PATH}.exclude_domains: [1]: 'A.' is listed twice (as 'a')",
        f"{PATH}.action: must be 'reject', 'pass' or 'route:NAME', got 'drop'",
        f"{PATH}.reject_status: must be an error status between 400 and 599, got 200",
        f"{PATH}.extra: unknown key (known: intercept_domains, exclude_domains, action,"
        " reject_status)",
    ]


def test_empty_intercept_list_and_empty_route_are_errors() -> None:
    assert problems(intercept_domains=[], action="route:") == [
        f"{PATH}.intercept_domains: must list at least one domain (nothing would be intercepted)",
        f"{PATH}.action: 'route:' must name a route ('route:NAME')",
    ]


def test_parse_domain() -> None:
    assert parse_domain("*.Example.COM.") == ("example.com", True)
    assert parse_domain(" api.test ") == ("api.test", False)
    assert parse_domain("[::1]") == ("::1", False)
    assert parse_domain("10.0.0.1") == ("10.0.0.1", False)


# ------------------------------------------- through the kernel's config loader
def _config(tmp_path: Path, body: str, upstream_port: int = 9) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"""
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = ["intercept"]

[kernel.modules]
{MODULE}

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[routes]]
name = "default"
upstream = "http://127.0.0.1:{upstream_port}"
{body}
"""
    )
    return path


def test_named_instances_start_from_the_base_table(tmp_path: Path) -> None:
    from kernel.generation import load_generation

    path = _config(
        tmp_path,
        """
[[routes]]
name = "strict"
upstream = "http://127.0.0.1:9"
plugins = ["intercept.strict"]

[plugins.intercept]
intercept_domains = ["*.example.com"]
action = "pass"

[plugins.intercept.strict]
exclude_domains = ["admin.example.com"]
reject_status = 404
action = "reject"
""",
    )
    gen = load_generation(path)
    base, strict = gen.host.instances["intercept"], gen.host.instances["intercept.strict"]
    assert isinstance(base, InterceptPlugin)
    assert isinstance(strict, InterceptPlugin)
    assert base.config == InterceptConfig(intercept_domains=["*.example.com"], action="pass")
    assert strict.config == InterceptConfig(
        intercept_domains=["*.example.com"],
        exclude_domains=["admin.example.com"],
        action="reject",
        reject_status=404,
    )
    assert strict.check("admin.example.com")[0] is False
    assert base.check("admin.example.com")[0] is True


def test_kernel_reports_paths_of_instances_and_missing_routes(tmp_path: Path) -> None:
    from kernel.generation import load_generation

    path = _config(
        tmp_path,
        """
[[routes]]
name = "other"
upstream = "http://127.0.0.1:9"
plugins = ["intercept.bad"]

[plugins.intercept]
intercept_domains = ["*.example.com"]
action = "route:nowhere"

[plugins.intercept.bad]
intercept_domains = ["a.*.com"]
""",
    )
    with pytest.raises(sdk.ConfigError) as info:
        load_generation(path)
    text = "\n".join(info.value.problems)
    assert "$.plugins.intercept.bad.intercept_domains[0]: invalid domain 'a.*.com'" in text
    assert "$.plugins.intercept.action: no route named 'nowhere'" in text


# ------------------------------------------------------------- real kernel
async def test_real_kernel_intercepted_reaches_upstream_rejected_never(
    start_proxy: Any, upstream: Any, client: Any, tmp_path: Path
) -> None:
    text = _config(
        tmp_path,
        """
[plugins.intercept]
intercept_domains = ["*.example.com"]
exclude_domains = ["admin.example.com"]
""",
        upstream.port,
    ).read_text()
    app = await start_proxy(text)

    async def get(host: str) -> dict[str, Any]:
        raw = await client.exchange(
            app.port(),
            f"GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
        )
        resp: dict[str, Any]
        (resp,) = client.parse_responses(raw)
        return resp

    ok = await get("www.Example.com:8080")
    assert ok["status"] == 200
    assert [r["target"] for r in upstream.requests] == ["/hello"]

    for host in ("badexample.com", "example.com", "admin.example.com"):
        refused = await get(host)
        assert refused["status"] == 403
        assert refused["body"] == f"403 host not served by this proxy: {host}\n".encode()
    assert len(upstream.requests) == 1  # the refused ones never reached it


def test_every_bad_domain_of_a_list_is_listed() -> None:
    # Each bad domain at its own index; the one listed twice ([2]) is said
    # once every item is a domain (below).
    assert problems(intercept_domains=["a.*.com", "ok.test", "OK.test.", "b..c"]) == [
        f"{PATH}.intercept_domains[0]: invalid domain 'a.*.com': a wildcard is only allowed as"
        " the whole first label ('*.example.com')",
        f"{PATH}.intercept_domains[3]: invalid domain 'b..c': expected a name such as"
        " 'example.com' or '*.example.com'",
    ]
    # A domain listed twice is a problem of the list: said once every item is a domain.
    assert problems(intercept_domains=["ok.test", "x.test", "OK.test.", "*.a", "*.A"]) == [
        f"{PATH}.intercept_domains: [2]: 'OK.test.' is listed twice (as 'ok.test');"
        " [4]: '*.A' is listed twice (as '*.a')"
    ]


def test_bad_domains_beside_one_of_the_wrong_type() -> None:
    """The domains were checked by one loop over the list, which does not
    run on a list with an item missing: a domain of the wrong type hid the
    invalid ones until it was fixed. Each is checked alone now, at its index."""
    assert problems(
        intercept_domains=["ok.test", 5, "a.*.com"], exclude_domains=[True, "x.test", "a b"]
    ) == [
        f"{PATH}.intercept_domains[1]: must be a string, got 5",
        f"{PATH}.intercept_domains[2]: invalid domain 'a.*.com': a wildcard is only allowed as"
        " the whole first label ('*.example.com')",
        f"{PATH}.exclude_domains[0]: must be a string, got true",
        f"{PATH}.exclude_domains[2]: invalid domain 'a b': expected a name such as"
        " 'example.com' or '*.example.com'",
    ]
