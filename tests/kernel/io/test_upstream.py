"""The upstream keep-alive pool (kernel/io/upstream.py).

The bookkeeping (take_idle / put_idle / reap) is tested on real socket pairs
under trio's autojump clock, so idle timeouts cost no real time. Reuse, the
per-host cap, expiry and connections the upstream closed are then checked
through the real proxy, counting the connections an upstream accepted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from kernel.config.transport import UpstreamTls
from kernel.io.upstream import UpstreamConnection, UpstreamPool, connect
from kernel.protocol.events import Data, RequestHead, ResponseHead
from kernel.tls import build_client_tls
from sdk import Origin, UpstreamConnectError, UpstreamTimeout
from tests.conftest import basic_config
from tests.helpers.h2origin import proxy_config, server_context
from tests.helpers.tlsorigin import TlsUpstream
from tests.helpers.yields import counting_yields

ORIGIN = Origin("http", "127.0.0.1", 9)
OTHER = Origin("http", "127.0.0.1", 10)


# -- socket pairs --------------------------------------------------------------
class Pairs:
    """Makes pooled connections on socket pairs; closes every socket at the end."""

    def __init__(self) -> None:
        self.conns: list[UpstreamConnection] = []
        self.peers: list[trio.socket.SocketType] = []

    def make(self, origin: Origin = ORIGIN, kind: str = "h11") -> UpstreamConnection:
        ours, theirs = trio.socket.socketpair()
        conn = UpstreamConnection(trio.SocketStream(ours), origin, kind)
        self.conns.append(conn)
        self.peers.append(theirs)
        return conn

    def peer(self, conn: UpstreamConnection) -> trio.socket.SocketType:
        return self.peers[self.conns.index(conn)]

    def close(self) -> None:
        for conn in self.conns:
            conn.close_nowait()
        for peer in self.peers:
            peer.close()


@pytest.fixture
async def pairs() -> AsyncIterator[Pairs]:
    # Async, so that the sockets are closed inside the trio run.
    p = Pairs()
    yield p
    p.close()


def is_closed(conn: UpstreamConnection) -> bool:
    return conn.stream.socket.fileno() == -1


# -- reading a body ------------------------------------------------------------------
async def test_body_read_yields_per_chunk_even_when_bytes_are_waiting(pairs: Pairs) -> None:
    """Socket reads that find bytes do not yield (kernel/io/sockio.py), so the body
    loop does, once per chunk: a long download must not starve other tasks."""
    conn = pairs.make()
    head = RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"x")])
    conn.codec.send_request_head(head)
    conn.codec.send_end()
    peer = pairs.peer(conn)
    body = b"x" * 3000
    await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 3000\r\n\r\n")
    await trio.lowlevel.wait_readable(conn.socket)
    conn.codec.receive_data(await conn.receive())
    assert isinstance(conn.codec.next_event(), ResponseHead)
    await peer.send(body)  # waiting in the socket before the body is read
    await trio.lowlevel.wait_readable(conn.socket)

    async def nothing() -> None:
        pass

    event, count = await counting_yields(lambda: conn.next_body_event(5, nothing))
    assert isinstance(event, Data)
    assert event.data == body
    assert count == 1  # one yield for the chunk, though the read did not wait


# -- bookkeeping -------------------------------------------------------------------
async def test_take_idle_returns_the_most_recent_live_connection(pairs: Pairs) -> None:
    pool = UpstreamPool()
    assert pool.take_idle(ORIGIN, "h11", 60) is None
    first, second = pairs.make(), pairs.make()
    pool.put_idle(first, 8)
    pool.put_idle(second, 8)
    assert pool.statistics().idle == 2
    assert pool.take_idle(ORIGIN, "h11", 60) is second  # LIFO: the warmest first
    assert pool.take_idle(ORIGIN, "h11", 60) is first
    assert pool.take_idle(ORIGIN, "h11", 60) is None
    stats = pool.statistics()
    assert (stats.opened, stats.reused, stats.idle) == (0, 2, 0)
    assert not is_closed(first)
    assert not is_closed(second)


async def test_idle_connections_are_kept_per_origin_and_codec(pairs: Pairs) -> None:
    pool = UpstreamPool()
    a, b, c = pairs.make(ORIGIN, "h11"), pairs.make(OTHER, "h11"), pairs.make(ORIGIN, "httptools")
    for conn in (a, b, c):
        pool.put_idle(conn, 8)
    assert pool.take_idle(OTHER, "httptools", 60) is None
    assert pool.take_idle(ORIGIN, "httptools", 60) is c
    assert pool.take_idle(OTHER, "h11", 60) is b
    assert pool.take_idle(ORIGIN, "h11", 60) is a


async def test_max_idle_per_host_closes_the_surplus(pairs: Pairs) -> None:
    pool = UpstreamPool()
    conns = [pairs.make() for _ in range(3)]
    other = pairs.make(OTHER)
    for conn in conns:
        pool.put_idle(conn, 2)
    pool.put_idle(other, 2)  # another origin has its own budget
    assert [is_closed(c) for c in conns] == [False, False, True]
    assert not is_closed(other)
    assert pool.statistics().idle == 3


async def test_max_idle_zero_keeps_nothing(pairs: Pairs) -> None:
    pool = UpstreamPool()
    conn = pairs.make()
    pool.put_idle(conn, 0)
    assert is_closed(conn)
    assert pool.statistics().idle == 0


async def test_expired_connection_is_closed_not_reused(
    pairs: Pairs, autojump_clock: trio.testing.MockClock
) -> None:
    pool = UpstreamPool()
    old, fresh = pairs.make(), pairs.make()
    pool.put_idle(old, 8)
    await trio.sleep(50)
    pool.put_idle(fresh, 8)
    await trio.sleep(11)  # old: idle 61 s; fresh: 11 s
    assert pool.take_idle(ORIGIN, "h11", 60) is fresh
    pool.put_idle(fresh, 8)
    await trio.sleep(59)
    # fresh is the most recent again (idle 0 s); old is behind it.
    assert pool.take_idle(ORIGIN, "h11", 60) is fresh
    assert pool.take_idle(ORIGIN, "h11", 60) is None
    assert is_closed(old)
    assert pool.statistics().reused == 2


async def test_reap_closes_only_expired_connections(
    pairs: Pairs, autojump_clock: trio.testing.MockClock
) -> None:
    pool = UpstreamPool()
    old, other_old = pairs.make(), pairs.make(OTHER)
    pool.put_idle(old, 8)
    pool.put_idle(other_old, 8)
    await trio.sleep(30)
    young = pairs.make()
    pool.put_idle(young, 8)
    await trio.sleep(31)
    assert pool.reap(60) == 2
    assert is_closed(old)
    assert is_closed(other_old)
    assert not is_closed(young)
    assert pool.statistics().idle == 1
    assert pool.reap(60) == 0
    assert pool.take_idle(ORIGIN, "h11", 60) is young


async def test_reap_keeps_each_connection_for_its_route_s_idle_timeout(
    pairs: Pairs, autojump_clock: trio.testing.MockClock
) -> None:
    """[routes.transport] idle_timeout_s: the reaper used [upstream]'s for all."""
    pool = UpstreamPool()
    short, long, default = pairs.make(), pairs.make(), pairs.make()
    pool.put_idle(short, 8, 3.0)
    pool.put_idle(long, 8, 120.0)
    pool.put_idle(default, 8)
    await trio.sleep(4)
    assert pool.reap(10) == 1
    assert is_closed(short)
    await trio.sleep(7)
    assert pool.reap(10) == 1
    assert is_closed(default)
    await trio.sleep(100)
    assert pool.reap(10) == 0
    assert not is_closed(long)


@pytest.mark.parametrize("peer_does", ["close", "send"])
async def test_connection_the_upstream_closed_is_not_reused(pairs: Pairs, peer_does: str) -> None:
    """An idle HTTP/1.1 connection has nothing to read: EOF or stray bytes
    (an unsolicited 408, garbage) mean it must not carry a request."""
    pool = UpstreamPool()
    dead, live = pairs.make(), pairs.make()
    pool.put_idle(live, 8)
    pool.put_idle(dead, 8)
    peer = pairs.peer(dead)
    if peer_does == "close":
        peer.close()
    else:
        await peer.send(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert pool.take_idle(ORIGIN, "h11", 60) is live
    assert is_closed(dead)
    assert pool.statistics().reused == 1


async def test_close_all(pairs: Pairs) -> None:
    pool = UpstreamPool()
    conns = [pairs.make(), pairs.make(OTHER)]
    for conn in conns:
        pool.put_idle(conn, 8)
    pool.close_all()
    assert all(is_closed(c) for c in conns)
    assert pool.statistics().idle == 0


# -- connecting ------------------------------------------------------------------------
@pytest.fixture
async def listener() -> AsyncIterator[trio.SocketListener]:
    (lst,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with lst:
        yield lst


async def test_acquire_connects_then_reuses(listener: trio.SocketListener) -> None:
    origin = Origin("http", "127.0.0.1", listener.socket.getsockname()[1])
    pool = UpstreamPool()
    conn = await pool.acquire_h2_or_h1(
        origin, "h11", http2="off", connect_timeout=5, idle_timeout=60
    )
    accepted = await listener.accept()
    async with accepted:
        assert conn.origin == origin
        assert conn.requests == 0
        pool.put_idle(conn, 8)
        again = await pool.acquire_h2_or_h1(
            origin, "h11", http2="off", connect_timeout=5, idle_timeout=60
        )
        assert again is conn
        stats = pool.statistics()
        assert (stats.opened, stats.reused, stats.idle) == (1, 1, 0)
        conn.close_nowait()


async def test_connect_refused_is_upstream_connect_error() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(UpstreamConnectError, match=f"127.0.0.1:{port}") as info:
        await connect(Origin("http", "127.0.0.1", port), "h11", 5)
    # The reason, not trio's "all attempts to connect ... failed".
    assert str(info.value).endswith(": Connection refused")


async def test_connect_timeout_is_upstream_timeout(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    async def never(*args: Any, **kwargs: Any) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError

    monkeypatch.setattr(trio, "open_tcp_stream", never)
    with pytest.raises(UpstreamTimeout, match="timed out after 3s"):
        await connect(ORIGIN, "h11", 3)


# -- through the proxy -------------------------------------------------------------------
async def get(client: Any, port: int, path: str = "/echo") -> dict[str, Any]:
    raw = await client.exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
    )
    (resp,) = client.parse_responses(raw)
    return dict(resp)


def stats(app: Any) -> tuple[int, int, int]:
    s = app.state.pool.statistics()
    return s.opened, s.reused, s.idle


async def test_connections_are_reused_across_clients(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    for _ in range(5):
        assert (await get(client, app.port()))["status"] == 200
    assert upstream.connections == 1
    assert stats(app) == (1, 4, 1)


async def test_max_idle_per_host_through_the_proxy(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    cfg = basic_config(upstream.port).replace("[upstream]\n", "[upstream]\nmax_idle_per_host = 1\n")
    app = await start_proxy(cfg)

    async def burst() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(get, client, app.port(), "/sleep/0.1")

    await burst()  # three at once: three upstream connections, one kept
    assert upstream.connections == 3
    assert stats(app) == (3, 0, 1)
    await burst()
    assert upstream.connections == 5
    assert stats(app) == (5, 1, 1)


async def test_idle_timeout_through_the_proxy(start_proxy: Any, upstream: Any, client: Any) -> None:
    cfg = basic_config(upstream.port).replace("[upstream]\n", "[upstream]\nidle_timeout_s = 0.2\n")
    app = await start_proxy(cfg)
    assert (await get(client, app.port()))["status"] == 200
    assert (await get(client, app.port()))["status"] == 200  # within 0.2 s: reused
    await trio.sleep(0.3)
    assert (await get(client, app.port()))["status"] == 200
    assert upstream.connections == 2
    assert stats(app)[:2] == (2, 1)


async def test_connection_close_from_upstream_is_not_pooled(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    first = await get(client, app.port(), "/close")
    assert first["status"] == 200
    assert first["body"] == b"bye\n"
    assert stats(app) == (1, 0, 0)
    second = await get(client, app.port())
    assert second["status"] == 200
    assert json.loads(second["body"])["target"] == "/echo"
    assert upstream.connections == 2
    assert stats(app) == (2, 0, 1)


async def test_an_upstream_that_always_closes_is_answered_every_time(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    """llhttp carried Content-Length state over "Connection: close" heads:
    every 20th such response became a 502."""
    app = await start_proxy(basic_config(upstream.port, http1="httptools"))
    statuses = [(await get(client, app.port(), "/close"))["status"] for _ in range(60)]
    assert statuses == [200] * 60


class RawUpstream:
    """A bare-socket origin whose connections misbehave on purpose.

    ``answers`` says how many requests each connection answers (with
    keep-alive, which it does not honour) before it closes; after the last
    answer it closes at once (``read_next=False``) or only once the next
    request head arrived, without answering it (``read_next=True``, the
    keep-alive race every proxy meets).
    """

    def __init__(self, answers: int, *, read_next: bool) -> None:
        self.answers = answers
        self.read_next = read_next
        self.connections = 0
        self.heads: list[bytes] = []
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[RawUpstream]) -> None:
        (lst,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = lst.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self.handle, [lst], handler_nursery=nursery)

    async def read_head(self, stream: trio.SocketStream, buf: bytearray) -> bool:
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                return False
            buf += data
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        self.heads.append(head)
        return True

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            try:
                await self.converse(stream, bytearray())
            except trio.BrokenResourceError:
                return

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        """One connection's exchanges (subclasses misbehave differently)."""
        for _ in range(self.answers):
            if not await self.read_head(stream, buf):
                return
            # Bodies are read by Content-Length only (tests send small ones).
            for line in self.heads[-1].split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    want = int(line.split(b":")[1])
                    while len(buf) < want:
                        buf += await stream.receive_some(65536)
                    del buf[:want]
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if self.read_next:
            await self.read_head(stream, buf)


EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"


class ExtraBytesUpstream(RawUpstream):
    """Answers every request with its own path, keeps the connection, and
    after ``/first`` sends a second, unasked-for response: at once in the
    same write, or ``late`` (once the first answer is long back in the pool)."""

    def __init__(self, *, late: bool) -> None:
        super().__init__(0, read_next=False)
        self.late = late

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        while await self.read_head(stream, buf):
            path = self.heads[-1].split(b" ")[1]
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path)
            if path == b"/first" and not self.late:
                answer += EVIL
            await stream.send_all(answer)
            if path == b"/first" and self.late:
                await trio.sleep(0.2)
                await stream.send_all(EVIL)


@pytest.mark.parametrize("late", [False, True], ids=["same-write", "late"])
async def test_bytes_past_a_response_are_never_the_next_answer(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str, late: bool
) -> None:
    """RFC 9112 §6.3: a connection that got more than its response is not reused.

    Before, the extra response sat in the pooled connection's buffer and was
    served to the next client, and every client after got its predecessor's.
    """
    raw: ExtraBytesUpstream = await nursery.start(ExtraBytesUpstream(late=late).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    assert (await get(client, app.port(), "/first"))["body"] == b"/first"
    await trio.sleep(0.4 if late else 0.05)
    for path in ("/second", "/third"):
        assert (await get(client, app.port(), path))["body"] == path.encode()
    assert raw.connections == 2
    assert stats(app)[:2] == (2, 1)


class BadSecondAnswer(RawUpstream):
    """Answers a connection's first request well and its second with a head
    no proxy may accept (two Content-Lengths)."""

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        if await self.read_head(stream, buf):
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if await self.read_head(stream, buf):
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok"
            )
            await self.read_head(stream, buf)


async def test_a_bad_answer_on_a_reused_connection_is_not_sent_again(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    """Only a connection that fails before any answer is retried: an answer,
    however bad, means the upstream got the request."""
    raw: BadSecondAnswer = await nursery.start(BadSecondAnswer(0, read_next=False).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    assert (await get(client, app.port(), "/a"))["status"] == 200
    assert (await get(client, app.port(), "/b"))["status"] == 502
    assert [h.split(b" ")[1] for h in raw.heads] == [b"/a", b"/b"]
    assert raw.connections == 1


class TrailersUpstream(RawUpstream):
    """A chunked 320 KiB body with a trailer section: one field that may be
    there and one that may not."""

    BODY = b"x" * (320 * 1024)

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        while await self.read_head(stream, buf):
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(self.BODY), self.BODY)
                + b"0\r\nX-Sum: 1\r\nSet-Cookie: t=1\r\n\r\n"
            )


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
async def test_response_trailers_never_cost_the_body(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str, version: bytes
) -> None:
    """A forbidden trailer field is left out; an HTTP/1.0 client, whose framing
    cannot carry trailers, gets the whole body without them (it got nothing,
    or a silently truncated body, when the codec refused to end the response)."""
    raw: TrailersUpstream = await nursery.start(TrailersUpstream(0, read_next=False).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    data = await client.exchange(
        app.port(), b"GET / HTTP/" + version + b"\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    (resp,) = client.parse_responses(data)
    assert resp["status"] == 200
    assert resp["body"] == TrailersUpstream.BODY
    if version == b"1.1":
        assert data.endswith(b"0\r\nx-sum: 1\r\n\r\n")
    else:
        assert b"x-sum" not in data[-100:].lower()
    assert b"t=1" not in data


class CutUpstream(RawUpstream):
    """Starts a chunked 200 with 64 KiB of body, then closes mid-chunk."""

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        if await self.read_head(stream, buf):
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"20000\r\n"
                + b"y" * 65536
            )
            await trio.sleep(0.1)


async def read_to_the_end(port: int, request: bytes) -> tuple[bytes, bool]:
    """Everything the proxy sent, and whether the connection ended in a reset."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    got = b""
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(5):
            try:
                while data := await stream.receive_some(65536):
                    got += data
            except trio.BrokenResourceError:
                return got, True
    return got, False


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
async def test_a_response_cut_upstream_ends_in_a_reset(
    start_proxy: Any, nursery: trio.Nursery, codec: str, version: bytes
) -> None:
    """An HTTP/1.0 client reads the body to the end of the connection: a clean
    close would pass a truncated body off as whole. The connection is reset."""
    raw: CutUpstream = await nursery.start(CutUpstream(0, read_next=False).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    request = b"GET / HTTP/" + version + b"\r\nHost: a\r\n\r\n"
    got, reset = await read_to_the_end(app.port(), request)
    assert got.startswith(b"HTTP/1.1 200 ")
    assert b"yyyy" in got
    assert reset


class EarlyHints(RawUpstream):
    """A 100, a 103 Early Hints and a 102 before each final answer."""

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        while await self.read_head(stream, buf):
            await stream.send_all(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 102 Processing\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            )


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
async def test_interim_responses_are_forwarded(
    start_proxy: Any, nursery: trio.Nursery, codec: str, version: bytes
) -> None:
    """RFC 9110 §15.2: a proxy forwards 1xx responses, except the 100 it
    answers itself, and never to an HTTP/1.0 client."""
    raw: EarlyHints = await nursery.start(EarlyHints(0, read_next=False).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    data = b""
    async with stream:
        await stream.send_all(
            b"GET / HTTP/" + version + b"\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    lines = [line for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    if version == b"1.1":
        assert lines == [
            b"HTTP/1.1 103 Early Hints",
            b"HTTP/1.1 102 Processing",
            b"HTTP/1.1 200 OK",
        ]
        assert b"link: </s.css>; rel=preload\r\n" in data.lower()
    else:
        assert lines == [b"HTTP/1.1 200 OK"]
    assert data.endswith(b"ok")


class OldEarlyHints(RawUpstream):
    """A 103 Early Hints and its final answer, both with HTTP/1.0 status lines.

    HTTP/1.0 defines no 1xx, but nothing stops a server from labelling one so;
    the proxy forwards it like any other interim response.
    """

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        if await self.read_head(stream, buf):
            await stream.send_all(
                b"HTTP/1.0 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
            )


async def test_interim_responses_name_the_upstreams_version_in_via(
    start_proxy: Any, nursery: trio.Nursery, codec: str
) -> None:
    """RFC 9110 §7.6.3: Via names the protocol each message was received in,
    for an interim response as for the final one from the same upstream."""
    raw: OldEarlyHints = await nursery.start(OldEarlyHints(0, read_next=False).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    data = b""
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    interim, final = data.split(b"\r\n\r\n", 1)
    assert interim.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert b"\r\nvia: 1.0 trellis" in interim.lower()
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nvia: 1.0 trellis\r\n" in final.lower()
    assert data.endswith(b"ok")


class BadFirstChunk(RawUpstream):
    """A good head and, in the same write, a chunk size that is not hex."""

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        if await self.read_head(stream, buf):
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"
            )
            await self.read_head(stream, buf)


async def test_a_body_that_fails_before_anything_went_out_is_a_502(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    """Not an empty reply: none of the response had reached the client yet."""
    raw: BadFirstChunk = await nursery.start(BadFirstChunk(0, read_next=False).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    data = await client.exchange(app.port(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    (resp,) = client.parse_responses(data)
    assert resp["status"] == 502
    assert resp["headers"]["connection"] == "close"
    assert b"200 OK" not in data


async def test_pooled_connection_closed_meanwhile_is_replaced(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    """The upstream closed an idle pooled connection: the client notices nothing.

    The pool probes every idle connection it hands out, sees the EOF and opens
    a fresh one (nothing counted as reused), with or without a request body.
    """
    raw: RawUpstream = await nursery.start(RawUpstream(1, read_next=False).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    assert (await get(client, app.port(), "/a"))["status"] == 200
    await trio.sleep(0.05)  # let the upstream's FIN arrive
    post = await client.exchange(
        app.port(),
        b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    assert client.parse_responses(post, [b"POST"])[0]["status"] == 200
    assert stats(app)[:2] == (2, 0)
    await trio.sleep(0.05)
    assert (await get(client, app.port(), "/c"))["status"] == 200
    assert raw.connections == 3
    assert [h.split(b" ")[1] for h in raw.heads] == [b"/a", b"/b", b"/c"]
    assert stats(app)[:2] == (3, 0)


async def test_reused_connection_dropped_under_a_request_is_retried_once(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    """The upstream closes a reused connection just as a request arrives: a
    request without a body is retried once on a fresh connection."""
    raw: RawUpstream = await nursery.start(RawUpstream(1, read_next=True).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    assert (await get(client, app.port(), "/a"))["status"] == 200
    assert (await get(client, app.port(), "/b"))["status"] == 200
    assert raw.connections == 2
    assert [h.split(b" ")[1] for h in raw.heads] == [b"/a", b"/b", b"/b"]


async def test_reused_connection_dropped_under_a_body_is_502(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    """With a body the request is not replayed (the body was consumed): 502."""
    raw: RawUpstream = await nursery.start(RawUpstream(1, read_next=True).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    assert (await get(client, app.port(), "/a"))["status"] == 200
    data = await client.exchange(
        app.port(),
        b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    (resp,) = client.parse_responses(data, [b"POST"])
    assert resp["status"] == 502
    assert raw.connections == 1


async def test_a_bodyless_post_is_never_replayed(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    """POST is not idempotent (RFC 9110 §9.2.2): even without a body it is sent
    once; the upstream dropping the connection under it gives 502."""
    raw: RawUpstream = await nursery.start(RawUpstream(1, read_next=True).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    assert (await get(client, app.port(), "/a"))["status"] == 200
    data = await client.exchange(
        app.port(), b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert client.parse_responses(data, [b"POST"])[0]["status"] == 502
    assert [h.split(b" ")[1] for h in raw.heads] == [b"/a", b"/b"]


# -- https upstreams (HTTP/1.1) ------------------------------------------------------------
# The origin is tests/helpers/upstream.py behind TLS (tests/helpers/tlsorigin.py)
# with a trustme certificate; the proxy is configured through [routes.transport.tls].
async def tls_origin(
    nursery: trio.Nursery,
    tls_ca: Any,
    *names: str,
    client_ca: Any = None,
    alpn: tuple[str, ...] = ("http/1.1",),
) -> TlsUpstream:
    leaf = tls_ca.issue_cert(*(names or ("127.0.0.1",)))
    ctx = server_context(leaf, alpn=list(alpn), client_ca=client_ca)
    origin = TlsUpstream(ctx)
    await nursery.start(origin.serve)
    return origin


def https(origin: TlsUpstream, tls: str | None, transport: str = "") -> str:
    return proxy_config(f"https://127.0.0.1:{origin.port}", tls=tls, transport=transport)


async def test_https_upstream_trusted_by_ca_file(
    nursery: trio.Nursery, start_proxy: Any, client: Any, tls_ca: Any, cert_factory: Any
) -> None:
    origin = await tls_origin(nursery, tls_ca)
    app = await start_proxy(https(origin, f'ca_file = "{cert_factory.ca_file}"'))
    resp = await get(client, app.port(), "/echo?x=1")
    assert resp["status"] == 200
    assert json.loads(resp["body"])["target"] == "/echo?x=1"
    assert [r["target"] for r in origin.requests] == ["/echo?x=1"]
    assert origin.alpn == ["http/1.1"]
    assert origin.server_names == [None]  # an IP address is verified, not sent by SNI


async def test_https_upstream_unknown_to_the_system_store_is_502_with_the_reason(
    nursery: trio.Nursery,
    start_proxy: Any,
    client: Any,
    tls_ca: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    origin = await tls_origin(nursery, tls_ca)
    app = await start_proxy(https(origin, None))  # [upstream.tls] defaults: system CAs
    with caplog.at_level(logging.WARNING, logger="kernel.exchange"):
        resp = await get(client, app.port())
    assert resp["status"] == 502
    assert b"certificate" not in resp["body"]  # the reason is logged, not shown
    (line,) = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert f"TLS handshake with https://127.0.0.1:{origin.port} failed" in line
    assert "CERTIFICATE_VERIFY_FAILED" in line
    assert origin.requests == []


async def test_verify_false_accepts_any_certificate(
    nursery: trio.Nursery, start_proxy: Any, client: Any, tls_ca: Any
) -> None:
    origin = await tls_origin(nursery, tls_ca, "elsewhere.test")  # wrong name, unknown CA
    app = await start_proxy(https(origin, "verify = false"))
    assert (await get(client, app.port()))["status"] == 200
    assert len(origin.requests) == 1


async def test_server_name_is_sent_by_sni_and_verified(
    nursery: trio.Nursery, start_proxy: Any, client: Any, tls_ca: Any, cert_factory: Any
) -> None:
    origin = await tls_origin(nursery, tls_ca, "origin.test")
    ca = f'ca_file = "{cert_factory.ca_file}"'
    # The certificate names origin.test, not 127.0.0.1: refused without the override.
    plain = await start_proxy(https(origin, ca))
    assert (await get(client, plain.port()))["status"] == 502
    assert origin.requests == []
    named = await start_proxy(https(origin, ca + '\nserver_name = "origin.test"'))
    assert (await get(client, named.port()))["status"] == 200
    assert origin.server_names == [None, "origin.test"]
    assert len(origin.requests) == 1
    # And a server_name the certificate does not name is refused too.
    wrong = await start_proxy(https(origin, ca + '\nserver_name = "other.test"'))
    assert (await get(client, wrong.port()))["status"] == 502
    assert len(origin.requests) == 1


async def test_pooled_tls_connections_are_reused(
    nursery: trio.Nursery, start_proxy: Any, client: Any, tls_ca: Any, cert_factory: Any
) -> None:
    origin = await tls_origin(nursery, tls_ca)
    app = await start_proxy(https(origin, f'ca_file = "{cert_factory.ca_file}"'))
    for _ in range(5):
        assert (await get(client, app.port()))["status"] == 200
    assert len(origin.requests) == 5
    assert origin.connections == 1
    assert stats(app)[:2] == (1, 4)


def two_client_cert_routes(origin: TlsUpstream, cert_factory: Any, *certs: Any) -> str:
    url = f"https://127.0.0.1:{origin.port}"
    routes = []
    for name, cert in zip("ab", certs, strict=True):
        routes.append(
            f"""
[[routes]]
name = "{name}"
upstream = "{url}"
[routes.transport.tls]
ca_file = "{cert_factory.ca_file}"
cert_file = "{cert.cert}"
key_file = "{cert.key}"
"""
        )
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 1
plugins = ["router"]
[[listeners]]
bind = "127.0.0.1:0"
{"".join(routes)}
[plugins.router]
rules = [{{ path_prefix = "/b", route = "b" }}]
"""


async def test_routes_with_different_client_certificates_never_share_a_connection(
    nursery: trio.Nursery, start_proxy: Any, client: Any, tls_ca: Any, cert_factory: Any
) -> None:
    origin = await tls_origin(nursery, tls_ca, client_ca=tls_ca)
    a = cert_factory.issue("a.client.test", common_name="client-a")
    b = cert_factory.issue("b.client.test", common_name="client-b")
    app = await start_proxy(two_client_cert_routes(origin, cert_factory, a, b))
    for path in ("/a", "/b", "/a", "/b", "/b"):
        assert (await get(client, app.port(), path))["status"] == 200
    # One pooled connection per client certificate, each reused.
    assert origin.connections == 2
    assert len(origin.requests) == 5
    subjects = sorted(s or "" for s in origin.client_certs)
    assert len(subjects) == 2
    assert "CN=client-a" in subjects[0]
    assert "CN=client-b" in subjects[1]


# -- mutual TLS --------------------------------------------------------------------------
async def test_origin_requiring_a_client_certificate_refuses_the_proxy_without_one(
    nursery: trio.Nursery, start_proxy: Any, client: Any, tls_ca: Any, cert_factory: Any
) -> None:
    origin = await tls_origin(nursery, tls_ca, client_ca=tls_ca)
    app = await start_proxy(https(origin, f'ca_file = "{cert_factory.ca_file}"'))
    assert (await get(client, app.port()))["status"] == 502
    assert origin.requests == []
    assert origin.handshake_failures == 1


async def test_client_certificate_is_presented_to_the_origin(
    nursery: trio.Nursery, start_proxy: Any, client: Any, tls_ca: Any, cert_factory: Any
) -> None:
    origin = await tls_origin(nursery, tls_ca, client_ca=tls_ca)
    cert = cert_factory.issue("proxy.client.test", common_name="trellis-proxy")
    tls = f'ca_file = "{cert_factory.ca_file}"\ncert_file = "{cert.cert}"\nkey_file = "{cert.key}"'
    app = await start_proxy(https(origin, tls))
    assert (await get(client, app.port()))["status"] == 200
    assert len(origin.requests) == 1
    (subject,) = origin.client_certs
    assert subject is not None
    assert "CN=trellis-proxy" in subject.split(",")


# -- HTTP/2 by ALPN, and the fallback --------------------------------------------------------
async def test_http2_by_alpn_falls_back_to_http1_when_the_origin_declines(
    nursery: trio.Nursery, start_proxy: Any, client: Any, tls_ca: Any, cert_factory: Any
) -> None:
    origin = await tls_origin(nursery, tls_ca)  # offers http/1.1 only
    app = await start_proxy(
        https(origin, f'ca_file = "{cert_factory.ca_file}"', transport="http2 = true")
    )
    for _ in range(3):
        resp = await get(client, app.port())
        assert resp["status"] == 200
    assert origin.alpn == ["http/1.1"]  # one connection, reused: HTTP/1.1
    assert all(r["target"] == "/echo" for r in origin.requests)
    assert len(origin.requests) == 3
    assert not any(app.state.pool._h2.values())  # no HTTP/2 connection was made


async def test_acquire_h2_or_h1_remembers_an_http1_only_origin(
    nursery: trio.Nursery, tls_ca: Any, cert_factory: Any
) -> None:
    origin = await tls_origin(nursery, tls_ca)
    ctx, problems = build_client_tls(
        UpstreamTls(ca_file=str(cert_factory.ca_file)), "$", alpn=("h2", "http/1.1")
    )
    assert ctx is not None, problems
    where = Origin("https", "127.0.0.1", origin.port)
    pool = UpstreamPool()
    pool.nursery = nursery
    kw: dict[str, Any] = {"connect_timeout": 2, "idle_timeout": 60, "tls": (ctx, "")}
    try:
        first = await pool.acquire_h2_or_h1(where, "h11", http2="alpn", **kw)
        assert isinstance(first, UpstreamConnection)
        assert first.key == (where, "h11", (ctx, ""))
        second = await pool.acquire_h2_or_h1(where, "h11", http2="alpn", **kw)
        assert isinstance(second, UpstreamConnection)
        assert second is not first
        pool.put_idle(first, 8)
        assert await pool.acquire_h2_or_h1(where, "h11", http2="alpn", **kw) is first
        # Another TLS target (here: another SNI name) is another pool key.
        other = {**kw, "tls": (ctx, "127.0.0.1")}
        pool.put_idle(first, 8)
        assert pool.take_idle(where, "h11", 60, tls=other["tls"]) is None
        assert pool.take_idle(where, "h11", 60, tls=kw["tls"]) is first
        second.close_nowait()
        first.close_nowait()
    finally:
        pool.close_all()


async def test_http1_only_origin_is_connected_to_in_parallel_after_the_first_attempt(
    nursery: trio.Nursery, tls_ca: Any, cert_factory: Any
) -> None:
    """A burst of flows waits for the first HTTP/2 attempt; once it found
    HTTP/1.1, the waiting flows connect at the same time, not one by one."""
    leaf = tls_ca.issue_cert("127.0.0.1")
    origin = TlsUpstream(server_context(leaf, alpn=["http/1.1"]), handshake_delay=0.05)
    await nursery.start(origin.serve)
    ctx, _ = build_client_tls(
        UpstreamTls(ca_file=str(cert_factory.ca_file)), "$", alpn=("h2", "http/1.1")
    )
    assert ctx is not None
    where = Origin("https", "127.0.0.1", origin.port)
    pool = UpstreamPool()
    pool.nursery = nursery
    got: list[object] = []

    async def one() -> None:
        got.append(
            await pool.acquire_h2_or_h1(
                where, "h11", http2="alpn", connect_timeout=2, idle_timeout=60, tls=(ctx, "")
            )
        )

    try:
        with trio.fail_after(2):
            async with trio.open_nursery() as n:
                for _ in range(5):
                    n.start_soon(one)
        assert len(got) == 5
        assert all(isinstance(c, UpstreamConnection) for c in got)
        assert origin.max_handshaking >= 2
    finally:
        for c in got:
            assert isinstance(c, UpstreamConnection)
            c.close_nowait()


async def test_the_reaper_waits_while_the_pool_is_empty(
    pairs: Pairs, autojump_clock: trio.testing.MockClock
) -> None:
    pool = UpstreamPool()
    returned = trio.Event()

    async def reaper_round() -> None:
        await pool.wait_for_connections()
        returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reaper_round)
        await trio.sleep(3600)  # an idle hour: still waiting
        assert not returned.is_set()
        conn = pairs.make()
        pool.put_idle(conn, 8)
        await returned.wait()
    assert pool.holds_connections
    await pool.wait_for_connections()  # at once: the pool holds one
    assert pool.take_idle(ORIGIN, "h11", 60) is conn
    assert not pool.holds_connections  # an emptied list counts as nothing
    await trio.sleep(61)
    pool.put_idle(conn, 8)
    await trio.sleep(61)
    assert pool.reap(60) == 1
    assert not pool.holds_connections
