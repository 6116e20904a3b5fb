"""Socket calls that skip trio's wrappers when they need not wait (kernel/io/sockio.py).

Real TCP connections on 127.0.0.1: the fast path, the hand-over to trio when
the kernel would block (a full send buffer, nothing to read yet), the end of
the stream, and the errors trio's own streams raise.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio

from kernel.io import sockio
from tests.helpers.sockets import tcp_pair


@pytest.fixture
async def pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """Two ends of one TCP connection on loopback."""
    async with tcp_pair() as ends:
        yield ends


async def test_send_and_receive_without_waiting(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, b = pair
    await sockio.SocketIO(a).send(b"hello")
    await trio.testing.wait_all_tasks_blocked()
    with trio.fail_after(5):
        assert await sockio.SocketIO(b).receive(100) == b"hello"


async def test_receive_waits_in_epoll_until_bytes_come(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, b = pair
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await sockio.SocketIO(b).receive(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # nothing to read: the reader waits, it does not spin
        await a.send_all(b"late")
    assert got == [b"late"]


async def test_send_larger_than_the_socket_buffer_completes(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, b = pair
    a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 4_000  # ~1 MB: the kernel takes it in parts
    received = bytearray()

    async def reader() -> None:
        while len(received) < len(data):
            chunk = await b.receive_some(65536)
            assert chunk
            received.extend(chunk)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await sockio.SocketIO(a).send(data)
    assert received == data


async def test_send_unless_answered_stops_waiting_when_the_peer_speaks(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, b = pair
    a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = b"x" * 10_000_000  # never all taken: b does not read

    async def answer() -> None:
        await trio.testing.wait_all_tasks_blocked()  # a's write waits for room
        await b.send_all(b"HTTP/1.1 413 ")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            assert await sockio.SocketIO(a).send_unless_answered(data) is False
    assert sockio.SocketIO(a).read_ready() == b"HTTP/1.1 413 "


async def test_send_unless_answered_sends_everything_to_a_reader(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, b = pair
    a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 4_000
    received = bytearray()

    async def reader() -> None:
        while len(received) < len(data):
            received.extend(await b.receive_some(65536))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            assert await sockio.SocketIO(a).send_unless_answered(data) is True
    assert received == data


async def test_send_unless_answered_on_a_closed_socket_raises_closed_resource(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, _ = pair
    io = sockio.SocketIO(a)
    a.socket.close()
    with pytest.raises(trio.ClosedResourceError):
        await io.send_unless_answered(b"x")


async def test_a_peer_that_takes_nothing_breaks_a_limited_write(
    pair: tuple[trio.SocketStream, trio.SocketStream], autojump_clock: trio.abc.Clock
) -> None:
    a, _ = pair  # the other end never reads
    a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    io = sockio.SocketIO(a)
    io.limit_writes(30)
    start = trio.current_time()
    with pytest.raises(trio.BrokenResourceError, match="took no bytes for 30s"):
        await io.send(b"x" * 10_000_000)
    assert trio.current_time() - start == pytest.approx(30)


async def test_end_of_stream_is_empty_bytes(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, b = pair
    await a.send_eof()
    with trio.fail_after(5):
        assert await sockio.SocketIO(b).receive(100) == b""
    assert sockio.SocketIO(b).read_ready() == b""


async def test_read_ready_never_waits(pair: tuple[trio.SocketStream, trio.SocketStream]) -> None:
    a, b = pair
    assert sockio.SocketIO(b).read_ready() is None
    await a.send_all(b"GET / HTTP/1.1\r\n\r\n")
    with trio.fail_after(5):
        await trio.lowlevel.wait_readable(b.socket)
    assert sockio.SocketIO(b).read_ready() == b"GET / HTTP/1.1\r\n\r\n"
    assert sockio.SocketIO(b).read_ready() is None


async def test_closed_socket_raises_closed_resource(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, _ = pair
    a.socket.close()
    with pytest.raises(trio.ClosedResourceError):
        await sockio.SocketIO(a).send(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await sockio.SocketIO(a).receive(10)
    assert sockio.SocketIO(a).read_ready() == b""


async def test_reset_by_peer_raises_broken_resource(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, b = pair
    # SO_LINGER 0: closing sends RST instead of FIN.
    b.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    b.socket.close()
    with trio.fail_after(5):
        await trio.lowlevel.wait_readable(a.socket)
    with pytest.raises(trio.BrokenResourceError):
        await sockio.SocketIO(a).receive(10)


async def test_fast_io_picks_the_socket_calls_or_the_stream_s_own(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, _ = pair
    assert isinstance(sockio.fast_io(a), sockio.SocketIO)

    class Own:
        async def receive(self, max_bytes: int = sockio.RECV_SIZE) -> bytes:
            return b""

        async def send(self, data: bytes) -> None:
            pass

        def read_ready(self, max_bytes: int = sockio.RECV_SIZE) -> bytes | None:
            return None

        def limit_writes(self, seconds: float) -> None:
            pass

    own = Own()
    assert sockio.fast_io(own) is own


async def test_fast_path_does_not_yield(pair: tuple[trio.SocketStream, trio.SocketStream]) -> None:
    """The caller owns the checkpoint: a ready read and a write run straight through."""
    a, b = pair
    await a.send_all(b"ready")
    with trio.fail_after(5):
        await trio.lowlevel.wait_readable(b.socket)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        assert await sockio.SocketIO(b).receive(100) == b"ready"
        await sockio.SocketIO(b).send(b"back")
        assert ran == []  # no yield happened, so the other task has not run yet
    assert ran == ["other"]


async def test_send_unless_answered_limits_each_wait_not_the_whole_write(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    """A reader that takes 4 KiB every 5 ms needs longer than the 0.5 s limit
    for the whole write, but never makes one wait that long (the receiver
    opens its window again each 64 KiB or so: one loopback segment)."""
    a, b = pair
    a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = b"x" * 1_000_000
    received = 0

    async def reader() -> None:
        nonlocal received
        while received < len(data):
            await trio.sleep(0.005)
            received += len(await b.receive_some(4096))

    start = trio.current_time()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            assert await sockio.SocketIO(a).send_unless_answered(data, 0.5) is True
    assert received == len(data)
    assert trio.current_time() - start > 0.5


async def test_send_unless_answered_to_a_peer_that_takes_nothing_stalls(
    pair: tuple[trio.SocketStream, trio.SocketStream], autojump_clock: trio.abc.Clock
) -> None:
    a, _ = pair  # the other end never reads nor answers
    a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    start = trio.current_time()
    with pytest.raises(sockio.Stalled, match="took no bytes for 5s"):
        await sockio.SocketIO(a).send_unless_answered(b"x" * 10_000_000, 5)
    assert trio.current_time() - start == pytest.approx(5)
