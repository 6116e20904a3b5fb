"""Sending the request upstream (kernel/io/sendrequest.py): early answers,
``Expect: 100-continue``, the send deadline.

RFC 9112 §9.5: an upstream may answer before it has read the whole body,
and stop reading. RFC 9110 §10.1.1: a client's ``Expect: 100-continue``
goes to the upstream, whose word (``100`` or a final answer) decides whether
the body is uploaded. Real sockets, bare-socket origins (``RawUpstream``).
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import sdk
from kernel.io import upstream as upstream_mod
from tests.conftest import basic_config
from tests.helpers.h2client import H2Client
from tests.kernel.io.test_upstream import RawUpstream, stats


class EarlyAnswer(RawUpstream):
    """Answers 413 to the head of a request, without reading its body; then
    closes (``then="close"``), stops reading but keeps the connection
    (``"stall"``), or reads and drops the body (``"drain"``). ``"late"``
    answers only once the socket buffers are full and our write waits, then
    stalls. ``"silent"`` never answers nor reads."""

    def __init__(self, then: str) -> None:
        super().__init__(0, read_next=False)
        self.then = then

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        if not await self.read_head(stream, buf):
            return
        if self.then == "late":
            await trio.sleep(0.5)
        if self.then != "silent":
            await stream.send_all(
                b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nnope"
            )
        if self.then == "close":
            await trio.sleep(0.2)
            return
        if self.then == "drain":
            while await stream.receive_some(65536):
                pass
            return
        await trio.sleep_forever()


async def post_big(port: int, size: int = 64 * 1024 * 1024) -> tuple[bytes, bool]:
    """POST a large body while reading the answer: (what came back, whether the
    body was all sent). The body stops when the proxy stops taking it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    sent_all = False
    answer = b""

    async def send() -> None:
        nonlocal sent_all
        head = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size
        chunk = b"x" * 65536
        try:
            await stream.send_all(head)
            for _ in range(size // len(chunk)):
                await stream.send_all(chunk)
            sent_all = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        try:
            while data := await stream.receive_some(65536):
                answer += data
        except trio.BrokenResourceError:
            pass
        nursery.cancel_scope.cancel()
    return answer, sent_all


@pytest.mark.parametrize("then", ["close", "stall", "drain", "late"])
async def test_an_early_answer_reaches_the_client(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str, then: str
) -> None:
    """RFC 9112 §9.5: the upstream refuses a body before reading it; the client
    gets that answer, not a 502 nor a wait without end, and the connection is
    not pooled (the upstream would read the rest of the body as a request).

    With the default send deadline (60 s): an upstream that stops reading is
    heard while our write waits for room, not when the deadline ends the wait.
    """
    raw: EarlyAnswer = await nursery.start(EarlyAnswer(then).serve)
    app = await start_proxy(basic_config(raw.port, http1=codec))
    with trio.fail_after(10):
        answer, sent_all = await post_big(app.port())
    (resp,) = client.parse_responses(answer, [b"POST"])
    assert resp["status"] == 413
    assert resp["body"] == b"nope"
    assert resp["headers"]["connection"] == "close"
    assert not sent_all
    assert stats(app)[2] == 0  # nothing idle in the pool


async def test_an_upstream_that_takes_no_body_is_504(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    raw: EarlyAnswer = await nursery.start(EarlyAnswer("silent").serve)
    cfg = basic_config(raw.port, http1=codec).replace(
        "[upstream]\n", "[upstream]\nsend_timeout_s = 0.5\n", 1
    )
    app = await start_proxy(cfg)
    with trio.fail_after(10):
        answer, _ = await post_big(app.port())
    (resp,) = client.parse_responses(answer, [b"POST"])
    assert resp["status"] == 504


# -- Expect: 100-continue ---------------------------------------------------------
class ExpectUpstream(RawUpstream):
    """Answers a request that asks ``Expect: 100-continue``: ``"refuse"``
    answers 401 to the head at once (after ``interim``, in the same
    write), then records every byte that still
    comes (``after``) until the proxy closes; ``"continue"`` waits
    ``delay`` seconds, sends ``100 Continue``, reads the body and answers
    200 with its length."""

    def __init__(self, mode: str, delay: float = 0.0, *, interim: bytes = b"") -> None:
        super().__init__(0, read_next=False)
        self.mode = mode
        self.delay = delay
        self.interim = interim
        self.after = b""
        self.finished = trio.Event()

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        try:
            if not await self.read_head(stream, buf):
                return
            if self.mode == "refuse":
                # ``interim`` (1xx heads) goes in the same write as the 401.
                await stream.send_all(
                    self.interim + b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\ndeny"
                )
                after = bytes(buf)
                with trio.move_on_after(5):
                    while data := await stream.receive_some(65536):
                        after += data
                self.after = after
                return
            await trio.sleep(self.delay)
            await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            want = next(
                int(line.split(b":")[1])
                for line in self.heads[-1].split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(buf) < want:
                buf += await stream.receive_some(65536)
            body = b"%d" % len(buf)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        finally:
            self.finished.set()


def expect_head(size: int) -> bytes:
    return (
        b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % size
    )


async def read_until(stream: trio.SocketStream, got: bytes, marker: bytes) -> bytes:
    with trio.fail_after(5):
        while marker not in got:
            data = await stream.receive_some(65536)
            assert data, got
            got += data
    return got


async def read_to_end(stream: trio.SocketStream, got: bytes) -> bytes:
    with trio.fail_after(5):
        try:
            while data := await stream.receive_some(65536):
                got += data
        except trio.BrokenResourceError:
            pass
    return got


@pytest.mark.parametrize("sends_body", [False, True])
async def test_expect_continue_a_final_answer_first_saves_the_upload(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str, sends_body: bool
) -> None:
    """The upstream refuses the head: the client gets its 401 and no 100, the
    body never reaches the upstream (whether or not the client sends it
    anyway), and the client's connection closes after the answer."""
    up: ExpectUpstream = await nursery.start(ExpectUpstream("refuse").serve)
    app = await start_proxy(basic_config(up.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        await stream.send_all(expect_head(100_000))
        got = await read_until(stream, b"", b"deny")
        if sends_body:
            try:
                await stream.send_all(b"x" * 100_000)
            except trio.BrokenResourceError:
                pass
        got = await read_to_end(stream, got)
    assert b"100 Continue" not in got
    (resp,) = client.parse_responses(got, [b"POST"])
    assert resp["status"] == 401
    assert resp["body"] == b"deny"
    assert resp["headers"]["connection"] == "close"
    assert b"\r\nexpect: 100-continue" in up.heads[0].lower()
    with trio.fail_after(5):
        await up.finished.wait()
    assert up.after == b""  # not one byte of the body
    assert stats(app)[2] == 0  # the upstream connection was not pooled


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"


@pytest.mark.parametrize(
    ("interim", "relayed"),
    [
        (CONTINUE, [b"HTTP/1.1 100 Continue"]),
        (HINTS, [b"HTTP/1.1 103 Early Hints"]),
        (HINTS + CONTINUE, [b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 100 Continue"]),
        (CONTINUE + HINTS, [b"HTTP/1.1 100 Continue", b"HTTP/1.1 103 Early Hints"]),
    ],
    ids=["100", "103", "103+100", "100+103"],
)
@pytest.mark.parametrize("sends_body", [False, True])
async def test_expect_continue_a_final_answer_in_the_same_read_as_a_1xx(
    start_proxy: Any,
    nursery: trio.Nursery,
    client: Any,
    codec: str,
    interim: bytes,
    relayed: list[bytes],
    sends_body: bool,
) -> None:
    """The upstream's 1xx and its 401 come in one packet: the client gets the
    1xx, then the 401 at once, whether or not it sends its body after the
    100 (the 401 used to wait in the codec's buffer for the client's first
    body chunk: a client that sends none got it only at a timeout). The
    body never reaches the upstream, and the client's connection closes
    after the answer."""
    up: ExpectUpstream = await nursery.start(ExpectUpstream("refuse", interim=interim).serve)
    app = await start_proxy(basic_config(up.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        await stream.send_all(expect_head(100_000))
        got = b""
        if sends_body and b" 100 " in interim:
            got = await read_until(stream, got, b" 100 Continue\r\n\r\n")
            try:
                await stream.send_all(b"x" * 100_000)
            except trio.BrokenResourceError:
                pass
        with trio.fail_after(3):
            got = await read_until(stream, got, b"deny")
        got = await read_to_end(stream, got)
    lines, final = interim_blocks(got)
    assert lines == relayed
    (resp,) = client.parse_responses(final, [b"POST"])
    assert resp["status"] == 401
    assert resp["body"] == b"deny"
    assert resp["headers"]["connection"] == "close"
    with trio.fail_after(5):
        await up.finished.wait()
    assert up.after == b""  # not one byte of the body
    assert stats(app)[2] == 0  # the upstream connection was not pooled


@pytest.mark.parametrize("delay", [0.3, 1.5])
async def test_expect_continue_the_upstream_s_100_is_the_client_s_only_one(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str, delay: float
) -> None:
    """The upstream says 100 (in time, or after we gave up waiting and said
    ours): the client gets exactly one 100, then the final answer."""
    up: ExpectUpstream = await nursery.start(ExpectUpstream("continue", delay).serve)
    app = await start_proxy(basic_config(up.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        start = time.monotonic()
        await stream.send_all(expect_head(5))
        got = await read_until(stream, b"", b"\r\n\r\n")
        waited = time.monotonic() - start
        assert got == b"HTTP/1.1 100 Continue\r\n\r\n"
        await stream.send_all(b"hello")
        got = await read_until(stream, got, b"\r\n\r\n5")
        await trio.sleep(0.2)  # a second 100 would be here by now
        got += await read_pending(stream)
    # The upstream's own 100 when it came in time; else ours after a second.
    assert min(delay, 1.0) - 0.05 <= waited < min(delay, 1.0) + 0.8
    assert got.count(b" 100 ") == 1
    _, final = got.split(b"\r\n\r\n", 1)
    (resp,) = client.parse_responses(final, [b"POST"])
    assert resp["status"] == 200
    assert resp["body"] == b"5"
    assert b"\r\nexpect: 100-continue" in up.heads[0].lower()


async def read_pending(stream: trio.SocketStream) -> bytes:
    got = b""
    with trio.move_on_after(0.05):
        while data := await stream.receive_some(65536):
            got += data
    return got


async def test_expect_continue_an_upstream_that_ignores_it_gets_the_body_after_a_second(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """An upstream that waits for the body without a 100 (the test origin):
    the client gets our 100 after about a second, and the upload completes."""
    app = await start_proxy(basic_config(upstream.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        start = time.monotonic()
        await stream.send_all(expect_head(5).replace(b"/up", b"/upload"))
        got = await read_until(stream, b"", b"\r\n\r\n")
        waited = time.monotonic() - start
        assert got == b"HTTP/1.1 100 Continue\r\n\r\n"
        await stream.send_all(b"hello")
        got = await read_until(stream, got, b"body_sha256")
        got = await read_until(stream, got, b"}")
    assert 0.9 <= waited < 3
    _, final = got.split(b"\r\n\r\n", 1)
    (resp,) = client.parse_responses(final, [b"POST"])
    assert json.loads(resp["body"])["body_length"] == 5
    assert upstream.requests[-1]["body_length"] == 5


@pytest.mark.parametrize("interim", [b"", CONTINUE], ids=["401", "100+401"])
async def test_expect_continue_over_http2_a_final_answer_first(
    start_proxy: Any, nursery: trio.Nursery, interim: bytes
) -> None:
    """An HTTP/2 client's expectation goes to an HTTP/1.1 upstream the same
    way: its early 401 comes back without a 100 (with the upstream's 100
    when one came in the same packet, and at once, though the client
    sends no body), the stream is closed (``NO_ERROR``) and the body never
    reaches the upstream."""
    up: ExpectUpstream = await nursery.start(ExpectUpstream("refuse", interim=interim).serve)
    app = await start_proxy(basic_config(up.port))
    async with await H2Client.connect(app.port()) as c:
        sid = await c.request(
            b"POST",
            b"/up",
            extra=[(b"content-length", b"5"), (b"expect", b"100-continue")],
            end=False,
        )
        with trio.fail_after(3):
            r = await c.response(sid)
        assert r.status == 401
        assert bytes(r.body) == b"deny"
        assert r.informational == ([100] if interim else [])
    assert b"\r\nexpect: 100-continue" in up.heads[0].lower()
    with trio.fail_after(5):
        await up.finished.wait()
    assert up.after == b""


async def test_expect_continue_over_http2_the_upstream_s_100(
    start_proxy: Any, nursery: trio.Nursery
) -> None:
    up: ExpectUpstream = await nursery.start(ExpectUpstream("continue", 0.3).serve)
    app = await start_proxy(basic_config(up.port))
    async with await H2Client.connect(app.port()) as c:
        start = time.monotonic()
        sid = await c.request(
            b"POST",
            b"/up",
            extra=[(b"content-length", b"5"), (b"expect", b"100-continue")],
            end=False,
        )
        await c.until(lambda: c.streams[sid].informational == [100])
        waited = time.monotonic() - start
        await c.send_data(sid, b"hello", end=True)
        r = await c.response(sid)
    assert 0.25 <= waited < 0.9
    assert r.status == 200
    assert bytes(r.body) == b"5"
    assert r.informational == [100]


class InterimUpstream(RawUpstream):
    """Sends ``interim`` (1xx answers, in one write) right after the head,
    then reads the body and answers 200 with its length; ``self.body`` is
    what it read."""

    def __init__(self, interim: bytes) -> None:
        super().__init__(0, read_next=False)
        self.interim = interim
        self.body = b""

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        if not await self.read_head(stream, buf):
            return
        await stream.send_all(self.interim)
        want = next(
            int(line.split(b":")[1])
            for line in self.heads[-1].split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        with trio.move_on_after(5):
            while len(buf) < want:
                buf += await stream.receive_some(65536)
        self.body = bytes(buf)
        n = b"%d" % len(buf)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(n), n))


def interim_blocks(got: bytes) -> tuple[list[bytes], bytes]:
    """The status lines of the 1xx heads at the start of ``got``, and the rest."""
    lines = []
    while got.startswith(b"HTTP/1.1 1"):
        head, got = got.split(b"\r\n\r\n", 1)
        lines.append(head.split(b"\r\n", 1)[0])
    return lines, got


async def test_a_late_100_after_ours_does_not_stop_the_body(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    """RFC 9110 §10.1.1: the upstream's 100 comes after we gave up waiting
    and said ours, before the client sends its body. It is dropped, and the
    body still goes up: it used to be taken for an early answer, the body
    was never sent, and the client got a 504 after response_timeout_s."""
    up: ExpectUpstream = await nursery.start(ExpectUpstream("continue", 1.2).serve)
    app = await start_proxy(basic_config(up.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        await stream.send_all(expect_head(5))
        got = await read_until(stream, b"", b"\r\n\r\n")
        assert got == b"HTTP/1.1 100 Continue\r\n\r\n"  # ours, after a second
        await trio.sleep(0.6)  # the upstream's own 100 is at the proxy by now
        await stream.send_all(b"hello")
        got = await read_until(stream, got, b"\r\n\r\n5")
    assert got.count(b" 100 ") == 1
    (resp,) = client.parse_responses(got.split(b"\r\n\r\n", 1)[1], [b"POST"])
    assert resp["status"] == 200
    assert resp["body"] == b"5"


async def test_interim_answers_before_the_body_do_not_stop_it(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str
) -> None:
    """RFC 9110 §15.2: 1xx answers are interim. An upstream that sends 103s
    as soon as it has the head gets the body the client sends later (it
    used to get none: any byte from the upstream stopped the upload)."""
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" * 2
    up: InterimUpstream = await nursery.start(InterimUpstream(hints).serve)
    app = await start_proxy(basic_config(up.port, http1=codec))
    stream = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stream:
        await stream.send_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        await trio.sleep(0.3)  # the 103s are at the proxy by now
        await stream.send_all(b"hello")
        got = await read_until(stream, b"", b"\r\n\r\n5")
    lines, final = interim_blocks(got)
    assert lines == [b"HTTP/1.1 103 Early Hints"] * 2
    (resp,) = client.parse_responses(final, [b"POST"])
    assert resp["status"] == 200
    assert resp["body"] == b"5"
    assert up.body == b"hello"


async def test_the_continue_wait_never_cuts_a_1xx_to_a_slow_client(
    start_proxy: Any, nursery: trio.Nursery, codec: str
) -> None:
    """The second an Expect waits for the upstream bounds the upstream, not
    our writes: 103s passed on to a client that reads slowly used to be
    cut off mid-field when the second was up, and our 100 written into the
    middle of one (the client's framing lost)."""
    pad = b"p" * 60_000
    hints = b"HTTP/1.1 103 Early Hints\r\nX-Pad: %s\r\n\r\n" % pad * 10
    up: InterimUpstream = await nursery.start(InterimUpstream(hints).serve)
    app = await start_proxy(basic_config(up.port, http1=codec))
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", app.port()))
    stream = trio.SocketStream(sock)
    async with stream:
        await stream.send_all(expect_head(5))
        await trio.sleep(2)  # reads nothing while the proxy's second runs out
        got = await read_until(stream, b"", b"HTTP/1.1 100 Continue\r\n\r\n")
        await stream.send_all(b"hello")
        got = await read_until(stream, got, b"\r\n\r\n5")
    lines, final = interim_blocks(got)
    assert lines == [b"HTTP/1.1 103 Early Hints"] * 10 + [b"HTTP/1.1 100 Continue"]
    assert final.startswith(b"HTTP/1.1 200 ")
    assert up.body == b"hello"


# -- send_timeout_s measures progress ---------------------------------------------
class SlowReader(RawUpstream):
    """Reads the body of each request 4 KiB at a time, every ``pause``
    seconds, through a small receive buffer (``pause=None``: reads none of
    it), then answers 200 with the number of body bytes it got."""

    def __init__(self, pause: float | None) -> None:
        super().__init__(0, read_next=False)
        self.pause = pause
        self.got = 0

    async def serve(self, *, task_status: trio.TaskStatus[RawUpstream]) -> None:
        sock = trio.socket.socket()
        # Before listen: the accepted connections inherit it (and its window).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        self.port = sock.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(
                self.handle, [trio.SocketListener(sock)], handler_nursery=nursery
            )

    async def converse(self, stream: trio.SocketStream, buf: bytearray) -> None:
        if not await self.read_head(stream, buf):
            return
        if self.pause is None:
            await trio.sleep_forever()
        want = next(
            int(line.split(b":")[1])
            for line in self.heads[-1].split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        self.got = len(buf)
        while self.got < want:
            await trio.sleep(self.pause)
            data = await stream.receive_some(4096)
            if not data:
                return
            self.got += len(data)
        body = b"%d" % self.got
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )


@pytest.fixture
def small_send_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy's upstream sockets get a 16 KiB send buffer (as on a host
    short of memory), so a 64 KiB write waits for room several times; on
    loopback the kernel would otherwise queue megabytes."""
    real = upstream_mod.connect

    async def connect(*args: Any, **kwargs: Any) -> Any:
        conn = await real(*args, **kwargs)
        conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        return conn

    monkeypatch.setattr(upstream_mod, "connect", connect)


def send_timeout(port: int, codec: str, seconds: float) -> str:
    return basic_config(port, http1=codec).replace(
        "[upstream]\n", f"[upstream]\nsend_timeout_s = {seconds}\n", 1
    )


async def test_a_slow_upstream_that_keeps_reading_gets_the_whole_body(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str, small_send_buffers: None
) -> None:
    """~100 KB/s: each 64 KiB write takes longer than send_timeout_s (0.5 s),
    but the upstream takes bytes all the time, so the upload goes through."""
    up: SlowReader = await nursery.start(SlowReader(0.04).serve)
    app = await start_proxy(send_timeout(up.port, codec, 0.5))
    size = 192 * 1024
    start = time.monotonic()
    raw = await client.exchange(
        app.port(),
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size
        + b"x" * size,
        timeout=20,
    )
    (resp,) = client.parse_responses(raw, [b"POST"])
    assert resp["status"] == 200
    assert resp["body"] == b"%d" % size
    assert time.monotonic() - start > 1.0  # it was slow indeed: longer than the deadline


async def test_an_upstream_that_stops_reading_is_504_after_send_timeout(
    start_proxy: Any, nursery: trio.Nursery, client: Any, codec: str, small_send_buffers: None
) -> None:
    up: SlowReader = await nursery.start(SlowReader(None).serve)
    app = await start_proxy(send_timeout(up.port, codec, 0.5))
    start = time.monotonic()
    with trio.fail_after(10):
        answer, _ = await post_big(app.port(), 4 * 1024 * 1024)
    elapsed = time.monotonic() - start
    (resp,) = client.parse_responses(answer, [b"POST"])
    assert resp["status"] == 504
    assert 0.5 <= elapsed < 5


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("interim", [b"", CONTINUE], ids=["401", "100+401"])
async def test_expect_continue_with_curl_a_refused_upload_is_not_sent(
    start_proxy: Any, nursery: trio.Nursery, codec: str, tmp_path: Path, interim: bytes
) -> None:
    """curl waits up to ``--expect100-timeout`` for a 100: given the upstream's
    401 instead, it stops there, and the 1 MiB body goes nowhere. Given a
    100 with the 401 in the same packet, it gets both at once (and may
    begin its upload, which the proxy does not pass on)."""
    up: ExpectUpstream = await nursery.start(ExpectUpstream("refuse", interim=interim).serve)
    app = await start_proxy(basic_config(up.port, http1=codec))
    body = tmp_path / "body.bin"
    body.write_bytes(b"x" * (1 << 20))
    start = time.monotonic()
    with trio.fail_after(20):
        done = await trio.run_process(
            [
                "curl", "-sS", "-i", "--http1.1", "--noproxy", "*",
                "-H", "Expect: 100-continue", "--expect100-timeout", "10",
                "--data-binary", f"@{body}", f"http://127.0.0.1:{app.port()}/up",
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode("latin-1")
    if interim:
        assert out.startswith("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 ")
    else:
        assert out.startswith("HTTP/1.1 401 ")
        assert "100 Continue" not in out
    assert out.endswith("\r\n\r\ndeny")
    assert time.monotonic() - start < 5  # no wait for a 100 that never came
    with trio.fail_after(5):
        await up.finished.wait()
    assert up.after == b""


# -- the framing is the kernel's, whatever a plugin set -------------------------------
class Framer:
    """Edits the request's framing and connection fields, as a careless
    header filter might."""

    def __init__(self, edit: str) -> None:
        self.edit = edit

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        h = flow.request.headers
        if self.edit == "shorter":
            h["content-length"] = "5"
        elif self.edit == "removed":
            h.remove("content-length")
        elif self.edit == "chunked":
            h["transfer-encoding"] = "chunked"
        elif self.edit == "upgrade":
            h["connection"] = "upgrade"
            h["upgrade"] = "websocket"
            h["keep-alive"] = "timeout=5"


@pytest.mark.parametrize("edit", ["shorter", "removed", "chunked", "upgrade"])
async def test_a_plugin_cannot_reframe_the_request(
    start_proxy: Any, upstream: Any, client: Any, codec: str, edit: str
) -> None:
    """A plugin's ``content-length: 5`` on a 16-byte body used to reach the
    upstream, which took a shorter, complete request (the rest dropped, the
    client told 200); without the field it took a body-less POST. The body
    is framed by what the client sends; connection fields a plugin adds do
    not go upstream either."""
    cfg = basic_config(upstream.port, http1=codec).replace(
        "[kernel]\n", '[kernel]\nplugins = ["framer"]\n'
    )
    app = await start_proxy(cfg, extra_plugins={"framer": Framer(edit)})
    body = b"hello evil suffix"
    raw = await client.exchange(
        app.port(),
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (len(body), body),
    )
    (resp,) = client.parse_responses(raw, [b"POST"])
    assert resp["status"] == 200
    seen = json.loads(resp["body"])
    assert seen["body_length"] == len(body)
    headers = [n for n, _ in seen["headers"]]
    assert dict(seen["headers"])["content-length"] == str(len(body))
    assert headers.count("content-length") == 1
    for name in ("transfer-encoding", "upgrade", "keep-alive"):
        assert name not in headers
    assert dict(seen["headers"]).get("connection", "keep-alive") != "upgrade"


async def test_a_plugin_cannot_give_a_get_a_body(
    start_proxy: Any, upstream: Any, client: Any, codec: str
) -> None:
    """A body-less request keeps no framing a plugin added: the upstream
    would wait for 5 bytes that never come, or take the next request's."""
    cfg = basic_config(upstream.port, http1=codec).replace(
        "[kernel]\n", '[kernel]\nplugins = ["framer"]\n'
    )
    app = await start_proxy(cfg, extra_plugins={"framer": Framer("shorter")})
    raw = await client.exchange(
        app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 200
    seen = json.loads(resp["body"])
    assert "content-length" not in dict(seen["headers"])
    assert seen["body_length"] == 0


# -- a request the plugins made unsendable ----------------------------------------------------
class Spoils:
    """Leaves ``flow.request`` in a state the kernel cannot write: a space in
    the path, a second Host, CR LF in a field (bypassing ``Headers``'
    checks), a path outside Latin-1."""

    def __init__(self, how: str) -> None:
        self.how = how

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        if self.how == "space":
            flow.request.path = "/a b"
        elif self.how == "host":
            flow.request.headers.add("host", "b")
        elif self.how == "crlf":
            flow.request.headers.fields.append((b"x-a", b"1\r\nx-b: 2"))
        else:
            flow.request.path = "/\u65e5"


class Routes:
    """A routing hook that only looks: it had the request too."""

    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> None:
        return None


def spoiling(port: int, codec: str = "h11") -> str:
    return basic_config(port, http1=codec).replace(
        "[kernel]\n", '[kernel]\nplugins = ["route", "spoil"]\n'
    )


@pytest.mark.parametrize("how", ["space", "host", "crlf", "latin1"])
async def test_a_request_the_hooks_made_unsendable_is_a_500_naming_them(
    start_proxy: Any, upstream: Any, client: Any, codec: str, caplog: Any, how: str
) -> None:
    """Before, a 500 whose log named no plugin (and for a path outside
    Latin-1 no answer at all: the connection failed)."""
    app = await start_proxy(
        spoiling(upstream.port, codec), extra_plugins={"route": Routes(), "spoil": Spoils(how)}
    )
    with caplog.at_level(logging.WARNING, logger="kernel.exchange"):
        raw = await client.exchange(
            app.port(), b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 500
    (record,) = [r for r in caplog.records if r.name == "kernel.exchange"]
    assert "after the request hooks of 'route', 'spoil', the request cannot be sent: " in (
        record.getMessage()
    )
    assert upstream.requests == []  # it never reached the upstream


async def test_an_unsendable_request_from_an_http2_client_is_a_500_naming_the_hooks(
    start_proxy: Any, upstream: Any, caplog: Any
) -> None:
    app = await start_proxy(
        spoiling(upstream.port), extra_plugins={"route": Routes(), "spoil": Spoils("space")}
    )
    async with await H2Client.connect(app.port()) as h2c:
        with caplog.at_level(logging.WARNING, logger="kernel.exchange"):
            r = await h2c.get(b"/echo")
        assert (r.status, r.reset) == (500, None)
        assert "after the request hooks of 'route', 'spoil', " in caplog.text
    assert upstream.requests == []
