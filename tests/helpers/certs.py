"""TLS test material: certificate files from a trustme CA, and handshakes without sockets.

:class:`CertFactory` writes PEM files under a directory and returns their
paths, for configs that name files. :func:`handshake` runs a real TLS
handshake between a client and a server :class:`ssl.SSLObject` over
:class:`ssl.MemoryBIO` pairs, so contexts are tested by what OpenSSL does
with them, not by their attributes. :func:`client_hello` gives the first
flight a client sends.
"""

from __future__ import annotations

import datetime
import itertools
import ssl
from pathlib import Path

import attrs
import trustme


@attrs.frozen
class CertFiles:
    cert: Path
    key: Path
    leaf: trustme.LeafCert

    @property
    def chain_pem(self) -> bytes:
        return b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems)

    @property
    def key_pem(self) -> bytes:
        return self.leaf.private_key_pem.bytes()


class CertFactory:
    """Issues certificates from one CA and writes them under ``directory``."""

    def __init__(self, ca: trustme.CA, directory: Path) -> None:
        self.ca = ca
        self.directory = directory
        self._n = itertools.count(1)

    @property
    def ca_file(self) -> Path:
        path = self.directory / "ca.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return path

    def issue(
        self,
        *names: str,
        common_name: str | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CertFiles:
        leaf = self.ca.issue_cert(
            *names, common_name=common_name, not_before=not_before, not_after=not_after
        )
        n = next(self._n)
        cert, key = self.directory / f"cert{n}.pem", self.directory / f"key{n}.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return CertFiles(cert, key, leaf)


def client_context(
    ca: trustme.CA | None,
    *,
    alpn: list[str] | None = None,
    cert: trustme.LeafCert | None = None,
    max_version: ssl.TLSVersion | None = None,
    min_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        ca.configure_trust(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert is not None:
        cert.configure_cert(ctx)
    if max_version is not None:
        ctx.maximum_version = max_version
    if min_version is not None:
        ctx.minimum_version = min_version
    return ctx


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_hostname: str | None,
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Complete a handshake in memory; returns (server, client). Raises ssl.SSLError."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, obj in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                obj.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server's verdict on a client certificate comes after
            # the client finished; one exchange of application data settles it.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return server, client
    raise AssertionError("handshake did not finish")


def client_hello(
    server_hostname: str | None, alpn: list[str] | None = None, ctx: ssl.SSLContext | None = None
) -> bytes:
    """The bytes a client sends first: its ClientHello, in one or more records."""
    ctx = ctx or ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()
