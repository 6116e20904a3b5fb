"""Sending a body under HTTP/2 flow control (kernel/io/h2flow.py), as a unit.

:class:`FakeProto` stands in for the sans-IO endpoint: it takes at most its
``window`` per ``send_data`` (and, like the real one, 0 for a stream that is
gone), and records every write. The "peer" is the test, which opens the
window and wakes the sender the way the connection's reader does on a
``WindowOpen``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from kernel.io.h2flow import WindowWaiter, send_flow_controlled


class FakeProto:
    def __init__(self, window: int, *, buffer_room: int | None = None) -> None:
        self.window = window
        #: Like max_outbound_buffer: room that only a write_out gives back.
        self.buffer_room = buffer_room
        self.taken: list[bytes] = []
        self.writes = 0
        self.gone = False

    def send_window(self, stream_id: int) -> int:
        assert stream_id == 1
        if self.gone:
            return 0
        room = self.window if self.buffer_room is None else min(self.window, self.buffer_room)
        return max(0, room)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        n = min(len(data), self.send_window(stream_id))
        if n:
            self.taken.append(data[:n])
            self.window -= n
            if self.buffer_room is not None:
                self.buffer_room -= n
        return n

    async def write_out(self) -> None:
        self.writes += 1
        if self.buffer_room is not None:
            self.buffer_room = 4  # the socket took the queued bytes
        await trio.lowlevel.checkpoint()


async def send(proto: FakeProto, data: bytes, window: WindowWaiter) -> bool:
    fake: Any = proto  # duck-typed H2Endpoint
    return await send_flow_controlled(fake, 1, data, proto.write_out, window)


async def test_everything_within_the_window_goes_at_once() -> None:
    proto = FakeProto(100)
    assert await send(proto, b"hello", WindowWaiter())
    assert proto.taken == [b"hello"]
    assert proto.writes == 1


async def test_partial_takes_wait_for_the_window_and_keep_order() -> None:
    proto = FakeProto(3)
    window = WindowWaiter()
    done: list[bool] = []

    async def sender() -> None:
        done.append(await send(proto, b"abcdefghij", window))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        for _ in range(3):
            await trio.testing.wait_all_tasks_blocked()
            assert not done  # blocked on the window, not spinning
            writes = proto.writes
            await trio.testing.wait_all_tasks_blocked()
            assert proto.writes == writes
            proto.window += 3
            window.wake()
    assert done == [True]
    assert proto.taken == [b"abc", b"def", b"ghi", b"j"]
    assert b"".join(proto.taken) == b"abcdefghij"


async def test_a_wake_before_the_wait_is_not_lost() -> None:
    """The window opens while the sender is writing: it must not then sleep."""
    proto = FakeProto(2)
    window = WindowWaiter()

    async def write_out() -> None:
        if proto.window == 0 and proto.writes == 0:
            proto.window = 10  # a WINDOW_UPDATE read meanwhile
            window.wake()
        proto.writes += 1
        await trio.lowlevel.checkpoint()

    fake: Any = proto
    with trio.fail_after(1):
        assert await send_flow_controlled(fake, 1, b"abcdef", write_out, window)
    assert b"".join(proto.taken) == b"abcdef"


async def test_outbound_buffer_limit_is_made_room_for_by_writing() -> None:
    # Window plenty, buffer 4 bytes: each write_out frees it, no WindowOpen needed.
    proto = FakeProto(1000, buffer_room=4)
    with trio.fail_after(1):
        assert await send(proto, b"0123456789", WindowWaiter())
    assert proto.taken == [b"0123", b"4567", b"89"]
    assert proto.writes == 3


async def test_stream_closed_while_waiting_returns_false() -> None:
    proto = FakeProto(4)
    window = WindowWaiter()
    result: list[bool] = []

    async def sender() -> None:
        result.append(await send(proto, b"0123456789", window))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        proto.gone = True
        window.close()  # the StreamReset
    assert result == [False]
    assert proto.taken == [b"0123"]  # the rest was dropped


async def test_closed_before_sending_sends_nothing() -> None:
    proto = FakeProto(100)
    window = WindowWaiter()
    window.close()
    assert not await send(proto, b"data", window)
    assert proto.taken == []
    assert proto.writes == 0


async def test_empty_data_sends_nothing_and_succeeds() -> None:
    proto = FakeProto(0)
    assert await send(proto, b"", WindowWaiter())
    assert proto.taken == []


@pytest.mark.parametrize("closed", [False, True])
async def test_window_waiter(closed: bool) -> None:
    window = WindowWaiter()
    window.wake()
    window.arm()  # a stale wake is forgotten
    woke: list[bool] = []

    async def waiter() -> None:
        await window.wait()
        woke.append(window.closed)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        if closed:
            window.close()
        else:
            window.wake()
    assert woke == [closed]
