"""The direct-write fast path and its trio fallback."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from kernel.io.fastio import send_all


async def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    await listener.aclose()
    return client, server


async def test_small_write_goes_through_at_once() -> None:
    a, b = await _pair()
    async with a, b:
        await send_all(a, b"hello")
        assert await b.receive_some(100) == b"hello"


async def test_write_larger_than_the_socket_buffer_falls_back_and_completes() -> None:
    a, b = await _pair()
    data = bytes(range(256)) * (16 * 1024)  # 4 MiB, far above the send buffer
    received = bytearray()

    async def reader() -> None:
        while len(received) < len(data):
            received.extend(await b.receive_some(1 << 16))

    async with a, b, trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await send_all(a, data)
    assert bytes(received) == data


async def test_write_to_a_closed_peer_is_a_broken_resource() -> None:
    a, b = await _pair()
    await b.aclose()

    async def write_until_broken() -> None:
        for _ in range(100):  # the first writes may still be accepted
            await send_all(a, b"x" * 65536)
            await trio.sleep(0.01)

    async with a:
        with pytest.raises(trio.BrokenResourceError):
            await write_until_broken()
