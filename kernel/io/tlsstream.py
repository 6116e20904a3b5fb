"""TLS over a TCP socket, with no trip through the scheduler it does not need: :class:`TLSStream`.

:class:`trio.SSLStream` is correct and general (any transport stream, any
caller), and pays for it on every call: a conflict detector, a lock around
each transport read and write, a checkpoint before and after, and the
transport's own wrappers underneath. A request over TLS went through the
scheduler about six times where the same request in clear goes twice
(``docs/benchmarks.md``). This stream drives an :class:`ssl.SSLObject`
through two memory BIOs, as trio does, but moves the ciphertext with
:mod:`kernel.io.sockio`: a read or write the socket can take at once neither
waits nor yields.

Two ways in, as for a plain socket:

- :meth:`TLSStream.receive`, :meth:`TLSStream.send` and
  :meth:`TLSStream.read_ready` yield only when they must wait. They are for
  the kernel's own loops, which yield once per request or body chunk
  themselves (see :mod:`kernel.io.sockio` for the rule).
- :meth:`TLSStream.receive_some` and :meth:`TLSStream.send_all` keep the
  :class:`trio.abc.Stream` contract (always a checkpoint): tunnels, upgraded
  connections and anything else that treats this as any stream.

**Order of the ciphertext.** Only one task writes to the socket at a time.
A task that finds another one writing has already put its records into the
outgoing BIO behind that task's; it waits until the writer has sent
everything (its own records included) and returns. A send cut short
(cancelled, or the socket failed) leaves the peer a truncated record: the
stream is then broken for everyone.

**The end** is "HTTPS-compatible", as ``https_compatible=True`` in trio: a
peer that closes without ``close_notify`` has simply ended the stream
(``b""``), like one that sent it; :meth:`aclose` sends our ``close_notify``
when the socket takes it at once, never waits for the peer's, and closes.
TLS has no half-close (no ``send_eof``).

Errors: an :class:`ssl.SSLError` or socket error becomes
:class:`trio.BrokenResourceError` with the original as ``__cause__``; any use
after :meth:`aclose` raises :class:`trio.ClosedResourceError`. A failed
handshake leaves OpenSSL's alert in :meth:`pending_output`, for the caller
to send if it wants the peer to learn why. Two tasks must not receive at the
same time (the kernel never does; unlike trio's, this is not checked).

May import: stdlib, trio, kernel.io.sockio.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import trio

from kernel.io import sockio

__all__ = ["TLSStream"]

#: Ciphertext read from the socket at a time (four full TLS records).
RECV_SIZE = sockio.RECV_SIZE


def _broken(exc: BaseException) -> trio.BrokenResourceError:
    error = trio.BrokenResourceError(f"TLS: {exc}")
    error.__cause__ = exc
    return error


class TLSStream(trio.abc.Stream):
    """TLS, client or server side, over the socket of ``transport_stream``.

    ``initial`` is ciphertext already read from the socket (a ClientHello
    peeked for passthrough-by-SNI): it is read first.
    """

    def __init__(
        self,
        transport_stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        initial: bytes = b"",
    ) -> None:
        self.transport_stream = transport_stream
        self._io = sockio.SocketIO(transport_stream)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        if initial:
            self._in.write(initial)
        self._handshaken = False
        #: The end was read (close_notify, a close without it, or an error
        #: read_ready() counts as one): every read gives b"" from now on.
        self._ended = False
        self._closed = False
        self._cut = False
        self._broken: trio.BrokenResourceError | None = None
        self._writing = False
        self._written = trio.lowlevel.ParkingLot()

    @property
    def socket(self) -> trio.socket.SocketType:
        """The TCP socket underneath (to wait on, or to close without a checkpoint)."""
        return self.transport_stream.socket

    # ------------------------------------------------------------ about TLS
    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The :class:`ssl.SSLObject` (what the context's SNI callback was given)."""
        return self._ssl

    def selected_alpn_protocol(self) -> str | None:
        return self._ssl.selected_alpn_protocol()

    def version(self) -> str | None:
        return self._ssl.version()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._ssl.getpeercert(binary_form)

    def pending_output(self) -> bytes:
        """Ciphertext not sent yet (after a failed handshake: OpenSSL's alert)."""
        return self._out.read()

    # ------------------------------------------------------------ handshake
    async def do_handshake(self) -> None:
        """Complete the handshake; at once if it was done already."""
        self._check()
        if self._handshaken:
            await trio.lowlevel.checkpoint()
            return
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLError, ssl.CertificateError) as exc:
                # The alert stays in the outgoing BIO: see pending_output().
                raise self._fail(exc) from exc
            await self._flush()
            await self._fill()
        self._handshaken = True
        await self._flush()  # our Finished, or the server's session tickets

    # ------------------------------------------------- the kernel's fast way
    async def receive(self, max_bytes: int = RECV_SIZE) -> bytes:
        """Up to ``max_bytes`` of plaintext (``b""`` at the end); yields only to wait."""
        if not self._handshaken:
            await self.do_handshake()
        while True:
            self._check()
            data = self._read_now(max_bytes)
            if data is not None:
                return data
            if self._out.pending and not self._writing:
                # The read made something to answer (a key update). With a
                # writer at work, its flush sends it: a reader must never
                # wait behind a writer (the peer may be waiting for us to read).
                await self._flush()
            await self._fill()

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and write all of ``data``; yields only when the socket is full."""
        if not self._handshaken:
            await self.do_handshake()
        self._check()
        if data:
            try:
                self._ssl.write(data)
            except ssl.SSLError as exc:
                raise self._fail(exc) from exc
        await self._flush()

    def read_ready(self, max_bytes: int = RECV_SIZE) -> bytes | None:
        """Plaintext there already (``b""`` at the end), or None when there is none yet.

        Reads the socket once if it must, never waits and never yields. An
        error counts as the end, as in :meth:`kernel.io.sockio.SocketIO.read_ready`.
        """
        if self._closed or self._broken is not None:
            return b""
        if not self._handshaken:
            return None
        try:
            data = self._read_now(max_bytes)
            if data is not None:
                return data
            ciphertext = self._io.read_ready()
            if ciphertext is None:
                return None
            if ciphertext:
                self._in.write(ciphertext)
            else:
                self._in.write_eof()
            return self._read_now(max_bytes)
        except trio.BrokenResourceError:
            return b""

    def _read_now(self, max_bytes: int) -> bytes | None:
        """Plaintext buffered already (``b""`` at the end); None when a read must
        wait for more ciphertext. A TLS error breaks the stream (raised)."""
        if not self._buffered():
            return None
        try:
            data = self._read(max_bytes)
        except ssl.SSLWantReadError:
            return None  # (a key update to answer goes out with our next send)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            data = b""  # close_notify, or a close without it (HTTPS-compatible)
        except ssl.SSLError as exc:
            raise self._fail(exc) from exc
        if not data:
            self._ended = True
        return data

    # ----------------------------------------------------- trio.abc.Stream
    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return await self.receive(RECV_SIZE if max_bytes is None else max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        await self.send(data)

    async def wait_send_all_might_not_block(self) -> None:
        self._check()
        await self.transport_stream.wait_send_all_might_not_block()

    def limit_writes(self, seconds: float) -> None:
        """As :meth:`kernel.io.sockio.SocketIO.limit_writes`, for the ciphertext."""
        self._io.limit_writes(seconds)

    def cut(self) -> None:
        """Close without ``close_notify``: what we sent is incomplete, and a
        peer that reads to the end must see that it was cut (RFC 8446 §6.1)."""
        self._cut = True

    async def aclose(self) -> None:
        """Send ``close_notify`` if the socket takes it at once, and close."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        if self._handshaken and self._broken is None and not self._writing and not self._cut:
            try:
                self._ssl.unwrap()
            except (ssl.SSLError, ValueError):
                pass  # SSLWantReadError: the peer's close_notify, which we do not wait for
            alert = self._out.read()
            if alert:
                try:
                    os.write(self.transport_stream.socket.fileno(), alert)
                except OSError:
                    pass
        await self.transport_stream.aclose()

    # ---------------------------------------------------------------- inside
    def _buffered(self) -> bool:
        """Whether a read may find something: ciphertext, plaintext or the end.

        Without, OpenSSL would only say so with an ``SSLWantReadError``,
        which costs more than these three checks (the common case between
        requests).
        """
        return bool(self._in.pending or self._in.eof or self._ended or self._ssl.pending())

    def _read(self, max_bytes: int) -> bytes:
        """Plaintext of every whole record buffered, up to ``max_bytes``.

        OpenSSL returns one record per read; a peer that wrote several
        messages at once (an HTTP/2 client's frames, pipelined requests)
        gets them all in one go, as from a plain socket. Raises as
        :meth:`ssl.SSLObject.read` when there is nothing at all.
        """
        data = self._ssl.read(max_bytes)
        if not data or not self._in.pending:
            return data
        parts = [data]
        size = len(data)
        while size < max_bytes and self._in.pending:
            try:
                more = self._ssl.read(max_bytes - size)
            except ssl.SSLError:
                break  # a partial record (or an error, raised by the next read)
            if not more:
                break
            parts.append(more)
            size += len(more)
        return b"".join(parts)

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("this TLS stream is broken") from self._broken

    def _fail(self, exc: BaseException) -> trio.BrokenResourceError:
        """Mark the stream broken by ``exc``; the error to raise."""
        if self._broken is None:
            self._broken = _broken(exc)
        return _broken(exc)

    async def _fill(self) -> None:
        """Wait for ciphertext and hand it to OpenSSL (the end of the socket as EOF)."""
        try:
            data = await self._io.receive()
        except trio.BrokenResourceError as exc:
            raise self._fail(exc) from exc
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    async def _flush(self) -> None:
        """Write out every record in the outgoing BIO, one writer at a time."""
        while self._writing:  # ours are queued behind the writer's: it sends them
            await self._written.park()
            self._check()
        out = self._out
        if not out.pending:
            return
        self._writing = True
        try:
            while out.pending:
                await self._io.send(out.read())
        except BaseException as exc:
            # Part of a record may have gone: nothing can follow it.
            self._fail(exc)
            raise
        finally:
            self._writing = False
            if self._written:
                self._written.unpark_all()
