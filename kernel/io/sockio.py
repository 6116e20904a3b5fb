"""Reads and writes on a plain TCP socket that skip trio's wrappers when they need not wait.

A request through the proxy makes four socket calls (read the request,
write it upstream, read the response, write it back). Through
:class:`trio.SocketStream` each costs a cancellation check, a conflict
detector, a context manager around the non-blocking call and a yield to the
scheduler, several microseconds of Python each, though the call itself
rarely has to wait under load. These calls are made directly on the
file descriptor; only when the kernel says it would block do they wait, with
:func:`trio.lowlevel.wait_readable` / :func:`~trio.lowlevel.wait_writable`
(a checkpoint: cancellable), and then try again.

:class:`SocketIO` holds them under the names :class:`~kernel.io.tlsstream.TLSStream`
gives its own (:class:`FastIO`), so a connection calls the same three
methods over TCP and over TLS.

The fast path does not yield to the scheduler. Whoever loops over these calls
must checkpoint once per round itself, or a client whose bytes are always
ready would starve every other task: :class:`kernel.io.connection.Http1Connection`
yields once per request, and both body loops (the client's request body, the
upstream's response body) once per chunk.

The file descriptor is looked up on every call, never kept: a closed trio
socket answers -1, and a number kept from before could by then belong to
another connection.

May import: stdlib, trio.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import struct
from typing import Protocol

import trio

__all__ = ["RECV_SIZE", "FastIO", "SocketIO", "Stalled", "fast_io", "reset_on_close"]

#: The most one read takes (a socket's, or a TLS stream's plaintext).
RECV_SIZE = 65536

_read = os.read
_write = os.write
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}


class Stalled(trio.BrokenResourceError):
    """A write waited its whole limit for room and the peer took no byte."""


def _error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket error: {exc}")


class FastIO(Protocol):
    """What the kernel's connections call on their stream, plain or TLS.

    :class:`SocketIO` on a plain socket, :class:`kernel.io.tlsstream.TLSStream`
    over TLS: neither yields unless it must wait for the socket.
    """

    @property
    def socket(self) -> trio.socket.SocketType:
        """The TCP socket underneath (to wait on, or to close without a checkpoint)."""
        ...

    async def receive(self, max_bytes: int = RECV_SIZE) -> bytes: ...

    async def send(self, data: bytes) -> None: ...

    def read_ready(self, max_bytes: int = RECV_SIZE) -> bytes | None: ...

    def limit_writes(self, seconds: float) -> None: ...


class SocketIO:
    """A plain TCP socket's calls, by :class:`FastIO`'s names."""

    __slots__ = ("socket", "write_timeout")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.socket = stream.socket
        #: The longest a write may wait for room (:meth:`limit_writes`).
        self.write_timeout = math.inf

    def limit_writes(self, seconds: float) -> None:
        """A write that waits ``seconds`` for room without any taken breaks the
        stream (``BrokenResourceError``): a peer that stops reading cannot
        hold the connection for ever."""
        self.write_timeout = seconds

    def _push(self, view: bytes | memoryview) -> memoryview | None:
        """Write what the socket takes now: None when all of ``view`` went,
        else what is left."""
        try:
            sent = _write(self.socket.fileno(), view)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _error(exc) from exc
        return None if sent == len(view) else memoryview(view)[sent:]

    async def send(self, data: bytes) -> None:
        """Write all of ``data``, as :meth:`trio.SocketStream.send_all` does."""
        rest = self._push(data)
        while rest is not None:
            await self._wait_room()
            rest = self._push(rest)

    async def send_unless_answered(self, data: bytes, timeout: float = math.inf) -> bool:
        """:meth:`send`, except that a wait for room also ends when the peer
        sends something: False then, and the rest of ``data`` is not sent
        (:meth:`send_until_answered` says what the rest is).

        For a request body: an upstream that answers early (a ``413``) often
        stops reading too, and a plain wait for room would last until the
        send deadline (RFC 9112 §9.5).

        ``timeout`` bounds each wait for room, not the whole write: a peer
        that keeps taking bytes, however slowly, is never cut off; one that
        takes none for ``timeout`` seconds raises :class:`Stalled`. A write
        that need not wait costs no deadline at all.
        """
        return await self.send_until_answered(data, timeout) is None

    async def send_until_answered(
        self, data: bytes | memoryview, timeout: float = math.inf
    ) -> memoryview | None:
        """:meth:`send_unless_answered`, returning None when all of ``data``
        went, else the part not sent when the peer sent something (an
        interim ``1xx`` need not stop a request body: send the rest then)."""
        rest = self._push(data)
        while rest is not None:
            if timeout == math.inf:
                answered = await _room_or_answer(self.socket)
            else:
                with trio.move_on_after(timeout) as waited:
                    answered = await _room_or_answer(self.socket)
                if waited.cancelled_caught:
                    raise Stalled(f"the peer took no bytes for {timeout:g}s")
            if answered:
                return rest
            rest = self._push(rest)
        return None

    async def _wait_room(self) -> None:
        """The socket buffer is full: wait in epoll (a checkpoint), under
        :attr:`write_timeout`."""
        if self.write_timeout == math.inf:
            await trio.lowlevel.wait_writable(self.socket)
            return
        with trio.move_on_after(self.write_timeout) as waited:
            await trio.lowlevel.wait_writable(self.socket)
        if waited.cancelled_caught:
            raise Stalled(f"the peer took no bytes for {self.write_timeout:g}s")

    async def receive(self, max_bytes: int = RECV_SIZE) -> bytes:
        """Up to ``max_bytes`` bytes (``b""`` at the end), as trio's ``receive_some``."""
        sock = self.socket
        while True:
            try:
                return _read(sock.fileno(), max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _error(exc) from exc
            # Nothing yet: wait in epoll (a checkpoint), then read again.
            await trio.lowlevel.wait_readable(sock)

    def read_ready(self, max_bytes: int = RECV_SIZE) -> bytes | None:
        """What the socket holds already (``b""`` at its end), or None when nothing yet.

        Never waits and never yields. An error counts as the end: the caller
        closes the connection either way.
        """
        try:
            return _read(self.socket.fileno(), max_bytes)
        except BlockingIOError:
            return None
        except OSError:
            return b""


async def _room_or_answer(sock: trio.socket.SocketType) -> bool:
    """Wait until ``sock`` is writable or readable; True if it was readable.

    Two waits at once need two tasks (trio waits for one event per call);
    neither raises into the nursery, so no exception group comes out of it.
    """
    answered = False
    failure: BaseException | None = None

    async def wait(readable: bool, scope: trio.CancelScope) -> None:
        nonlocal answered, failure
        try:
            if readable:
                await trio.lowlevel.wait_readable(sock)
                answered = True
            else:
                await trio.lowlevel.wait_writable(sock)
        except (trio.ClosedResourceError, trio.BusyResourceError) as exc:
            failure = exc
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, True, nursery.cancel_scope)
        nursery.start_soon(wait, False, nursery.cancel_scope)
    if failure is not None:
        raise trio.ClosedResourceError("the socket was closed") from failure
    return answered


def reset_on_close(sock: trio.socket.SocketType) -> None:
    """Make closing ``sock`` send a TCP reset (``SO_LINGER`` 0) instead of a FIN.

    For a response we could not finish: a client reading to the end of the
    connection (HTTP/1.0, or any close-delimited body) would take a FIN for
    the end of a complete response; a reset tells it the response is cut.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass  # already gone


def fast_io(stream: trio.SocketStream | FastIO) -> FastIO:
    """The calls to make on ``stream``: a :class:`SocketIO` for a plain socket,
    else the stream's own (a TLS stream has them)."""
    return SocketIO(stream) if isinstance(stream, trio.SocketStream) else stream
