"""Request hardening end to end (RFC 9110/9112), for both HTTP/1.1 codecs.

Every test sends raw bytes through the real proxy with a real upstream
behind it (tests/helpers/upstream.py) and checks three things: the exact
status the client gets, that the proxy closed the connection afterwards
(framing in doubt: never guess where the next request starts), and what the
upstream saw - nothing at all for a request refused at its head, and never
the request smuggled behind it.

Refusals of a *head* happen before the proxy connects upstream. A broken
*body* (bad chunk line, body over the limit, stalled body) is only found
while it streams, after the head went upstream: there the upstream sees an
incomplete request that is cut off, never a complete one, and never what
follows it.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import sdk
from kernel.io import sockio
from kernel.io.connection import Http1Connection
from kernel.protocol.errorpage import error_body
from kernel.protocol.events import Data, RequestHead
from plugins.builtin.metrics import reset_store
from plugins.builtin.metrics.plugin import method_label
from tests.conftest import basic_config
from tests.helpers.downstream import connection_on
from tests.helpers.probe import Probe
from tests.helpers.yields import Yields, counting_yields
from tests.plugins.builtin.metrics.support import scrape, value
from tests.plugins.builtin.trafficlog.support import read_lines, wait_for

#: Pipelined behind every refused request: it must never reach the upstream.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


# -- helpers -----------------------------------------------------------------
async def talk(port: int, data: bytes, *, wait: float = 2.0) -> tuple[bytes, bool]:
    """Send ``data`` (no half-close), read until the proxy closes or ``wait`` passes.

    Returns what came back and whether the proxy closed the connection.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    chunks: list[bytes] = []
    closed = False
    async with stream:
        try:
            if data:
                await stream.send_all(data)
            with trio.move_on_after(wait):
                while chunk := await stream.receive_some(65536):
                    chunks.append(chunk)
                closed = True
        except trio.BrokenResourceError:
            closed = True  # reset by the proxy: closed too
    return b"".join(chunks), closed


def config(upstream: Any, codec: str, server: str = "", extra: str = "") -> str:
    """:func:`basic_config` with extra ``[server]`` lines."""
    cfg = basic_config(upstream.port, extra, http1=codec)
    return cfg.replace("[server]\n", "[server]\n" + server + "\n", 1)


def statuses(client: Any, raw: bytes) -> list[int]:
    return [r["status"] for r in client.parse_responses(raw)]


async def refused(app: Any, client: Any, data: bytes, *, follow: bytes = SMUGGLED) -> int:
    """Send a bad request with ``follow`` pipelined behind it: the status of the
    one response, after checking that it says close and the proxy closed."""
    raw, closed = await talk(app.port(), data + follow)
    assert closed, f"connection left open after {raw[:60]!r}"
    responses = client.parse_responses(raw)
    assert len(responses) == 1, raw
    assert responses[0]["headers"].get("connection") == "close"
    return int(responses[0]["status"])


def targets(upstream: Any) -> list[str]:
    return [r["target"] for r in upstream.requests]


def assert_untouched(upstream: Any) -> None:
    """The upstream saw nothing at all: not even a connection."""
    assert upstream.requests == []
    assert upstream.connections == 0


def assert_cut_off(upstream: Any) -> None:
    """The upstream saw at most the refused request's head, never a whole request,
    and never the one pipelined behind it."""
    assert "/smuggled" not in targets(upstream)
    assert len(upstream.requests) <= 1
    assert all("body_length" not in r for r in upstream.requests), upstream.requests


def post(fields: bytes, body: bytes = b"", *, version: bytes = b"1.1") -> bytes:
    return b"POST /upload HTTP/" + version + b"\r\nHost: a\r\n" + fields + b"\r\n" + body


# -- one framing per message (RFC 9112 §6) ----------------------------------
FRAMING_400 = {
    "cl-then-te": post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    "te-then-cl": post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
    "cl-duplicate-equal": post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
    "cl-duplicate-different": post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
    "cl-list-in-one-field": post(b"Content-Length: 5,5\r\n", b"hello"),
    "cl-list-with-space": post(b"Content-Length: 5, 5\r\n", b"hello"),
    "cl-negative": post(b"Content-Length: -1\r\n"),
    "cl-plus-sign": post(b"Content-Length: +5\r\n", b"hello"),
    "cl-two-numbers": post(b"Content-Length: 5 5\r\n", b"hello"),
    "cl-hex": post(b"Content-Length: 0x10\r\n", b"x" * 16),
    "cl-underscore": post(b"Content-Length: 1_0\r\n", b"x" * 10),  # int() would take it
    "cl-empty": post(b"Content-Length: \r\n"),
    "cl-huge": post(b"Content-Length: 99999999999999999999\r\n"),
    "cl-unicode-digit": post(b"Content-Length: \xd9\xa5\r\n", b"hello"),
    "te-http10": post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", version=b"1.0"),
    "te-duplicate-fields": post(
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"
    ),
    "te-duplicate-obfuscated": post(
        b"Transfer-Encoding: chunked\r\nTransfer-encoding: x\r\n", b"0\r\n\r\n"
    ),
    "te-chunked-twice": post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
    "te-xchunked": post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    "te-chunked-vt": post(b"Transfer-Encoding: chunked\x0b\r\n", b"0\r\n\r\n"),
    "te-vt-chunked": post(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n"),
    "te-nbsp-chunked": post(b"Transfer-Encoding: \xa0chunked\r\n", b"0\r\n\r\n"),
    "te-identity": post(b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"),
    "te-chunked-then-identity": post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
    "te-chunked-with-parameter": post(b"Transfer-Encoding: chunked;q=1\r\n", b"0\r\n\r\n"),
    "te-quoted": post(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n"),
    "te-empty": post(b"Transfer-Encoding: \r\n", b"0\r\n\r\n"),
    "te-space-before-colon": post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
    "te-folded": post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    "te-leading-space-name": post(b"X: y\r\n Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
}


@pytest.mark.parametrize("data", FRAMING_400.values(), ids=FRAMING_400.keys())
async def test_ambiguous_framing_is_400(
    start_proxy: Any, upstream: Any, client: Any, codec: str, data: bytes
) -> None:
    app = await start_proxy(config(upstream, codec))
    assert await refused(app, client, data) == 400
    assert_untouched(upstream)


# RFC 9112 §6.1: a well-formed coding chain that ends in chunked, but with a
# coding we do not implement, is 501 (validate._chunked_request).
TE_501 = {
    "gzip-chunked": b"gzip, chunked",
    "deflate-chunked": b"deflate,chunked",
    "x-custom-chunked": b"x-custom;a=1, chunked",
}


@pytest.mark.parametrize("coding", TE_501.values(), ids=TE_501.keys())
async def test_unknown_transfer_coding_is_501(
    start_proxy: Any, upstream: Any, client: Any, codec: str, coding: bytes
) -> None:
    app = await start_proxy(config(upstream, codec))
    data = post(b"Transfer-Encoding: " + coding + b"\r\n", b"0\r\n\r\n")
    assert await refused(app, client, data) == 501
    assert_untouched(upstream)


@pytest.mark.parametrize(
    "coding", [b"  chunked", b"\tchunked\t", b"chunked  ", b"CHUNKED", b"Chunked"]
)
async def test_chunked_with_ows_or_case_is_accepted_and_reframed(
    start_proxy: Any, upstream: Any, client: Any, codec: str, coding: bytes
) -> None:
    """OWS around a field value and the coding's case are legal (RFC 9110 §5.5,
    §7.6.1 "case-insensitive"): the body is decoded as chunked, not smuggled."""
    app = await start_proxy(config(upstream, codec))
    data = post(
        b"Transfer-Encoding:" + coding + b"\r\n",
        b"5\r\nhello\r\n0\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    raw, closed = await talk(app.port(), data)
    assert closed
    first, second = client.parse_responses(raw, [b"POST", b"GET"])
    assert json.loads(first["body"])["body_length"] == 5
    assert json.loads(second["body"])["target"] == "/echo?n=2"
    assert targets(upstream) == ["/upload", "/echo?n=2"]


# -- field syntax (RFC 9112 §2.2, §5; RFC 9110 §5.5) ----------------------------
def get(fields: bytes, *, line: bytes = b"GET / HTTP/1.1\r\n") -> bytes:
    return line + fields + b"\r\n"


SYNTAX_400 = {
    "obs-fold-space": get(b"Host: a\r\nX-A: 1\r\n 2\r\n"),
    "obs-fold-tab": get(b"Host: a\r\nX-A: 1\r\n\t2\r\n"),
    "obs-fold-first-line": get(b" Host: a\r\n"),
    "bare-cr-in-value": get(b"Host: a\r\nX-A: 1\r2\r\n"),
    "bare-cr-line-end": get(b"Host: a\rX-A: 1\r\n"),
    "bare-lf-between-fields": get(b"Host: a\nX-A: 1\r\n"),
    "bare-lf-request-line": b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    "bare-lf-head-end": b"GET / HTTP/1.1\r\nHost: a\n\n",
    "bare-lf-everywhere": b"GET / HTTP/1.1\nHost: a\n\n",
    "nul-in-value": get(b"Host: a\r\nX-A: 1\x002\r\n"),
    "soh-in-value": get(b"Host: a\r\nX-A: \x01\r\n"),
    "esc-in-value": get(b"Host: a\r\nX-A: \x1b[31m\r\n"),
    "del-in-value": get(b"Host: a\r\nX-A: 1\x7f\r\n"),
    "vt-in-value": get(b"Host: a\r\nX-A: 1\x0b2\r\n"),
    "ff-in-value": get(b"Host: a\r\nX-A: 1\x0c2\r\n"),
    "nul-in-name": get(b"Host: a\r\nX\x00A: 1\r\n"),
    "paren-in-name": get(b"Host: a\r\nX(A): 1\r\n"),
    "space-in-name": get(b"Host: a\r\nX A: 1\r\n"),
    "slash-in-name": get(b"Host: a\r\nX/A: 1\r\n"),
    "non-ascii-name": get(b"Host: a\r\n\xc3\xa9: 1\r\n"),
    "empty-name": get(b"Host: a\r\n: 1\r\n"),
    "no-colon": get(b"Host: a\r\nNoColon\r\n"),
    "space-before-colon": get(b"Host : a\r\n"),
    "tab-before-colon": get(b"Host: a\r\nX-A\t: 1\r\n"),
    "target-with-del": b"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
    "target-relative": b"GET a HTTP/1.1\r\nHost: a\r\n\r\n",
    "target-asterisk-get": b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    "target-absolute-no-host": b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
    "target-other-scheme": b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "double-space": b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    "lowercase-version": b"GET / http/1.1\r\nHost: a\r\n\r\n",
    "http-0.9": b"GET /\r\n\r\n",
    "version-without-minor": b"GET / HTTP/2\r\nHost: a\r\n\r\n",
    "method-not-token": b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
    # garbage
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "nul-bytes": b"\x00" * 64,
    "words": b"hello there\r\n\r\n",
    "method-only": b"GET\r\n\r\n",
    "ssh-banner": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
}


@pytest.mark.parametrize("data", SYNTAX_400.values(), ids=SYNTAX_400.keys())
async def test_malformed_head_is_400(
    start_proxy: Any, upstream: Any, client: Any, codec: str, data: bytes
) -> None:
    app = await start_proxy(config(upstream, codec))
    assert await refused(app, client, data) == 400
    assert_untouched(upstream)


# -- Host (RFC 9112 §3.2) --------------------------------------------------------
HOST_400 = {
    "missing-in-1.1": get(b"X-A: 1\r\n"),
    "two-fields": get(b"Host: a\r\nHost: a\r\n"),
    "two-different": get(b"Host: a\r\nHost: b\r\n"),
    "space": get(b"Host: a b\r\n"),
    "slash": get(b"Host: a/b\r\n"),
    "userinfo": get(b"Host: user@a\r\n"),
    "empty-port": get(b"Host: a:\r\n"),
    "long-port": get(b"Host: a:123456\r\n"),
    "port-not-digits": get(b"Host: a:8x\r\n"),
    "bad-ipv6": get(b"Host: [zz::1]\r\n"),
    "unclosed-ipv6": get(b"Host: [::1\r\n"),
    "bad-percent": get(b"Host: a%zz\r\n"),
    "absolute-form-two-hosts": get(b"Host: a\r\nHost: b\r\n", line=b"GET http://a/ HTTP/1.1\r\n"),
}


@pytest.mark.parametrize("data", HOST_400.values(), ids=HOST_400.keys())
async def test_bad_host_is_400(
    start_proxy: Any, upstream: Any, client: Any, codec: str, data: bytes
) -> None:
    app = await start_proxy(config(upstream, codec))
    assert await refused(app, client, data) == 400
    assert_untouched(upstream)


async def test_http10_without_host_is_served(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec))
    raw, closed = await talk(app.port(), b"GET /echo HTTP/1.0\r\n\r\n")
    assert closed  # HTTP/1.0: never kept alive
    assert statuses(client, raw) == [200]
    assert targets(upstream) == ["/echo"]


# -- versions --------------------------------------------------------------------
VERSION_505 = {
    "http-2.0": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "http-1.2": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    "http-3.0": b"GET / HTTP/3.0\r\nHost: a\r\n\r\n",
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("data", VERSION_505.values(), ids=VERSION_505.keys())
async def test_unsupported_version_is_505(
    start_proxy: Any, upstream: Any, client: Any, codec: str, data: bytes
) -> None:
    # The HTTP/2 preface is only a bad HTTP/1.1 request line while HTTP/2 is
    # off: by default it starts h2c (test_h2_preface_starts_http2_by_default).
    server = "http2 = false" if data.startswith(b"PRI ") else ""
    app = await start_proxy(config(upstream, codec, server))
    assert await refused(app, client, data) == 505
    assert_untouched(upstream)


async def test_h2_preface_starts_http2_by_default(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    from tests.helpers.h2client import H2Client

    app = await start_proxy(config(upstream, codec))
    raw, closed = await talk(app.port(), VERSION_505["h2-preface"] + SMUGGLED)
    assert closed
    frames = []  # (type, flags) of each frame that came back
    pos = 0
    while pos + 9 <= len(raw):
        frames.append((raw[pos + 3], raw[pos + 4]))
        pos += 9 + int.from_bytes(raw[pos : pos + 3], "big")
    assert pos == len(raw), raw
    # Our SETTINGS first (RFC 9113 §3.4); the HTTP/1.1 request after the
    # preface is no frame: GOAWAY. Never an HTTP/1.1 answer.
    assert frames[0] == (0x4, 0x0)
    assert frames[-1][0] == 0x7
    assert_untouched(upstream)
    async with await H2Client.connect(app.port()) as h2:
        r = await h2.get(b"/echo")
    assert r.status == 200
    assert targets(upstream) == ["/echo"]


# -- size limits -------------------------------------------------------------------
LIMITS = "max_request_line = 100\nmax_header_bytes = 256\nmax_header_count = 5"


def line_of(length: int) -> bytes:
    """A request line of exactly ``length`` bytes (CRLF not counted)."""
    line = b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == length
    return line + b"\r\n"


@pytest.mark.parametrize("complete", [True, False], ids=["whole", "still-arriving"])
async def test_request_line_too_long_is_414(
    start_proxy: Any, upstream: Any, client: Any, codec: str, complete: bool
) -> None:
    app = await start_proxy(config(upstream, codec, LIMITS))
    data = line_of(101) + b"Host: a\r\n\r\n" if complete else line_of(200)[:150]
    assert await refused(app, client, data, follow=b"") == 414
    assert_untouched(upstream)


async def test_request_line_at_the_limit_is_served(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, LIMITS))
    raw, _ = await talk(app.port(), line_of(100) + b"Host: a\r\nConnection: close\r\n\r\n")
    assert statuses(client, raw) == [200]
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("complete", [True, False], ids=["whole", "still-arriving"])
async def test_header_block_too_large_is_431(
    start_proxy: Any, upstream: Any, client: Any, codec: str, complete: bool
) -> None:
    app = await start_proxy(config(upstream, codec, LIMITS))
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 300 + b"\r\n"
    if complete:
        data += b"\r\n"
    assert await refused(app, client, data, follow=b"") == 431
    assert_untouched(upstream)


@pytest.mark.parametrize("complete", [True, False], ids=["whole", "still-arriving"])
async def test_too_many_header_fields_is_431(
    start_proxy: Any, upstream: Any, client: Any, codec: str, complete: bool
) -> None:
    app = await start_proxy(config(upstream, codec, LIMITS))
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(5))
    if complete:
        data += b"\r\n"
    assert await refused(app, client, data, follow=b"") == 431
    assert_untouched(upstream)


async def test_header_count_at_the_limit_is_served(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, LIMITS))
    fields = b"Host: a\r\nConnection: close\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(3))
    raw, _ = await talk(app.port(), b"GET / HTTP/1.1\r\n" + fields + b"\r\n")
    assert statuses(client, raw) == [200]


async def test_content_length_over_server_limit_is_413_before_upstream(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, "max_body_bytes = 10"))
    assert await refused(app, client, post(b"Content-Length: 11\r\n", b"x" * 11)) == 413
    assert_untouched(upstream)


async def test_content_length_at_server_limit_is_served(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, "max_body_bytes = 10"))
    raw, _ = await talk(app.port(), post(b"Content-Length: 10\r\nConnection: close\r\n", b"x" * 10))
    (resp,) = client.parse_responses(raw, [b"POST"])
    assert resp["status"] == 200
    assert upstream.requests[0]["body_length"] == 10


async def test_content_length_over_route_limit_is_413_before_upstream(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, extra="max_body_bytes = 10"))
    assert await refused(app, client, post(b"Content-Length: 11\r\n", b"x" * 11)) == 413
    assert_untouched(upstream)


@pytest.mark.parametrize("where", ["server", "route"])
async def test_chunked_body_over_limit_is_413_and_cut_off(
    start_proxy: Any, upstream: Any, client: Any, codec: str, where: str
) -> None:
    """A chunked body's size is only known as it streams: the head has gone
    upstream by then. The client gets 413 and both connections are closed, so
    the upstream sees a request cut off mid-body (never a complete one).

    The server limit is enforced by the codec from the chunk-size lines (before
    the oversized chunk is read); the route limit by the exchange on the data.
    """
    limit = "max_body_bytes = 10"
    if where == "server":
        app = await start_proxy(config(upstream, codec, limit))
    else:
        app = await start_proxy(config(upstream, codec, extra=limit))
    body = b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
    assert await refused(app, client, post(b"Transfer-Encoding: chunked\r\n", body)) == 413
    assert_cut_off(upstream)


# -- chunked coding (RFC 9112 §7.1) -----------------------------------------------------
CHUNKS_400 = {
    "size-17-hex-digits": b"10000000000000000\r\n",
    "size-32-hex-digits": b"f" * 32 + b"\r\n",
    "size-not-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "size-0x-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "size-negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "size-leading-space": b" 5\r\nhello\r\n0\r\n\r\n",
    "size-trailing-space": b"5 \r\nhello\r\n0\r\n\r\n",
    "size-empty": b"\r\nhello\r\n0\r\n\r\n",
    "size-bare-lf": b"5\nhello\r\n0\r\n\r\n",
    "data-not-followed-by-crlf": b"5\r\nhelloXX\r\n0\r\n\r\n",
    "data-followed-by-bare-lf": b"5\r\nhello\n0\r\n\r\n",
    "bws-before-extension": b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
    # TERM.EXT / EXT.TERM smuggling: a bare LF inside a chunk extension.
    "bare-lf-in-extension": b"2;\nxx\r\n45\r\n0\r\n\r\n",
    "obs-fold-trailer": b"0\r\nX-T: 1\r\n 2\r\n\r\n",
    "bare-lf-trailer": b"0\r\nX-T: 1\n\r\n",
    # RFC 9110 §6.5.1: nothing that frames, routes or vouches for a request
    # may come in its trailers (an upstream that merged them would be fooled).
    "content-length-trailer": b"5\r\nhello\r\n0\r\nContent-Length: 100\r\n\r\n",
    "host-trailer": b"5\r\nhello\r\n0\r\nHost: evil\r\n\r\n",
    "proxy-authorization-trailer": b"5\r\nhello\r\n0\r\nProxy-Authorization: Basic eA==\r\n\r\n",
    "x-forwarded-for-trailer": b"5\r\nhello\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
}


@pytest.mark.parametrize("body", CHUNKS_400.values(), ids=CHUNKS_400.keys())
async def test_bad_chunked_body_is_400_and_cut_off(
    start_proxy: Any, upstream: Any, client: Any, codec: str, body: bytes
) -> None:
    app = await start_proxy(config(upstream, codec))
    data = post(b"Transfer-Encoding: chunked\r\n", body)
    assert await refused(app, client, data) == 400
    assert_cut_off(upstream)


# -- request smuggling classics (PortSwigger's CL.TE, TE.CL, TE.TE) -----------------------
SMUGGLING = {
    # We would take CL=49 and the upstream TE (or the reverse): refused either way.
    "cl.te": post(
        b"Content-Length: 49\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED + b"X: "
    ),
    "te.cl": post(
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
    ),
    "te.te-obfuscated-second": post(
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\nContent-Length: 4\r\n",
        b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
    ),
    "te.te-space-before-colon": post(
        b"Content-Length: 4\r\nTransfer-Encoding : chunked\r\n",
        b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
    ),
    "te.te-folded": post(
        b"Content-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n",
        b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
    ),
    "te.te-xchunked": post(
        b"Content-Length: 4\r\nTransfer-Encoding: xchunked\r\n",
        b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
    ),
    "cl.cl": post(b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(SMUGGLED), SMUGGLED),
    "cl-in-get-with-smuggled-body": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
    "http10-te": post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED, version=b"1.0"),
    "bare-lf-hides-te": b"POST /upload HTTP/1.1\r\nHost: a\r\nX: y\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "nul-hides-te": b"POST /upload HTTP/1.1\r\nHost: a\r\nX: y\x00\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("data", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_smuggling_never_reaches_upstream(
    start_proxy: Any, upstream: Any, client: Any, codec: str, data: bytes
) -> None:
    app = await start_proxy(config(upstream, codec))
    assert await refused(app, client, data) == 400
    assert_untouched(upstream)


async def test_chunk_extension_smuggling_is_cut_off(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """TERM.EXT (2023): a bare LF ends a chunk extension for some parsers only.

    Read as the attacker hopes, this body is one chunk of 0x45 bytes for one
    parser and ends at "0" for the other, with the smuggled request after it.
    """
    inner = b"0\r\n\r\n" + SMUGGLED
    body = b"2;\nxx\r\n%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n"
    data = post(b"Transfer-Encoding: chunked\r\n", body)
    app = await start_proxy(config(upstream, codec))
    assert await refused(app, client, data, follow=b"") == 400
    assert_cut_off(upstream)


# -- timeouts ------------------------------------------------------------------------
TIMEOUTS = "request_head_timeout_s = 0.3\nkeepalive_timeout_s = 0.3\nbody_timeout_s = 0.3"


async def test_stalled_head_gets_408_and_close(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, TIMEOUTS))
    start = time.monotonic()
    raw, closed = await talk(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\n")
    elapsed = time.monotonic() - start
    assert closed
    assert statuses(client, raw) == [408]
    assert 0.25 < elapsed < 1.0
    assert_untouched(upstream)


async def dribble(stream: trio.SocketStream) -> bytes:
    """Send a request head a byte every 50 ms until the proxy answers or
    closes; everything it sent back."""
    got = b""
    for byte in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: 1234567890":
        try:
            await stream.send_all(bytes([byte]))
        except trio.BrokenResourceError:
            break
        with trio.move_on_after(0.05):
            got += await stream.receive_some(65536)
        if got:
            break
    while chunk := await stream.receive_some(65536):
        got += chunk
    return got


async def test_dribbled_head_gets_408_on_the_whole_head_deadline(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """Slowloris: every byte resets no timer; the whole head must arrive in time."""
    app = await start_proxy(config(upstream, codec, TIMEOUTS))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    start = time.monotonic()
    async with stream:
        with trio.fail_after(1.0):
            got = await dribble(stream)
    assert 0.25 < time.monotonic() - start < 1.0
    assert statuses(client, got) == [408]
    assert_untouched(upstream)


async def test_the_head_deadline_counts_from_the_accept(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """A client silent at first, then dribbling: the wait for its first bytes
    (the h2c sniff) is part of the deadline, which the head then got again
    in full (408 after up to twice request_head_timeout_s)."""
    app = await start_proxy(config(upstream, codec, "request_head_timeout_s = 0.6"))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    start = time.monotonic()
    async with stream:
        await trio.sleep(0.45)
        with trio.fail_after(2.0):
            got = await dribble(stream)
    assert statuses(client, got) == [408]
    assert 0.5 < time.monotonic() - start < 0.85


async def test_silent_client_is_closed_without_response(
    start_proxy: Any, upstream: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, TIMEOUTS))
    start = time.monotonic()
    raw, closed = await talk(app.port(), b"")
    assert closed
    assert raw == b""
    assert 0.25 < time.monotonic() - start < 1.0
    assert_untouched(upstream)


async def test_idle_keepalive_connection_is_closed_silently(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, TIMEOUTS))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        await stream.send_all(b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n")
        got = b""
        with trio.fail_after(1.0):
            while not got.endswith(b"bbb"):
                got += await stream.receive_some(65536)
        answered = time.monotonic()
        with trio.fail_after(1.0):
            rest = await stream.receive_some(65536)
        idle = time.monotonic() - answered
    assert statuses(client, got) == [200]
    assert rest == b""  # closed with no 408: nothing was asked
    assert 0.25 < idle < 1.0


async def test_keepalive_request_head_stalling_gets_408(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """The head deadline of a keep-alive request runs from its first byte, then
    408 - also when that byte came pipelined with the previous request (the
    connection must not wait for it as if idle)."""
    app = await start_proxy(config(upstream, codec, TIMEOUTS))
    start = time.monotonic()
    raw, closed = await talk(
        app.port(), b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\nGET /smuggled HTTP/1.1\r\n"
    )
    assert closed
    assert statuses(client, raw) == [200, 408]
    assert 0.25 < time.monotonic() - start < 1.0
    assert targets(upstream) == ["/bytes/3"]


async def test_empty_line_after_a_body_is_not_a_request(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """RFC 9112 §2.2: the CRLF some clients send after a POST body is ignored;
    the connection is idle after it (closed silently, no 408)."""
    app = await start_proxy(config(upstream, codec, TIMEOUTS))
    raw, closed = await talk(app.port(), post(b"Content-Length: 5\r\n", b"hello\r\n"))
    assert closed
    assert statuses(client, raw) == [200]
    assert upstream.requests[0]["body_length"] == 5


async def test_keepalive_second_head_sent_late_gets_408(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """The second request's first bytes arrive on an idle connection, then stall."""
    app = await start_proxy(config(upstream, codec, TIMEOUTS))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    got = b""
    async with stream:
        await stream.send_all(b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n")
        with trio.fail_after(1.0):
            while not got.endswith(b"bbb"):
                got += await stream.receive_some(65536)
        await trio.sleep(0.1)  # idle, but well within keepalive_timeout_s
        await stream.send_all(b"GET /smuggled HTTP/1.1\r\nHost")
        with trio.fail_after(1.0):
            while chunk := await stream.receive_some(65536):
                got += chunk
    assert statuses(client, got) == [200, 408]
    assert targets(upstream) == ["/bytes/3"]


async def test_stalled_body_gets_408_and_is_cut_off(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, TIMEOUTS))
    start = time.monotonic()
    raw, closed = await talk(app.port(), post(b"Content-Length: 10\r\n", b"abc"))
    assert closed
    assert statuses(client, raw) == [408]
    assert 0.25 < time.monotonic() - start < 1.0
    assert_cut_off(upstream)


async def test_stalled_chunked_body_gets_408(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, TIMEOUTS))
    raw, closed = await talk(app.port(), post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhel"))
    assert closed
    assert statuses(client, raw) == [408]
    assert_cut_off(upstream)


# -- what must not be forwarded (RFC 9110 §7.6, §11.7.2) ------------------------------------
# test_exchange.py covers one Proxy-Authorization, one Connection list and Via
# on both sides; these are the harder variants.


async def echo_fields(app: Any, client: Any, head: bytes, body: bytes = b"") -> dict[str, Any]:
    raw, _ = await talk(app.port(), head + b"\r\n" + body, wait=1.0)
    (resp,) = client.parse_responses(raw, [b"POST" if body else b"GET"])
    assert resp["status"] == 200, resp
    seen = json.loads(resp["body"])
    seen["response_headers"] = resp["headers"]
    return seen


ABSOLUTE_FORM = {
    # request line -> (target the upstream gets, its Host)
    "path-and-query": (b"GET http://other.test/p?q=1", "/p?q=1", "other.test"),
    "query-no-path": (b"GET http://other.test?q=1", "/?q=1", "other.test"),
    "slash-in-query": (b"GET http://a?x=/y", "/?x=/y", "a"),
    "no-path": (b"GET http://a:8080", "/", "a:8080"),
    "options-server": (b"OPTIONS http://a:8080", "*", "a:8080"),
    "https-scheme": (b"GET HTTPS://a/p", "/p", "a"),
}


@pytest.mark.parametrize(("line", "target", "host"), ABSOLUTE_FORM.values(), ids=ABSOLUTE_FORM)
async def test_absolute_form_target(
    start_proxy: Any, upstream: Any, client: Any, codec: str, line: bytes, target: str, host: str
) -> None:
    """RFC 9112 §3.2.2: the target's authority replaces Host; the rest is origin-form.

    The scheme it names does not change what the upstream is told about the
    client's connection (plain here).
    """
    app = await start_proxy(config(upstream, codec))
    raw, _ = await talk(
        app.port(), line + b" HTTP/1.1\r\nHost: ignored\r\nConnection: close\r\n\r\n", wait=1.0
    )
    assert statuses(client, raw) == [200]
    (seen,) = upstream.requests
    headers = dict(seen["headers"])
    assert seen["target"] == target
    assert headers["host"] == host
    assert headers["x-forwarded-host"] == host
    assert headers["x-forwarded-proto"] == "http"
    assert "proto=http;" in headers["forwarded"] or headers["forwarded"].endswith("proto=http")


async def test_proxy_authorization_never_forwarded(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec))
    seen = await echo_fields(
        app,
        client,
        b"GET /echo HTTP/1.1\r\nHost: a\r\nPROXY-AUTHORIZATION: Basic YTpi\r\n"
        b"proxy-authorization: Bearer t\r\nProxy-Authorization:\tx\r\n"
        b"Proxy-Authenticate: Basic\r\nConnection: close\r\n",
    )
    names = [n for n, _ in seen["headers"]]
    assert "proxy-authorization" not in names
    assert "proxy-authenticate" not in names


async def test_fields_named_in_connection_are_not_forwarded(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec))
    seen = await echo_fields(
        app,
        client,
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: X-A\r\nConnection: x-b, ,X-C ,close\r\n"
        b"X-A: 1\r\nX-B: 2\r\nx-c: 3\r\nX-D: 4\r\nUpgrade: h2c\r\nTE: trailers\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\n",
    )
    names = [n for n, _ in seen["headers"]]
    hops = "connection x-a x-b x-c upgrade te keep-alive proxy-connection trailer"
    for hop in hops.split():
        assert hop not in names, hop
    assert dict(seen["headers"])["x-d"] == "4"


async def test_connection_cannot_strip_framing_or_host(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """Naming Content-Length or Host in Connection must not unframe the request."""
    app = await start_proxy(config(upstream, codec))
    seen = await echo_fields(
        app,
        client,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: content-length, host, close\r\n"
        b"Content-Length: 5\r\n",
        b"hello",
    )
    headers = dict(seen["headers"])
    assert seen["body_length"] == 5
    assert headers["host"] == "a"
    assert targets(upstream) == ["/echo"]


async def test_via_chain_is_joined_and_extended(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec))
    seen = await echo_fields(
        app,
        client,
        b"GET /echo HTTP/1.1\r\nHost: a\r\nVia: 1.0 a\r\nVia: 1.1 b (x)\r\nConnection: close\r\n",
    )
    assert [v for n, v in seen["headers"] if n == "via"] == ["1.0 a, 1.1 b (x), 1.1 trellis"]
    assert seen["response_headers"]["via"] == "1.1 trellis"


async def test_via_can_be_turned_off(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream, codec, 'via = ""'))
    seen = await echo_fields(
        app, client, b"GET /echo HTTP/1.1\r\nHost: a\r\nVia: 1.0 a\r\nConnection: close\r\n"
    )
    assert [v for n, v in seen["headers"] if n == "via"] == ["1.0 a"]
    assert "via" not in seen["response_headers"]


# -- answering before the body was read --------------------------------------------------
# The router runs in the global chain (route selection happens before any
# route's own chain); /local goes to a route that answers with respond.
LOCAL = """
[[routes]]
name = "local"
plugins = ["respond"]

[plugins.respond]
body = "local"

[[plugins.router.rules]]
route = "local"
path_prefix = "/local"
"""


def local_config(upstream: Any, codec: str, server: str = "") -> str:
    cfg = config(upstream, codec, server) + LOCAL
    return cfg.replace("[kernel]\n", '[kernel]\nplugins = ["router"]\n', 1)


FOLLOW = b"GET /echo?n=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


def check_follow_up(client: Any, upstream: Any, raw: bytes, first: bytes = b"POST") -> None:
    """Either the follow-up got its own answer, or the connection ended after
    the local one; the body's bytes were never taken for a request."""
    responses = client.parse_responses(raw, [first, b"GET"])
    assert responses, raw
    assert responses[0]["status"] == 200
    assert responses[0]["body"] == b"local"
    if len(responses) == 2:
        assert json.loads(responses[1]["body"])["target"] == "/echo?n=2"
        assert targets(upstream) == ["/echo?n=2"]
    else:
        assert len(responses) == 1
        assert upstream.requests == []


LOCAL_BODIES = {
    "content-length": b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
    "chunked": b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SMUGGLED)
    + SMUGGLED
    + b"\r\n0\r\n\r\n",
    "chunked-with-trailers": b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SMUGGLED)
    + SMUGGLED
    + b"\r\n0\r\nX-T: 1\r\n\r\n",
}


@pytest.mark.parametrize("body", LOCAL_BODIES.values(), ids=LOCAL_BODIES.keys())
async def test_local_answer_with_unread_body_keeps_the_connection_in_sync(
    start_proxy: Any, upstream: Any, client: Any, codec: str, body: bytes
) -> None:
    app = await start_proxy(local_config(upstream, codec))
    raw, closed = await talk(app.port(), b"POST /local HTTP/1.1\r\nHost: a\r\n" + body + FOLLOW)
    assert closed
    check_follow_up(client, upstream, raw)
    # A small body is read and dropped, so the follow-up is served.
    assert len(client.parse_responses(raw, [b"POST", b"GET"])) == 2


async def test_local_answer_to_get_with_body(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(local_config(upstream, codec))
    data = b"GET /local HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
    raw, closed = await talk(app.port(), data + SMUGGLED + FOLLOW)
    assert closed
    check_follow_up(client, upstream, raw, b"GET")


async def test_local_answer_ignoring_100_continue_closes(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """The client waits for 100 Continue that never comes; if it sends the body
    anyway (as clients do after a while), those bytes are not read as requests."""
    app = await start_proxy(local_config(upstream, codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    got = b""
    async with stream:
        await stream.send_all(
            b"POST /local HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)
        )
        with trio.fail_after(1.0):
            while b"local" not in got:
                got += await stream.receive_some(65536)
        try:
            await stream.send_all(SMUGGLED + FOLLOW)
        except trio.BrokenResourceError:
            pass
        with trio.fail_after(1.0):
            try:
                while chunk := await stream.receive_some(65536):
                    got += chunk
            except trio.BrokenResourceError:
                pass
    (resp,) = client.parse_responses(got, [b"POST"])
    assert resp["headers"]["connection"] == "close"
    assert upstream.requests == []


async def test_local_answer_with_huge_body_closes(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """More than the discard budget (256 KiB): answer, then close."""
    app = await start_proxy(local_config(upstream, codec))
    size = 1024 * 1024
    filler = (SMUGGLED * (size // len(SMUGGLED) + 1))[:size]
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    got = b""

    async def send() -> None:
        try:
            await stream.send_all(
                b"POST /local HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size
                + filler
                + FOLLOW
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with stream:
        with trio.fail_after(2.0):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                try:
                    while chunk := await stream.receive_some(65536):
                        got += chunk
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()
    # The answer may be lost to a reset (unread bytes on close); never a second one.
    responses = client.parse_responses(got, [b"POST"])
    assert len(responses) <= 1
    if responses:
        assert responses[0]["body"] == b"local"
        assert responses[0]["headers"]["connection"] == "close"
    assert upstream.requests == []


async def test_local_answer_with_stalled_body_closes(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(local_config(upstream, codec, TIMEOUTS))
    raw, closed = await talk(
        app.port(), b"POST /local HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nGET /"
    )
    assert closed
    (resp,) = client.parse_responses(raw, [b"POST"])
    assert resp["body"] == b"local"
    assert resp["headers"]["connection"] == "close"
    assert upstream.requests == []


async def test_local_answer_with_bad_chunked_body_is_400(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(local_config(upstream, codec))
    data = b"POST /local HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    assert await refused(app, client, data) == 400
    assert_untouched(upstream)


async def test_refusal_with_unread_body_lingers_instead_of_resetting(
    start_proxy: Any, upstream: Any, codec: str
) -> None:
    """RFC 9112 §9.6: the 413 must reach a client that is still sending.

    Closing with unread input makes Linux send a reset at once, so without a
    lingering close this client's reads fail with ECONNRESET.
    """
    cfg = basic_config(upstream.port, http1=codec).replace(
        "[server]\n", "[server]\nmax_body_bytes = 1000\n"
    )
    app = await start_proxy(cfg)
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        await stream.send_all(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 200_000
        )
        got = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                got += chunk
        assert got.startswith(b"HTTP/1.1 413 ")
        await stream.send_all(b"x" * 65536)  # the proxy is still draining, not reset
    assert upstream.requests == []


async def test_a_kernel_bug_ends_that_connection_not_the_proxy(
    start_proxy: Any, upstream: Any, client: Any, monkeypatch: Any, caplog: Any
) -> None:
    from kernel.io import connection

    app = await start_proxy(basic_config(upstream.port))
    real = connection.run_exchange
    calls = {"n": 0}

    async def run_exchange(conn: Any, head: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated kernel bug")
        return await real(conn, head)

    monkeypatch.setattr(connection, "run_exchange", run_exchange)
    request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    assert client.parse_responses(await client.exchange(app.port(), request)) == []
    assert "simulated kernel bug" in caplog.text
    (resp,) = client.parse_responses(await client.exchange(app.port(), request))
    assert resp["status"] == 200


# -- yielding ------------------------------------------------------------------------


async def test_request_body_read_yields_per_chunk_even_when_bytes_are_waiting() -> None:
    """Socket reads that find bytes do not yield (kernel/io/sockio.py), so the body
    loop does, once per chunk: a long upload must not starve other connections."""
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        conn = connection_on(Http1Connection, ours)
        await theirs.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        await trio.lowlevel.wait_readable(ours)
        conn.codec.receive_data(await conn.receive())
        assert isinstance(conn.codec.next_event(), RequestHead)
        await theirs.send(b"y" * 2000)  # waiting in the socket before the body is read
        await trio.lowlevel.wait_readable(ours)
        event, count = await counting_yields(lambda: conn.next_body_event(5))
        assert isinstance(event, Data)
        assert event.data == b"y" * 2000
        assert count == 1  # one yield for the chunk, though the read did not wait


async def test_the_next_request_is_looked_for_after_a_yield(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between a response and the look for the next request, the connection
    yields: meanwhile the client (under load) has sent it, and it is read
    without a wait in epoll. Looking at once finds nothing almost every time."""
    seen: list[tuple[str, int]] = []
    counter: list[Yields] = []
    real_send, real_read_ready = sockio.SocketIO.send, sockio.SocketIO.read_ready

    async def send(io: sockio.SocketIO, data: bytes) -> None:
        seen.append(("response sent", counter[0].count))
        await real_send(io, data)

    def read_ready(io: sockio.SocketIO, max_bytes: int = 65536) -> bytes | None:
        seen.append(("looked", counter[0].count))
        return real_read_ready(io, max_bytes)

    monkeypatch.setattr(sockio.SocketIO, "send", send)
    monkeypatch.setattr(sockio.SocketIO, "read_ready", read_ready)
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        conn = connection_on(Http1Connection, ours)  # its upstream refuses: a 502

        async def serve() -> None:
            counter.append(Yields(trio.lowlevel.current_task()))
            trio.lowlevel.add_instrument(counter[0])
            try:
                await conn.serve()
            finally:
                trio.lowlevel.remove_instrument(counter[0])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await theirs.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await theirs.recv(65536)).startswith(b"HTTP/1.1 502 ")
            await trio.testing.wait_all_tasks_blocked()
            theirs.shutdown(socket.SHUT_WR)
    (sent, at_send), (looked, at_look) = seen[:2]
    assert (sent, looked) == ("response sent", "looked")
    assert at_look > at_send


async def test_a_client_that_stops_reading_is_let_go(
    start_proxy: Any, upstream: Any, codec: str
) -> None:
    """[server] send_timeout_s: before, a client that never read held its
    flow, its connection and an upstream connection for ever."""
    cfg = basic_config(upstream.port, http1=codec).replace(
        "[server]\n", "[server]\nsend_timeout_s = 0.5\n", 1
    )
    app = await start_proxy(cfg)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", app.port()))
    with sock:
        await sock.send(b"GET /bytes/200000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        with trio.fail_after(5):
            while app.state.active_flows == 0:
                await trio.sleep(0.01)
            while app.state.active_flows:  # ends ~0.5 s after the buffers filled
                await trio.sleep(0.05)


# -- a refused request is a flow: trellis_flow_done, the traffic log, metrics -------------------
#: name -> (bytes sent, status, then what the flow's request says: method, path, host).
REFUSED_FLOWS: dict[str, tuple[bytes, int, str, str, str]] = {
    "bad-field": (b"GET /bad HTTP/1.1\r\nHost: a\r\nBad Field: 1\r\n\r\n", 400, "GET", "/bad", ""),
    "not-http": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "", "", ""),
    "uri-too-long": (b"GET /" + b"u" * 300 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "GET", "", ""),
    "too-many-fields": (
        b"GET /many HTTP/1.1\r\nHost: a\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(12)),
        431,
        "GET",
        "/many",
        "",
    ),
    "field-block-too-large": (
        b"GET /large HTTP/1.1\r\nHost: a\r\nx-big: " + b"v" * 2000 + b"\r\n\r\n",
        431,
        "GET",
        "/large",
        "",
    ),
    "body-over-limit": (
        b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n",
        413,
        "POST",
        "/big",
        "a",
    ),
    "expect-foo": (b"GET /x HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n", 417, "GET", "/x", "a"),
    "unknown-coding": (
        b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
        "POST",
        "/te",
        "a",
    ),
    "version": (b"BREW /v HTTP/1.2\r\nHost: a\r\n\r\n", 505, "BREW", "", ""),
    # A stalled head: what arrived of it is told.
    "stalled-head": (b"DELETE /slow HTTP/1.1\r\nHost: a\r\n", 408, "DELETE", "/slow", ""),
}


def refusing_config(upstream: Any, codec: str, logs: Path) -> str:
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = ["probe", "metrics", "trafficlog"]

[server]
http1 = "{codec}"
max_request_line = 200
max_header_count = 10
max_header_bytes = 1024
max_body_bytes = 100
request_head_timeout_s = 0.3

[upstream]
http1 = "{codec}"

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[listeners]]
name = "metrics"
bind = "127.0.0.4:0"

[[routes]]
name = "default"
upstream = "http://127.0.0.1:{upstream.port}"

[plugins.trafficlog]
directory = "{logs}"
flush_interval_s = 0.01
exclude_listeners = ["metrics"]
"""


def flow_id_of(body: bytes) -> str:
    """The flow id on the kernel's error page (``flow: ID``)."""
    (line,) = [ln for ln in body.decode().splitlines() if ln.startswith("flow: ")]
    return line.removeprefix("flow: ")


async def test_a_refused_request_is_a_flow_that_only_flow_done_sees(
    start_proxy: Any, upstream: Any, client: Any, codec: str, tmp_path: Path
) -> None:
    """Every request the connection layer refused reaches trellis_flow_done
    exactly once, with its error, the page and what was parsed of it; so the
    traffic log and the metrics count it. Before, none of them saw it."""
    reset_store()
    probe = Probe()
    app = await start_proxy(
        refusing_config(upstream, codec, tmp_path / "logs"), extra_plugins={"probe": probe}
    )
    ids: dict[str, str] = {}
    for name, (data, status, *_) in REFUSED_FLOWS.items():
        raw, closed = await talk(app.port(), data)
        assert closed, name
        (resp,) = client.parse_responses(raw)
        assert resp["status"] == status, name
        ids[name] = flow_id_of(resp["body"])
    assert_untouched(upstream)

    by_id = {flow.id: flow for flow in probe.done}
    assert len(probe.done) == len(by_id) == len(REFUSED_FLOWS)  # each exactly once
    for name, (_, status, method, path, host) in REFUSED_FLOWS.items():
        flow = by_id[ids[name]]
        assert probe.hooks(flow) == ["trellis_flow_done"], name  # nothing else ran
        assert isinstance(flow.error, sdk.RemoteProtocolError), name
        assert flow.error.status_hint == status
        assert flow.response is not None
        assert flow.response.status_code == status
        assert flow.response.body == error_body(status, flow.id)
        assert flow.bytes_out == len(flow.response.body)
        assert (flow.route, flow.upstream, flow.target) == ("", None, None)
        request = flow.request
        assert (request.method, request.path, request.authority) == (method, path, host), name
        assert flow.client.listener == "main"
        assert flow.timings.done is not None

    plugin = app.generation.host.instances["trafficlog"]
    await wait_for(lambda: plugin.written.get("file", 0) >= len(REFUSED_FLOWS))
    records = read_lines(tmp_path / "logs")
    assert sorted(r["id"] for r in records) == sorted(ids.values())
    for name, (_, status, method, path, host) in REFUSED_FLOWS.items():
        (record,) = [r for r in records if r["id"] == ids[name]]
        assert (record["status"], record["method"], record["path"], record["host"]) == (
            status,
            method,
            path,
            host,
        ), name
        assert record["route"] == ""
        assert record["error"]

    samples = await scrape(("127.0.0.4", app.port("metrics")))
    want: dict[tuple[str, str], int] = {}
    for _, status, method, _, _ in REFUSED_FLOWS.values():
        key = (method_label(method), f"{status // 100}xx")
        want[key] = want.get(key, 0) + 1
    for (method, status_class), count in want.items():
        labels = {"route": "", "method": method, "status_class": status_class}
        assert value(samples, "trellis_requests_total", **labels) == count, labels
    reset_store()
