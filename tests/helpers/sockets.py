"""Loopback ports and both ends of a real TCP connection, for tests of socket-level code."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import trio

#: Every port :func:`free_port` handed out in this process.
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that was free a moment ago, never the same twice in a process.

    Binding port 0 and closing again can give the same number on consecutive
    calls (the kernel just freed it), and a test asking for three ports for
    three listeners then gets a config with a duplicate bind.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@contextlib.asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """(client end, server end) of one TCP connection on 127.0.0.1; both closed after."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    async with client, server:
        yield client, server
