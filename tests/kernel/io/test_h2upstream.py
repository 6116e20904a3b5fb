"""HTTP/2 upstream connections (kernel/io/h2upstream.py) shared by many flows.

Through the real proxy to :class:`tests.helpers.h2origin.H2Origin` (h2c, prior
knowledge): multiplexing, the origin's GOAWAY, a stream the origin resets,
and a connection it drops; then the pool's view of a connection after GOAWAY.
"""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

from kernel.io.h2upstream import H2Upstream
from kernel.io.upstream import UpstreamPool
from kernel.protocol.events import RequestHead
from kernel.protocol.h2_common import H2Limits
from kernel.protocol.h2_frames import PING, frame
from sdk import Origin
from tests.helpers.h2origin import H2Origin, proxy_config
from tests.helpers.yields import counting_yields, in_one_round


async def h2c_proxy(nursery: trio.Nursery, start_proxy: Any, origin: H2Origin) -> Any:
    await nursery.start(origin.serve)
    return await start_proxy(
        proxy_config(f"http://127.0.0.1:{origin.port}", transport="force_http2 = true")
    )


async def get(client: Any, port: int, path: str) -> dict[str, Any]:
    raw = await client.exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
    )
    responses = client.parse_responses(raw)
    assert len(responses) == 1, raw
    return dict(responses[0])


async def test_fifty_concurrent_flows_share_one_connection(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin = H2Origin()
    app = await h2c_proxy(nursery, start_proxy, origin)
    statuses: list[int] = []

    async def one() -> None:
        # The origin answers none until all 50 streams are open at once.
        statuses.append((await get(client, app.port(), "/barrier/50"))["status"])

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            for _ in range(50):
                n.start_soon(one)
    assert statuses == [200] * 50
    assert origin.connections == 1
    assert origin.streams == 50
    assert origin.max_open_streams == 50
    assert app.state.pool.statistics().opened == 1


async def test_goaway_moves_later_flows_to_a_new_connection(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin = H2Origin(goaway_after=2)
    app = await h2c_proxy(nursery, start_proxy, origin)
    conns = []
    for _ in range(5):
        resp = await get(client, app.port(), "/echo")
        assert resp["status"] == 200
        conns.append(json.loads(resp["body"])["connection"])
    assert conns == [1, 1, 2, 2, 3]
    assert origin.connections == 3
    # A connection the origin is done with is closed, not kept in the pool.
    await origin.wait_for(lambda: origin.open_streams == 0)
    with trio.fail_after(2):
        while len([h for hs in app.state.pool._h2.values() for h in hs if not h.closed]) > 1:
            await trio.sleep(0.01)


async def test_goaway_under_concurrent_flows_fails_none(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    """Streams the origin refused by its GOAWAY (opened before it arrived) are
    retried on a new connection (RFC 9113 §8.7)."""
    origin = H2Origin(goaway_after=3)
    app = await h2c_proxy(nursery, start_proxy, origin)
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await get(client, app.port(), "/echo?slow=0.05"))["status"])

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            for _ in range(12):
                n.start_soon(one)
    assert statuses == [200] * 12
    assert origin.streams == 12
    assert origin.connections >= 4  # 3 streams per connection at most
    assert len(origin.requests) == 12


async def test_a_stream_the_origin_resets_is_502_and_spares_the_others(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin = H2Origin()
    app = await h2c_proxy(nursery, start_proxy, origin)
    results: dict[str, int] = {}

    async def one(path: str) -> None:
        results[path] = (await get(client, app.port(), path))["status"]

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            for i in range(4):
                n.start_soon(one, f"/echo?slow=0.2&n={i}")
            await origin.wait_for(lambda: origin.open_streams == 4)
            n.start_soon(one, "/reset")
    assert results.pop("/reset") == 502
    assert list(results.values()) == [200] * 4
    assert origin.connections == 1
    assert origin.streams == 5


async def test_origin_dropping_the_connection_fails_in_flight_flows_only(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin = H2Origin()
    app = await h2c_proxy(nursery, start_proxy, origin)
    results: list[int] = []

    async def one(path: str) -> None:
        results.append((await get(client, app.port(), path))["status"])

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            for _ in range(3):
                n.start_soon(one, "/sleep/5")
            await origin.wait_for(lambda: origin.open_streams == 3)
            n.start_soon(one, "/die")
        assert results == [502] * 4
        # A new flow gets a new connection.
        resp = await get(client, app.port(), "/echo")
    assert resp["status"] == 200
    assert json.loads(resp["body"])["connection"] == 2
    assert origin.connections == 2


async def test_origin_dropping_the_connection_mid_body_cuts_the_client(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    origin = H2Origin()
    app = await h2c_proxy(nursery, start_proxy, origin)

    async def kill_soon() -> None:
        await origin.wait_for(lambda: origin.open_streams == 1)
        await trio.sleep(0.1)
        await get(client, app.port(), "/die")

    nursery.start_soon(kill_soon)
    raw = await client.exchange(app.port(), b"GET /drip/200 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert client.parse_responses(raw) == []  # truncated: never a "complete" short body
    assert len(raw) < 200 * 16384


# -- the pool's view ---------------------------------------------------------------------
async def test_pool_forgets_a_connection_after_goaway_once_its_streams_end(
    nursery: trio.Nursery,
) -> None:
    origin = H2Origin(goaway_after=1)
    await nursery.start(origin.serve)
    pool = UpstreamPool()
    pool.nursery = nursery
    where = Origin("http", "127.0.0.1", origin.port)
    head = RequestHead(method=b"GET", target=b"/echo", headers=[(b"host", b"a")])
    try:
        up = await pool.acquire_h2_or_h1(
            where, "h11", http2="force", connect_timeout=2, idle_timeout=60
        )
        assert isinstance(up, H2Upstream)
        stream = await up.open(head, b"http", b"a", end_stream=True)
        response = await stream.response_head(2)
        assert response.head.status_code == 200
        while True:
            event = await stream.next_body_event(2, trio.lowlevel.checkpoint)
            if not hasattr(event, "data"):
                break
        stream.close_nowait()
        # GOAWAY came with the first stream: the connection takes no more,
        # and closes now that its last stream is over.
        assert not up.available
        assert up.closed
        again = await pool.acquire_h2_or_h1(
            where, "h11", http2="force", connect_timeout=2, idle_timeout=60
        )
        assert again is not up
        assert isinstance(again, H2Upstream)
        assert origin.connections == 2
    finally:
        pool.close_all()


async def test_connections_after_goaway_are_closed_by_the_proxy(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    """An origin may leave closing to the client after its GOAWAY: the proxy
    must close each such connection once its last stream is over, refused
    streams included."""
    origin = H2Origin(goaway_after=3, linger=True)
    app = await h2c_proxy(nursery, start_proxy, origin)

    async def one() -> None:
        assert (await get(client, app.port(), "/echo?slow=0.05"))["status"] == 200

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            for _ in range(12):
                n.start_soon(one)
        # Every connection got its GOAWAY; all four are done with.
        await origin.wait_for(lambda: origin.closed_by_client == origin.connections)
    assert origin.connections == 4


async def test_a_bug_in_an_upstream_connection_fails_its_flows_not_the_proxy(
    nursery: trio.Nursery, start_proxy: Any, client: Any, monkeypatch: Any, caplog: Any
) -> None:
    from kernel.protocol.h2_client import H2Client

    origin = H2Origin()
    app = await h2c_proxy(nursery, start_proxy, origin)
    real = H2Client.receive_data
    broken = {"on": True}

    def receive_data(self: H2Client, data: bytes, now: float) -> Any:
        if broken["on"] and data:
            raise RuntimeError("simulated bug in the HTTP/2 client")
        return real(self, data, now)

    monkeypatch.setattr(H2Client, "receive_data", receive_data)
    with trio.fail_after(5):
        assert (await get(client, app.port(), "/echo"))["status"] == 502
    assert "simulated bug in the HTTP/2 client" in caplog.text
    broken["on"] = False
    with trio.fail_after(5):
        assert (await get(client, app.port(), "/echo"))["status"] == 200
    assert origin.connections == 2  # the broken one was closed, a new one opened


async def test_write_out_with_nothing_queued_does_not_yield() -> None:
    """As on the client side: an uncontended writer takes the lock without a yield."""
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        conn = H2Upstream(
            trio.SocketStream(ours), Origin("http", "127.0.0.1", 9), "key", H2Limits()
        )
        conn.proto.data_to_send()  # the preface: not under test
        _, count = await counting_yields(conn.write_out)
        assert count == 0
        assert not conn._write_lock.locked()


async def test_writers_at_the_same_time_share_one_write() -> None:
    """As on the client side: flows that queue frames in the same scheduler
    round go out in one write."""
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        conn = H2Upstream(
            trio.SocketStream(ours), Origin("http", "127.0.0.1", 9), "key", H2Limits()
        )
        conn.proto.initiate()
        conn.proto.data_to_send()  # the preface: not under test
        writes: list[bytes] = []

        class Recording:
            async def send(self, data: bytes) -> None:
                writes.append(data)

        conn.io = Recording()  # type: ignore[assignment]

        async def writer(opaque: bytes) -> None:
            conn.proto._conn.out += frame(PING, 0, 0, opaque)  # any frame of this writer's own
            await conn.write_out()

        await in_one_round(lambda: writer(b"first..."), lambda: writer(b"second.."))
        assert len(writes) == 1
        assert len(writes[0]) == 2 * (9 + 8)  # both PINGs


async def test_an_origin_that_never_opens_its_window_is_a_504_after_send_timeout(
    nursery: trio.Nursery, start_proxy: Any, client: Any
) -> None:
    """The request body waited for window with no deadline: the flow was
    held for as long as the origin kept the stream."""
    origin = H2Origin(hold_window=True)
    await nursery.start(origin.serve)
    app = await start_proxy(
        proxy_config(
            f"http://127.0.0.1:{origin.port}",
            transport="force_http2 = true\nsend_timeout_s = 0.5",
        )
    )
    body = b"x" * 300_000  # far past the origin's 64 KiB windows
    head = f"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n"
    with trio.fail_after(5):
        raw = await client.exchange(app.port(), head.encode() + b"Connection: close\r\n\r\n" + body)
    (response,) = client.parse_responses(raw)
    assert response["status"] == 504
