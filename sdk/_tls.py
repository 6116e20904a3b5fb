"""What TLS hooks exchange with the kernel: :class:`TlsCertificate`.

May import: stdlib, attrs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

import attrs

__all__ = ["TlsCertificate"]


_Validator = Callable[[Any, "attrs.Attribute[bytes]", bytes], None]


def _pem(label: bytes) -> _Validator:
    """Catch the easy mistakes early: text instead of bytes, DER, a missing block."""

    def check(_: Any, attribute: attrs.Attribute[bytes], value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"{attribute.name} must be bytes, got {type(value).__name__}")
        if b"-----BEGIN " not in value or label not in value:
            raise ValueError(f"{attribute.name} is not PEM ({label.decode()} block expected)")

    return check


@final
@attrs.frozen(slots=True)
class TlsCertificate:
    """A certificate chain and its private key, both PEM, for one TLS server name.

    Returned by ``trellis_tls_certificate``. The kernel builds a TLS context
    from it and keeps that context for the name (bounded cache), so a plugin
    is not asked again for every connection.
    """

    #: The leaf certificate first, then intermediates (PEM ``CERTIFICATE`` blocks).
    cert_chain_pem: bytes = attrs.field(validator=_pem(b"CERTIFICATE"))
    #: The leaf's private key, unencrypted (a PEM ``PRIVATE KEY`` block).
    key_pem: bytes = attrs.field(validator=_pem(b"PRIVATE KEY"), repr=False)
