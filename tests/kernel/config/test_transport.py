"""kernel.config.transport: the TLS, HTTP/2 and transport tables, through the loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kernel.config import loads_config
from kernel.config.model import Settings
from kernel.config.transport import (
    CertificateConfig,
    H2Section,
    ListenerTls,
    TransportConfig,
    UpstreamTls,
    host_pattern,
)
from sdk import ConfigError


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return loads_config(text, base_dir=tmp_path, environ=environ or {}).settings


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads_config(text, base_dir=tmp_path, environ={})
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.example", ("a.example", False)),
        ("*.Example.COM.", ("example.com", True)),
        ("internal_host", ("internal_host", False)),
    ],
)
def test_host_pattern(text: str, expected: tuple[str, bool]) -> None:
    assert host_pattern(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("*.a.*", "a wildcard is only allowed as '\\*.domain'"),
        ("a*.example", "a wildcard is only allowed"),
        ("", "expected a DNS name"),
        ("*.", "a wildcard is only allowed"),
        ("a..b", "expected a DNS name"),
        ("a b", "expected a DNS name"),
        ("[::1]", "expected a DNS name"),
    ],
)
def test_host_pattern_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        host_pattern(text)


def test_defaults() -> None:
    s = Settings()
    assert s.server.http2 is True
    assert s.server.h2 == H2Section()
    assert (s.server.h2.max_concurrent_streams, s.server.h2.max_frame_size) == (100, 16384)
    assert s.upstream.http2 is False
    assert s.upstream.force_http2 is False
    assert s.upstream.tls == UpstreamTls()
    assert s.upstream.tls.verify is True
    assert s.listeners[0].tls is None
    assert s.listeners[0].http2 is None
    tls = ListenerTls(certificates=[CertificateConfig(cert="c", key="k")])
    assert tls.alpn == ["h2", "http/1.1"]
    assert (tls.min_version, tls.max_version, tls.client_auth) == ("1.2", "", "none")
    assert tls.passthrough is False
    assert TransportConfig() == TransportConfig(
        connect_timeout_s=None, http2=None, force_http2=None, tls=None
    )


def test_a_full_tls_config(tmp_path: Path) -> None:
    text = """
    [server]
    http2 = false
    [server.h2]
    max_concurrent_streams = 10
    connection_window = 2147483647
    max_frame_size = 16777215
    [upstream]
    http2 = true
    [upstream.tls]
    ca_file = "ca.pem"
    cert_file = "me.pem"
    key_file = "me.key"
    server_name = "backend.internal"
    min_version = "1.3"
    [[listeners]]
    name = "tls"
    bind = "0.0.0.0:8443"
    http2 = true
    [listeners.tls]
    min_version = "1.3"
    max_version = "1.3"
    alpn = ["http/1.1"]
    client_auth = "optional"
    client_ca = "clients.pem"
    passthrough = true
    [[listeners.tls.certificates]]
    cert = "a.pem"
    key = "a.key"
    [[listeners.tls.certificates]]
    cert = "b.pem"
    key = "b.key"
    names = ["b.example", "*.b.example"]
    [[routes]]
    name = "r"
    upstream = "https://backend:8443/base"
    [routes.transport]
    read_timeout_s = 5
    max_idle_per_host = 0
    force_http2 = true
    [routes.transport.tls]
    verify = false
    """
    s = load(tmp_path, text)
    assert s.server.http2 is False
    assert s.server.h2 == H2Section(
        max_concurrent_streams=10, connection_window=2**31 - 1, max_frame_size=16777215
    )
    assert s.upstream.tls == UpstreamTls(
        ca_file="ca.pem",
        cert_file="me.pem",
        key_file="me.key",
        server_name="backend.internal",
        min_version="1.3",
    )
    (lc,) = s.listeners
    assert lc.http2 is True
    assert lc.tls == ListenerTls(
        certificates=[
            CertificateConfig(cert="a.pem", key="a.key"),
            CertificateConfig(cert="b.pem", key="b.key", names=["b.example", "*.b.example"]),
        ],
        min_version="1.3",
        max_version="1.3",
        alpn=["http/1.1"],
        client_auth="optional",
        client_ca="clients.pem",
        passthrough=True,
    )
    assert s.routes[0].upstream == "https://backend:8443/base"
    assert s.routes[0].transport == TransportConfig(
        read_timeout_s=5.0, max_idle_per_host=0, force_http2=True, tls=UpstreamTls(verify=False)
    )


def test_every_problem_with_its_path(tmp_path: Path) -> None:
    text = """
    [server.h2]
    max_frame_size = 100
    initial_window_size = 2147483648
    connection_window = 100
    max_concurrent_streams = 0
    [upstream.tls]
    cert_file = "me.pem"
    min_version = "1.1"
    [[listeners]]
    name = "a"
    bind = "127.0.0.1:1"
    [listeners.tls]
    certificates = []
    min_version = "1.3"
    max_version = "1.2"
    alpn = ["h3"]
    client_auth = "required"
    [[listeners]]
    name = "b"
    bind = "127.0.0.1:2"
    [listeners.tls]
    alpn = ["h2", "h2"]
    [[listeners.tls.certificates]]
    cert = " "
    names = ["*.a.*"]
    [[routes]]
    name = "r"
    connect_timeout_s = 1
    transport = { connect_timeout_s = 2, max_idle_per_host = -1 }
    [[routes]]
    name = "s"
    response_timeout_s = 1
    transport = { response_timeout_s = 2, tls = { key_file = "k", server_name = "*.x" } }
    [[routes]]
    name = "t"
    response_timeout_s = 1
    transport = { response_timeout_s = 2 }
    """
    assert problems(tmp_path, text) == [
        "$.server.h2.max_concurrent_streams: must be between 1 and 2147483647, got 0",
        "$.server.h2.initial_window_size: must be between 0 and 2147483647, got 2147483648",
        "$.server.h2.connection_window: must be between 65535 and 2147483647, got 100",
        "$.server.h2.max_frame_size: must be between 16384 and 16777215, got 100",
        "$.upstream.tls.cert_file: needs key_file too (a client certificate is a cert and its key)",
        "$.upstream.tls.min_version: must be one of '1.2', '1.3', got '1.1'",
        "$.listeners[0].tls.certificates: must list at least one certificate"
        " (the first is the default)",
        "$.listeners[0].tls.max_version: '1.2' is below min_version '1.3'",
        "$.listeners[0].tls.alpn[0]: unknown protocol 'h3' (known: 'h2', 'http/1.1')",
        "$.listeners[0].tls.client_auth: 'required' needs client_ca"
        " (the CA file that signs client certificates)",
        "$.listeners[1].tls.certificates[0].cert: must be a file path",
        "$.listeners[1].tls.certificates[0].key: required",
        "$.listeners[1].tls.certificates[0].names[0]: invalid name '*.a.*':"
        " a wildcard is only allowed as '*.domain'",
        "$.listeners[1].tls.alpn: lists a protocol twice",
        "$.routes[0].transport.max_idle_per_host: must be >= 0, got -1",
        "$.routes[1].transport.tls.key_file: needs cert_file too"
        " (a client certificate is a cert and its key)",
        "$.routes[1].transport.tls.server_name: invalid name '*.x':"
        " a wildcard cannot be verified against",
        "$.routes[2].transport: response_timeout_s is set both here and on the route: keep one",
    ]


def test_both_timeout_places_refused_by_the_model() -> None:
    from kernel.config.model import RouteConfig

    with pytest.raises(ValueError, match="connect_timeout_s is set both here and on the route"):
        RouteConfig(
            name="r", connect_timeout_s=1.0, transport=TransportConfig(connect_timeout_s=2.0)
        )
    # One place or the other is fine.
    RouteConfig(name="r", connect_timeout_s=1.0, transport=TransportConfig(read_timeout_s=2.0))


@pytest.mark.parametrize(
    ("upstream", "ok"),
    [
        ("https://h", True),
        ("https://h:8443/base", True),
        ("http://h", True),
        ("tls://h:1", False),
        ("https//h", False),
    ],
)
def test_route_upstream_schemes(tmp_path: Path, upstream: str, ok: bool) -> None:
    text = f'[[routes]]\nname = "r"\nupstream = "{upstream}"\n'
    if ok:
        assert load(tmp_path, text).routes[0].upstream == upstream
    else:
        assert problems(tmp_path, text) == [
            f"$.routes[0].upstream: {upstream!r} is not an http(s)://host[:port][/path] URL"
        ]


def test_overrides_reach_the_new_keys(tmp_path: Path) -> None:
    env: dict[str, Any] = {
        "TRELLIS_SERVER_HTTP2": "false",
        "TRELLIS_UPSTREAM_FORCE_HTTP2": "true",
        "TRELLIS_UPSTREAM_TLS": "{ verify = false }",
        "TRELLIS_SERVER_H2": "{ max_concurrent_streams = 7 }",
    }
    s = load(tmp_path, "", env)
    assert s.server.http2 is False
    assert s.upstream.force_http2 is True
    assert s.upstream.tls == UpstreamTls(verify=False)
    assert s.server.h2.max_concurrent_streams == 7
