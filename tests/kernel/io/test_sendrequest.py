"""Sending the request upstream (kernel/io/sendrequest.py): early answers.

RFC 9112 §9.5: an upstream may answer before it has read the whole body,
and stop reading. Real sockets, a bare-socket origin (``RawUpstream``).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.conftest import basic_config
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
