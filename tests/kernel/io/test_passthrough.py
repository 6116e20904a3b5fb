"""TLS passthrough by SNI (kernel/io/passthrough.py), over real sockets on 127.0.0.1.

A Trellis listener with ``passthrough = true`` and the builtin ``passthrough``
plugin relays ``db.example.test`` to a TLS backend that has its *own* CA, and
terminates every other name with its own certificate (issued by ``tls_ca``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import re
import shutil
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import sdk
from kernel.io.passthrough import relay
from tests.helpers.certs import client_context, client_hello

BACKEND_NAME = "db.example.test"
PROXY_NAME = "www.example.test"
BACKEND_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nbackend"


# ------------------------------------------------------------------ backends
class TlsBackend:
    """A TLS server for db.example.test with its own CA.

    A request starting with ``GET `` gets :data:`BACKEND_ANSWER` and a close;
    anything else is echoed until the client closes.
    """

    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        leaf = ca.issue_cert(BACKEND_NAME, common_name=BACKEND_NAME)
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(self.ctx)
        self.ctx.sni_callback = self._on_sni
        self.port = 0
        self.sni: list[str | None] = []

    def _on_sni(self, _obj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni.append(name)

    async def serve(
        self, *, task_status: trio.TaskStatus[TlsBackend] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        tls = [trio.SSLListener(lst, self.ctx, https_compatible=True) for lst in listeners]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._handle, tls, handler_nursery=nursery)

    async def _handle(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            chunk = await stream.receive_some(65536)
            if chunk.startswith(b"GET "):
                while b"\r\n\r\n" not in chunk:
                    more = await stream.receive_some(65536)
                    if not more:
                        return
                    chunk += more
                await stream.send_all(BACKEND_ANSWER)
                return
            while chunk:
                await stream.send_all(chunk)
                chunk = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()


class RawBackend:
    """A plain TCP server: records what it gets until EOF, then answers ``bye`` and closes.

    With ``hold`` it only reads and never answers (an idle tunnel).
    """

    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.port = 0
        self.received: list[bytes] = []
        self.connected = trio.Event()

    async def serve(
        self, *, task_status: trio.TaskStatus[RawBackend] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connected.set()
        got = bytearray()
        async with stream:
            try:
                while chunk := await stream.receive_some(65536):
                    got += chunk
                    if self.hold:
                        self.received.append(bytes(got))
                self.received.append(bytes(got))
                if not self.hold:
                    await stream.send_all(b"bye")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.received.append(bytes(got))


@pytest.fixture(scope="module")
def backend_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def backend(nursery: trio.Nursery, backend_ca: trustme.CA) -> TlsBackend:
    return await nursery.start(TlsBackend(backend_ca).serve)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def config(
    upstream_port: int,
    cert: Any,
    names: dict[str, str],
    *,
    plugins: tuple[str, ...] = ("passthrough",),
    grace: float = 2,
    extra: str = "",
) -> str:
    table = ", ".join(f'"{name}" = "{target}"' for name, target in names.items())
    chain = ", ".join(f'"{p}"' for p in plugins)
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = {grace}
plugins = [{chain}]

[upstream]
connect_timeout_s = 2

[[listeners]]
name = "main"
bind = "127.0.0.1:0"
request_head_timeout_s = 2
[listeners.tls]
passthrough = true
[[listeners.tls.certificates]]
cert = "{cert.cert}"
key = "{cert.key}"

[[routes]]
name = "default"
upstream = "http://127.0.0.1:{upstream_port}"

[plugins.passthrough]
names = {{ {table} }}
{extra}
"""


@pytest.fixture
async def proxy(start_proxy: Any, upstream: Any, backend: TlsBackend, cert_factory: Any) -> Any:
    cert = cert_factory.issue(PROXY_NAME, "other.example.test", common_name="trellis")
    names = {
        BACKEND_NAME: f"tls://127.0.0.1:{backend.port}",
        "down.example.test": f"tls://127.0.0.1:{closed_port()}",
    }
    return await start_proxy(config(upstream.port, cert, names))


# ------------------------------------------------------------------ clients
class SplitFirstWrite(trio.abc.Stream):
    """A transport whose first ``send_all`` (the ClientHello) goes out in pieces, 50 ms apart."""

    def __init__(self, stream: trio.SocketStream, cuts: tuple[int, ...] = (3, 100)) -> None:
        self.stream = stream
        self.cuts = cuts
        self.first = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self.first:
            await self.stream.send_all(data)
            return
        self.first = False
        start = 0
        for cut in (*self.cuts, len(data)):
            await self.stream.send_all(data[start:cut])
            start = cut
            await trio.sleep(0.05)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def tls_connect(
    port: int, server_name: str | None, ca: trustme.CA, *, split: bool = False
) -> trio.SSLStream[Any]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    transport: trio.abc.Stream = SplitFirstWrite(tcp) if split else tcp
    ctx = client_context(ca)
    if server_name is None:
        ctx.check_hostname = False
    stream = trio.SSLStream(transport, ctx, server_hostname=server_name, https_compatible=True)
    try:
        await stream.do_handshake()
    except BaseException:
        tcp.socket.close()
        raise
    return stream


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def get_over_tls(stream: trio.SSLStream[Any], host: str) -> bytes:
    async with stream:
        await stream.send_all(
            f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        return await read_all(stream)


async def no_connections_left(app: Any) -> bool:
    """Whether the proxy's connection count drops to 0 (it closes just after the client)."""
    with trio.move_on_after(2):
        while app.state.connections:
            await trio.sleep(0.01)
    return bool(app.state.connections == 0)


def subject_cn(stream: trio.SSLStream[Any]) -> str:
    cert = stream.getpeercert()
    assert cert is not None
    return next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")


# ------------------------------------------------------------------ tests
async def test_a_listed_name_reaches_the_backend_unopened(
    proxy: Any, backend: TlsBackend, backend_ca: trustme.CA
) -> None:
    with trio.fail_after(10):
        # Verified against the backend's CA: the backend's certificate came through.
        stream = await tls_connect(proxy.port(), BACKEND_NAME, backend_ca)
        assert subject_cn(stream) == BACKEND_NAME
        assert await get_over_tls(stream, BACKEND_NAME) == BACKEND_ANSWER
    assert backend.sni == [BACKEND_NAME]  # the client's own ClientHello arrived
    assert await no_connections_left(proxy)


async def test_other_names_are_terminated_here(
    proxy: Any, upstream: Any, backend: TlsBackend, tls_ca: trustme.CA, client: Any
) -> None:
    with trio.fail_after(10):
        for name in (PROXY_NAME, "other.example.test", None):
            stream = await tls_connect(proxy.port(), name, tls_ca)
            assert subject_cn(stream) == "trellis"
            (resp,) = client.parse_responses(await get_over_tls(stream, name or "x"))
            assert resp["status"] == 200
            assert resp["body"] == upstream.body_1k
        # The proxy's CA does not vouch for the backend, nor the other way round.
        with pytest.raises(trio.BrokenResourceError):
            await tls_connect(proxy.port(), BACKEND_NAME, tls_ca)
    assert backend.sni == [BACKEND_NAME]
    assert len(upstream.requests) == 3


async def test_http2_by_alpn_on_a_terminated_name(proxy: Any, tls_ca: trustme.CA) -> None:
    tcp = await trio.open_tcp_stream("127.0.0.1", proxy.port())
    ctx = client_context(tls_ca, alpn=["h2", "http/1.1"])
    stream = trio.SSLStream(tcp, ctx, server_hostname=PROXY_NAME, https_compatible=True)
    with trio.fail_after(10):
        async with stream:
            await stream.do_handshake()
            assert stream.selected_alpn_protocol() == "h2"
            await stream.send_all(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            )
            frame = await stream.receive_some(9)
            assert frame[3] == 0x04  # the server's SETTINGS: HTTP/2 is served


@pytest.mark.parametrize("name", [BACKEND_NAME, PROXY_NAME])
async def test_a_hello_split_over_several_writes(
    proxy: Any,
    backend_ca: trustme.CA,
    tls_ca: trustme.CA,
    client: Any,
    name: str,
) -> None:
    with trio.fail_after(10):
        if name == BACKEND_NAME:
            stream = await tls_connect(proxy.port(), name, backend_ca, split=True)
            assert await get_over_tls(stream, name) == BACKEND_ANSWER
        else:
            stream = await tls_connect(proxy.port(), name, tls_ca, split=True)
            (resp,) = client.parse_responses(await get_over_tls(stream, name))
            assert resp["status"] == 200


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",  # cleartext HTTP on the TLS port
        b"\x16\x03\x01\x00\x08hello!!!",  # a handshake record that is no ClientHello
        b"\x16\x09\x09\x00\x05abcde",  # not a TLS version
        b"\x16\x03\x01" + b"\xff" * 100,  # a record longer than TLS allows
    ],
)
async def test_garbage_is_closed_and_the_proxy_keeps_serving(
    proxy: Any, tls_ca: trustme.CA, client: Any, garbage: bytes, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="kernel.passthrough")
    with trio.fail_after(10):
        assert await client.exchange(proxy.port(), garbage, half_close=False) == b""
        stream = await tls_connect(proxy.port(), PROXY_NAME, tls_ca)
        (resp,) = client.parse_responses(await get_over_tls(stream, PROXY_NAME))
    assert resp["status"] == 200
    assert "no TLS ClientHello from 127.0.0.1:" in caplog.text
    assert await no_connections_left(proxy)


async def test_a_client_that_sends_half_a_hello_is_closed_at_the_head_timeout(
    proxy: Any, client: Any
) -> None:
    hello = client_hello(BACKEND_NAME)
    started = trio.current_time()
    with trio.fail_after(10):
        assert await client.exchange(proxy.port(), hello[:50], half_close=False) == b""
    assert 1.5 < trio.current_time() - started < 5  # request_head_timeout_s = 2


async def test_an_unreachable_backend_closes_the_client(
    proxy: Any, tls_ca: trustme.CA, client: Any, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="kernel.passthrough")
    with trio.fail_after(10):
        got = await client.exchange(
            proxy.port(), client_hello("down.example.test"), half_close=False
        )
        assert got == b""
        stream = await tls_connect(proxy.port(), PROXY_NAME, tls_ca)
        (resp,) = client.parse_responses(await get_over_tls(stream, PROXY_NAME))
    assert resp["status"] == 200
    assert "passthrough to 127.0.0.1:" in caplog.text
    assert "closing the client connection" in caplog.text


async def test_raw_bytes_go_through_unchanged_with_half_close(
    start_proxy: Any, upstream: Any, cert_factory: Any, nursery: trio.Nursery
) -> None:
    raw: RawBackend = await nursery.start(RawBackend().serve)
    cert = cert_factory.issue(PROXY_NAME)
    app = await start_proxy(
        config(upstream.port, cert, {"raw.example.test": f"tls://127.0.0.1:{raw.port}"})
    )
    hello = client_hello("raw.example.test", alpn=["h2"])
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", app.port())
        async with stream:
            for piece in (hello[:7], hello[7:], b"after the hello"):
                await stream.send_all(piece)
                await trio.sleep(0.05)
            await stream.send_eof()  # the backend answers only after our EOF
            assert await read_all(stream) == b"bye"
    assert raw.received == [hello + b"after the hello"]


async def test_a_large_transfer_keeps_its_bytes(proxy: Any, backend_ca: trustme.CA) -> None:
    size = 20 * 1024 * 1024
    data = random.Random(7).randbytes(size)
    sent_digest = hashlib.sha256(data).hexdigest()
    got = hashlib.sha256()
    received = 0
    with trio.fail_after(60):
        stream = await tls_connect(proxy.port(), BACKEND_NAME, backend_ca)
        async with stream:

            async def send() -> None:
                view = memoryview(data)
                for i in range(0, size, 256 * 1024):
                    await stream.send_all(view[i : i + 256 * 1024])

            async with trio.open_nursery() as n:
                n.start_soon(send)
                while received < size:
                    chunk = await stream.receive_some(1024 * 1024)
                    assert chunk
                    got.update(chunk)
                    received += len(chunk)
    assert received == size
    assert got.hexdigest() == sent_digest


class Failing:
    """Fails for boom.example.test, declines every other name."""

    @sdk.hookimpl
    def trellis_tls_passthrough(self, server_name: str) -> sdk.Origin | None:
        if server_name == "boom.example.test":
            raise RuntimeError("no table today")
        return None


@pytest.mark.parametrize("on_error", ["fail_closed", "fail_open"])
async def test_a_failing_plugin(
    start_proxy: Any,
    upstream: Any,
    cert_factory: Any,
    tls_ca: trustme.CA,
    client: Any,
    caplog: Any,
    on_error: str,
) -> None:
    cert = cert_factory.issue(PROXY_NAME, "boom.example.test")
    cfg = config(
        upstream.port,
        cert,
        {},
        plugins=("broken", "passthrough"),
        extra=f'[kernel.policy.broken]\non_error = "{on_error}"\n',
    )
    app = await start_proxy(cfg, extra_plugins={"broken": Failing()})
    with trio.fail_after(10):
        if on_error == "fail_closed":  # the connection is closed, the proxy serves on
            hello = client_hello("boom.example.test")
            assert await client.exchange(app.port(), hello, half_close=False) == b""
            names = [PROXY_NAME]
        else:  # the plugin counts as None: terminated here
            names = ["boom.example.test", PROXY_NAME]
        for name in names:
            stream = await tls_connect(app.port(), name, tls_ca)
            (resp,) = client.parse_responses(await get_over_tls(stream, name))
            assert resp["status"] == 200
    assert "plugin 'broken' raised RuntimeError in trellis_tls_passthrough" in caplog.text
    assert await no_connections_left(app)


async def test_an_idle_tunnel_is_cut_when_the_grace_period_ends(
    upstream: Any, cert_factory: Any, nursery: trio.Nursery, tmp_path: Path
) -> None:
    from kernel.app import App

    raw: RawBackend = await nursery.start(RawBackend(hold=True).serve)
    cert = cert_factory.issue(PROXY_NAME)
    path = tmp_path / "proxy.toml"
    names = {"raw.example.test": f"tls://127.0.0.1:{raw.port}"}
    path.write_text(config(upstream.port, cert, names, grace=0.5))
    app = App(path, environ={}, handle_signals=False)
    codes: list[int] = []
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[App] = trio.TASK_STATUS_IGNORED) -> None:
        codes.append(await app.run(task_status=task_status))
        stopped.set()

    await nursery.start(run)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", app.port())
        async with stream:
            await stream.send_all(client_hello("raw.example.test"))
            await raw.connected.wait()
            started = time.monotonic()
            app.stop()
            assert await read_all(stream) == b""  # cut by the drain
            await stopped.wait()
    assert 0.4 < time.monotonic() - started < 3
    assert codes == [0]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_openssl_s_client_sees_the_backend(
    proxy: Any, backend_ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "backend-ca.pem"
    backend_ca.cert_pem.write_to_path(str(ca_file))
    command = [
        "openssl",
        "s_client",
        "-servername",
        BACKEND_NAME,
        "-connect",
        f"127.0.0.1:{proxy.port()}",
        "-CAfile",
        str(ca_file),
    ]
    with trio.fail_after(20):
        done = await trio.run_process(
            command, stdin=b"", capture_stdout=True, capture_stderr=True, check=False
        )
    out = done.stdout.decode()
    assert re.search(rf"^subject=.*CN = {re.escape(BACKEND_NAME)}$", out, re.M), out
    assert "Verify return code: 0 (ok)" in out


# ------------------------------------------------------------------ units
async def test_relay_ends_both_directions_when_one_side_resets(nursery: trio.Nursery) -> None:
    accepted: list[trio.SocketStream] = []

    async def handle(s: trio.SocketStream) -> None:
        accepted.append(s)
        await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    a_far = await trio.open_tcp_stream("127.0.0.1", port)
    b_far = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(5):
        while len(accepted) < 2:
            await trio.sleep(0.01)
    a_near, b_near = sorted(
        accepted, key=lambda s: s.socket.getpeername() != a_far.socket.getsockname()
    )
    result: list[tuple[int, int]] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as n:

            async def run() -> None:
                result.append(await relay(a_near, b_near, b"pre"))

            n.start_soon(run)
            assert await b_far.receive_some(3) == b"pre"
            await a_far.send_all(b"up")
            assert await b_far.receive_some(2) == b"up"
            # SO_LINGER 0: close sends a reset, not an EOF.
            a_far.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            a_far.socket.close()
    assert result == [(5, 0)]
    for s in (a_near, b_near, b_far):
        await s.aclose()
