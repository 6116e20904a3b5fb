"""The ``Date`` field of the responses the proxy sends (RFC 9110 §6.6.1).

A server with a clock must send ``Date`` in its 2xx, 3xx and 4xx responses
(and may in 5xx), and a proxy that forwards a response without one must add
it, with the time it received the response. Every final response that leaves
Trellis therefore carries one: the upstream's when it sent one, else ours.

The value is formatted once per second (IMF-fixdate, ``Sun, 06 Nov 1994
08:49:37 GMT``), as nginx and hypercorn do: reading the clock is one call,
formatting is not done per response.

Reads the wall clock; no I/O. May import: stdlib, kernel.protocol.events.
"""

from __future__ import annotations

import time
from email.utils import formatdate

from kernel.protocol.events import ResponseHead

__all__ = ["dated", "now", "with_date"]

_clock = time.time
_second = -1
_value = b""


def now() -> bytes:
    """The current time as an HTTP date (``Mon, 23 Nov 2026 11:53:28 GMT``)."""
    global _second, _value
    second = int(_clock())
    if second != _second:
        _value = formatdate(second, usegmt=True).encode("ascii")
        _second = second
    return _value


def with_date(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``fields`` as they are when one is ``date``, else with ours appended
    (a new list: the caller's is not changed)."""
    for name, _ in fields:
        if name == b"date":
            return fields
    return [*fields, (b"date", now())]


def dated(head: ResponseHead) -> ResponseHead:
    """``head`` itself when it has a ``Date``, else a copy with ours."""
    fields = with_date(head.headers)
    if fields is head.headers:
        return head
    return ResponseHead(head.status_code, fields, head.reason, head.http_version, head.keep_alive)
