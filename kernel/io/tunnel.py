"""Byte tunnels: copy two streams into each other until both ends are done.

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

__all__ = ["CHUNK", "splice"]

#: Most bytes one direction reads before it has written them.
CHUNK = 64 * 1024


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
