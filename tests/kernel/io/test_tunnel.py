"""splice (kernel/io/tunnel.py) between real socket pairs."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio

from kernel.io.tunnel import CHUNK, splice

_open: list[socket.socket] = []


def pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    ends = socket.socketpair()
    _open.extend(ends)
    a, b = (trio.SocketStream(trio.socket.from_stdlib_socket(s)) for s in ends)
    return a, b


@pytest.fixture(autouse=True)
def close_pairs() -> Iterator[None]:
    """splice closes nothing: the sockets are the test's to close.

    A plain fixture: pytest-trio does not run an async one nobody asks for by
    name (this one was silently skipped, leaking every pair). The trio run is
    over by teardown, so the standard sockets are closed directly.
    """
    yield
    while _open:
        _open.pop().close()


async def read_all(stream: trio.SocketStream) -> bytes:
    out = bytearray()
    while data := await stream.receive_some(CHUNK):
        out += data
    return bytes(out)


async def test_both_directions_with_prefixes_and_half_close() -> None:
    client, a = pair()  # client <-> a  ==splice==  b <-> server
    b, server = pair()
    big = bytes(range(256)) * 4096  # 1 MiB, more than one chunk
    result: list[tuple[int, int]] = []

    async def run_splice() -> None:
        result.append(await splice(a, b, to_b_first=b"early", to_a_first=b"first"))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_splice)

            async def client_side() -> None:
                await client.send_all(big)
                await client.send_eof()

            nursery.start_soon(client_side)
            assert await read_all(server) == b"early" + big  # EOF passed on
            await server.send_all(b"reply")
            await server.send_eof()
            assert await read_all(client) == b"first" + b"reply"
    assert result == [(5 + len(big), 5 + 5)]


async def test_a_side_that_is_gone_ends_both_directions() -> None:
    client, a = pair()
    b, server = pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(splice, a, b)
            await client.send_all(b"x")
            assert await server.receive_some(10) == b"x"
            await client.aclose()  # gone entirely, not just half-closed
            assert await server.receive_some(10) == b""  # its EOF was passed on
            # What the server still sends cannot be delivered: the tunnel ends
            # although the server never closed (the nursery would hang otherwise).
            await server.send_all(b"late")


@pytest.mark.parametrize("traffic", [False, True])
async def test_idle_timeout(traffic: bool) -> None:
    client, a = pair()
    b, server = pair()
    start = trio.current_time()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: splice(a, b, idle_timeout=0.3))
            if traffic:
                # Traffic keeps it alive past the timeout.
                for _ in range(5):
                    await client.send_all(b"ping")
                    assert await server.receive_some(10) == b"ping"
                    await trio.sleep(0.1)
    elapsed = trio.current_time() - start
    # Without traffic it ends after 0.3 s; with a ping every 0.1 s for 0.4 s,
    # only 0.3 s after the last one.
    assert elapsed >= (0.65 if traffic else 0.25)
    assert elapsed < 2


async def test_linger_half_closes_then_drains_what_the_peer_still_sends() -> None:
    from kernel.io.tunnel import linger

    ours, peer = pair()

    async def peer_side() -> None:
        await peer.send_all(b"x" * 100_000)  # still sending when we close
        assert await peer.receive_some(10) == b""  # our half-close arrived
        await peer.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer_side)
            await linger(ours)  # returns once the peer closed
