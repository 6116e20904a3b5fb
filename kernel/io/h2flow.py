"""Sending a body on an HTTP/2 stream under flow control, for both sides.

The downstream stream (:mod:`kernel.io.h2connection`) and the upstream one
(:mod:`kernel.io.h2upstream`) hand body bytes to their sans-IO protocol only
as far as the peer's windows (and the protocol's outbound buffer) allow, and
wait for a ``WindowOpen`` for the rest. That loop lives here once, and so
does the start of a connection's write (:func:`start_write`).

May import: stdlib, trio, kernel.protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from kernel.protocol.h2_endpoint import H2Endpoint

__all__ = ["WindowWaiter", "send_flow_controlled", "start_write"]


async def start_write(proto: H2Endpoint, lock: trio.Lock) -> bool:
    """Get ready to write what ``proto`` has queued; False: nothing to write.

    First a yield, so that every task that can run now queues its frames
    too: ten streams whose responses arrived together then cost one write
    (one system call), not ten. Whoever comes back from the yield first
    takes everything; the others find nothing left and return at once. The
    yield comes before the bytes are taken, so a cancellation there loses
    nothing: they stay queued for the next writer.

    True: the caller holds ``lock`` and must release it (``lock.release()``).
    """
    if not proto.has_output():
        return False
    await trio.lowlevel.checkpoint()
    if not proto.has_output():
        return False
    try:
        lock.acquire_nowait()  # usually free: no second yield
    except trio.WouldBlock:
        await lock.acquire()
    return True


class WindowWaiter:
    """Wakes one stream's sender when its window (or the connection's) opens."""

    __slots__ = ("_event", "closed")

    def __init__(self) -> None:
        self._event = trio.Event()
        #: The stream is gone (reset, or the connection ended): stop sending.
        self.closed = False

    def arm(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    def wake(self) -> None:
        self._event.set()

    def close(self) -> None:
        self.closed = True
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


async def send_flow_controlled(
    proto: H2Endpoint,
    stream_id: int,
    data: bytes | bytearray,
    write_out: Callable[[], Awaitable[None]],
    window: WindowWaiter,
) -> bool:
    """Hand all of ``data`` to ``proto`` on ``stream_id``, writing as it goes.

    Returns False when the stream went away first (the rest is dropped).
    """
    view = memoryview(data)
    while view:
        if window.closed:
            return False
        window.arm()
        taken = proto.send_data(stream_id, bytes(view))
        await write_out()  # also makes room when the outbound buffer was the limit
        if taken:
            view = view[taken:]
        elif proto.send_window(stream_id) <= 0:
            await window.wait()
    return not window.closed
