"""``${VAR}`` expansion and ``TRELLIS_<SECTION>_<KEY>`` overrides, without files."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.config.envsubst import apply_overrides, expand, parse_override, substitute
from sdk._config import EnvText

ENV = {"HOST": "example.test", "PORT": "8080", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${HOST}", "example.test"),
        ("http://${HOST}:${PORT}/x", "http://example.test:8080/x"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),  # as in the shell, empty counts as unset
        ("${EMPTY}", ""),
        ("${MISSING:-}", ""),
        ("${HOST:-unused}", "example.test"),
        ("${MISSING:-a b:c}", "a b:c"),
        ("$${HOST}", "${HOST}"),
        ("$$${HOST}", "$${HOST}"),  # "$" + the escape "$${"
        ("cost: $5 and $$", "cost: $5 and $$"),
        ("${HOST}$${PORT}", "example.test${PORT}"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, ENV) == (expected, [])


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("${NOPE}", ["environment variable NOPE is not set"]),
        ("${A}-${B}", ["environment variable A is not set", "environment variable B is not set"]),
        ("${1X}", ["invalid placeholder '${1X}' (use ${NAME} or ${NAME:-default})"]),
        ("${}", ["invalid placeholder '${}' (use ${NAME} or ${NAME:-default})"]),
        ("x${HOST", ["unterminated '${' (write '$${' for a literal '${')"]),
    ],
)
def test_expand_problems(text: str, problems: list[str]) -> None:
    assert expand(text, ENV)[1] == problems


def test_substitute_walks_strings_only_and_marks_whole_values() -> None:
    data = {
        "a": "${PORT}",
        "b": "port ${PORT}",
        "c": ["${HOST}", 1, {"d": "${MISSING:-2.5}"}],
        "${HOST}": True,  # keys are never expanded
        "e": "$${PORT}",
    }
    out, problems = substitute(data, ENV)
    assert problems == []
    assert out == {
        "a": "8080",
        "b": "port 8080",
        "c": ["example.test", 1, {"d": "2.5"}],
        "${HOST}": True,
        "e": "${PORT}",
    }
    assert type(out["a"]) is EnvText
    assert out["a"].scalar == 8080
    assert type(out["b"]) is str
    assert type(out["c"][2]["d"]) is EnvText
    assert type(out["e"]) is str  # an escape is not a placeholder
    assert data["a"] == "${PORT}"  # the input is left alone


def test_substitute_collects_every_problem_with_its_path() -> None:
    out, problems = substitute({"l": [{"bind": "${LISTEN}"}], "x": "${A}${B}"}, {})
    assert problems == [
        (("l", 0, "bind"), "environment variable LISTEN is not set"),
        (("x",), "environment variable A is not set"),
        (("x",), "environment variable B is not set"),
    ]
    assert out["l"][0]["bind"] == "${LISTEN}"  # left as written


@pytest.mark.parametrize(
    ("raw", "expected", "kind"),
    [
        ('["router", "headers"]', ["router", "headers"], list),
        ("[]", [], list),
        ('"h11"', "h11", str),
        ("{ deadline_s = 1 }", {"deadline_s": 1}, dict),
        ("h11", "h11", EnvText),
        ("2.5", "2.5", EnvText),
        ("true", "true", EnvText),
        ("router,headers", "router,headers", EnvText),
        ("1\nx = 2", "1\nx = 2", EnvText),
    ],
)
def test_parse_override(raw: str, expected: Any, kind: type[Any]) -> None:
    value = parse_override(raw)
    assert value == expected
    assert type(value) is kind


def test_apply_overrides() -> None:
    data: dict[str, Any] = {"server": {"http1": "auto", "via": "x"}}
    origins: dict[tuple[str | int, ...], str | None] = {
        ("server",): None,
        ("server", "http1"): None,
    }
    environ = {
        "TRELLIS_SERVER_HTTP1": "h11",
        "TRELLIS_UPSTREAM_CONNECT_TIMEOUT_S": "2.5",
        "TRELLIS_KERNEL_PLUGINS": '["router","headers"]',
        "TRELLIS_UPSTREAM": "http://ignored",
        "TRELLIS_UPSTREAMS": "a,b",
        "TRELLIS_LISTEN": "0.0.0.0:1",
        "TRELLIS_LOG": "debug",
        "TRELLIS_TLS_CERT": "/x",
        "OTHER_SERVER_HTTP1": "nope",
    }
    assert apply_overrides(data, environ, origins) == []
    assert data == {
        "server": {"http1": "h11", "via": "x"},
        "upstream": {"connect_timeout_s": "2.5"},
        "kernel": {"plugins": ["router", "headers"]},
    }
    assert origins[("server", "http1")] == "from TRELLIS_SERVER_HTTP1"
    assert origins[("kernel", "plugins")] == "from TRELLIS_KERNEL_PLUGINS"


def test_apply_overrides_unknown_keys() -> None:
    data: dict[str, Any] = {}
    environ = {"TRELLIS_SERVER_HTTP": "h11", "TRELLIS_KERNEL_": "x"}
    problems = apply_overrides(data, environ, {})
    assert problems[0].startswith("TRELLIS_KERNEL_: no key '' in [kernel] (known: plugins, ")
    assert problems[1].startswith(
        "TRELLIS_SERVER_HTTP: no key 'http' in [server] (known: http1, request_head_timeout_s, "
    )
    assert data == {}


def test_apply_overrides_replaces_a_table_and_forgets_its_origins() -> None:
    data: dict[str, Any] = {"kernel": {"policy": {"a": {"deadline_s": 1}}}}
    origins: dict[tuple[str | int, ...], str | None] = {
        ("kernel", "policy", "a", "deadline_s"): "in base.toml"
    }
    environ = {"TRELLIS_KERNEL_POLICY": "{ b = { on_error = 'fail_open' } }"}
    assert apply_overrides(data, environ, origins) == []
    assert data["kernel"]["policy"] == {"b": {"on_error": "fail_open"}}
    assert origins == {("kernel", "policy"): "from TRELLIS_KERNEL_POLICY"}


def test_apply_overrides_leaves_a_broken_section_to_structuring() -> None:
    data: dict[str, Any] = {"server": 5}
    assert apply_overrides(data, {"TRELLIS_SERVER_VIA": "x"}, {}) == []
    assert data == {"server": 5}
