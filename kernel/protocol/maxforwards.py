"""``Max-Forwards`` on TRACE and OPTIONS, and the answer to a TRACE that ends here.

RFC 9110 §7.6.2: an intermediary that receives a TRACE or OPTIONS request
with ``Max-Forwards`` must check it before forwarding. ``0``: the request
goes no further, the intermediary answers it as its final recipient; any
other value is forwarded one less. Other methods ignore the field (it is
passed on as it is).

:func:`hops_left` reads the field; :func:`trace_body` is the ``message/http``
content of the answer to a TRACE (RFC 9110 §9.3.8): the request as it was
received, less the fields likely to carry secrets.

Sans-IO. May import: stdlib, kernel.protocol.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["METHODS", "SECRET_FIELDS", "hops_left", "trace_body"]

#: The methods that ``Max-Forwards`` applies to.
METHODS = frozenset({"TRACE", "OPTIONS"})

#: Left out of a TRACE's reflection (RFC 9110 §9.3.8: "fields likely to
#: contain sensitive data"): credentials and session cookies.
SECRET_FIELDS = frozenset({b"authorization", b"proxy-authorization", b"cookie"})

# Longer than this is no hop count any path has; it is refused, not parsed.
_MAX_DIGITS = 10


def hops_left(values: list[str]) -> int | None:
    """The ``Max-Forwards`` of a request (``values``: each field's value):
    None when it has none.

    Raises :class:`ValueError` when it is not one field of ``1*DIGIT``
    (a list, a sign, a second field that might disagree): which value a
    later hop would read cannot be known.
    """
    if not values:
        return None
    if len(values) > 1:
        raise ValueError("more than one Max-Forwards field")
    value = values[0]
    if not value or len(value) > _MAX_DIGITS or not value.isascii() or not value.isdigit():
        raise ValueError(f"Max-Forwards must be a number of hops, got {value!r}")
    return int(value)


def trace_body(
    method: bytes, target: bytes, http_version: bytes, fields: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """The request as received, as ``message/http``, secrets left out.

    ``fields`` are the received ones (names lower-cased, as the codecs give
    them). An HTTP/2 request is written as ``HTTP/2.0``, the version syntax
    ``message/http`` has.
    """
    version = b"2.0" if http_version == b"2" else http_version
    parts = [method, b" ", target, b" HTTP/", version, b"\r\n"]
    for name, value in fields:
        if name not in SECRET_FIELDS:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
