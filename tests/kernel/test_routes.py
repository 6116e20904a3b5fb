"""kernel.routes: a route's effective transport, and client TLS contexts per distinct table."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import sdk
from kernel.config.model import RouteConfig, TransportConfig, UpstreamSection, UpstreamTls
from kernel.routes import ClientContexts, RouteRuntime, route_runtime, upstream_alpn
from tests.helpers.certs import CertFactory


def _resolve(
    rc: RouteConfig, ups: UpstreamSection | None = None, tls: ClientContexts | None = None
) -> tuple[RouteRuntime, list[str]]:
    problems: list[str] = []
    tls = tls or ClientContexts(problems)
    route, found = route_runtime(0, rc, ups or UpstreamSection(), 0, tls)
    return route, found + problems


def test_inherits_upstream_section() -> None:
    ups = UpstreamSection(connect_timeout_s=3.0, max_idle_per_host=4, http2=True)
    route, problems = _resolve(RouteConfig(name="r", upstream="http://h:81/b/"), ups)
    assert problems == []
    assert route == RouteRuntime(
        name="r",
        upstream=sdk.Origin("http", "h", 81),
        base_path="/b",
        connect_timeout_s=3.0,
        response_timeout_s=30.0,
        read_timeout_s=60.0,
        max_body_bytes=0,
        max_idle_per_host=4,
        idle_timeout_s=60.0,
        http2=True,
        force_http2=False,
        client_tls=None,  # not https
        tls_server_name="",
    )


def test_route_keys_and_transport_override() -> None:
    rc = RouteConfig(
        name="r",
        connect_timeout_s=2.0,
        max_body_bytes=5,
        transport=TransportConfig(
            response_timeout_s=4.0,
            read_timeout_s=6.0,
            max_idle_per_host=0,
            idle_timeout_s=7.0,
            http2=False,
            force_http2=True,
        ),
    )
    route, _ = _resolve(rc, UpstreamSection(http2=True))
    assert (route.connect_timeout_s, route.response_timeout_s, route.read_timeout_s) == (2, 4, 6)
    assert (route.max_idle_per_host, route.idle_timeout_s, route.max_body_bytes) == (0, 7.0, 5)
    assert (route.http2, route.force_http2) == (False, True)


@pytest.mark.parametrize(
    ("http2", "force", "alpn"),
    [
        (False, False, ("http/1.1",)),
        (True, False, ("h2", "http/1.1")),
        (False, True, ("h2",)),
        (True, True, ("h2",)),
    ],
)
def test_upstream_alpn(http2: bool, force: bool, alpn: tuple[str, ...]) -> None:
    assert upstream_alpn(http2, force) == alpn


def test_https_routes_get_a_context_per_distinct_table(cert_factory: CertFactory) -> None:
    problems: list[str] = []
    tls = ClientContexts(problems)
    ups = UpstreamSection(tls=UpstreamTls(ca_file=str(cert_factory.ca_file)))
    a, _ = route_runtime(0, RouteConfig(name="a", upstream="https://a"), ups, 0, tls)
    b, _ = route_runtime(1, RouteConfig(name="b", upstream="https://b:8443"), ups, 0, tls)
    h2 = RouteConfig(name="c", upstream="https://c", transport=TransportConfig(http2=True))
    c, _ = route_runtime(2, h2, ups, 0, tls)
    own = RouteConfig(
        name="d",
        upstream="https://d",
        transport=TransportConfig(tls=UpstreamTls(verify=False, server_name="d.internal")),
    )
    d, _ = route_runtime(3, own, ups, 0, tls)
    assert problems == []
    assert isinstance(a.client_tls, ssl.SSLContext)
    assert a.client_tls is b.client_tls  # same table, same ALPN
    assert c.client_tls is not a.client_tls  # same table, other ALPN
    assert d.client_tls is not None
    assert d.client_tls.verify_mode == ssl.CERT_NONE
    assert d.tls_server_name == "d.internal"
    assert a.tls_server_name == ""


def test_tls_problems_are_reported_once_at_the_first_path(tmp_path: Path) -> None:
    problems: list[str] = []
    tls = ClientContexts(problems)
    missing = tmp_path / "ca.pem"
    ups = UpstreamSection(tls=UpstreamTls(ca_file=str(missing)))
    for i in range(3):
        rc = RouteConfig(
            name=f"r{i}", upstream="https://h", transport=TransportConfig(http2=bool(i % 2))
        )
        route, _ = route_runtime(i, rc, ups, 0, tls)
        assert route.client_tls is None
    tls.check_unused()
    assert problems == [f"$.upstream.tls.ca_file: cannot read {missing}: No such file or directory"]


def test_unused_tables_have_their_files_checked(tmp_path: Path) -> None:
    problems: list[str] = []
    tls = ClientContexts(problems)
    missing = tmp_path / "ca.pem"
    ups = UpstreamSection(tls=UpstreamTls(ca_file=str(missing)))
    tls.note(ups.tls, "$.upstream.tls")
    own = TransportConfig(tls=UpstreamTls(cert_file=str(missing), key_file=str(missing)))
    route, _ = route_runtime(4, RouteConfig(name="r", transport=own), ups, 0, tls)
    assert route.client_tls is None
    tls.check_unused()
    assert problems == [
        f"$.upstream.tls.ca_file: cannot read {missing}: No such file or directory",
        f"$.routes[4].transport.tls.cert_file: cannot read {missing}: No such file or directory",
        f"$.routes[4].transport.tls.key_file: cannot read {missing}: No such file or directory",
    ]


def test_a_bad_upstream_url_is_a_problem() -> None:
    route, problems = _resolve(RouteConfig(name="r", upstream="https://h:99999"))
    assert route.upstream is None
    assert problems == ["$.routes[0].upstream: 'https://h:99999': port 99999 out of range"]
