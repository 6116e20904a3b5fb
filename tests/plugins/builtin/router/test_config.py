"""RouterConfig: every bad value is a config error with its path; normalisers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

import sdk
from plugins.builtin.router.config import (
    RouterConfig,
    RuleConfig,
    host_pattern,
    normalize_prefix,
    parse_upstream,
)

PATH = "$.plugins.router"
#: What a bad name or method is told it may hold.
TOKEN = "only letters, digits and !#$%&'*+-.^_`|~"


def problems(*rules: dict[str, Any]) -> list[str]:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure({"rules": list(rules)}, RouterConfig, path=PATH)
    return info.value.problems


def test_defaults_and_a_full_rule() -> None:
    assert RouterConfig().rules == []
    cfg = sdk.structure(
        {
            "rules": [
                {
                    "route": "api",
                    "host": "*.example.com",
                    "path_prefix": "/api/",
                    "path_regex": r"^/api/v\d+",
                    "methods": ["get", "POST"],
                    "headers": {"X-Env": "prod", "authorization": "*"},
                    "upstream": "http://10.0.0.1:8080/base",
                    "strip_prefix": True,
                }
            ]
        },
        RouterConfig,
        path=PATH,
    )
    assert cfg.rules[0].route == "api"
    assert cfg.rules[0].strip_prefix is True
    assert cfg.rules[0].replace_path is False


def test_route_is_required_and_unknown_keys_are_listed() -> None:
    assert problems({"path_prefix": "/a"}, {"route": "a", "prefix": "/a"}) == [
        f"{PATH}.rules[0].route: required",
        f"{PATH}.rules[1].prefix: unknown key (known: route, host, path_prefix, path_regex,"
        " methods, headers, upstream, replace_path, strip_prefix)",
    ]


def test_bad_regex_is_reported_with_its_path() -> None:
    (msg,) = problems({"route": "a"}, {"route": "b", "path_regex": "(unclosed"})
    assert msg.startswith(f"{PATH}.rules[1].path_regex: invalid regular expression '(unclosed': ")
    assert "missing )" in msg


def test_every_problem_at_once() -> None:
    got = problems(
        {
            "route": "",
            "host": "a.example.com:80",
            "path_prefix": "api",
            "methods": ["G T"],
            "headers": {"bad name": "1", "x-ok": "a\r\nb"},
            "upstream": "ftp://x",
        }
    )
    assert got == [
        f"{PATH}.rules[0].route: must name a route",
        f"{PATH}.rules[0].host: invalid host 'a.example.com:80': give the host without a port"
        " (ports are ignored)",
        f"{PATH}.rules[0].path_prefix: must start with '/', got 'api'",
        f"{PATH}.rules[0].methods[0]: invalid method 'G T' (' ' is not allowed: {TOKEN})",
        f"{PATH}.rules[0].headers[\"bad name\"]: invalid header name 'bad name' (' ' is not"
        f" allowed: {TOKEN})",
        f"{PATH}.rules[0].headers.x-ok: invalid header value 'a\\r\\nb'"
        " (a control character: '\\r')",
        f"{PATH}.rules[0].upstream: 'ftp://x' is not an http://host[:port][/path] URL",
    ]


def test_a_final_newline_is_no_token() -> None:
    """The router's token regex ended in ``$``, which also matches before a
    final newline: ``GET\\n`` and ``x-a\\n`` passed, and never matched."""
    assert problems({"route": "a", "methods": ["GET\n"], "headers": {"x-a\n": "1"}}) == [
        f"{PATH}.rules[0].methods[0]: invalid method 'GET\\n' ('\\n' is not allowed: {TOKEN})",
        f"{PATH}.rules[0].headers[\"x-a\\n\"]: invalid header name 'x-a\\n' ('\\n' is not"
        f" allowed: {TOKEN})",
    ]


def test_header_value_with_crlf_is_refused() -> None:
    (msg,) = problems({"route": "a", "headers": {"x-ok": "a\r\nb"}})
    assert msg.startswith(f"{PATH}.rules[0].headers.x-ok: invalid header value 'a\\r\\nb'")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"replace_path": True},
            "rules[0].replace_path: needs 'upstream': the new path is that URL's path",
        ),
        (
            {"strip_prefix": True},
            "rules[0].strip_prefix: needs 'path_prefix': that is the prefix removed",
        ),
        (
            {
                "upstream": "http://u",
                "path_prefix": "/a",
                "strip_prefix": True,
                "replace_path": True,
            },
            "rules[0].replace_path: cannot be combined with strip_prefix",
        ),
        ({"upstream": "http://u:0"}, "rules[0].upstream: 'http://u:0': port 0 out of range"),
        (
            {"upstream": "http://u/a?q=1"},
            "rules[0].upstream: 'http://u/a?q=1' has a query or fragment",
        ),
        ({"methods": "GET"}, "rules[0].methods: must be an array, got 'GET'"),
        ({"strip_prefix": "yes"}, "rules[0].strip_prefix: must be true or false, got 'yes'"),
    ],
)
def test_action_problems(rule: dict[str, Any], expected: str) -> None:
    assert problems({"route": "a", **rule}) == [f"{PATH}.{expected}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM", ("example.com", False)),
        ("example.com.", ("example.com", False)),
        ("*.Example.com", ("example.com", True)),
        ("[::1]", ("::1", False)),
        ("::1", ("::1", False)),
        ("10.0.0.1", ("10.0.0.1", False)),
        ("internal_host", ("internal_host", False)),
    ],
)
def test_host_pattern(text: str, expected: tuple[str, bool]) -> None:
    assert host_pattern(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.*.com", "a wildcard is only allowed as the whole first label"),
        ("*", "a wildcard is only allowed as the whole first label"),
        ("*example.com", "a wildcard is only allowed as the whole first label"),
        ("example.com:8080", "give the host without a port"),
        ("[::1]:8080", "give the host without a port"),
        ("*.[::1]", "a wildcard needs a domain name"),
        ("a..b", "expected a name"),
        ("a b", "expected a name"),
        ("", "empty host"),
    ],
)
def test_host_pattern_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        host_pattern(text)


@pytest.mark.parametrize(
    ("prefix", "expected"), [("/", ""), ("/api", "/api"), ("/api/", "/api"), ("/a/b//", "/a/b")]
)
def test_normalize_prefix(prefix: str, expected: str) -> None:
    assert normalize_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["api", "", "/a?b", "/a#b"])
def test_normalize_prefix_refuses(prefix: str) -> None:
    with pytest.raises(ValueError, match="must"):
        normalize_prefix(prefix)


def test_parse_upstream() -> None:
    origin, base = parse_upstream("http://Backend:8080/v1/")
    assert (origin, base) == (sdk.Origin("http", "backend", 8080), "/v1")
    assert parse_upstream("http://[::1]") == (sdk.Origin("http", "::1", 80), "")


def test_python_construction_validates_too() -> None:
    with pytest.raises(ValueError, match="invalid regular expression"):
        RuleConfig(route="a", path_regex="[")


# -- the TOML examples in docs/routing-basics.md must stay valid -------------------
DOC = Path(__file__).parents[4] / "docs" / "routing-basics.md"


def doc_tables(plugin: str, config_class: type[Any]) -> list[dict[str, Any]]:
    """Every ``[plugins.<plugin>]`` instance table in the doc's TOML blocks."""
    names = {a.name for a in attrs.fields(config_class)}
    out: list[dict[str, Any]] = []
    for block in re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S):
        table = tomllib.loads(block).get("plugins", {}).get(plugin)
        if table is None:
            continue
        base = {k: v for k, v in table.items() if k in names}
        named = [v for k, v in table.items() if k not in names]
        out.extend([base] if base or not named else [])
        out.extend({**base, **sub} for sub in named)
    return out


def test_doc_examples_structure() -> None:
    tables = doc_tables("router", RouterConfig)
    assert len(tables) >= 2
    for table in tables:
        sdk.structure(table, RouterConfig, path="$.plugins.router")


def test_every_bad_method_is_listed() -> None:
    assert problems({"route": "r", "methods": ["G T", "GET", "P\tST"]}) == [
        f"{PATH}.rules[0].methods[0]: invalid method 'G T' (' ' is not allowed: {TOKEN})",
        f"{PATH}.rules[0].methods[2]: invalid method 'P\\tST' ('\\t' is not allowed: {TOKEN})",
    ]
