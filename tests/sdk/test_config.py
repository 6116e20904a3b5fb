"""The strict converter on the kernel's model: every problem at once, tomlkit
documents, round trips. Scalars are tested in test_scalars.py, lists, tables
and validators in test_containers.py, paths and messages in test_problems.py."""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs
import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.config.model import (
    KernelSection,
    PluginPolicy,
    RouteConfig,
    ServerSection,
    Settings,
    UpstreamSection,
)
from sdk._config import structure, unstructure
from sdk._errors import ConfigError
from tests.sdk.configsample import problems


# ------------------------------------------------------------ the kernel model
def test_unknown_keys_at_every_level() -> None:
    data = {
        "nope": 1,
        "kernel": {"plugin": [], "policy": {"router": {"deadline": 1}}},
        "server": {"htt1": "h11"},
        "upstream": {"timeout": 1},
        "listeners": [{"name": "a", "port": 1}],
        "routes": [{"name": "r", "upsteam": "http://x"}],
    }
    known_server = ", ".join(a.name for a in attrs.fields(ServerSection))
    got = problems(data)
    assert got == [
        "$.kernel.policy.router.deadline: unknown key (known: deadline_s, on_error)",
        "$.kernel.plugin: unknown key (known: "
        + ", ".join(a.name for a in attrs.fields(KernelSection))
        + ")",
        f"$.server.htt1: unknown key (known: {known_server})",
        "$.upstream.timeout: unknown key (known: "
        + ", ".join(a.name for a in attrs.fields(UpstreamSection))
        + ")",
        "$.listeners[0].port: unknown key (known: name, bind, plugins, http1,"
        " request_head_timeout_s, keepalive_timeout_s, http2, default_route, tls)",
        "$.routes[0].upsteam: unknown key (known: name, plugins, upstream, group,"
        " connect_timeout_s, response_timeout_s, max_body_bytes, websocket, transport)",
        "$.nope: unknown key (known: kernel, server, upstream, listeners, routes, groups, plugins)",
    ]
    assert got[2].startswith("$.server.htt1: unknown key (known: http1, request_head_timeout_s, ")


def test_every_problem_at_once_with_validator_messages() -> None:
    data = {
        "kernel": {"log_level": "loud"},
        "server": {"max_body_bytes": -1},
        "listeners": [{"bind": "nowhere"}],
        "routes": [{"upstream": "ftp://x"}],
    }
    assert problems(data) == [
        "$.kernel.log_level: must be one of 'debug', 'info', 'warning', 'error', got 'loud'",
        "$.server.max_body_bytes: must be >= 0, got -1",
        "$.listeners[0].bind: 'nowhere' is not HOST:PORT",
        "$.routes[0].name: required",
        "$.routes[0].upstream: 'ftp://x' is not an http(s)://host[:port][/path] URL",
    ]


def test_path_prefix() -> None:
    assert problems({"connect_timeout_s": 0}, UpstreamSection, path="$.upstream") == [
        "$.upstream.connect_timeout_s: must be > 0, got 0.0"
    ]


def test_root_must_be_a_table() -> None:
    assert problems([1]) == ["$: must be a table, got [1]"]


def test_tomlkit_document_structures() -> None:
    doc = tomlkit.parse(
        "[server]\nmax_body_bytes = 5\nx_forwarded = false\nrequest_head_timeout_s = 3\n"
        '[kernel.policy.r]\ndeadline_s = 1.5\n[[routes]]\nname = "a"\n'
        "[plugins.x]\ny = [1, {a = 2}]\n"
    )
    s = structure(doc, Settings)
    assert s.server.max_body_bytes == 5
    assert type(s.server.max_body_bytes) is int
    assert s.server.x_forwarded is False
    assert s.server.request_head_timeout_s == 3.0
    assert s.kernel.policy == {"r": PluginPolicy(deadline_s=1.5)}
    assert s.routes == [RouteConfig(name="a")]
    assert s.plugins == {"x": {"y": [1, {"a": 2}]}}
    assert type(s.plugins["x"]) is dict
    assert type(s.plugins["x"]["y"][0]) is int
    assert type(s.routes[0].name) is str


def test_tomlkit_items_rejected_like_plain_values() -> None:
    doc = tomlkit.parse("[server]\nmax_body_bytes = true\nvia = 1\n")
    assert problems(doc) == [
        "$.server.max_body_bytes: must be an integer, got true",
        "$.server.via: must be a string, got 1",
    ]


def test_unstructure() -> None:
    s = Settings(routes=[RouteConfig(name="a")])
    raw = unstructure(s)
    assert raw["routes"] == [
        {
            "name": "a",
            "plugins": [],
            "upstream": "",
            "group": "",
            "connect_timeout_s": None,
            "response_timeout_s": None,
            "max_body_bytes": None,
            "websocket": False,
            "transport": None,
        }
    ]
    assert structure({k: v for k, v in raw.items() if k != "routes"}, Settings) == Settings()
    with pytest.raises(TypeError):
        unstructure({"a": 1})


# --------------------------------------------------------------- hypothesis
_pos_float = st.floats(min_value=0.001, max_value=1e6, allow_nan=False) | st.integers(1, 10**6)
_pos_int = st.integers(min_value=1, max_value=2**40)
_cidr = st.builds(
    lambda addr, bits: str(ipaddress.ip_network(f"{addr}/{bits}", strict=False)),
    st.ip_addresses(v=4),
    st.integers(0, 32),
)
_codec = st.sampled_from(["auto", "h11", "httptools"])

_server = st.fixed_dictionaries(
    {},
    optional={
        "http1": _codec,
        "request_head_timeout_s": _pos_float,
        "keepalive_timeout_s": _pos_float,
        "body_timeout_s": _pos_float,
        "max_request_line": _pos_int,
        "max_header_bytes": _pos_int,
        "max_header_count": _pos_int,
        "max_body_bytes": st.integers(0, 2**40),
        "trusted_proxies": st.lists(_cidr, max_size=3),
        "x_forwarded": st.booleans(),
        "forwarded": st.booleans(),
        "via": st.from_regex(r"[a-z0-9.-]{0,10}", fullmatch=True),
    },
)
_upstream = st.fixed_dictionaries(
    {},
    optional={
        "connect_timeout_s": _pos_float,
        "response_timeout_s": _pos_float,
        "read_timeout_s": _pos_float,
        "max_idle_per_host": st.integers(0, 1000),
        "idle_timeout_s": _pos_float,
        "http1": _codec,
    },
)


@settings(max_examples=60, deadline=None)
@given(server=_server, upstream=_upstream)
def test_round_trip(server: dict[str, Any], upstream: dict[str, Any]) -> None:
    s = structure({"server": server, "upstream": upstream}, Settings)
    raw = unstructure(s)
    assert raw["server"] == unstructure(ServerSection()) | server
    assert raw["upstream"] == unstructure(UpstreamSection()) | upstream
    assert structure(raw, Settings) == s


_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(["", "x", "5"])
_value = _scalar | st.lists(_scalar, max_size=2)
_keys = st.sampled_from(["http1", "max_body_bytes", "name", "bind", "plugins", "policy", "zzz"])
_table = st.dictionaries(_keys, _value | st.dictionaries(_keys, _value, max_size=2), max_size=4)
_sections = st.dictionaries(
    st.sampled_from(["kernel", "server", "upstream", "listeners", "routes", "plugins", "x"]),
    _value | _table | st.lists(_table, max_size=2),
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(_sections)
def test_garbage_in_config_error_out(data: dict[str, Any]) -> None:
    problems: list[str] = []
    try:
        structure(data, Settings)
    except ConfigError as exc:  # the only exception bad data may raise
        problems = exc.problems or ["<no problems listed>"]
    assert all(p.startswith("$") for p in problems)
