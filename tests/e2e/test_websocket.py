"""WebSocket pass-through (kernel/io/relay.py ``_tunnel``, kernel/io/tunnel.py).

Real peers: a trio-websocket echo server behind the proxy and a
trio-websocket client in front of it, for both HTTP/1.1 codecs. The route
must allow the upgrade (``websocket = true``); its access plugins run first;
an upstream that does not switch leaves an ordinary HTTP exchange; a reload
in the middle of a conversation does not break it; an idle tunnel is closed.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

import sdk


class EchoServer:
    """A WebSocket echo server that counts the connections it accepted."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        #: Accepted connections that ended since.
        self.ended = 0
        self.paths: list[str] = []

    async def handler(self, request: WebSocketRequest) -> None:
        self.paths.append(request.path)
        ws = await request.accept()
        self.accepted += 1
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass
        finally:
            self.ended += 1

    async def serve(self, *, task_status: trio.TaskStatus[EchoServer]) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, self.handler, "127.0.0.1", 0, None)
            self.port = server.port
            task_status.started(self)


@pytest.fixture
async def echo(nursery: trio.Nursery) -> EchoServer:
    return await nursery.start(EchoServer().serve)


UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


async def raw_upgrade(port: int, extra: bytes = b"") -> tuple[trio.SocketStream, bytes]:
    """Send an upgrade request by hand; the stream and the response head.

    (trio-websocket's client leaves its socket open when a handshake fails or
    the connection ends abnormally, which the test run would report.)
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(UPGRADE + extra + b"\r\n")
    head = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(65536)
            assert data, head
            head += data
    return stream, head


def config(port: int, codec: str, *, websocket: bool = True, extra: str = "") -> str:
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 1
[server]
http1 = "{codec}"
[upstream]
http1 = "{codec}"
websocket_idle_timeout_s = 30
{extra}
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
[[routes]]
name = "ws"
upstream = "http://127.0.0.1:{port}"
websocket = {str(websocket).lower()}
"""


async def test_a_thousand_messages_echo_through_the_proxy(
    start_proxy: Any, echo: EchoServer, codec: str
) -> None:
    app = await start_proxy(config(echo.port, codec))
    with trio.fail_after(20):
        async with open_websocket_url(f"ws://127.0.0.1:{app.port()}/chat?x=1") as ws:
            for i in range(1000):
                message = f"message {i} " + "x" * (i % 300)
                await ws.send_message(message)
                assert await ws.get_message() == message
            await ws.send_message(b"\x00\xff binary")
            assert await ws.get_message() == b"\x00\xff binary"
    assert echo.accepted == 1
    assert echo.paths == ["/chat?x=1"]


async def test_a_reload_in_the_middle_does_not_break_it(
    start_proxy: Any, echo: EchoServer, tmp_path: Path
) -> None:
    app = await start_proxy(config(echo.port, "httptools"))
    with trio.fail_after(20):
        async with open_websocket_url(f"ws://127.0.0.1:{app.port()}/") as ws:
            for i in range(500):
                await ws.send_message(str(i))
                assert await ws.get_message() == str(i)
            # A new generation that no longer allows WebSocket at all.
            app.config_path.write_text(config(echo.port, "httptools", websocket=False))
            assert await app.reload("test")
            assert app.generation.number == 2
            for i in range(500, 1000):
                await ws.send_message(str(i))
                assert await ws.get_message() == str(i)
        # New upgrades follow the new generation: not switched now.
        stream, head = await raw_upgrade(app.port())
        async with stream:
            assert not head.startswith(b"HTTP/1.1 101")
    assert echo.accepted == 1


async def test_a_route_without_websocket_never_asks_the_upstream(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(config(upstream.port, codec, websocket=False))
    raw = await client.exchange(
        app.port(),
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Connection: close\r\n\r\n",
    )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 200
    seen = dict(upstream.requests[-1]["headers"])
    assert "upgrade" not in seen
    assert "upgrade" not in seen.get("connection", "")


async def test_an_upstream_that_does_not_switch_leaves_plain_http(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """The h11 test upstream ignores Upgrade and answers 200: no tunnel, keep-alive goes on."""
    app = await start_proxy(config(upstream.port, codec))
    upgrade = (
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    plain = b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    raw = await client.exchange(app.port(), upgrade + plain)
    first, second = client.parse_responses(raw)
    assert first["status"] == 200
    assert second["status"] == 200
    # The upstream was asked (the route allows it) and said no.
    asked = dict(upstream.requests[0]["headers"])
    assert asked["upgrade"] == "websocket"
    assert "upgrade" in asked["connection"].lower()


async def test_only_websocket_is_asked_of_the_upstream(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """Other protocols the client lists (h2c here) are never passed on."""
    app = await start_proxy(config(upstream.port, codec))
    raw = await client.exchange(
        app.port(),
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"\r\nGET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: close\r\n\r\n",
    )
    assert [r["status"] for r in client.parse_responses(raw)] == [200, 200]
    first, second = (dict(r["headers"]) for r in upstream.requests)
    assert first["upgrade"] == "websocket"
    assert "upgrade" not in second


async def test_an_upgrade_in_http_1_0_is_ignored(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """RFC 9110 §7.8: a server must ignore Upgrade in an HTTP/1.0 request."""
    app = await start_proxy(config(upstream.port, codec))
    raw = await client.exchange(
        app.port(),
        b"GET /echo HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 200
    seen = dict(upstream.requests[-1]["headers"])
    assert "upgrade" not in seen
    assert "upgrade" not in seen.get("connection", "").lower()


async def test_a_switch_to_another_protocol_is_refused(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    """An upstream answering 101 with Upgrade: h2c gets no tunnel: the client gets 502."""
    tunnelled: list[bytes] = []

    async def h2c_upstream(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            await stream.send_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
            )
            # Anything the proxy passed on after the 101 would arrive here.
            tunnelled.append(await stream.receive_some(65536))

    (listener,) = await nursery.start(
        functools.partial(trio.serve_tcp, h2c_upstream, 0, host="127.0.0.1")
    )
    app = await start_proxy(config(listener.socket.getsockname()[1], codec))
    stream, head = await raw_upgrade(app.port())
    async with stream:
        assert head.startswith(b"HTTP/1.1 502 ")
        await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    with trio.fail_after(5):
        while not tunnelled:
            await trio.sleep(0.01)
    assert tunnelled == [b""]  # the proxy closed that connection; nothing went through


class Deny:
    @sdk.hookimpl
    def trellis_request_access(self, flow: sdk.Flow) -> sdk.Response | None:
        if flow.request.headers.get("authorization") != "Bearer ok":
            return sdk.Response.make(403, b"no")
        return None


async def test_access_plugins_run_before_the_upgrade(
    start_proxy: Any, echo: EchoServer, codec: str
) -> None:
    cfg = config(echo.port, codec).replace(
        "websocket = true", 'websocket = true\nplugins = ["deny"]'
    )
    app = await start_proxy(cfg, extra_plugins={"deny": Deny()})
    stream, head = await raw_upgrade(app.port())
    async with stream:
        assert head.startswith(b"HTTP/1.1 403 ")
    assert echo.accepted == 0
    url = f"ws://127.0.0.1:{app.port()}/"
    with trio.fail_after(10):
        headers = [(b"authorization", b"Bearer ok")]
        async with open_websocket_url(url, extra_headers=headers) as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
    assert echo.accepted == 1


async def test_an_idle_tunnel_is_closed(start_proxy: Any, echo: EchoServer) -> None:
    cfg = config(echo.port, "httptools").replace(
        "websocket_idle_timeout_s = 30", "websocket_idle_timeout_s = 0.3"
    )
    app = await start_proxy(cfg)
    stream, head = await raw_upgrade(app.port())
    async with stream:
        assert head.startswith(b"HTTP/1.1 101 ")
        started = trio.current_time()
        with trio.fail_after(5):
            assert await stream.receive_some(65536) == b""  # closed by the proxy
        assert 0.25 <= trio.current_time() - started < 3
    assert echo.accepted == 1


async def test_websockets_through_a_group_are_balanced_and_counted(
    start_proxy: Any, nursery: trio.Nursery
) -> None:
    """A WebSocket route that sends to a group: each upgrade goes to a target,
    which counts it in flight for as long as the tunnel lives."""
    servers = [await nursery.start(EchoServer().serve) for _ in range(2)]
    urls = " ".join(f"http://127.0.0.1:{s.port}" for s in servers)
    text = (
        config(servers[0].port, "httptools").replace(
            f'upstream = "http://127.0.0.1:{servers[0].port}"', 'group = "chat"'
        )
        + f'\n[[groups]]\nname = "chat"\nstrategy = "leastconn"\nurls = "{urls}"\n'
    )
    app = await start_proxy(text)
    group = app.generation.groups["chat"]
    with trio.fail_after(20):
        async with open_websocket_url(f"ws://127.0.0.1:{app.port()}/one") as first:
            await first.send_message("a")
            assert await first.get_message() == "a"
            assert sorted(t.active for t in group.targets) == [0, 1]
            # leastconn: the second tunnel goes to the other, idle target.
            async with open_websocket_url(f"ws://127.0.0.1:{app.port()}/two") as second:
                await second.send_message("b")
                assert await second.get_message() == "b"
                assert [t.active for t in group.targets] == [1, 1]
    assert sorted(s.accepted for s in servers) == [1, 1]
    with trio.fail_after(5):
        while any(t.active for t in group.targets):
            await trio.sleep(0.02)


class AnswersInstead:
    """A response hook that turns the upstream's ``101`` into something else:
    a response of its own (``"replace"``), another status (``"status"``), or
    a field the codec refuses (``"crlf"``, bypassing ``Headers``' checks)."""

    def __init__(self, how: str) -> None:
        self.how = how

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        if flow.response.status_code != 101:
            return
        if self.how == "replace":
            flow.response = sdk.Response.make(403, b"no switch")
        elif self.how == "status":
            flow.response.status_code = 403
        else:
            flow.response.headers.fields.append((b"x-a", b"1\r\nx-b: 2"))


@pytest.mark.parametrize("how", ["replace", "status"])
async def test_a_response_hook_can_answer_instead_of_the_switch(
    start_proxy: Any, echo: EchoServer, codec: str, how: str
) -> None:
    """The switch used to go ahead whatever the hook did: a replaced
    response was ignored, a changed status sent as 101."""
    cfg = config(echo.port, codec).replace(
        "websocket = true", 'websocket = true\nplugins = ["instead"]'
    )
    app = await start_proxy(cfg, extra_plugins={"instead": AnswersInstead(how)})
    stream, got = await raw_upgrade(app.port())
    async with stream:
        assert got.startswith(b"HTTP/1.1 403 ")
        body = b"no switch" if how == "replace" else b""
        with trio.fail_after(5):
            while not got.endswith(b"\r\n\r\n" + body):
                got += await stream.receive_some(65536)
        assert b"content-length: %d\r\n" % len(body) in got.lower()
        assert b"upgrade" not in got.lower()
        with trio.fail_after(5):
            while echo.ended < 1:  # the upstream's connection is closed: no tunnel
                await trio.sleep(0.01)
    assert echo.accepted == 1


async def test_a_101_the_hooks_made_unsendable_is_a_500_naming_them(
    start_proxy: Any, echo: EchoServer, codec: str, caplog: Any
) -> None:
    cfg = config(echo.port, codec).replace(
        "websocket = true", 'websocket = true\nplugins = ["instead"]'
    )
    app = await start_proxy(cfg, extra_plugins={"instead": AnswersInstead("crlf")})
    with caplog.at_level(logging.WARNING, logger="kernel.exchange"):
        stream, head = await raw_upgrade(app.port())
    async with stream:
        assert head.startswith(b"HTTP/1.1 500 ")
        assert b"x-b" not in head
    assert "after the response hooks of 'instead', the response cannot be sent: " in caplog.text
    with trio.fail_after(5):
        while echo.ended < 1:
            await trio.sleep(0.01)
