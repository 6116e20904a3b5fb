"""kernel.pem: reading certificate and key files, with problems at their config paths."""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from kernel.pem import load_pem_pair, read_ca, read_key_pair
from tests.helpers.certs import CertFactory, client_context, handshake

WHERE = ("$.c.cert", "$.c.key")


def _read(cert: Path, key: Path) -> tuple[Any, list[str], list[str]]:
    problems: list[str] = []
    warnings: list[str] = []
    pair = read_key_pair(str(cert), str(key), WHERE, problems, warnings)
    return pair, problems, warnings


def test_a_good_pair_reads_with_its_dns_names(cert_factory: CertFactory) -> None:
    files = cert_factory.issue("A.example", "*.w.example", "127.0.0.1")
    pair, problems, warnings = _read(files.cert, files.key)
    assert problems == []
    assert warnings == []
    assert pair.dns_names == ("a.example", "*.w.example")  # IP addresses are no SNI names
    assert pair.chain_pem == files.chain_pem
    assert pair.key_pem == files.key_pem


def test_missing_files_are_reported_both(tmp_path: Path) -> None:
    pair, problems, _ = _read(tmp_path / "no.pem", tmp_path / "no.key")
    assert pair is None
    assert problems == [
        f"$.c.cert: cannot read {tmp_path / 'no.pem'}: No such file or directory",
        f"$.c.key: cannot read {tmp_path / 'no.key'}: No such file or directory",
    ]


def test_not_pem(cert_factory: CertFactory, tmp_path: Path) -> None:
    files = cert_factory.issue("a.example")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    assert _read(junk, files.key)[1] == [f"$.c.cert: not a PEM certificate ({junk})"]
    assert _read(files.cert, junk)[1] == [f"$.c.key: not a PEM private key ({junk})"]
    # A certificate where the key belongs is not a key either.
    assert _read(files.cert, files.cert)[1] == [f"$.c.key: not a PEM private key ({files.cert})"]


def test_key_of_another_certificate(cert_factory: CertFactory) -> None:
    one, other = cert_factory.issue("a.example"), cert_factory.issue("b.example")
    assert _read(one.cert, other.key)[1] == [
        f"$.c.key: key does not match the certificate in {one.cert}"
    ]


def test_encrypted_key(cert_factory: CertFactory, tmp_path: Path) -> None:
    files = cert_factory.issue("a.example")
    key = serialization.load_pem_private_key(files.key_pem, password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert _read(files.cert, locked)[1] == [
        f"$.c.key: the key is encrypted ({locked}); a passphrase is not supported"
    ]


def test_expired_and_future_certificates_are_warnings(cert_factory: CertFactory) -> None:
    utc = datetime.UTC
    old = cert_factory.issue(
        "a.example",
        not_before=datetime.datetime(2023, 1, 1, tzinfo=utc),
        not_after=datetime.datetime(2024, 1, 1, tzinfo=utc),
    )
    pair, problems, warnings = _read(old.cert, old.key)
    assert pair is not None
    assert problems == []
    assert warnings == ["$.c.cert: certificate expired on 2024-01-01"]
    future = cert_factory.issue(
        "a.example",
        not_before=datetime.datetime(2999, 1, 1, tzinfo=utc),
        not_after=datetime.datetime(3000, 1, 1, tzinfo=utc),
    )
    assert _read(future.cert, future.key)[2] == [
        "$.c.cert: certificate is not valid before 2999-01-01"
    ]


def test_read_ca(cert_factory: CertFactory, tmp_path: Path) -> None:
    problems: list[str] = []
    text = read_ca(str(cert_factory.ca_file), "$.ca", problems)
    assert problems == []
    assert text is not None
    assert "BEGIN CERTIFICATE" in text
    assert read_ca(str(tmp_path / "none.pem"), "$.ca", problems) is None
    assert problems == [f"$.ca: cannot read {tmp_path / 'none.pem'}: No such file or directory"]


@pytest.mark.parametrize("memfd", [True, False], ids=["memfd", "tempfile"])
def test_load_pem_pair_serves_a_handshake(
    cert_factory: CertFactory, tls_ca: Any, memfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not memfd:
        monkeypatch.delattr(os, "memfd_create", raising=False)
    files = cert_factory.issue("a.example")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    before = set(os.listdir(tempfile.gettempdir()))
    load_pem_pair(ctx, files.chain_pem, files.key_pem)
    assert set(os.listdir(tempfile.gettempdir())) <= before  # nothing left behind
    handshake(ctx, client_context(tls_ca), "a.example")


def test_load_pem_pair_refuses_garbage() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ssl.SSLError):
        load_pem_pair(ctx, b"not pem", b"nor this")
