"""Flows relayed to HTTP/2 upstreams (kernel/io/h2relay.py), through the real proxy.

The client speaks HTTP/1.1 to the proxy; the origin is
:class:`tests.helpers.h2origin.H2Origin`, which only speaks HTTP/2 (h2c with
prior knowledge, or TLS with ALPN ``h2``) and records what it saw.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from typing import Any

import h11
import pytest
import trio

import sdk
from tests.helpers.h2origin import CANCEL, H2Origin, pattern, proxy_config, server_context

GET = b"GET %s HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"


async def h2c_proxy(
    nursery: trio.Nursery, start_proxy: Any, transport: str = ""
) -> tuple[Any, Any]:
    origin = await nursery.start(H2Origin().serve)
    cfg = proxy_config(
        f"http://127.0.0.1:{origin.port}", transport="force_http2 = true\n" + transport
    )
    return origin, await start_proxy(cfg)


def parse_one(raw: bytes, method: bytes = b"GET") -> dict[str, Any]:
    """The single response in ``raw``, with its trailers (which parse_responses drops)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    out: dict[str, Any] = {"body": b""}
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            out["status"] = event.status_code
            out["headers"] = {n.decode(): v.decode() for n, v in event.headers}
        elif isinstance(event, h11.Data):
            out["body"] += event.data
        elif isinstance(event, h11.EndOfMessage):
            out["trailers"] = {n.decode(): v.decode() for n, v in event.headers}
            return out
        else:
            raise AssertionError(f"incomplete response: {event!r} in {raw[:300]!r}")


async def test_force_http2_reaches_an_h2c_origin(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin, app = await h2c_proxy(nursery, start_proxy)
    resp = parse_one(await client.exchange(app.port(), GET % b"/echo?x=1"))
    assert resp["status"] == 200
    seen = json.loads(resp["body"])
    # The origin got an HTTP/2 request: pseudo-headers from the HTTP/1.1 head,
    # :authority from Host, the forwarding fields, and no Host or Connection.
    assert (seen["method"], seen["path"], seen["scheme"]) == ("GET", "/echo?x=1", "http")
    assert seen["authority"] == "example.test"
    names = [n for n, _ in seen["headers"]]
    assert "host" not in names
    assert "connection" not in names
    assert "via" in names
    assert origin.connections == 1
    assert origin.streams == 1


async def test_http2_by_alpn_to_a_tls_origin(
    nursery: trio.Nursery, start_proxy: Any, client: Any, cert_factory: Any, tls_ca: Any
) -> None:
    leaf = tls_ca.issue_cert("127.0.0.1")
    origin = await nursery.start(H2Origin(tls=server_context(leaf, alpn=["h2"])).serve)
    cfg = proxy_config(
        f"https://127.0.0.1:{origin.port}",
        transport="http2 = true",
        tls=f'ca_file = "{cert_factory.ca_file}"',
    )
    app = await start_proxy(cfg)
    for _ in range(3):
        resp = parse_one(await client.exchange(app.port(), GET % b"/echo"))
        assert resp["status"] == 200
        assert json.loads(resp["body"])["scheme"] == "https"
    assert origin.alpn == ["h2"]  # one TLS connection, which picked h2
    assert origin.streams == 3


async def test_five_megabytes_each_way_under_flow_control(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    """Both windows are small (64 KiB per stream at the origin and the proxy):
    the body crosses only if WINDOW_UPDATEs flow both ways."""
    origin, app = await h2c_proxy(nursery, start_proxy)
    size = 5 * 1024 * 1024
    body = os.urandom(size)
    head = f"POST /bytes/{size} HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n"
    raw = await client.exchange(
        app.port(), head.encode() + b"Connection: close\r\n\r\n" + body, timeout=10
    )
    resp = parse_one(raw, b"POST")
    assert resp["status"] == 200
    assert resp["headers"]["x-request-length"] == str(size)
    assert resp["headers"]["x-request-sha256"] == hashlib.sha256(body).hexdigest()
    assert len(resp["body"]) == size
    assert hashlib.sha256(resp["body"]).digest() == hashlib.sha256(pattern(size)).digest()
    assert origin.streams == 1


async def test_request_and_response_trailers_cross(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    _, app = await h2c_proxy(nursery, start_proxy)
    raw = await client.exchange(
        app.port(),
        b"POST /echo?trailers=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"TE: trailers\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-client-trailer: from-client\r\n\r\n",
    )
    resp = parse_one(raw, b"POST")
    assert resp["status"] == 200
    seen = json.loads(resp["body"])
    assert seen["body_length"] == 11
    assert seen["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert seen["trailers"] == [["x-client-trailer", "from-client"]]
    assert resp["trailers"]["x-origin-trailer"] == "done"
    assert resp["trailers"]["x-body-sha256"] == hashlib.sha256(resp["body"]).hexdigest()


async def test_slow_origin_is_504_and_its_stream_is_reset(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin, app = await h2c_proxy(nursery, start_proxy, "response_timeout_s = 0.3")
    start = trio.current_time()
    resp = parse_one(await client.exchange(app.port(), GET % b"/sleep/5"))
    assert resp["status"] == 504
    assert trio.current_time() - start < 2
    await origin.wait_for(lambda: bool(origin.resets))
    assert origin.resets == [(1, CANCEL)]
    # The connection itself is fine: the next flow uses it.
    resp = parse_one(await client.exchange(app.port(), GET % b"/echo"))
    assert resp["status"] == 200
    assert origin.connections == 1


async def test_client_leaving_mid_response_cancels_the_upstream_stream(
    nursery: trio.Nursery, start_proxy: Any
) -> None:
    origin, app = await h2c_proxy(nursery, start_proxy)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", app.port())
        await stream.send_all(b"GET /drip/200 HTTP/1.1\r\nHost: a\r\n\r\n")
        got = b""
        while len(got) < 40000:
            got += await stream.receive_some(65536)
        assert got.startswith(b"HTTP/1.1 200 ")
        await stream.aclose()
        await origin.wait_for(lambda: bool(origin.resets))
        await origin.wait_for(lambda: origin.open_streams == 0)  # the drip stopped
    assert origin.resets == [(1, CANCEL)]


async def test_post_with_content_length_keeps_it(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    _, app = await h2c_proxy(nursery, start_proxy)
    resp = parse_one(
        await client.exchange(
            app.port(),
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        ),
        b"POST",
    )
    assert resp["status"] == 200
    seen = json.loads(resp["body"])
    assert seen["body_length"] == 3
    assert ["content-length", "3"] in seen["headers"]
    assert "transfer-encoding" not in [n for n, _ in seen["headers"]]


async def test_a_slow_client_gets_the_whole_body(nursery: trio.Nursery, start_proxy: Any) -> None:
    """Response DATA is acknowledged to the origin only as the client takes it:
    those WINDOW_UPDATEs must go out even when nothing else is sent or received
    on the connection (the origin waits for them)."""
    _, app = await h2c_proxy(nursery, start_proxy)
    size = 1024 * 1024
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", app.port()))
    stream = trio.SocketStream(sock)
    got = bytearray()
    with trio.fail_after(5):
        async with stream:
            await stream.send_all(
                f"GET /bytes/{size} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
            )
            while chunk := await stream.receive_some(8192):
                got += chunk
                await trio.sleep(0.001)
    resp = parse_one(bytes(got))
    assert resp["status"] == 200
    assert resp["body"] == pattern(size)


async def test_an_h2_origin_s_early_hints_reach_the_client(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    """They used to be dropped: RFC 9110 §15.2 has a proxy pass 1xx on, as
    it does from HTTP/1.1 upstreams - ten at most, Via naming HTTP/2."""
    origin, app = await h2c_proxy(nursery, start_proxy)
    raw = await client.exchange(app.port(), GET % b"/hints/12")
    heads = [block.split(b"\r\n") for block in raw.split(b"\r\n\r\n")[:-1]]
    early = [h for h in heads if h[0].startswith(b"HTTP/1.1 103 ")]
    assert len(early) == 10  # the other two are dropped
    for i, head in enumerate(early):
        fields = dict(line.lower().split(b": ", 1) for line in head[1:])
        assert fields[b"link"] == b"</style%d.css>; rel=preload" % i
        assert fields[b"via"] == b"2 trellis"
    final = heads[len(early)]
    assert final[0].startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"ok")
    assert origin.streams == 1


@pytest.mark.parametrize("reset", [True, False], ids=["reset-no-error", "ended-only"])
async def test_an_h2_origin_s_early_answer_is_relayed_and_the_rest_not_sent(
    nursery: trio.Nursery, start_proxy: Any, reset: bool
) -> None:
    """RFC 9113 §8.1: an origin may answer in full before it read the body,
    then reset the stream with NO_ERROR (or just end its side and never
    open the window again). The answer reaches the client: it used to be a
    502 (the reset failed the upload) or a 504 after send_timeout_s (the
    upload waited for a window that never opened)."""
    origin = await nursery.start(H2Origin(hold_window=True).serve)
    cfg = proxy_config(
        f"http://127.0.0.1:{origin.port}", transport="force_http2 = true\nsend_timeout_s = 3\n"
    )
    app = await start_proxy(cfg)
    body = b"x" * (1 << 20)  # far past the 64 KiB window the origin never reopens
    target = b"/early/413" + (b"?reset=1" if reset else b"")
    head = b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (target, len(body))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    got = b""
    async with stream:
        await stream.send_all(head)

        async def upload() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(body)

        start = trio.current_time()
        async with trio.open_nursery() as inner:
            inner.start_soon(upload)
            with trio.fail_after(2.5):  # well under send_timeout_s
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    got += data
            inner.cancel_scope.cancel()
    assert got.startswith(b"HTTP/1.1 413 "), got[:200]
    assert got.endswith(b"\r\n\r\nno")
    assert b"connection: close" in got.lower()  # its body was not all read
    assert trio.current_time() - start < 2.5
    # Our side of the stream is cancelled, not left open upstream.
    if not reset:
        await origin.wait_for(lambda: bool(origin.resets), timeout=2)
        assert [code for _, code in origin.resets] == [CANCEL]


class SpoilsMarked:
    """Puts a space in the path of requests marked ``x-spoil``."""

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        if "x-spoil" in flow.request.headers:
            flow.request.path = "/a b"


async def test_a_request_the_hooks_made_unsendable_never_reaches_an_h2_origin(
    nursery: trio.Nursery, start_proxy: Any, client: Any, caplog: Any
) -> None:
    """Refused before a frame of it was queued: a 500 naming the plugin, and
    the connection to the origin serves the next request."""
    origin = await nursery.start(H2Origin().serve)
    cfg = proxy_config(f"http://127.0.0.1:{origin.port}", transport="force_http2 = true")
    cfg = cfg.replace("[kernel]\n", '[kernel]\nplugins = ["spoil"]\n', 1)
    app = await start_proxy(cfg, extra_plugins={"spoil": SpoilsMarked()})
    assert parse_one(await client.exchange(app.port(), GET % b"/echo"))["status"] == 200
    with caplog.at_level(logging.WARNING, logger="kernel.exchange"):
        raw = await client.exchange(
            app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Spoil: 1\r\nConnection: close\r\n\r\n"
        )
    assert parse_one(raw)["status"] == 500
    assert "after the request hooks of 'spoil', the request cannot be sent: " in caplog.text
    assert parse_one(await client.exchange(app.port(), GET % b"/echo"))["status"] == 200
    assert origin.streams == 2
    assert [r["path"] for r in origin.requests] == ["/echo", "/echo"]
    assert origin.connections == 1
