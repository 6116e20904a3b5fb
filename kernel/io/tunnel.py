"""Byte streams beyond HTTP: tunnels between two, and a lingering close of one.

:func:`linger` is how every connection that refused or ended a peer
closes (RFC 9112 §9.6), HTTP/1.1 and HTTP/2 alike.

:func:`splice` copies two streams into each other until both ends are done.

Used by TLS passthrough (:mod:`kernel.io.passthrough`, raw TCP) and by
WebSocket pass-through (:mod:`kernel.io.relay`, after ``101``). Each
direction moves at most :data:`CHUNK` bytes before writing them, so a slow
reader slows its writer (backpressure). An EOF is passed on with
``send_eof`` where the other side can half-close (plain TCP); where it
cannot (TLS), or when either side resets, both directions end. With an idle
timeout, a tunnel that carried no byte either way for that long is ended.

Neither stream is closed here: the caller owns them.

May import: stdlib, trio.
"""

from __future__ import annotations

import trio

__all__ = ["CHUNK", "linger", "splice"]

#: Most bytes one direction reads before it has written them.
CHUNK = 64 * 1024
#: How long, and how much, a closing connection keeps reading and dropping.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20


async def linger(stream: trio.abc.Stream) -> None:
    """Close gracefully while the peer may still be sending (RFC 9112 §9.6).

    Closing a socket with unread input makes the kernel send a reset, which
    can destroy what we just wrote (an error response, a GOAWAY) before the
    peer reads it. So: half-close our side where the stream can (TLS cannot:
    OpenSSL refuses data after our close_notify, and there the peer's own
    close ends the wait), then read and drop what still comes, for a short
    while and a bounded amount. The caller closes the stream afterwards.
    """
    try:
        with trio.move_on_after(LINGER_SECONDS):
            if isinstance(stream, trio.SocketStream):
                await stream.send_eof()
            budget = LINGER_BYTES
            while budget > 0:
                data = await stream.receive_some(CHUNK)
                if not data:
                    return
                budget -= len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def splice(
    a: trio.abc.Stream,
    b: trio.abc.Stream,
    *,
    to_b_first: bytes = b"",
    to_a_first: bytes = b"",
    idle_timeout: float | None = None,
) -> tuple[int, int]:
    """Copy ``a`` → ``b`` and ``b`` → ``a`` until both ended; (bytes to b, bytes to a).

    ``to_b_first`` / ``to_a_first`` are bytes already read from the other
    side, written before anything else.
    """
    counts = [0, 0]
    last = [trio.current_time()]

    async def pump(
        src: trio.abc.Stream, dst: trio.abc.Stream, first: bytes, i: int, done: trio.CancelScope
    ) -> None:
        try:
            if first:
                await dst.send_all(first)
                counts[i] += len(first)
            while data := await src.receive_some(CHUNK):
                last[0] = trio.current_time()
                await dst.send_all(data)
                counts[i] += len(data)
            if isinstance(dst, trio.abc.HalfCloseableStream):
                await dst.send_eof()
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()  # one side is gone, or cannot be half-closed: both end

    async def watchdog(timeout: float, done: trio.CancelScope) -> None:
        while True:
            await trio.sleep_until(last[0] + timeout)
            if trio.current_time() >= last[0] + timeout:
                done.cancel()
                return

    async with trio.open_nursery() as nursery:
        done = nursery.cancel_scope
        if idle_timeout is not None:
            nursery.start_soon(watchdog, idle_timeout, done)
        async with trio.open_nursery() as pumps:
            pumps.start_soon(pump, a, b, to_b_first, 0, done)
            pumps.start_soon(pump, b, a, to_a_first, 1, done)
        done.cancel()  # both directions ended on their own: stop the watchdog
    return counts[0], counts[1]
