"""Reads and writes on a plain TCP socket that skip trio's wrappers when they need not wait.

A request through the proxy makes four socket calls (read the request,
write it upstream, read the response, write it back). Through
:class:`trio.SocketStream` each costs a cancellation check, a conflict
detector, a context manager around the non-blocking call and a yield to the
scheduler, several microseconds of Python each, though the call itself
rarely has to wait under load. These functions first make the call directly
on the file descriptor; only when the kernel says it would block do they hand
over to the stream, which waits in epoll with all of trio's guarantees.

The fast path does not yield to the scheduler. Whoever loops over these calls
must checkpoint once per round itself (:class:`kernel.io.connection.Http1Connection`
does, once per request), or a client whose bytes are always ready would
starve every other task.

The file descriptor is looked up on every call, never kept: a closed trio
socket answers -1, and a number kept from before could by then belong to
another connection.

May import: stdlib, trio.
"""

from __future__ import annotations

import errno
import os

import trio

__all__ = ["read_ready", "receive_some", "send_all"]

_read = os.read
_write = os.write


def _error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket error: {exc}")


async def send_all(stream: trio.SocketStream, data: bytes) -> None:
    """Write all of ``data``, as :meth:`trio.SocketStream.send_all` does."""
    try:
        sent = _write(stream.socket.fileno(), data)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise _error(exc) from exc
    if sent < len(data):
        # The socket buffer is full: the rest waits in trio's own send_all.
        await stream.send_all(memoryview(data)[sent:])


async def receive_some(stream: trio.SocketStream, max_bytes: int) -> bytes:
    """Up to ``max_bytes`` bytes (``b""`` at the end), as :meth:`trio.SocketStream.receive_some`."""
    try:
        return _read(stream.socket.fileno(), max_bytes)
    except BlockingIOError:
        pass
    except OSError as exc:
        raise _error(exc) from exc
    return await stream.receive_some(max_bytes)


def read_ready(stream: trio.SocketStream, max_bytes: int = 65536) -> bytes | None:
    """What the socket holds already (``b""`` at its end), or None when nothing yet.

    Never waits and never yields. An error counts as the end: the caller
    closes the connection either way.
    """
    try:
        return _read(stream.socket.fileno(), max_bytes)
    except BlockingIOError:
        return None
    except OSError:
        return b""
