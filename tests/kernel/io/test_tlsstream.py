"""TLS over a TCP socket with no scheduler trip it does not need (kernel/io/tlsstream.py).

Real TCP connections on 127.0.0.1 with trustme certificates. The peer is
trio's own :class:`trio.SSLStream` (an independent implementation), or
another :class:`TLSStream` where both ends are ours: the handshake both
ways round, ALPN, SNI and client certificates, the end of the stream with
and without ``close_notify``, ciphertext larger than the socket buffer in
both directions at once, two writers at the same time, a write cut short,
a failed handshake's alert, and where the stream does and does not yield.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from kernel.io.tlsstream import TLSStream
from tests.helpers.sockets import tcp_pair
from tests.helpers.yields import counting_yields

NAME = "tls.test"


@pytest.fixture
def contexts(tls_ca: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for NAME, and a client context trusting it."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert(NAME).configure_cert(server)
    client = ssl.create_default_context()
    tls_ca.configure_trust(client)
    return server, client


@pytest.fixture
async def tcp() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """Two ends of one TCP connection on loopback (client, server)."""
    async with tcp_pair() as ends:
        yield ends


async def handshake_both(a: Any, b: Any) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.do_handshake)
        nursery.start_soon(b.do_handshake)


@pytest.fixture
async def ours_serving(
    tcp: tuple[trio.SocketStream, trio.SocketStream],
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> tuple[trio.SSLStream[trio.SocketStream], TLSStream]:
    """trio's client talking to our server, handshake done."""
    server_ctx, client_ctx = contexts
    client = trio.SSLStream(tcp[0], client_ctx, server_hostname=NAME)
    server = TLSStream(tcp[1], server_ctx, server_side=True)
    with trio.fail_after(10):
        await handshake_both(client, server)
    return client, server


# ------------------------------------------------------------------ handshake
async def test_server_side_talks_to_trios_client(
    ours_serving: tuple[trio.SSLStream[trio.SocketStream], TLSStream],
) -> None:
    client, server = ours_serving
    with trio.fail_after(10):
        await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
        assert await server.receive() == b"GET / HTTP/1.1\r\n\r\n"
        await server.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert await client.receive_some() == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert server.version() == client.version() == "TLSv1.3"


async def test_client_side_verifies_and_negotiates_alpn(
    tcp: tuple[trio.SocketStream, trio.SocketStream],
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client_ctx.set_alpn_protocols(["http/1.1"])
    seen: list[str | None] = []

    def sni(obj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        seen.append(name)

    server_ctx.sni_callback = sni  # type: ignore[assignment]
    server = trio.SSLStream(tcp[1], server_ctx, server_side=True)
    client = TLSStream(tcp[0], client_ctx, server_hostname=NAME)
    with trio.fail_after(10):
        await handshake_both(client, server)
        await client.send(b"ping")
        assert await server.receive_some() == b"ping"
    assert client.selected_alpn_protocol() == server.selected_alpn_protocol() == "http/1.1"
    assert seen == [NAME]
    assert ("DNS", NAME) in client.getpeercert()["subjectAltName"]
    assert client.getpeercert(True)  # the DER of the server's leaf


async def test_client_refuses_a_certificate_for_another_name(
    tcp: tuple[trio.SocketStream, trio.SocketStream],
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    server = trio.SSLStream(tcp[1], server_ctx, server_side=True)
    client = TLSStream(tcp[0], client_ctx, server_hostname="other.test")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await server.do_handshake()

            nursery.start_soon(serve)
            with pytest.raises(trio.BrokenResourceError) as caught:
                await client.do_handshake()
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            # The alert OpenSSL made for the peer is kept for the caller.
            alert = client.pending_output()
            assert alert[:1] == b"\x15"  # a TLS alert record
            await tcp[0].send_all(alert)
    with pytest.raises(trio.BrokenResourceError):
        await client.send(b"late")  # broken for good


async def test_client_certificate_reaches_the_server(
    tls_ca: Any,
    tcp: tuple[trio.SocketStream, trio.SocketStream],
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    tls_ca.configure_trust(server_ctx)
    tls_ca.issue_cert("client.test").configure_cert(client_ctx)
    client = trio.SSLStream(tcp[0], client_ctx, server_hostname=NAME)
    server = TLSStream(tcp[1], server_ctx, server_side=True)
    with trio.fail_after(10):
        await handshake_both(client, server)
        await client.send_all(b"x")
        assert await server.receive() == b"x"
    assert ("DNS", "client.test") in server.getpeercert()["subjectAltName"]


async def test_replayed_bytes_are_read_before_the_socket(
    tcp: tuple[trio.SocketStream, trio.SocketStream],
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A ClientHello read to peek at its SNI name is handed back as ``initial``."""
    server_ctx, client_ctx = contexts
    client = trio.SSLStream(tcp[0], client_ctx, server_hostname=NAME)

    async def peek_then_serve() -> None:
        hello = await tcp[1].receive_some(5)  # part of it, as a peek may be
        server = TLSStream(tcp[1], server_ctx, server_side=True, initial=hello)
        await server.do_handshake()
        await server.send(await server.receive())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peek_then_serve)
            await client.do_handshake()
            await client.send_all(b"echo")
            assert await client.receive_some() == b"echo"


async def test_one_read_gives_every_whole_record_there(
    ours_serving: tuple[trio.SSLStream[trio.SocketStream], TLSStream],
) -> None:
    """OpenSSL returns one record per read; ours returns all of them, up to
    max_bytes, as a plain socket would (an HTTP/2 client's frames at once)."""
    client, server = ours_serving
    for message in (b"one ", b"two ", b"three"):
        await client.send_all(message)  # a record each
    await trio.sleep(0.05)
    with trio.fail_after(10):
        assert await server.receive() == b"one two three"
        await client.send_all(b"abc")
        await client.send_all(b"def")
        await trio.sleep(0.05)
        assert await server.receive(4) == b"abcd"  # never more than asked
        assert server.read_ready() == b"ef"


# ------------------------------------------------------------------ the end
async def test_close_notify_is_sent_and_read_as_the_end(
    tcp: tuple[trio.SocketStream, trio.SocketStream],
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = contexts
    client = TLSStream(tcp[0], client_ctx, server_hostname=NAME)
    server = TLSStream(tcp[1], server_ctx, server_side=True)
    with trio.fail_after(10):
        await handshake_both(client, server)
        await client.aclose()
        assert await server.receive() == b""
        assert await server.receive() == b""  # and stays ended
    with pytest.raises(trio.ClosedResourceError):
        await client.send(b"x")
    await client.aclose()  # twice is fine


async def test_a_close_without_close_notify_is_the_end_too(
    ours_serving: tuple[trio.SSLStream[trio.SocketStream], TLSStream],
) -> None:
    client, server = ours_serving
    with trio.fail_after(10):
        # A round trip first, so the client has read everything (the
        # session tickets): a socket closed with unread input sends a reset.
        await server.send(b"hello")
        assert await client.receive_some() == b"hello"
        client.transport_stream.socket.close()  # no close_notify (HTTPS-compatible)
        assert await server.receive() == b""


@pytest.mark.parametrize("cut", [False, True])
async def test_a_cut_stream_closes_without_close_notify(
    tcp: tuple[trio.SocketStream, trio.SocketStream],
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    cut: bool,
) -> None:
    """A response we could not finish: the peer must not read a clean end."""
    server_ctx, client_ctx = contexts
    # Python's contexts read a ragged end as a clean one unless told not to
    # (curl and browsers do not).
    client_ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    client = trio.SSLStream(tcp[0], client_ctx, server_hostname=NAME)
    server = TLSStream(tcp[1], server_ctx, server_side=True)
    with trio.fail_after(10):
        await handshake_both(client, server)
        await server.send(b"part of it")
        assert await client.receive_some() == b"part of it"
        if cut:
            server.cut()
        await server.aclose()
        if cut:
            with pytest.raises(trio.BrokenResourceError):  # a ragged end
                await client.receive_some()
        else:
            assert await client.receive_some() == b""


async def test_read_ready_gives_whole_records_none_or_the_end(
    ours_serving: tuple[trio.SSLStream[trio.SocketStream], TLSStream],
) -> None:
    client, server = ours_serving
    assert server.read_ready() is None  # nothing yet
    with trio.fail_after(10):
        await client.send_all(b"one")
        while (got := server.read_ready()) is None:
            await trio.sleep(0.01)
    assert got == b"one"
    # Half a record on the socket: still nothing to give.
    raw = client.transport_stream
    partial_record = b"\x17\x03\x03\x00\x40" + b"\x00" * 10  # 10 of 64 bytes
    await raw.send_all(partial_record)
    await trio.sleep(0.05)
    assert server.read_ready() is None
    raw.socket.close()
    await trio.sleep(0.05)
    # The socket ended in the middle of a record: that is the end (an error counts as one).
    assert server.read_ready() == b""


# ------------------------------------------------------------------ volume
async def test_both_directions_at_once_beyond_the_socket_buffers(
    tcp: tuple[trio.SocketStream, trio.SocketStream],
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Each side sends 8 MB while the other does too: writes must wait for
    room without stopping the reads that make room on the other side."""
    server_ctx, client_ctx = contexts
    for s in tcp:
        # (Only the send side: a receive buffer shrunk on an open connection
        # can stall loopback TCP in both directions, trio's SSLStream too.)
        s.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    client = TLSStream(tcp[0], client_ctx, server_hostname=NAME)
    server = TLSStream(tcp[1], server_ctx, server_side=True)
    data = {side: bytes([n]) * 8_000_000 for n, side in enumerate(("c", "s"))}
    got: dict[str, bytearray] = {"c": bytearray(), "s": bytearray()}

    async def pump(stream: TLSStream, me: str, peer: str) -> None:
        async def write() -> None:
            view = memoryview(data[me])
            for i in range(0, len(view), 100_000):
                await stream.send_all(view[i : i + 100_000])

        async def read() -> None:
            while len(got[me]) < len(data[peer]):
                chunk = await stream.receive_some(65536)
                assert chunk
                got[me].extend(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            nursery.start_soon(read)

    with trio.fail_after(60):
        await handshake_both(client, server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, "c", "s")
            nursery.start_soon(pump, server, "s", "c")
    assert got["c"] == data["s"]
    assert got["s"] == data["c"]


async def test_two_writers_at_once_keep_their_records_whole(
    ours_serving: tuple[trio.SSLStream[trio.SocketStream], TLSStream],
) -> None:
    """A writer that finds the socket busy waits for the one writing, whose
    flush sends its records too; the peer decrypts both messages whole."""
    client, server = ours_serving
    server.transport_stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big, small = b"A" * 2_000_000, b"B" * 1000
    received = bytearray()

    async def read() -> None:
        while len(received) < len(big) + len(small):
            chunk = await client.receive_some(65536)
            assert chunk
            received.extend(chunk)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send, big)
            await trio.testing.wait_all_tasks_blocked()  # the first writer waits for room
            assert server._writing
            nursery.start_soon(server.send, small)
            nursery.start_soon(read)
    assert bytes(received) == big + small


async def test_a_write_cut_short_breaks_the_stream(
    ours_serving: tuple[trio.SSLStream[trio.SocketStream], TLSStream],
) -> None:
    _client, server = ours_serving
    server.transport_stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with trio.move_on_after(0.2):
        await server.send(b"x" * 20_000_000)  # nobody reads: it waits, then is cancelled
    with pytest.raises(trio.BrokenResourceError):
        await server.send(b"more")
    with pytest.raises(trio.BrokenResourceError):
        await server.receive()


# ------------------------------------------------------------------ yields
@pytest.mark.parametrize(
    ("receive", "send", "yields"),
    [("receive", "send", 0), ("receive_some", "send_all", 1)],
    ids=["kernel calls: only to wait", "trio.abc.Stream calls: checkpoints"],
)
async def test_yields_when_the_socket_need_not_wait(
    ours_serving: tuple[trio.SSLStream[trio.SocketStream], TLSStream],
    receive: str,
    send: str,
    yields: int,
) -> None:
    client, server = ours_serving
    await client.send_all(b"request")
    await trio.sleep(0.05)  # the record is in the server's socket now
    got, count = await counting_yields(getattr(server, receive))
    assert (got, count) == (b"request", yields)
    _, count = await counting_yields(lambda: getattr(server, send)(b"response"))
    assert count == yields
    assert await client.receive_some() == b"response"


async def test_stream_contract_calls_check_for_cancellation(
    ours_serving: tuple[trio.SSLStream[trio.SocketStream], TLSStream],
) -> None:
    _client, server = ours_serving
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await server.receive_some()
        with pytest.raises(trio.Cancelled):
            await server.send_all(b"x")


async def test_a_receive_with_nothing_there_waits_and_wakes(
    ours_serving: tuple[trio.SSLStream[trio.SocketStream], TLSStream],
) -> None:
    client, server = ours_serving
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await server.receive())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # it waits in epoll, it does not spin
            await client.send_all(b"late")
    assert got == [b"late"]
