"""One record per flow: :func:`build_record`, and how a record becomes a JSON line or a row.

:func:`build_record` runs on the event loop inside ``trellis_flow_done`` for
every flow, so it only copies what it needs out of the flow into a plain
dict (about 5 µs); everything else (JSON encoding, SQL rows) happens in the
writer's worker thread. The dict's keys, in this order, are :data:`FIELDS`;
``request_headers`` and ``response_headers`` are present only with
``headers = true``.

==================  =========================================================
``id``              the flow id (``3fa2c1-0000002a``)
``ts``              when the request head arrived, ISO 8601 UTC with
                    milliseconds (``2026-11-22T07:47:55.109Z``)
``client_ip``       the peer address
``method``          the request method
``host``            the request authority (Host), port included when sent
``path``            the request target as the upstream got it (query
                    included unless ``query = false``)
``status``          the status sent to the client (error pages included);
                    ``null`` when no response head was sent
``route``           the route that served the flow
``group``           the ``[[groups]]`` entry, ``null`` without one
``target``          the group target's name, ``null`` without one
``upstream``        the origin the request went to (``http://10.0.0.1:8080``)
``duration_ms``     request head to last byte (or error)
``upstream_ms``     upstream connection ready to response head; ``null``
                    when no upstream answered
``bytes_in``        request body bytes from the client
``bytes_out``       response body bytes to the client
``decisions``       what plugins recorded (``flow.decisions``), a list
``error``           the failure's message, ``null`` when none
``trace_id``        the W3C trace id from ``flow.stash[sdk.TRACE]``, or ``null``
``user_agent``      the User-Agent field, or ``null``
``generation``      the configuration generation that served the flow
==================  =========================================================

May import: stdlib, attrs, orjson, sdk.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import orjson

import sdk

__all__ = ["FIELDS", "REDACTED", "Record", "RecordOptions", "build_record", "iso_utc", "json_line"]

#: Every key a record may have, in order (the SQL columns have the same names).
FIELDS = (
    "id",
    "ts",
    "client_ip",
    "method",
    "host",
    "path",
    "status",
    "route",
    "group",
    "target",
    "upstream",
    "duration_ms",
    "upstream_ms",
    "bytes_in",
    "bytes_out",
    "decisions",
    "error",
    "trace_id",
    "user_agent",
    "generation",
    "request_headers",
    "response_headers",
)

#: What a redacted header value becomes.
REDACTED = "[redacted]"

#: A record: plain JSON-compatible values keyed by :data:`FIELDS`.
Record = dict[str, Any]


@attrs.frozen
class RecordOptions:
    """What a record includes (from the config, fixed per plugin instance)."""

    query: bool = True
    decisions: bool = True
    headers: bool = False
    #: Lower-case names whose values are replaced by :data:`REDACTED`.
    redact: frozenset[str] = frozenset()


# ``ts`` formatting: many flows end within the same second, so the
# ``YYYY-MM-DDTHH:MM:SS`` part is cached for the last second seen.
_last_second = -1
_last_prefix = ""


def iso_utc(epoch: float) -> str:
    """``1795341475.1094`` -> ``"2026-11-22T07:57:55.109Z"`` (UTC, milliseconds, truncated)."""
    global _last_second, _last_prefix
    second = int(epoch)
    ms = int((epoch - second) * 1000)
    if second != _last_second:
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = second
    return f"{_last_prefix}.{ms:03d}Z"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _headers(headers: sdk.Headers, redact: frozenset[str]) -> list[list[str]]:
    return [[n, REDACTED if n.lower() in redact else v] for n, v in headers.items()]


def build_record(flow: sdk.Flow, options: RecordOptions) -> Record:
    """The record of a finished flow (reads the flow, never changes it)."""
    request = flow.request
    timings = flow.timings
    response = flow.response
    target = flow.target
    upstream = flow.upstream
    done = timings.done
    connected = timings.upstream_connected
    head = timings.response_head
    trace = flow.stash.get(sdk.TRACE, None)
    path = request.path
    if not options.query:
        path = path.partition("?")[0]
    record: Record = {
        "id": flow.id,
        "ts": iso_utc(timings.started_at),
        "client_ip": flow.client.address,
        "method": request.method,
        "host": request.authority,
        "path": path,
        "status": response.status_code if response is not None else None,
        "route": flow.route,
        "group": flow.group or None,
        "target": target.name if target is not None else None,
        "upstream": str(upstream) if upstream is not None else None,
        "duration_ms": _ms(done - timings.request_head) if done is not None else None,
        "upstream_ms": (
            _ms(head - connected)
            if head is not None and connected is not None and head >= connected
            else None
        ),
        "bytes_in": flow.bytes_in,
        "bytes_out": flow.bytes_out,
        "decisions": list(flow.decisions) if options.decisions else [],
        "error": str(flow.error) if flow.error is not None else None,
        "trace_id": trace.trace_id if trace is not None else None,
        "user_agent": request.headers.get(b"user-agent"),
        "generation": flow.generation,
    }
    if options.headers:
        record["request_headers"] = _headers(request.headers, options.redact)
        record["response_headers"] = (
            _headers(response.headers, options.redact) if response is not None else []
        )
    return record


def json_line(record: Record) -> bytes:
    """One record as a JSON line (UTF-8, compact, ``\\n``-terminated).

    orjson: about 0.6 µs a record where the standard library's encoder takes
    8, and this runs on the event loop for every flow.
    """
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
