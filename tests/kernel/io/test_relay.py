"""The upstream half of an exchange, over real sockets: failures, deadlines,
interim responses, and what happens when an upstream dies mid-body."""

from __future__ import annotations

import time
from typing import Any

import trio

from kernel.io.relay import _framing
from kernel.io.timers import TICK
from tests.conftest import basic_config


def test_framing_of_a_validated_head() -> None:
    assert _framing([(b"host", b"a")]) == (None, False)
    assert _framing([(b"content-length", b"12")]) == (12, False)
    assert _framing([(b"transfer-encoding", b"chunked")]) == (None, True)


async def test_unreachable_upstream_is_502(start_proxy: Any, client: Any) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    app = await start_proxy(basic_config(port))
    (resp,) = client.parse_responses(
        await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    assert resp["status"] == 502
    assert b"127.0.0.1" not in resp["body"]  # no internal addresses in the page


async def test_slow_upstream_is_504(start_proxy: Any, upstream: Any, client: Any) -> None:
    cfg = basic_config(upstream.port).replace(
        "[upstream]\n", "[upstream]\nresponse_timeout_s = 0.3\n"
    )
    app = await start_proxy(cfg)
    (resp,) = client.parse_responses(
        await client.exchange(
            app.port(), b"GET /sleep/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    )
    assert resp["status"] == 504


async def test_response_deadline_is_kept_within_a_timer_tick(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    cfg = basic_config(upstream.port).replace(
        "[upstream]\n", "[upstream]\nresponse_timeout_s = 0.2\n"
    )
    app = await start_proxy(cfg)
    start = time.monotonic()
    (resp,) = client.parse_responses(
        await client.exchange(
            app.port(), b"GET /sleep/2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    )
    elapsed = time.monotonic() - start
    assert resp["status"] == 504
    assert 0.2 <= elapsed < 0.2 + 2 * TICK + 0.3


async def _raw_upstream(nursery: trio.Nursery, reply: bytes, *, then_close: bool) -> int:
    """An upstream that answers every request with ``reply`` verbatim."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            await stream.send_all(reply)
            if not then_close:
                await trio.sleep(5)

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    return int(listeners[0].socket.getsockname()[1])


async def test_interim_responses_from_the_upstream_are_not_relayed(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    port = await _raw_upstream(
        nursery,
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        then_close=True,
    )
    app = await start_proxy(basic_config(port))
    raw = await client.exchange(
        app.port(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 200 ")
    (resp,) = client.parse_responses(raw)
    assert resp["body"] == b"ok"


async def test_upstream_dying_mid_body_cuts_the_client_connection(
    nursery: trio.Nursery, start_proxy: Any, client: Any, codec: str
) -> None:
    port = await _raw_upstream(
        nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part", then_close=True
    )
    app = await start_proxy(basic_config(port, http1=codec))
    raw = await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    # The head and the part that arrived were relayed; then the connection was
    # cut, so the client sees a truncated body, never a "complete" short one.
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"only-part")
    assert client.parse_responses(raw) == []
