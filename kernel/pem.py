"""Reading PEM certificates and keys from disk, checked, and loading them into contexts.

Every problem is reported against the config path of the value that named the
file (``$.upstream.tls.ca_file: cannot read ca.pem: No such file or
directory``), and collected rather than raised, as the rest of the
configuration does. Checked: the file can be read, it holds PEM certificates
(or a PEM private key, unencrypted), and the key belongs to the chain's first
certificate. An expired or not-yet-valid certificate is a *warning*.

May import: stdlib, attrs, cryptography.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = ["KeyPair", "load_pem_pair", "read_ca", "read_key_pair"]

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@attrs.frozen
class KeyPair:
    """A certificate chain and its key, read and checked: what a context loads."""

    chain_pem: bytes
    key_pem: bytes
    #: DNS names of the leaf's subjectAltName (wildcards included), lower-case.
    dns_names: tuple[str, ...]


# ------------------------------------------------------------ reading files
def _read(path: str, where: str, problems: list[str]) -> bytes | None:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            return f.read()
    except OSError as exc:
        problems.append(f"{where}: cannot read {path}: {exc.strerror or exc}")
        return None


def _certs(data: bytes, path: str, where: str, problems: list[str]) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        problems.append(f"{where}: not a PEM certificate ({path})")
        return []


def read_ca(path: str, where: str, problems: list[str]) -> str | None:
    """The PEM text of a CA file, checked; ``None`` (and a problem) when unusable."""
    data = _read(path, where, problems)
    if data is None or not _certs(data, path, where, problems):
        return None
    return data.decode("ascii", "replace")


def read_key_pair(
    cert_path: str,
    key_path: str,
    where: tuple[str, str],
    problems: list[str],
    warnings: list[str],
) -> KeyPair | None:
    """Read and check a certificate chain and its key; ``where`` are their config paths."""
    cert_where, key_where = where
    chain, key = _read(cert_path, cert_where, problems), _read(key_path, key_where, problems)
    certs = _certs(chain, cert_path, cert_where, problems) if chain is not None else []
    if key is None or chain is None:
        return None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except TypeError:
        problems.append(
            f"{key_where}: the key is encrypted ({key_path}); a passphrase is not supported"
        )
        return None
    except (ValueError, UnsupportedAlgorithm):
        problems.append(f"{key_where}: not a PEM private key ({key_path})")
        return None
    if not certs:
        return None
    leaf = certs[0]
    if leaf.public_key().public_bytes(*_SPKI) != private.public_key().public_bytes(*_SPKI):
        problems.append(f"{key_where}: key does not match the certificate in {cert_path}")
        return None
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        warnings.append(f"{cert_where}: certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    elif leaf.not_valid_before_utc > now:
        warnings.append(
            f"{cert_where}: certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}"
        )
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    names = tuple(n.lower().rstrip(".") for n in dns)
    return KeyPair(chain_pem=chain, key_pem=key, dns_names=names)


def load_pem_pair(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """``ctx.load_cert_chain`` from bytes (``ssl`` only reads files).

    The PEM goes through an anonymous in-memory file where the OS has one
    (Linux ``memfd``), else a private temporary file removed at once.
    Raises :class:`ssl.SSLError` when OpenSSL refuses the material.
    """
    pem = chain_pem.rstrip(b"\n") + b"\n" + key_pem
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("trellis-pem", os.MFD_CLOEXEC)
        try:
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view) :]
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    fd, name = tempfile.mkstemp(prefix="trellis-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)
