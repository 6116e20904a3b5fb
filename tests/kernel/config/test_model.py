"""The kernel's config model: defaults, validators and ``parse_bind``."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from kernel.config.model import (
    KernelSection,
    ListenerConfig,
    PluginPolicy,
    RouteConfig,
    ServerSection,
    Settings,
    UpstreamSection,
    parse_bind,
)


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:443", ("::1", 443)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_bind(bind: str, expected: tuple[str, int]) -> None:
    assert parse_bind(bind) == expected


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("8080", "is not HOST:PORT"),
        ("host:", "is not HOST:PORT"),
        ("host:http", "is not HOST:PORT"),
        (":8080", "has no host"),
        ("[]:80", "has no host"),
        ("host:70000", "port 70000 out of range"),
    ],
)
def test_parse_bind_rejects(bind: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bind(bind)


def test_defaults() -> None:
    s = Settings()
    assert s.listeners == [ListenerConfig(name="main", bind="127.0.0.1:8080")]
    assert s.routes == []
    assert s.plugins == {}
    assert s.kernel.log_level == "info"
    assert s.kernel.plugin_on_error == "fail_closed"
    assert s.server.http1 == "auto"
    assert s.server.max_body_bytes == 0
    assert s.upstream.connect_timeout_s == 5.0


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (ServerSection, {"request_head_timeout_s": 0}, "must be > 0, got 0"),
        (ServerSection, {"max_body_bytes": -1}, "must be >= 0, got -1"),
        # Each bad item at its own path when structured: test_loader.py.
        (ServerSection, {"trusted_proxies": ["10.0.0.0/8", "nope"]}, r"'nope' does not"),
        (UpstreamSection, {"max_idle_per_host": -1}, "must be >= 0"),
        (KernelSection, {"shutdown_grace_s": -0.5}, "must be >= 0"),
        (KernelSection, {"plugin_deadline_s": 0.0}, "must be > 0"),
        (ListenerConfig, {"name": "has space"}, "is not a valid name"),
        (ListenerConfig, {"bind": "nope"}, "is not HOST:PORT"),
        (RouteConfig, {"name": "ok", "upstream": "ftp://x"}, r"is not an http\(s\)://"),
        (RouteConfig, {"name": ""}, "is not a valid name"),
        # The overrides are held to the rules of what they override.
        (ListenerConfig, {"request_head_timeout_s": -5.0}, "must be > 0, got -5.0"),
        (ListenerConfig, {"keepalive_timeout_s": 0.0}, "must be > 0, got 0.0"),
        (RouteConfig, {"name": "r", "connect_timeout_s": -1.0}, "must be > 0"),
        (RouteConfig, {"name": "r", "response_timeout_s": 0}, "must be > 0"),
        (RouteConfig, {"name": "r", "max_body_bytes": -5}, "must be >= 0, got -5"),
        (PluginPolicy, {"deadline_s": -1.0}, "must be > 0"),
        # nan passes "value <= 0"; inf would reach trio and the timers.
        (ServerSection, {"request_head_timeout_s": float("nan")}, "must be a finite number"),
        (KernelSection, {"shutdown_grace_s": float("nan")}, "must be a finite number"),
        (UpstreamSection, {"connect_timeout_s": float("inf")}, "must be a finite number"),
        (ListenerConfig, {"keepalive_timeout_s": float("nan")}, "must be a finite number"),
    ],
)
def test_validators(cls: type[Any], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_valid_edge_values() -> None:
    assert RouteConfig(name="a.b-c_1", upstream="http://h:1/base").upstream == "http://h:1/base"
    assert RouteConfig(name="x").upstream == ""
    assert ServerSection(trusted_proxies=["::1/128", "10.1.2.3/8"]).trusted_proxies


def test_every_field_has_a_default_except_route_name() -> None:
    for cls in (KernelSection, ServerSection, UpstreamSection, ListenerConfig, Settings):
        assert all(a.default is not attrs.NOTHING for a in attrs.fields(cls)), cls
    required = [a.name for a in attrs.fields(RouteConfig) if a.default is attrs.NOTHING]
    assert required == ["name"]


@pytest.mark.parametrize("via", ["trellis", "edge-1", "proxy.example:8080", ""])
def test_via_takes_a_pseudonym(via: str) -> None:
    assert ServerSection(via=via).via == via


@pytest.mark.parametrize("via", ["${NAME} cost: $5", "a b", "edge\r\nx: 1", "é"])
def test_via_refuses_what_is_not_a_pseudonym(via: str) -> None:
    """It went out as is: ``via: 1.1 ${NAME} cost: $5``."""
    with pytest.raises(ValueError, match="is not a pseudonym"):
        ServerSection(via=via)
