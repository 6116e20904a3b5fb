"""kernel.tls: server contexts chosen by SNI, client contexts, with real in-memory handshakes."""

from __future__ import annotations

import datetime
import logging
import ssl
from typing import Any

import pytest

from kernel import tls as tls_mod
from kernel.config.transport import CertificateConfig, ListenerTls, UpstreamTls
from kernel.tls import (
    ServerTls,
    build_client_tls,
    build_server_tls,
    check_client_tls,
    default_client_context,
    peer_subject,
)
from tests.helpers.certs import CertFactory, CertFiles, client_context, handshake

PATH = "$.listeners[1].tls"


def _cfg(*files: CertFiles, names: dict[int, list[str]] | None = None, **kw: Any) -> ListenerTls:
    certs = [
        CertificateConfig(cert=str(f.cert), key=str(f.key), names=(names or {}).get(i, []))
        for i, f in enumerate(files)
    ]
    return ListenerTls(certificates=certs, **kw)


def _server(cfg: ListenerTls, *, http2: bool = True) -> ServerTls:
    server, problems = build_server_tls(cfg, PATH, http2=http2)
    assert problems == []
    assert server is not None
    return server


def _problems(cfg: ListenerTls, *, http2: bool = True) -> list[str]:
    server, problems = build_server_tls(cfg, PATH, http2=http2)
    assert server is None
    return problems


def _served(server: ServerTls, name: str | None, tls_ca: Any) -> list[str]:
    """DNS names of the certificate the server presented for ``name`` (hostname unchecked)."""
    client = client_context(tls_ca)
    client.check_hostname = False
    _, obj = handshake(server.context, client, name)
    cert = obj.getpeercert()
    assert cert is not None
    return [value for kind, value in cert["subjectAltName"] if kind == "DNS"]


@pytest.fixture
def three(cert_factory: CertFactory) -> tuple[CertFiles, CertFiles, CertFiles]:
    return (
        cert_factory.issue("default.example"),
        cert_factory.issue("b.example", "also-b.example"),
        cert_factory.issue("*.w.example"),
    )


# ------------------------------------------------------------------ SNI choice
def test_sni_exact_wildcard_and_default(three: Any, tls_ca: Any) -> None:
    server = _server(_cfg(*three))
    # Verified handshakes: the name checks out against the chosen certificate.
    for name in ("default.example", "b.example", "also-b.example", "x.w.example", "X.W.Example"):
        sobj, _ = handshake(server.context, client_context(tls_ca), name)
        assert server.sni_of(sobj) == name.lower()
    # A wildcard covers exactly one label; anything else gets the default.
    assert _served(server, "a.b.w.example", tls_ca) == ["default.example"]
    assert _served(server, "w.example", tls_ca) == ["default.example"]
    assert _served(server, "unknown.example", tls_ca) == ["default.example"]
    assert _served(server, None, tls_ca) == ["default.example"]
    assert server.select(None) is server.context
    assert server.select("x.w.example") is server.select("y.w.example")
    assert server.select("x.w.example") is not server.context
    assert server.select("B.Example.") is server.select("b.example")
    assert server.names == ("default.example", "b.example", "also-b.example", "*.w.example")


def test_sni_of_is_empty_without_sni(three: Any, tls_ca: Any) -> None:
    server = _server(_cfg(*three))
    client = client_context(tls_ca)
    client.check_hostname = False
    sobj, _ = handshake(server.context, client, None)
    assert server.sni_of(sobj) == ""


def test_configured_names_replace_the_certificates_own(
    cert_factory: CertFactory, tls_ca: Any
) -> None:
    first = cert_factory.issue("default.example")
    second = cert_factory.issue("b.example", "c.example")
    server = _server(_cfg(first, second, names={1: ["c.example"]}))
    assert _served(server, "c.example", tls_ca) == ["b.example", "c.example"]
    assert _served(server, "b.example", tls_ca) == ["default.example"]


def test_overlapping_certificate_names_first_wins(cert_factory: CertFactory, tls_ca: Any) -> None:
    first = cert_factory.issue("a.example", "shared.example")
    second = cert_factory.issue("shared.example", "b.example")
    server = _server(_cfg(first, second))
    assert _served(server, "shared.example", tls_ca) == ["a.example", "shared.example"]


# -------------------------------------------------------------------- provider
def test_provider_order_and_cache(three: Any, cert_factory: CertFactory, tls_ca: Any) -> None:
    server = _server(_cfg(*three))
    minted = {
        "p.example": cert_factory.issue("p.example"),
        "x.w.example": cert_factory.issue("x.w.example"),
    }
    asked: list[str] = []

    def provider(name: str) -> tuple[bytes, bytes] | None:
        asked.append(name)
        files = minted.get(name)
        return None if files is None else (files.chain_pem, files.key_pem)

    server.set_certificate_provider(provider)
    for _ in range(2):
        handshake(server.context, client_context(tls_ca), "p.example")
    assert asked == ["p.example"]  # the built context is cached
    # A configured exact name never reaches the provider.
    handshake(server.context, client_context(tls_ca), "b.example")
    assert asked == ["p.example"]
    # The provider comes before a configured wildcard ...
    assert _served(server, "x.w.example", tls_ca) == ["x.w.example"]
    # ... which still serves the names the provider declines; None is not cached.
    for _ in range(2):
        handshake(server.context, client_context(tls_ca), "y.w.example")
    assert asked == ["p.example", "x.w.example", "y.w.example", "y.w.example"]
    server.set_certificate_provider(None)
    assert _served(server, "p.example", tls_ca) == ["default.example"]


def test_provider_cache_is_bounded(
    three: Any, cert_factory: CertFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls_mod, "CACHE_SIZE", 2)
    server = _server(_cfg(*three))
    files = cert_factory.issue("p.example")
    asked: list[str] = []

    def provider(name: str) -> tuple[bytes, bytes]:
        asked.append(name)
        return files.chain_pem, files.key_pem

    server.set_certificate_provider(provider)
    for name in ("a.p", "b.p", "a.p", "c.p", "a.p", "b.p"):
        server.select(name)
    # a, b cached; a hit; c evicts b (least recent); a hit; b asked again.
    assert asked == ["a.p", "b.p", "c.p", "b.p"]


def test_provider_failure_aborts_the_handshake(
    three: Any, tls_ca: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = _server(_cfg(*three))

    def broken(name: str) -> tuple[bytes, bytes]:
        raise RuntimeError("no certificate today")

    server.set_certificate_provider(broken)
    with pytest.raises(ssl.SSLError):
        handshake(server.context, client_context(tls_ca), "p.example")
    assert "no certificate for 'p.example': RuntimeError: no certificate today" in caplog.text
    with pytest.raises(RuntimeError):
        server.select("p.example")
    # Configured names do not ask the provider, so they still work.
    handshake(server.context, client_context(tls_ca), "b.example")


def test_provider_garbage_aborts_the_handshake(three: Any, tls_ca: Any) -> None:
    server = _server(_cfg(*three))
    server.set_certificate_provider(lambda name: (b"junk", b"junk"))
    with pytest.raises(ssl.SSLError):
        handshake(server.context, client_context(tls_ca), "p.example")


# ------------------------------------------------------- ALPN, versions, client auth
@pytest.mark.parametrize(
    ("http2", "alpn", "offered", "agreed"),
    [
        (True, ["h2", "http/1.1"], ["h2", "http/1.1"], "h2"),
        (True, ["h2", "http/1.1"], ["http/1.1"], "http/1.1"),
        (False, ["h2", "http/1.1"], ["h2", "http/1.1"], "http/1.1"),
        (True, ["http/1.1", "h2"], ["h2", "http/1.1"], "http/1.1"),  # ours wins
    ],
)
def test_alpn(
    three: Any, tls_ca: Any, http2: bool, alpn: list[str], offered: list[str], agreed: str
) -> None:
    server = _server(_cfg(*three, alpn=alpn), http2=http2)
    # ALPN works the same on an SNI-switched context.
    for name in ("default.example", "x.w.example"):
        sobj, cobj = handshake(server.context, client_context(tls_ca, alpn=offered), name)
        assert sobj.selected_alpn_protocol() == cobj.selected_alpn_protocol() == agreed


def test_h2_alone_needs_http2(three: Any) -> None:
    assert _problems(_cfg(*three, alpn=["h2"]), http2=False) == [
        f"{PATH}.alpn: lists only 'h2', but HTTP/2 is off on this listener"
    ]


def test_versions(three: Any, tls_ca: Any) -> None:
    only13 = _server(_cfg(*three, min_version="1.3"))
    old_client = client_context(tls_ca, max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        handshake(only13.context, old_client, "x.w.example")
    sobj, _ = handshake(only13.context, client_context(tls_ca), "x.w.example")
    assert sobj.version() == "TLSv1.3"
    only12 = _server(_cfg(*three, max_version="1.2"))
    for name in ("default.example", "x.w.example"):
        sobj, _ = handshake(only12.context, client_context(tls_ca), name)
        assert sobj.version() == "TLSv1.2"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_client_auth_required(
    three: Any, cert_factory: CertFactory, tls_ca: Any, version: ssl.TLSVersion
) -> None:
    cfg = _cfg(*three, client_auth="required", client_ca=str(cert_factory.ca_file))
    server = _server(cfg)
    alice = cert_factory.issue("alice@example.org", common_name="alice").leaf
    for name in ("default.example", "x.w.example"):  # the switched context verifies too
        anonymous = client_context(tls_ca, max_version=version)
        with pytest.raises(ssl.SSLError):
            handshake(server.context, anonymous, name)
        client = client_context(tls_ca, cert=alice, max_version=version)
        sobj, _ = handshake(server.context, client, name)
        subject = peer_subject(sobj)
        assert subject is not None
        assert subject.startswith("CN=alice,")


def test_client_auth_optional(three: Any, cert_factory: CertFactory, tls_ca: Any) -> None:
    cfg = _cfg(*three, client_auth="optional", client_ca=str(cert_factory.ca_file))
    server = _server(cfg)
    sobj, _ = handshake(server.context, client_context(tls_ca), "b.example")
    assert peer_subject(sobj) is None
    bob = cert_factory.issue("bob@example.org", common_name="bob").leaf
    sobj, _ = handshake(server.context, client_context(tls_ca, cert=bob), "b.example")
    assert (peer_subject(sobj) or "").startswith("CN=bob,")


def test_client_auth_refuses_a_stranger(three: Any, tls_ca: Any, tmp_path: Any) -> None:
    import trustme

    other = trustme.CA()
    ca_file = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(ca_file))
    server = _server(_cfg(*three, client_auth="optional", client_ca=str(ca_file)))
    mallory = client_context(tls_ca, cert=tls_ca.issue_cert("mallory@example.org"))
    with pytest.raises(ssl.SSLError):
        handshake(server.context, mallory, "b.example")


def test_no_client_auth_means_no_subject(three: Any, tls_ca: Any) -> None:
    server = _server(_cfg(*three))
    sobj, _ = handshake(server.context, client_context(tls_ca), "b.example")
    assert peer_subject(sobj) is None


# ------------------------------------------------------------- config problems
def test_each_file_problem_has_its_path(
    three: Any, cert_factory: CertFactory, tmp_path: Any
) -> None:
    good, other, _ = three
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    missing = tmp_path / "missing.pem"
    cfg = ListenerTls(
        certificates=[
            CertificateConfig(cert=str(good.cert), key=str(good.key)),
            CertificateConfig(cert=str(missing), key=str(good.key)),
            CertificateConfig(cert=str(junk), key=str(good.key)),
            CertificateConfig(cert=str(good.cert), key=str(junk)),
            CertificateConfig(cert=str(good.cert), key=str(other.key)),
        ],
        client_auth="required",
        client_ca=str(missing),
    )
    assert _problems(cfg) == [
        f"{PATH}.client_ca: cannot read {missing}: No such file or directory",
        f"{PATH}.certificates[1].cert: cannot read {missing}: No such file or directory",
        f"{PATH}.certificates[2].cert: not a PEM certificate ({junk})",
        f"{PATH}.certificates[3].key: not a PEM private key ({junk})",
        f"{PATH}.certificates[4].key: key does not match the certificate in {good.cert}",
    ]


def test_name_problems(cert_factory: CertFactory) -> None:
    first = cert_factory.issue("a.example")
    nameless = cert_factory.issue(common_name="nobody")
    assert _problems(_cfg(first, nameless)) == [
        f"{PATH}.certificates[1]: serves no name (no DNS names in the certificate;"
        " list them in names)"
    ]
    # The default certificate needs no name.
    assert _server(_cfg(nameless, first)).names == ("a.example",)
    twice = _cfg(first, first, names={0: ["x.example"], 1: ["x.example"]})
    assert _problems(twice) == [
        f"{PATH}.certificates[1].names: 'x.example' is already served by certificates[0]"
    ]


def test_expired_certificate_is_a_warning(
    cert_factory: CertFactory, caplog: pytest.LogCaptureFixture
) -> None:
    utc = datetime.UTC
    old = cert_factory.issue(
        "a.example",
        not_before=datetime.datetime(2023, 1, 1, tzinfo=utc),
        not_after=datetime.datetime(2024, 1, 1, tzinfo=utc),
    )
    with caplog.at_level(logging.WARNING, logger="kernel.tls"):
        server = _server(_cfg(old))
    expected = f"{PATH}.certificates[0].cert: certificate expired on 2024-01-01"
    assert server.warnings == (expected,)
    assert expected in caplog.text


def test_certificates_are_read_at_build_time(cert_factory: CertFactory, tls_ca: Any) -> None:
    files = cert_factory.issue("a.example")
    server = _server(_cfg(files))
    files.cert.unlink()  # later changes do not touch a built ServerTls ...
    handshake(server.context, client_context(tls_ca), "a.example")
    assert _problems(_cfg(files))[0].startswith(f"{PATH}.certificates[0].cert: cannot read")


# ----------------------------------------------------------------- client side
def test_client_verifies_with_ca_file_and_presents_a_certificate(
    three: Any, cert_factory: CertFactory, tls_ca: Any
) -> None:
    server = _server(_cfg(*three, client_auth="required", client_ca=str(cert_factory.ca_file)))
    me = cert_factory.issue("proxy.example", common_name="proxy")
    cfg = UpstreamTls(
        ca_file=str(cert_factory.ca_file), cert_file=str(me.cert), key_file=str(me.key)
    )
    ctx, problems = build_client_tls(cfg, "$.upstream.tls", alpn=["h2", "http/1.1"])
    assert problems == []
    assert ctx is not None
    assert ctx.check_hostname
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    sobj, cobj = handshake(server.context, ctx, "b.example")
    assert (peer_subject(sobj) or "").startswith("CN=proxy,")
    assert cobj.selected_alpn_protocol() == "h2"
    with pytest.raises(ssl.SSLCertVerificationError):  # the name is checked
        handshake(server.context, ctx, "elsewhere.example")


def test_client_refuses_an_unknown_ca_unless_told_not_to_verify(three: Any) -> None:
    server = _server(_cfg(*three))
    strict, _ = build_client_tls(UpstreamTls(), "$.upstream.tls", alpn=[])
    assert strict is not None
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server.context, strict, "b.example")
    lax, _ = build_client_tls(UpstreamTls(verify=False), "$.upstream.tls", alpn=["http/1.1"])
    assert lax is not None
    assert not lax.check_hostname
    _, cobj = handshake(server.context, lax, "b.example")
    assert cobj.selected_alpn_protocol() == "http/1.1"


def test_client_min_version(three: Any, cert_factory: CertFactory) -> None:
    server = _server(_cfg(*three, max_version="1.2"))
    cfg = UpstreamTls(ca_file=str(cert_factory.ca_file), min_version="1.3")
    ctx, _ = build_client_tls(cfg, "$.upstream.tls", alpn=[])
    assert ctx is not None
    with pytest.raises(ssl.SSLError):
        handshake(server.context, ctx, "b.example")


def test_client_problems_have_their_paths(cert_factory: CertFactory, tmp_path: Any) -> None:
    a, b = cert_factory.issue("a.example"), cert_factory.issue("b.example")
    missing = tmp_path / "nope.pem"
    path = "$.routes[2].transport.tls"
    cfg = UpstreamTls(ca_file=str(missing), cert_file=str(a.cert), key_file=str(b.key))
    expected = [
        f"{path}.ca_file: cannot read {missing}: No such file or directory",
        f"{path}.key_file: key does not match the certificate in {a.cert}",
    ]
    assert build_client_tls(cfg, path, alpn=[]) == (None, expected)
    assert check_client_tls(cfg, path) == expected
    assert check_client_tls(UpstreamTls(), path) == []


def test_default_client_context_is_strict_and_shared() -> None:
    ctx = default_client_context()
    assert ctx is default_client_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
