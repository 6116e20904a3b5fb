"""sdk._tls: TlsCertificate, what trellis_tls_certificate returns."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

import sdk

CHAIN = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def test_holds_pem_bytes_and_is_frozen() -> None:
    cert = sdk.TlsCertificate(cert_chain_pem=CHAIN, key_pem=KEY)
    assert cert.cert_chain_pem == CHAIN
    assert cert.key_pem == KEY
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cert.key_pem = b""  # type: ignore[misc]
    assert cert == sdk.TlsCertificate(CHAIN, KEY)


def test_the_key_stays_out_of_repr() -> None:
    assert "PRIVATE" not in repr(sdk.TlsCertificate(CHAIN, KEY))


@pytest.mark.parametrize(
    ("chain", "key", "error", "message"),
    [
        (CHAIN.decode(), KEY, TypeError, "cert_chain_pem must be bytes, got str"),
        (CHAIN, KEY.decode(), TypeError, "key_pem must be bytes, got str"),
        (b"\x30\x82", KEY, ValueError, r"cert_chain_pem is not PEM \(CERTIFICATE block"),
        (CHAIN, CHAIN, ValueError, r"key_pem is not PEM \(PRIVATE KEY block"),
    ],
)
def test_easy_mistakes_are_caught(
    chain: Any, key: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        sdk.TlsCertificate(chain, key)


def test_rsa_and_ec_key_labels_pass() -> None:
    ec = b"-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"
    assert sdk.TlsCertificate(CHAIN, ec).key_pem == ec
