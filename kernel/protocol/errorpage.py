"""Plain-text error responses the kernel writes on its own.

Used when a request is refused before a codec can frame a response (a
malformed head) and for the default error page of a failed flow. The body
names the status and, when known, the flow id - never internal addresses or
exception texts, which go to the log instead. Each carries a ``Date``
(kernel/protocol/httpdate.py).

May import: stdlib, kernel.protocol.httpdate.
"""

from __future__ import annotations

from http import HTTPStatus

from kernel.protocol import httpdate

__all__ = ["error_body", "error_fields", "reason_phrase", "render_error_response"]


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def error_body(status: int, flow_id: str = "") -> bytes:
    text = f"{status} {reason_phrase(status)}\n"
    if flow_id:
        text += f"flow: {flow_id}\n"
    return text.encode("ascii")


def error_fields(body: bytes) -> list[tuple[bytes, bytes]]:
    """The fields of an error page with ``body`` (HTTP/2 frames it by them)."""
    return [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"date", httpdate.now()),
    ]


def render_error_response(status: int, flow_id: str = "") -> bytes:
    """A complete HTTP/1.1 response that also closes the connection."""
    body = error_body(status, flow_id)
    head = (
        f"HTTP/1.1 {status} {reason_phrase(status)}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n"
    )
    return head.encode("ascii") + b"date: " + httpdate.now() + b"\r\n\r\n" + body
