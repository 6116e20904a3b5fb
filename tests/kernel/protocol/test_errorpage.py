"""The kernel's own error responses."""

from __future__ import annotations

import email.utils

import h11

from kernel.protocol.errorpage import error_body, error_fields, reason_phrase, render_error_response


def test_rendered_response_is_valid_http_and_closes() -> None:
    raw = render_error_response(431, "abc-1")
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.receive_data(raw)
    resp = conn.next_event()
    assert isinstance(resp, h11.Response)
    assert resp.status_code == 431
    assert dict(resp.headers)[b"connection"] == b"close"
    assert email.utils.parsedate_to_datetime(dict(resp.headers)[b"date"].decode()).tzinfo
    data = conn.next_event()
    assert isinstance(data, h11.Data)
    assert data.data == b"431 Request Header Fields Too Large\nflow: abc-1\n"


def test_unknown_status_has_empty_phrase() -> None:
    assert reason_phrase(599) == ""
    assert error_body(599) == b"599 \n"


def test_error_fields_frame_the_body() -> None:
    body = error_body(502, "f-1")
    fields = error_fields(body)
    assert fields[:2] == [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    ((name, _),) = fields[2:]
    assert name == b"date"
