"""ResponseTemplate: pieces prepared once, a fresh Response (and Headers) per call."""

from __future__ import annotations

import sdk
from plugins.builtin.respond.config import RespondConfig
from plugins.builtin.respond.template import ResponseTemplate


def test_defaults() -> None:
    resp = ResponseTemplate.from_config(RespondConfig()).make()
    assert resp.status_code == 200
    assert resp.body == b""
    assert list(resp.headers.items()) == [("content-type", "text/plain; charset=utf-8")]


def test_configured_response() -> None:
    cfg = RespondConfig(
        status=302,
        body="moved: caf\xe9 \u2603\n",
        content_type="text/html",
        headers={"Location": "https://example.test/", "X-A": " 1 "},
    )
    resp = ResponseTemplate.from_config(cfg).make()
    assert resp.status_code == 302
    assert resp.body == "moved: caf\xe9 \u2603\n".encode()
    assert list(resp.headers.items()) == [
        ("location", "https://example.test/"),
        ("x-a", "1"),
        ("content-type", "text/html"),
    ]


def test_no_content_type_when_empty_or_bodiless() -> None:
    assert (
        "content-type"
        not in ResponseTemplate.from_config(RespondConfig(content_type="")).make().headers
    )
    assert (
        "content-type" not in ResponseTemplate.from_config(RespondConfig(status=204)).make().headers
    )


def test_each_response_has_its_own_headers() -> None:
    template = ResponseTemplate.from_config(RespondConfig(headers={"x": "1"}))
    first, second = template.make(), template.make()
    first.headers["x"] = "changed"
    first.headers.add("y", "2")
    assert second.headers == sdk.Headers(
        [("x", "1"), ("content-type", "text/plain; charset=utf-8")]
    )
    assert template.make().headers == second.headers
    assert first is not second
    assert first.headers.fields is not second.headers.fields
