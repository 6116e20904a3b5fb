"""Rule matching: each criterion's edge cases, all-must-match, first match wins."""

from __future__ import annotations

from typing import Any

import pytest

import sdk
from plugins.builtin.router.config import RuleConfig
from plugins.builtin.router.matching import (
    RuleTable,
    compile_rule,
    compile_rules,
    host_of,
    prefix_matches,
)
from plugins.builtin.router.rewrite import PathRewrite
from sdk.testing import make_request


def matches(
    rule: dict[str, Any],
    method: str = "GET",
    url: str = "http://example.test/",
    headers: list[tuple[str, str]] | None = None,
) -> bool:
    table = compile_rules([RuleConfig(**{"route": "r", **rule})])
    return table.select(make_request(method, url, headers or [])) is not None


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("example.com", "example.com"),
        ("Example.COM:8080", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:80", "example.com"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("", ""),
        ("[broken", "broken"),
        ("host:notaport", "host"),
    ],
)
def test_host_of(authority: str, host: str) -> None:
    assert host_of(authority) == host


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/api", "/api", True),
        ("/api/", "/api", True),
        ("/api/x", "/api", True),
        ("/api?q", "/api", True),
        ("/apix", "/api", False),
        ("/ap", "/api", False),
        ("/API", "/api", False),  # paths are case-sensitive
        ("/", "", True),  # prefix "/" matches everything
        ("/anything", "", True),
        ("*", "", False),
    ],
)
def test_prefix_matches(path: str, prefix: str, expected: bool) -> None:
    assert prefix_matches(path, prefix) is expected


# -- host ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "url", "expected"),
    [
        ("example.com", "http://example.com/", True),
        ("example.com", "http://EXAMPLE.com:8080/", True),
        ("Example.com", "http://example.com./", True),
        ("example.com", "http://a.example.com/", False),
        ("*.example.com", "http://a.example.com/", True),
        ("*.example.com", "http://a.b.example.com:81/", True),
        ("*.example.com", "http://example.com/", False),
        ("*.example.com", "http://badexample.com/", False),
        ("*.example.com", "http://.example.com/", False),
        ("*.example.com", "http://a.example.com.evil.test/", False),
        ("[::1]", "http://[::1]:8080/", True),
        ("::1", "http://[::1]/", True),
        ("::1", "http://127.0.0.1/", False),
    ],
)
def test_host(pattern: str, url: str, expected: bool) -> None:
    assert matches({"host": pattern}, url=url) is expected


def test_host_without_authority_never_matches() -> None:
    table = compile_rules([RuleConfig(route="r", host="example.com")])
    assert table.select(sdk.Request(method="GET", path="/")) is None


# -- path ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prefix", "path", "expected"),
    [
        ("/api", "/api", True),
        ("/api", "/api/", True),
        ("/api", "/api/x", True),
        ("/api", "/api?q=1", True),
        ("/api", "/apix", False),
        ("/api", "/apix?/api", False),
        ("/api/", "/api", True),  # a trailing slash in the config adds nothing
        ("/", "/whatever", True),
        ("/a/b", "/a/b/c", True),
        ("/a/b", "/a/bc", False),
    ],
)
def test_path_prefix(prefix: str, path: str, expected: bool) -> None:
    assert matches({"path_prefix": prefix}, url="http://h" + path) is expected


@pytest.mark.parametrize(
    ("regex", "path", "expected"),
    [
        (r"^/users/\d+$", "/users/42", True),
        (r"^/users/\d+$", "/users/42?x=1", True),  # the query is not searched
        (r"^/users/\d+$", "/users/abc", False),
        (r"\.php$", "/index.php", True),  # search, not match
        (r"q=1", "/x?q=1", False),
    ],
)
def test_path_regex(regex: str, path: str, expected: bool) -> None:
    assert matches({"path_regex": regex}, url="http://h" + path) is expected


# -- methods and headers ----------------------------------------------------------
@pytest.mark.parametrize(
    ("methods", "method", "expected"),
    [
        (["GET", "HEAD"], "GET", True),
        (["get"], "GET", True),
        (["GET"], "get", True),
        (["POST"], "GET", False),
        ([], "PATCH", True),  # omitted: any method
    ],
)
def test_methods(methods: list[str], method: str, expected: bool) -> None:
    assert matches({"methods": methods}, method=method) is expected


@pytest.mark.parametrize(
    ("wanted", "sent", "expected"),
    [
        ({"X-Env": "prod"}, [("x-env", "prod")], True),
        ({"x-env": "prod"}, [("X-ENV", " prod ")], True),  # values are trimmed, as on the wire
        ({"x-env": "prod"}, [("x-env", "Prod")], False),  # values are exact
        ({"x-env": "prod"}, [("x-env", "dev"), ("x-env", "prod")], True),  # any field
        ({"x-env": "prod"}, [], False),
        ({"authorization": "*"}, [("authorization", "Bearer x")], True),
        ({"authorization": "*"}, [("authorization", "")], True),
        ({"authorization": "*"}, [("x-other", "1")], False),
        ({"a": "1", "b": "*"}, [("a", "1")], False),  # all must hold
        ({"a": "1", "b": "*"}, [("b", "z"), ("a", "1")], True),
    ],
)
def test_headers(wanted: dict[str, str], sent: list[tuple[str, str]], expected: bool) -> None:
    assert matches({"headers": wanted}, headers=sent) is expected


def test_all_criteria_must_match() -> None:
    rule = {
        "host": "*.example.com",
        "path_prefix": "/api",
        "path_regex": "/v[0-9]+/",
        "methods": ["POST"],
        "headers": {"x-env": "prod"},
    }
    good = ("POST", "http://a.example.com/api/v2/x", [("x-env", "prod")])
    assert matches(rule, *good)
    assert not matches(rule, "GET", good[1], good[2])
    assert not matches(rule, good[0], "http://example.com/api/v2/x", good[2])
    assert not matches(rule, good[0], "http://a.example.com/apiv2/x", good[2])
    assert not matches(rule, good[0], "http://a.example.com/api/x", good[2])
    assert not matches(rule, good[0], good[1], [])


def test_rule_without_criteria_matches_everything() -> None:
    assert matches({}, "DELETE", "http://anything/at/all?x")


# -- the table ---------------------------------------------------------------------
def test_first_match_wins() -> None:
    table = compile_rules(
        [
            RuleConfig(route="admin", path_prefix="/api/admin"),
            RuleConfig(route="api", path_prefix="/api"),
            RuleConfig(route="api-late", path_prefix="/api/admin"),
            RuleConfig(route="fallback"),
        ]
    )

    def route(url: str) -> str | None:
        rule = table.select(make_request("GET", url))
        return None if rule is None else rule.route

    assert route("http://h/api/admin/x") == "admin"
    assert route("http://h/api/users") == "api"
    assert route("http://h/other") == "fallback"


def test_no_match_and_no_rules() -> None:
    assert RuleTable([]).select(make_request()) is None
    table = compile_rules([RuleConfig(route="a", path_prefix="/a")])
    assert table.select(make_request("GET", "http://h/b")) is None


def test_compile_rule_prepares_everything() -> None:
    rule = compile_rule(
        3,
        RuleConfig(
            route="api",
            host="*.Example.com",
            path_prefix="/api/",
            methods=["get"],
            headers={"X-A": " 1 ", "X-B": "*"},
            upstream="http://backend:8080/v2/",
            strip_prefix=True,
        ),
    )
    assert rule.index == 3
    assert rule.decision == "router: rule 3 -> api"
    assert rule.methods == frozenset({"GET"})
    assert (rule.host, rule.wildcard) == ("example.com", True)
    assert rule.prefix == "/api"
    assert rule.headers == ((b"x-a", b"1"), (b"x-b", None))
    assert rule.upstream == sdk.Origin("http", "backend", 8080)
    assert rule.rewrite == PathRewrite(base="/v2", strip="/api")


def test_compile_rule_without_actions_has_no_rewrite() -> None:
    rule = compile_rule(0, RuleConfig(route="a", path_prefix="/a"))
    assert rule.upstream is None
    assert rule.rewrite is None
    # An upstream at its root leaves the path alone too.
    assert compile_rule(0, RuleConfig(route="a", upstream="http://u/")).rewrite is None
