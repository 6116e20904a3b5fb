"""TLS termination in a real ``kernel run`` process, with curl, openssl and h2load.

The proxy gets a TLS listener next to its cleartext one (which
``spawn_proxy`` uses to see that it is up). Certificates come from the
session's trustme CA (tests/conftest.py). Checked: HTTP/1.1 and HTTP/2 chosen
by ALPN, the certificate chosen by SNI (exact, wildcard, default), client
certificates required, and a load of HTTP/2 requests over TLS.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.e2e.conftest import ProxyProcess, SpawnProxy, free_port, proxy_config
from tests.e2e.test_http2 import h2load_summary, run
from tests.helpers.certs import CertFactory, CertFiles

pytestmark = pytest.mark.slow

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
H2LOAD = shutil.which("h2load")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
needs_h2load = pytest.mark.skipif(H2LOAD is None, reason="h2load (nghttp2-client) is not installed")


class TlsProxy:
    def __init__(self, proc: ProxyProcess, tls_port: int, ca: Path) -> None:
        self.proc = proc
        self.tls_port = tls_port
        self.ca = ca

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.tls_port}{path}"

    def resolve(self, host: str) -> str:
        return f"{host}:{self.tls_port}:127.0.0.1"


async def spawn_tls(
    spawn_proxy: SpawnProxy,
    upstream: Any,
    cert_factory: CertFactory,
    certs: list[tuple[CertFiles, list[str]]],
    tls: str = "",
) -> TlsProxy:
    port, tls_port = free_port(), free_port()
    blocks = "".join(
        f'[[listeners.tls.certificates]]\ncert = "{c.cert}"\nkey = "{c.key}"\n'
        f"names = {json.dumps(names)}\n"
        for c, names in certs
    )
    extra = f"""
[[listeners]]
name = "tls"
bind = "127.0.0.1:{tls_port}"
[listeners.tls]
{tls}
{blocks}
"""
    proc = await spawn_proxy(proxy_config(upstream.port, port, extra=extra), port=port)
    return TlsProxy(proc, tls_port, cert_factory.ca_file)


async def curl(proxy: TlsProxy, host: str, *args: str) -> tuple[int, bytes, str]:
    assert CURL is not None
    return await run(
        CURL, "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", str(proxy.ca),
        "--resolve", proxy.resolve(host), *args,
    )  # fmt: skip


@needs_curl
async def test_curl_http11_and_http2_by_alpn(
    spawn_proxy: SpawnProxy, upstream: Any, cert_factory: CertFactory
) -> None:
    site = cert_factory.issue("a.test")
    proxy = await spawn_tls(spawn_proxy, upstream, cert_factory, [(site, [])])
    fmt = "\n%{http_version} %{http_code}"
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        code, out, err = await curl(proxy, "a.test", flag, "-w", fmt, proxy.url("a.test", "/echo"))
        assert code == 0, err
        body, _, tail = out.rpartition(b"\n")
        assert tail.decode() == f"{version} 200"
        fields = dict(json.loads(body)["headers"])
        assert fields["host"] == f"a.test:{proxy.tls_port}"
        assert fields["x-forwarded-proto"] == "https"
    # A 2 MB body both ways over HTTP/2 + TLS.
    code, out, err = await curl(
        proxy, "a.test", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{size_download}",
        proxy.url("a.test", "/stream/2000000"),
    )  # fmt: skip
    assert code == 0, err
    assert out == b"2 2000000"
    assert len(upstream.requests) == 3


@needs_openssl
async def test_openssl_sees_the_certificate_chosen_by_sni(
    spawn_proxy: SpawnProxy, upstream: Any, cert_factory: CertFactory
) -> None:
    default = cert_factory.issue("default.test")
    exact = cert_factory.issue("a.test")
    wild = cert_factory.issue("*.w.test")
    certs = [(default, []), (exact, ["a.test"]), (wild, ["*.w.test"])]
    proxy = await spawn_tls(spawn_proxy, upstream, cert_factory, certs)
    cases = {
        "a.test": ["a.test"],
        "x.w.test": ["*.w.test"],
        "a.x.w.test": ["default.test"],
        "nowhere.test": ["default.test"],
        None: ["default.test"],
    }
    for name, expected in cases.items():
        sni = ["-servername", name] if name else ["-noservername"]
        assert OPENSSL is not None
        code, out, err = await run(
            OPENSSL, "s_client", *sni, "-connect", f"127.0.0.1:{proxy.tls_port}",
            "-CAfile", str(proxy.ca), "-alpn", "h2,http/1.1", "-verify_return_error",
            "-no_ign_eof", timeout=10,
        )  # fmt: skip
        # After the handshake the proxy's HTTP/2 SETTINGS may be printed too: binary.
        text = out.decode(errors="replace")
        assert code == 0, text + err
        assert "Verify return code: 0 (ok)" in text
        assert "ALPN protocol: h2" in text
        pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
        assert pem is not None, text
        cert = x509.load_pem_x509_certificate(pem.group(0).encode())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == expected, name


@needs_curl
async def test_curl_with_and_without_a_client_certificate(
    spawn_proxy: SpawnProxy, upstream: Any, cert_factory: CertFactory
) -> None:
    site = cert_factory.issue("a.test")
    tls = f'client_auth = "required"\nclient_ca = "{cert_factory.ca_file}"\nmin_version = "1.3"'
    proxy = await spawn_tls(spawn_proxy, upstream, cert_factory, [(site, [])], tls)
    code, _, err = await curl(proxy, "a.test", proxy.url("a.test", "/echo"))
    assert code != 0
    assert "certificate required" in err, err
    assert upstream.requests == []
    alice = cert_factory.issue("alice.test", common_name="alice")
    for flag in ("--http1.1", "--http2"):
        code, out, err = await curl(
            proxy, "a.test", flag, "--cert", str(alice.cert), "--key", str(alice.key),
            "-w", "\n%{http_code}", proxy.url("a.test", "/echo"),
        )  # fmt: skip
        assert code == 0, err
        assert out.endswith(b"\n200")
    # TLS 1.2 only: refused by min_version, with the reason.
    code, _, err = await curl(proxy, "a.test", "--tls-max", "1.2", proxy.url("a.test", "/echo"))
    assert code != 0
    assert "protocol version" in err, err
    assert len(upstream.requests) == 2


@needs_h2load
async def test_h2load_over_tls(
    spawn_proxy: SpawnProxy, upstream: Any, cert_factory: CertFactory
) -> None:
    site = cert_factory.issue("a.test")
    proxy = await spawn_tls(spawn_proxy, upstream, cert_factory, [(site, [])])
    assert H2LOAD is not None
    code, out, err = await run(
        H2LOAD, "-n", "2000", "-c", "10", "-m", "10",
        f"https://127.0.0.1:{proxy.tls_port}/", timeout=60,
    )  # fmt: skip
    text = out.decode()
    assert code == 0, text + err
    assert "Application protocol: h2" in text
    summary = h2load_summary(text)
    assert summary["succeeded"] == summary["2xx"] == 2000, text
    assert len(upstream.requests) == 2000
    assert proxy.proc.returncode is None
