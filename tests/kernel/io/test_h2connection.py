"""HTTP/2 downstream connections for real (kernel/io/h2connection.py).

A real proxy on loopback with h2c prior knowledge on its cleartext listener,
a real HTTP/1.1 upstream behind it (tests/helpers/upstream.py), and clients
that speak HTTP/2 with the ``h2`` library or write frames by hand
(tests/helpers/h2client.py). Each test checks what the client got *and* what
the upstream saw: every stream becomes a clean HTTP/1.1 request, a request
the proxy refuses never reaches the upstream, and a hostile client costs a
bounded amount of work while everyone else is still served.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import trio
import trio.testing
from hyperframe.frame import GoAwayFrame, PingFrame, SettingsFrame

import sdk
from kernel.io import sockio
from kernel.io.h2connection import H2Connection
from kernel.protocol.h2_frames import PING, frame
from tests.conftest import basic_config
from tests.helpers.downstream import connection_on
from tests.helpers.h2client import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    H2Client,
    RawH2,
    request_fields,
)
from tests.helpers.probe import Probe
from tests.helpers.yields import counting_yields, in_one_round


def config(upstream: Any, *, h2: str = "", server: str = "", extra: str = "") -> str:
    """:func:`basic_config` with ``[server]`` lines and a ``[server.h2]`` table."""
    cfg = basic_config(upstream.port, extra)
    cfg = cfg.replace("[server]\n", "[server]\n" + server + "\n", 1)
    return cfg + ("\n[server.h2]\n" + h2 + "\n" if h2 else "")


def seen(upstream: Any, target: str) -> list[dict[str, Any]]:
    return [r for r in upstream.requests if r["target"] == target]


async def assert_still_served(app: Any, upstream: Any, client: Any) -> None:
    """A fresh HTTP/2 connection and a fresh HTTP/1.1 one both get answers."""
    before = len(upstream.requests)
    async with await H2Client.connect(app.port()) as other:
        r = await other.get(b"/still-h2")
        assert r.status == 200
        assert len(r.body) == 1024
    raw = await client.exchange(
        app.port(), b"GET /still-h1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert [x["status"] for x in client.parse_responses(raw)] == [200]
    assert [r["target"] for r in upstream.requests[before:]] == ["/still-h2", "/still-h1"]


# -- translation to HTTP/1.1 ---------------------------------------------------------
async def test_concurrent_streams_reach_the_upstream_as_clean_http1(
    start_proxy: Any, upstream: Any
) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        slow = await c.request(b"GET", b"/sleep/2")
        sids = [
            await c.request(
                b"GET",
                b"/echo?n=%d" % i,
                extra=[
                    (b"cookie", b"a=1"),
                    (b"x-n", b"%d" % i),
                    (b"te", b"trailers"),
                    (b"cookie", b"b=2"),
                ],
            )
            for i in range(6)
        ]
        for i, sid in enumerate(sids):
            r = await c.response(sid)
            assert r.status == 200
            assert json.loads(r.body)["target"] == f"/echo?n={i}"
        # The slow stream did not hold the others back: they ran concurrently.
        assert not c.streams[slow].done
        assert (await c.response(slow)).status == 200
    for i in range(6):
        (req,) = seen(upstream, f"/echo?n={i}")
        names = [n for n, _ in req["headers"]]
        assert not any(n.startswith(":") for n in names), names
        assert req["headers"][0] == ["host", "example.test"]  # from :authority, first
        assert names.count("host") == 1
        fields = dict(req["headers"])
        assert fields["cookie"] == "a=1; b=2"  # RFC 9113 §8.2.3: crumbs joined
        assert fields["x-n"] == str(i)
        assert fields["x-forwarded-proto"] == "http"
        assert "te" not in fields
        assert "connection" not in fields
    # One connection per stream in flight at once, at most.
    assert upstream.connections <= 7


async def test_a_full_multiplexed_client_keeps_its_upstream_connections(
    start_proxy: Any, upstream: Any
) -> None:
    """The default pool has room for every stream one HTTP/2 client may have
    in flight (max_concurrent_streams, 100): a second burst like the first
    reuses the first one's upstream connections instead of reopening most."""
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        for burst in range(2):
            # Long enough that all 100 are in flight at once on a loaded machine
            # (0.3 s let the first ones finish and lend their connections).
            sids = [await c.request(b"GET", b"/sleep/1.0") for _ in range(100)]
            for sid in sids:
                assert (await c.response(sid)).status == 200
            if burst == 0:
                opened = upstream.connections
                assert opened == 100  # all in flight at once
    assert upstream.connections == opened


async def test_host_comes_from_authority_or_the_host_field(start_proxy: Any, upstream: Any) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        a = await c.get(b"/echo?a", authority=b"one.test:8080")
        b = await c.get(b"/echo?b", authority=None, extra=[(b"host", b"two.test")])
        same = await c.get(b"/echo?c", authority=b"three.test", extra=[(b"host", b"three.test")])
    assert (a.status, b.status, same.status) == (200, 200, 200)
    hosts = {r["target"]: [v for n, v in r["headers"] if n == "host"] for r in upstream.requests}
    assert hosts == {
        "/echo?a": ["one.test:8080"],
        "/echo?b": ["two.test"],
        "/echo?c": ["three.test"],
    }


async def test_request_bodies_with_and_without_content_length(
    start_proxy: Any, upstream: Any
) -> None:
    body = bytes(range(256)) * 1000  # several DATA frames, more than one window
    digest = hashlib.sha256(body).hexdigest()
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        sized = await c.request(
            b"POST",
            b"/upload?sized",
            extra=[(b"content-length", str(len(body)).encode())],
            end=False,
        )
        unsized = await c.request(b"POST", b"/upload?unsized", end=False)
        for sid in (sized, unsized):
            # Window by window: the proxy acknowledges what the upstream took.
            for off in range(0, len(body), 16384):
                await c.until(lambda sid=sid: c.conn.local_flow_control_window(sid) >= 16384)
                await c.send_data(sid, body[off : off + 16384])
            await c.send_data(sid, b"", end=True)
        for sid in (sized, unsized):
            r = await c.response(sid, timeout=10)
            assert r.status == 200
            got = json.loads(r.body)
            assert (got["body_length"], got["body_sha256"]) == (len(body), digest)
    (req,) = seen(upstream, "/upload?unsized")
    # No length known: chunked on the HTTP/1.1 hop.
    assert dict(req["headers"]).get("transfer-encoding") == "chunked"


async def test_request_trailers_are_forwarded(start_proxy: Any, upstream: Any) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        r = await c.response(
            await c.request(
                b"POST",
                b"/upload",
                extra=[(b"te", b"trailers")],
                body=b"hello",
                trailers=[(b"x-checksum", b"abc")],
            )
        )
    assert r.status == 200
    got = json.loads(r.body)
    assert got["body_length"] == 5
    assert got["trailers"] == [["x-checksum", "abc"]]


async def test_trailers_after_a_sized_body_do_not_fail_the_request(
    start_proxy: Any, upstream: Any
) -> None:
    """HTTP/1.1 cannot carry trailers after a content-length body: they are dropped."""
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        r = await c.response(
            await c.request(
                b"POST",
                b"/upload",
                extra=[(b"content-length", b"5")],
                body=b"hello",
                trailers=[(b"x-checksum", b"abc")],
            )
        )
    assert r.status == 200
    assert json.loads(r.body)["body_length"] == 5


async def test_expect_100_continue(start_proxy: Any, upstream: Any) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        sid = await c.request(
            b"POST",
            b"/upload",
            extra=[(b"content-length", b"5"), (b"expect", b"100-continue")],
            end=False,
        )
        await c.until(lambda: c.streams[sid].informational == [100])
        await c.send_data(sid, b"hello", end=True)
        r = await c.response(sid)
    assert r.status == 200
    assert json.loads(r.body)["body_length"] == 5
    # Asked of the HTTP/1.1 upstream too (RFC 9110 §10.1.1); this one ignores it.
    assert dict(upstream.requests[0]["headers"])["expect"] == "100-continue"


async def test_unreachable_upstream_is_502_on_its_stream(start_proxy: Any, upstream: Any) -> None:
    dead = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = dead[0].socket.getsockname()[1]
    await dead[0].aclose()
    cfg = config(upstream).replace(f"127.0.0.1:{upstream.port}", f"127.0.0.1:{port}")
    app = await start_proxy(cfg)
    async with await H2Client.connect(app.port()) as c:
        for _ in range(2):  # an error page ends the stream, not the connection
            r = await c.get(b"/nowhere")
            assert r.status == 502
            assert r.header(b"content-length") == str(len(r.body)).encode()
        assert c.goaway is None


async def test_head_and_bodyless_statuses(start_proxy: Any, upstream: Any) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        head = await c.response(await c.request(b"HEAD", b"/bytes/100"))
        empty = await c.get(b"/status/204")
        missing = await c.get(b"/status/404")
    assert (head.status, head.header(b"content-length"), bytes(head.body)) == (200, b"100", b"")
    assert (empty.status, bytes(empty.body)) == (204, b"")
    assert missing.status == 404
    assert [r["method"] for r in upstream.requests] == ["HEAD", "GET", "GET"]


# -- flow control --------------------------------------------------------------------
async def test_a_slow_reader_holds_the_upstream_back(start_proxy: Any, upstream: Any) -> None:
    """The proxy never reads ahead of the client's window by more than a chunk:
    the upstream's writes block (socket buffers full), it is not drained into
    our memory; giving window back resumes the transfer; a reset ends it."""
    total = 100_000_000
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port(), auto_ack=False) as c:
        sid = await c.request(b"GET", b"/stream/%d" % total)
        body = c.streams[sid].body
        await c.until(lambda: len(body) >= 65535)

        async def settled() -> int:
            last = -1
            with trio.fail_after(10):
                while upstream.streamed != last:
                    last = upstream.streamed
                    await trio.sleep(0.3)
            return last

        stalled = await settled()
        assert len(body) == 65535  # exactly the client's window, nothing more
        # Loopback socket buffers hold a few MiB at most: far from 100 MB.
        assert stalled < 24_000_000, stalled
        for _ in range(4):
            await c.ack(sid)
            await c.until(lambda: c.unacked.get(sid, 0) >= 65535)
        assert len(body) == 5 * 65535
        assert bytes(body) == b"s" * len(body)
        await c.reset(sid, CANCEL)
        # The reset cancelled the flow and closed its upstream connection.
        with trio.fail_after(2):
            while upstream.closed < upstream.connections:
                await trio.sleep(0.01)
        assert upstream.streamed < total


async def test_reset_while_the_connection_is_congested_breaks_no_other_stream(
    start_proxy: Any, upstream: Any
) -> None:
    """Huge windows and a client that stops reading: the stream's task blocks
    writing for the whole connection. Resetting that stream then must not cut
    a frame in half: the connection stays usable for the other streams."""
    total = 200_000_000
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(
        app.port(), settings={0x4: 2**30}, connection_window=2**30
    ) as c:
        big = await c.request(b"GET", b"/stream/%d" % total)
        last = -1
        with trio.fail_after(10):
            while upstream.streamed != last:  # the socket buffers are full
                last = upstream.streamed
                await trio.sleep(0.2)
        await c.reset(big)
        r = await c.get(b"/echo?after")
        assert r.status == 200
        assert json.loads(r.body)["target"] == "/echo?after"
        assert c.goaway is None
        assert not c.closed
        with trio.fail_after(2):  # the reset flow's upstream connection was closed
            while upstream.closed < 1:
                await trio.sleep(0.01)
    assert upstream.streamed < total


async def test_client_reset_cancels_the_upstream_work(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        sid = await c.request(b"GET", b"/sleep/5")
        with trio.fail_after(2):
            while not seen(upstream, "/sleep/5"):
                await trio.sleep(0.01)
        start = trio.current_time()
        await c.reset(sid, CANCEL)
        with trio.fail_after(1):
            while upstream.abandoned < 1:
                await trio.sleep(0.01)
        assert trio.current_time() - start < 1
        # Only that stream ended: the connection carries on.
        r = await c.get(b"/after")
        assert r.status == 200
    await assert_still_served(app, upstream, client)


# -- refusals of the safe translation --------------------------------------------------
def _get(*extra: tuple[bytes, bytes], path: bytes = b"/echo") -> list[tuple[bytes, bytes]]:
    return request_fields(b"GET", path, extra=extra)


REFUSED = {
    "cr-in-value": (_get((b"x-a", b"1\r2")), 400),
    "lf-in-value": (_get((b"x-a", b"1\nx-b: 2")), 400),
    "nul-in-value": (_get((b"x-a", b"1\x002")), 400),
    "crlf-in-path": (request_fields(b"GET", b"/a\r\nx: y"), 400),
    "upper-case-name": (_get((b"X-Upper", b"1")), 400),
    "connection": (_get((b"connection", b"keep-alive")), 400),
    "transfer-encoding": (_get((b"transfer-encoding", b"chunked")), 400),
    "upgrade": (_get((b"upgrade", b"h2c")), 400),
    "te-gzip": (_get((b"te", b"gzip")), 400),
    "authority-host-mismatch": (_get((b"host", b"other.test")), 400),
    "path-with-space": (request_fields(b"GET", b"/a b"), 400),
    "path-absolute-form": (request_fields(b"GET", b"http://evil.test/"), 400),
    "path-empty": (request_fields(b"GET", b""), 400),
    "no-path": ([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")], 400),
    "connect": ([(b":method", b"CONNECT"), (b":authority", b"evil.test:443")], 501),
    "pseudo-after-regular": (
        [(b":method", b"GET"), (b":scheme", b"http"), (b"x", b"1"), (b":path", b"/")],
        400,
    ),
}


@pytest.mark.parametrize(("fields", "status"), REFUSED.values(), ids=REFUSED.keys())
async def test_unsafe_requests_are_refused_per_stream(
    start_proxy: Any, upstream: Any, fields: list[tuple[bytes, bytes]], status: int
) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        r = await c.response(await c.request(fields=fields))
        assert r.status == status
        assert upstream.requests == []
        assert upstream.connections == 0
        # A stream error, not a connection error: the same connection goes on.
        assert (await c.get(b"/next")).status == 200
        assert c.goaway is None
    assert [r["target"] for r in upstream.requests] == ["/next"]


@pytest.mark.parametrize(
    ("declared", "chunks"),
    [(100, [b"x" * 10]), (10, [b"x" * 6, b"y" * 6]), (5, [b"x" * 10])],
    ids=["larger-than-data", "smaller-split", "smaller-one-frame"],
)
async def test_content_length_mismatch_never_completes_upstream(
    start_proxy: Any, upstream: Any, declared: int, chunks: list[bytes]
) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        sid = await c.request(
            b"POST", b"/upload", extra=[(b"content-length", b"%d" % declared)], end=False
        )
        for i, chunk in enumerate(chunks):
            await c.send_data(sid, chunk, end=i == len(chunks) - 1)
        r = await c.response(sid)
        assert r.reset == PROTOCOL_ERROR
        assert r.status is None
        # The upstream may have seen the head (it streams), never a whole body.
        await trio.sleep(0.2)
        assert all("body_length" not in x for x in upstream.requests), upstream.requests
        assert upstream.closed == upstream.connections
        # Only that stream was reset.
        assert (await c.get(b"/next")).status == 200
        assert c.goaway is None


# -- floods ------------------------------------------------------------------------------
async def flood(raw: RawH2, frames: list[Any], *, batch: int = 200) -> None:
    """Write ``frames`` in batches while the server is still reading; stop when it closes."""
    for i in range(0, len(frames), batch):
        await raw.send(*frames[i : i + batch])
        if raw.closed:
            return
        await trio.sleep(0)


async def flood_and_read(raw: RawH2, frames: list[Any], timeout: float = 5.0) -> None:
    """Flood and read concurrently (so the GOAWAY is read before any reset)."""
    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood, raw, frames)
            await raw.until_closed(timeout)


def assert_calm(raw: RawH2) -> GoAwayFrame:
    goaway = raw.goaway
    assert goaway is not None, raw.frames[-5:]
    assert goaway.error_code == ENHANCE_YOUR_CALM, goaway
    assert raw.closed
    return goaway


async def test_rapid_reset_is_cut_off(start_proxy: Any, upstream: Any, client: Any) -> None:
    app = await start_proxy(config(upstream))
    raw = await RawH2.connect(app.port())
    async with raw:
        frames: list[Any] = []
        for sid in range(1, 2 * 3000, 2):
            frames += [raw.headers(sid, _get(path=b"/sleep/1")), raw.rst(sid)]
        start = trio.current_time()
        await flood_and_read(raw, frames)
        goaway = assert_calm(raw)
        assert trio.current_time() - start < 3
    # Cut after the reset budget (200), far before the 3000 streams were opened.
    assert goaway.last_stream_id < 2 * 400
    completed = sum(1 for s in raw.statuses().values() if s == 200)
    assert len(upstream.requests) <= completed + 1  # a stream split across two reads
    await assert_still_served(app, upstream, client)


async def test_resets_after_the_work_started_are_bounded(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    """Streams that reach the upstream, then get reset: at most the concurrency
    limit at once, and about the reset budget in all (200, refilled at 20/s)."""
    app = await start_proxy(config(upstream, h2="max_concurrent_streams = 10"))
    raw = await RawH2.connect(app.port())
    start = trio.current_time()
    async with raw:
        sid = 1
        for _ in range(40):
            batch = list(range(sid, sid + 20, 2))
            sid += 20
            await raw.send(*[raw.headers(s, _get(path=b"/sleep/5")) for s in batch])
            with trio.move_on_after(1) as waited:
                while len(upstream.requests) < upstream.abandoned + len(batch):
                    await trio.sleep(0.005)
            if waited.cancelled_caught:
                break  # refused: the connection is over
            assert upstream.connections - upstream.closed <= 10
            await raw.send(*[raw.rst(s) for s in batch])
            with trio.fail_after(2):
                while upstream.abandoned < len(upstream.requests):
                    await trio.sleep(0.005)
        await raw.until_closed()
        assert_calm(raw)
    elapsed = trio.current_time() - start
    assert 150 <= len(upstream.requests) <= 200 + 20 * elapsed + 10
    assert upstream.abandoned == len(upstream.requests)  # each one's upstream work was cancelled
    await assert_still_served(app, upstream, client)


async def test_continuation_flood_is_cut_off(start_proxy: Any, upstream: Any, client: Any) -> None:
    app = await start_proxy(config(upstream))
    raw = await RawH2.connect(app.port())
    async with raw:
        block = raw.block(_get((b"x-a", b"1")))
        frames: list[Any] = [raw.headers(1, [], end_headers=False)]
        frames[0].data = block
        frames += [raw.continuation(1, b"") for _ in range(5000)]
        await flood_and_read(raw, frames)
        assert_calm(raw)
    assert upstream.requests == []
    await assert_still_served(app, upstream, client)


async def test_big_continuation_frames_are_cut_off(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    """Not more than twice max_header_list_size of header block is ever buffered."""
    app = await start_proxy(config(upstream))
    raw = await RawH2.connect(app.port())
    async with raw:
        block = raw.block(_get(*[(b"x-%d" % i, b"v" * 16000) for i in range(12)]))
        assert len(block) > 2 * 65536
        step = 16384
        frames: list[Any] = [raw.headers(1, [], end_headers=False)]
        frames[0].data = block[:step]
        for off in range(step, len(block), step):
            last = off + step >= len(block)
            frames.append(raw.continuation(1, block[off : off + step], end_headers=last))
        await flood_and_read(raw, frames)
        assert_calm(raw)
    assert upstream.requests == []
    await assert_still_served(app, upstream, client)


@pytest.mark.parametrize("kind", ["settings", "ping", "priority"])
async def test_control_frame_floods_are_cut_off(
    start_proxy: Any, upstream: Any, client: Any, kind: str
) -> None:
    from hyperframe.frame import PriorityFrame

    app = await start_proxy(config(upstream))
    raw = await RawH2.connect(app.port())
    async with raw:
        make = {
            "settings": lambda i: SettingsFrame(0, settings={}),
            "ping": lambda i: PingFrame(0, opaque_data=i.to_bytes(8, "big")),
            "priority": lambda i: PriorityFrame(2 * i + 1, depends_on=0, stream_weight=15),
        }[kind]
        await flood_and_read(raw, [make(i) for i in range(5000)])
        assert_calm(raw)
        acks = [f for f in raw.frames if isinstance(f, PingFrame | SettingsFrame)]
        assert len(acks) <= 1050  # the budget (1000), refilled at 100/s, and our handshake
    assert upstream.requests == []
    await assert_still_served(app, upstream, client)


async def test_flood_budgets_come_from_the_configuration(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    h2 = "control_budget = 20\nreset_budget = 5\nempty_data_budget = 3\nmax_continuation_frames = 2"
    app = await start_proxy(config(upstream, h2=h2))
    for frames in (
        lambda raw: [PingFrame(0, opaque_data=b"%08d" % i) for i in range(100)],
        lambda raw: [
            f for sid in range(1, 40, 2) for f in (raw.headers(sid, _get()), raw.rst(sid))
        ],
        lambda raw: [raw.headers(1, _get(), end_stream=False)] + [raw.data(1)] * 10,
        lambda raw: (
            [raw.headers(1, _get(), end_headers=False)]
            + [raw.continuation(1, b"") for _ in range(3)]
        ),
    ):
        raw = await RawH2.connect(app.port())
        async with raw:
            await flood_and_read(raw, frames(raw))
            assert_calm(raw)
            assert len([f for f in raw.frames if isinstance(f, PingFrame)]) <= 21
    await assert_still_served(app, upstream, client)


async def test_ping_flood_from_a_client_that_never_reads(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    app = await start_proxy(config(upstream))
    raw = await RawH2.connect(app.port())
    async with raw:
        pings = [PingFrame(0, opaque_data=i.to_bytes(8, "big")) for i in range(20000)]
        with trio.move_on_after(3):  # a write may block for good once the proxy stops reading
            await flood(raw, pings)
        # Meanwhile the proxy serves everyone else.
        await assert_still_served(app, upstream, client)
        await raw.until_closed()
        assert_calm(raw)
        acks = [f for f in raw.frames if isinstance(f, PingFrame)]
        assert len(acks) <= 1050  # the budget (1000), refilled at 100/s


async def test_empty_data_flood_is_cut_off(start_proxy: Any, upstream: Any, client: Any) -> None:
    app = await start_proxy(config(upstream))
    raw = await RawH2.connect(app.port())
    async with raw:
        post = request_fields(b"POST", b"/upload", extra=[(b"content-length", b"10")])
        frames: list[Any] = [raw.headers(1, post, end_stream=False)]
        frames += [raw.data(1, b"") for _ in range(5000)]
        await flood_and_read(raw, frames)
        assert_calm(raw)
    await trio.sleep(0.2)
    assert len(upstream.requests) <= 1
    assert all("body_length" not in r for r in upstream.requests)
    assert upstream.closed == upstream.connections
    await assert_still_served(app, upstream, client)


async def test_streams_over_the_limit_are_refused(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    app = await start_proxy(config(upstream, h2="max_concurrent_streams = 5"))
    raw = await RawH2.connect(app.port())
    async with raw:
        frames = [raw.headers(sid, _get(path=b"/sleep/0.5")) for sid in range(1, 21, 2)]
        await raw.send(*frames)
        await raw.until(lambda: len(raw.statuses()) + len(raw.resets()) >= 10)
        refused = [sid for sid, code in raw.resets().items() if code == REFUSED_STREAM]
        assert sorted(raw.statuses()) == [1, 3, 5, 7, 9]
        assert set(raw.statuses().values()) == {200}
        assert refused == [11, 13, 15, 17, 19]
        assert raw.goaway is None
        await raw.until(lambda: raw.ended() >= {1, 3, 5, 7, 9})
        # Once those finished, new streams are taken again.
        await raw.send(raw.headers(21, _get(path=b"/again")))
        await raw.until(lambda: 21 in raw.statuses())
        assert raw.statuses()[21] == 200
    assert len(seen(upstream, "/sleep/0.5")) == 5
    await assert_still_served(app, upstream, client)


async def test_header_list_over_the_limit_is_431(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    app = await start_proxy(config(upstream, h2="max_header_list_size = 8192"))
    async with await H2Client.connect(app.port()) as c:
        big = await c.response(await c.request(b"GET", b"/big", extra=[(b"x-big", b"v" * 9000)]))
        assert big.status == 431
        assert (await c.get(b"/small", extra=[(b"x-small", b"v" * 4000)])).status == 200
    assert [r["target"] for r in upstream.requests] == ["/small"]
    await assert_still_served(app, upstream, client)


async def test_header_block_far_over_the_limit_ends_the_connection(
    start_proxy: Any, upstream: Any, client: Any
) -> None:
    """Over twice the limit, decoding stops: the connection ends (HPACK state is lost)."""
    app = await start_proxy(config(upstream, h2="max_header_list_size = 8192"))
    raw = await RawH2.connect(app.port())
    async with raw:
        block = raw.block(_get(*[(b"x-%d" % i, b"~" * 1500) for i in range(10)]))
        assert len(block) > 2 * 8192
        frames: list[Any] = [raw.headers(1, [], end_headers=False)]
        frames[0].data = block[:8000]
        for off in range(8000, len(block), 8000):
            end = off + 8000 >= len(block)
            frames.append(raw.continuation(1, block[off : off + 8000], end_headers=end))
        await flood_and_read(raw, frames)
        assert_calm(raw)
    assert upstream.requests == []
    await assert_still_served(app, upstream, client)


# -- idle connections, drain -------------------------------------------------------------
async def test_idle_connection_is_closed_after_keepalive_timeout(
    start_proxy: Any, upstream: Any
) -> None:
    app = await start_proxy(config(upstream, server="keepalive_timeout_s = 0.5"))
    async with await H2Client.connect(app.port()) as c:
        assert (await c.get(b"/one")).status == 200
        start = trio.current_time()
        await c.read_until_closed(timeout=3)
        assert 0.4 < trio.current_time() - start < 1.5
        assert c.goaway is not None
        assert c.goaway.error_code == NO_ERROR
        assert c.goaway.last_stream_id == 1


async def test_busy_connection_is_not_closed_by_keepalive_timeout(
    start_proxy: Any, upstream: Any
) -> None:
    app = await start_proxy(config(upstream, server="keepalive_timeout_s = 0.3"))
    async with await H2Client.connect(app.port()) as c:
        r = await c.get(b"/sleep/1", timeout=3)
        assert r.status == 200
        assert c.goaway is None


async def test_client_goaway_lets_its_streams_finish(start_proxy: Any, upstream: Any) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        sid = await c.request(b"GET", b"/sleep/0.3")
        await c.send_raw(GoAwayFrame(0, last_stream_id=0, error_code=NO_ERROR))
        r = await c.response(sid)
        assert (r.status, bytes(r.body)) == (200, b"slept\n")
        await c.read_until_closed(timeout=3)
    assert upstream.abandoned == 0


async def test_client_goaway_with_an_error_cancels_its_streams(
    start_proxy: Any, upstream: Any
) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        await c.request(b"GET", b"/sleep/5")
        with trio.fail_after(2):
            while not seen(upstream, "/sleep/5"):
                await trio.sleep(0.01)
        await c.send_raw(GoAwayFrame(0, last_stream_id=0, error_code=PROTOCOL_ERROR))
        await c.read_until_closed(timeout=2)
    with trio.fail_after(1):
        while upstream.abandoned < 1:
            await trio.sleep(0.01)


async def test_drain_lets_streams_in_flight_finish(start_proxy: Any, upstream: Any) -> None:
    app = await start_proxy(config(upstream))
    async with await H2Client.connect(app.port()) as c:
        sid = await c.request(b"GET", b"/sleep/0.5")
        with trio.fail_after(2):
            while not seen(upstream, "/sleep/0.5"):
                await trio.sleep(0.01)
        app.stop()
        # Told at once: no new streams (the one in flight may finish).
        await c.until(lambda: c.goaway is not None, timeout=1)
        assert c.goaway is not None
        assert (c.goaway.error_code, c.goaway.last_stream_id) == (NO_ERROR, sid)
        assert not c.streams[sid].done
        late = await c.request(b"GET", b"/late")
        assert (await c.response(late)).reset == REFUSED_STREAM
        r = await c.response(sid, timeout=3)
        assert r.status == 200
        assert bytes(r.body) == b"slept\n"
        await c.read_until_closed(timeout=3)
    assert "/late" not in [r["target"] for r in upstream.requests]


async def test_drain_closes_idle_connections_with_goaway(start_proxy: Any, upstream: Any) -> None:
    app = await start_proxy(config(upstream))
    async with (
        await H2Client.connect(app.port()) as used,
        await H2Client.connect(app.port()) as fresh,
    ):
        assert (await used.get(b"/one")).status == 200
        await trio.sleep(0.1)
        start = trio.current_time()
        app.stop()
        await used.read_until_closed(timeout=2)
        await fresh.read_until_closed(timeout=2)
        assert trio.current_time() - start < 1
        for c, last in ((used, 1), (fresh, 0)):
            assert c.goaway is not None, (last, c.events)
            assert (c.goaway.error_code, c.goaway.last_stream_id) == (NO_ERROR, last)


async def test_shutdown_delay_serves_new_streams_after_a_first_goaway(
    start_proxy: Any, upstream: Any
) -> None:
    """During ``shutdown_delay_s`` a connection says GOAWAY(2**31-1), which refuses
    nothing (a stream already on its way is served), and the drain's own GOAWAY,
    naming the last stream, only comes when the delay is over."""
    cfg = config(upstream).replace("[kernel]\n", "[kernel]\nshutdown_delay_s = 0.5\n", 1)
    app = await start_proxy(cfg)
    async with await H2Client.connect(app.port()) as c:
        slow = await c.request(b"GET", b"/sleep/0.2")
        with trio.fail_after(2):
            while not seen(upstream, "/sleep/0.2"):
                await trio.sleep(0.01)
        start = trio.current_time()
        app.stop()
        await trio.sleep(0.05)
        assert app.server_info().draining()
        during = await c.request(b"GET", b"/during")
        r = await c.response(during)
        assert r.status == 200, r
        assert c.goaway is not None
        assert (c.goaway.error_code, c.goaway.last_stream_id) == (NO_ERROR, 2**31 - 1)
        r = await c.response(slow, timeout=3)
        assert (r.status, bytes(r.body)) == (200, b"slept\n")
        await c.read_until_closed(timeout=3)
        assert trio.current_time() - start >= 0.45, "closed before the delay was over"
        assert (c.goaway.error_code, c.goaway.last_stream_id) == (NO_ERROR, during)
    assert [r["target"] for r in upstream.requests] == ["/sleep/0.2", "/during"]


async def test_write_out_with_nothing_queued_does_not_yield() -> None:
    """An uncontended writer takes the lock without a yield: a stream ending with
    its bytes already out costs no trip through the scheduler."""
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        conn = connection_on(H2Connection, ours)
        conn.proto.data_to_send()  # whatever the preface queued: not under test
        _, count = await counting_yields(conn.write_out)
        assert count == 0
        assert not conn._write_lock.locked()


def _frame_types(data: bytes) -> list[int]:
    """The type of each frame in ``data``, in order."""
    types, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        types.append(data[pos + 3])
        pos += 9 + length
    assert pos == len(data)
    return types


async def test_writers_at_the_same_time_share_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams that queue frames in the same scheduler round cost one system
    call: the first writer back from its yield takes everyone's bytes."""
    writes: list[bytes] = []
    real_send = sockio.SocketIO.send

    async def recording(io: sockio.SocketIO, data: bytes) -> None:
        writes.append(data)
        await real_send(io, data)

    monkeypatch.setattr(sockio.SocketIO, "send", recording)
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        conn = connection_on(H2Connection, ours)
        conn.proto.initiate()
        conn.proto.data_to_send()  # the preface: not under test

        async def writer(opaque: bytes) -> None:
            conn.proto._conn.out += frame(PING, 0, 0, opaque)  # any frame of this writer's own
            await conn.write_out()

        await in_one_round(lambda: writer(b"first..."), lambda: writer(b"second.."))
    assert len(writes) == 1
    assert _frame_types(writes[0]) == [0x6, 0x6]  # both PINGs


async def test_a_writer_cancelled_at_its_yield_leaves_the_bytes_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[bytes] = []

    async def recording(io: sockio.SocketIO, data: bytes) -> None:
        writes.append(data)

    monkeypatch.setattr(sockio.SocketIO, "send", recording)
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        conn = connection_on(H2Connection, ours)
        conn.proto.initiate()
        with trio.CancelScope() as scope:
            scope.cancel()
            await conn.write_out()
        assert scope.cancelled_caught
        assert writes == []
        assert conn.proto.has_output()
        await conn.write_out()
    assert len(writes) == 1
    assert _frame_types(writes[0])[0] == 0x4
    assert not conn.proto.has_output()


async def test_a_removed_listener_s_connection_refuses_new_streams_and_says_goaway(
    start_proxy: Any,
) -> None:
    """Before, a kept HTTP/2 connection of a listener a reload removed answered
    every new stream with a 503, for as long as the client kept it. Now its
    next stream is refused (safe to retry, RFC 9113 §8.7), GOAWAY(NO_ERROR)
    follows at once, and the connection ends."""
    from tests.helpers.sockets import free_port

    port = free_port()

    def cfg(second: bool) -> str:
        text = (
            "[kernel]\nwatch_config = false\n"
            '[[listeners]]\nname = "a"\nbind = "127.0.0.1:0"\ndefault_route = "r"\n'
            '[[routes]]\nname = "r"\nplugins = ["respond"]\n[plugins.respond]\nbody = "hi"\n'
        )
        if second:
            text += f'[[listeners]]\nname = "b"\nbind = "127.0.0.1:{port}"\ndefault_route = "r"\n'
        return text

    app = await start_proxy(cfg(True))
    async with await H2Client.connect(port) as h2c:
        assert (await h2c.get(b"/one")).status == 200
        app.config_path.write_text(cfg(False))
        assert await app.reload("test") is True
        r = await h2c.get(b"/two")
        assert (r.status, r.reset) == (None, REFUSED_STREAM)
        await h2c.read_until_closed()
        assert h2c.goaway is not None
        assert h2c.goaway.error_code == NO_ERROR


class _BrokenTransform:
    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes:
        raise RuntimeError("transform bug")


async def test_a_response_failing_before_any_of_it_went_out_is_a_502_page(
    start_proxy: Any, upstream: Any
) -> None:
    """Before, the stream was reset: its HEADERS were still ours to take back,
    as HTTP/1.1 does. The page replaces the response; only the stream ends."""
    text = config(upstream).replace("[kernel]\n", '[kernel]\nplugins = ["broken"]\n', 1)
    app = await start_proxy(text, extra_plugins={"broken": _BrokenTransform()})
    async with await H2Client.connect(app.port()) as h2c:
        for path in (b"/bytes/100", b"/bytes/200"):  # the connection goes on
            r = await h2c.get(path)
            assert r.status == 502
            assert r.reset is None
            assert r.body.startswith(b"502 Bad Gateway\n")
            assert r.header(b"content-length") == str(len(r.body)).encode()


async def test_a_stream_whose_window_stays_shut_is_reset_after_send_timeout(
    start_proxy: Any, upstream: Any
) -> None:
    """A client that never opens its window (SETTINGS_INITIAL_WINDOW_SIZE 0)
    used to hold each stream, its flow and its upstream connection for ever:
    the wait for window had no deadline (slow read, CVE-2019-9517's class)."""
    app = await start_proxy(config(upstream, server="send_timeout_s = 0.5"))
    async with await H2Client.connect(app.port(), settings={0x4: 0}) as h2c:
        sid = await h2c.request(b"GET", b"/bytes/100000")
        with trio.fail_after(5):
            r = await h2c.response(sid)
        assert r.status == 200
        assert r.reset == CANCEL
        assert len(r.body) == 0
        with trio.fail_after(5):
            while upstream.closed < upstream.connections:
                await trio.sleep(0.02)  # its upstream connection is let go
        assert not h2c.closed  # only the stream ends


# -- a refused stream is a flow: only trellis_flow_done sees it -----------------------------------
#: name -> (fields, status, then what the flow's request says: method, path, host).
REFUSED_FLOWS: dict[str, tuple[list[tuple[bytes, bytes]], int, str, str, str]] = {
    "upper-case-name": (_get((b"X-Upper", b"1")), 400, "GET", "/echo", "example.test"),
    "path-with-space": (request_fields(b"GET", b"/a b"), 400, "GET", "", "example.test"),
    "bad-method": (request_fields(b"G T", b"/m"), 400, "", "/m", "example.test"),
    "bad-authority": (request_fields(b"GET", b"/h", authority=b"a b"), 400, "GET", "/h", ""),
    "connect": (
        [(b":method", b"CONNECT"), (b":authority", b"evil.test:443")],
        501,
        "CONNECT",
        "",
        "evil.test:443",
    ),
    # Only a limit refused these: the whole head is told.
    "path-too-long": (
        request_fields(b"GET", b"/" + b"p" * 300),
        414,
        "GET",
        "/" + "p" * 300,
        "example.test",
    ),
    "too-many-fields": (
        _get(*[(b"x-%d" % i, b"1") for i in range(12)]),
        431,
        "GET",
        "/echo",
        "example.test",
    ),
}


async def test_a_refused_stream_is_a_flow_that_only_flow_done_sees(
    start_proxy: Any, upstream: Any
) -> None:
    """A stream answered with an error status (not reset) reaches
    trellis_flow_done once; before, no hook saw it (and its page said
    ``flow: -``)."""
    probe = Probe()
    cfg = config(upstream, server="max_request_line = 200\nmax_header_count = 10")
    cfg = cfg.replace("[kernel]\n", '[kernel]\nplugins = ["probe"]\n')
    app = await start_proxy(cfg, extra_plugins={"probe": probe})
    ids: dict[str, str] = {}
    async with await H2Client.connect(app.port()) as c:
        for name, (fields, status, *_) in REFUSED_FLOWS.items():
            r = await c.response(await c.request(fields=fields))
            assert (r.status, r.reset) == (status, None), name
            (line,) = [ln for ln in bytes(r.body).decode().splitlines() if ln.startswith("flow: ")]
            ids[name] = line.removeprefix("flow: ")
        assert (await c.get(b"/next")).status == 200
    with trio.fail_after(2):
        while len(probe.done) < len(REFUSED_FLOWS) + 1:
            await trio.sleep(0.01)
    await trio.sleep(0.05)
    assert [r["target"] for r in upstream.requests] == ["/next"]
    by_id = {flow.id: flow for flow in probe.done}
    assert len(by_id) == len(probe.done) == len(REFUSED_FLOWS) + 1
    for name, (_, status, method, path, host) in REFUSED_FLOWS.items():
        flow = by_id[ids[name]]
        assert probe.hooks(flow) == ["trellis_flow_done"], name
        assert isinstance(flow.error, sdk.RemoteProtocolError)
        assert flow.error.status_hint == status
        assert flow.response is not None
        assert flow.response.status_code == status
        assert flow.bytes_out == len(flow.response.body or b"")
        assert flow.route == ""
        request = flow.request
        assert (request.method, request.path, request.authority) == (method, path, host), name
        assert request.http_version == "2"
    assert app.state.active_flows == 0
