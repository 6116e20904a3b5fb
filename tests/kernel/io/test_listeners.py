"""Binding listeners and their accept loops (kernel/io/listeners.py)."""

from __future__ import annotations

import errno
import json
import logging
import ssl
from typing import Any

import pytest
import trio
from hyperframe.frame import PingFrame

import sdk
from kernel.config.model import ListenerConfig, RouteConfig, Settings
from kernel.generation import Generation, build_generation
from kernel.io.listeners import BindError, BoundListener, bind
from kernel.io.state import ServerState
from tests.helpers.certs import CertFactory, CertFiles, client_context, client_hello
from tests.helpers.h2client import H2Client, RawH2


def generation(listener: str = "main") -> Generation:
    """A generation whose only route answers locally with "hi"."""
    settings = Settings(
        listeners=[ListenerConfig(name=listener, bind="127.0.0.1:0")],
        routes=[RouteConfig(name="local", plugins=["respond"])],
        plugins={"respond": {"body": "hi"}},
    )
    return build_generation(settings)


async def get(port: int, client: Any) -> dict[str, Any]:
    raw = await client.exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    (resp,) = client.parse_responses(raw)
    return dict(resp)


async def test_binding_a_port_in_use_is_a_bind_error() -> None:
    first = await bind("main", "127.0.0.1:0")
    try:
        addr = f"127.0.0.1:{first.port}"
        with pytest.raises(BindError) as info:
            await bind("admin", addr)
        message = str(info.value)
        assert message.startswith(f"cannot bind listener 'admin' to {addr}: ")
        assert "in use" in message.lower()  # the OS reason, not an errno number
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.EADDRINUSE
    finally:
        await first.listener.aclose()


async def test_bind_keeps_the_address_and_reports_the_port() -> None:
    bound = await bind("main", "127.0.0.1:0")
    async with bound.listener:
        assert bound.name == "main"
        assert bound.bind == "127.0.0.1:0"
        assert bound.port > 0
        assert bound.same_address("127.0.0.1:0")
        assert bound.same_address(f"127.0.0.1:{bound.port}")
        assert not bound.same_address(f"127.0.0.1:{bound.port + 1}")


async def test_accept_loop_serves_concurrent_connections(client: Any) -> None:
    state = ServerState(generation())
    bound = await bind("main", "127.0.0.1:0")
    results: list[dict[str, Any]] = []
    async with trio.open_nursery() as conns:
        conns.start_soon(bound.serve, state, conns)

        async def one() -> None:
            results.append(await get(bound.port, client))

        async with trio.open_nursery() as clients:
            for _ in range(5):
                clients.start_soon(one)
        assert [r["body"] for r in results] == [b"hi"] * 5
        assert state.connections == 0  # each was counted and uncounted
        assert next(state.connection_ids) == 6  # ids 1..5 were handed out
        bound.scope.cancel()
    # Cancelling the accept loop closed the listening socket.
    assert bound.listener.socket.fileno() == -1


async def test_connections_are_counted_while_open(client: Any) -> None:
    state = ServerState(generation())
    bound = await bind("main", "127.0.0.1:0")
    async with trio.open_nursery() as conns:
        conns.start_soon(bound.serve, state, conns)
        stream = await trio.open_tcp_stream("127.0.0.1", bound.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            with trio.fail_after(2):
                got = await stream.receive_some(65536)
            assert got.startswith(b"HTTP/1.1 200 ")
            assert state.connections == 1  # kept alive
        with trio.fail_after(2):
            while state.connections:
                await trio.sleep(0.01)
        bound.scope.cancel()


async def test_listener_gone_from_the_generation_closes_at_once(client: Any) -> None:
    """A reload removed this listener between accept and serve: no answer."""
    state = ServerState(generation("other"))
    bound = await bind("main", "127.0.0.1:0")
    async with trio.open_nursery() as conns:
        conns.start_soon(bound.serve, state, conns)
        raw = await client.exchange(bound.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", timeout=2)
        assert raw == b""
        bound.scope.cancel()


class FlakyListener:
    """Stands in for a trio listener: accept() fails with the given errnos first."""

    def __init__(self, real: trio.SocketListener, errnos: list[int]) -> None:
        self.real = real
        self.errnos = errnos
        self.socket = real.socket

    async def accept(self) -> trio.SocketStream:
        if self.errnos:
            await trio.sleep(0)
            code = self.errnos.pop(0)
            raise OSError(code, "simulated")
        return await self.real.accept()

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_accept_backs_off_when_out_of_descriptors(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    state = ServerState(generation())
    real = await bind("main", "127.0.0.1:0")
    flaky = BoundListener("main", real.bind, FlakyListener(real.listener, [errno.EMFILE]))  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="kernel.listeners")
    async with trio.open_nursery() as conns:
        conns.start_soon(flaky.serve, state, conns)
        start = trio.current_time()
        resp = await get(real.port, client)
        assert resp["body"] == b"hi"  # served once the pause was over
        assert trio.current_time() - start >= 0.09
        flaky.scope.cancel()
    assert any("pausing" in r.getMessage() for r in caplog.records)


async def test_running_out_of_descriptors_is_logged_once_per_ten_seconds(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, an ERROR line every 100 ms while the limit lasted."""
    state = ServerState(generation())
    real = await bind("main", "127.0.0.1:0")
    flaky = BoundListener("main", real.bind, FlakyListener(real.listener, [errno.EMFILE] * 30))  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="kernel.listeners")
    async with trio.open_nursery() as conns:
        conns.start_soon(flaky.serve, state, conns)
        with trio.fail_after(10):
            assert (await get(real.port, client))["body"] == b"hi"  # after 30 pauses (3 s)
        flaky.scope.cancel()
    assert [r.getMessage().endswith("(1 pauses)") for r in caplog.records] == [True]


async def test_other_accept_errors_propagate() -> None:
    state = ServerState(generation())
    real = await bind("main", "127.0.0.1:0")
    flaky = BoundListener("main", real.bind, FlakyListener(real.listener, [errno.EBADF]))  # type: ignore[arg-type]
    with pytest.RaisesGroup(pytest.RaisesExc(OSError, match="simulated")):
        async with trio.open_nursery() as conns:
            await flaky.serve(state, conns)
    # The listening socket is closed on the way out.
    assert real.listener.socket.fileno() == -1


# -- TLS termination (serve_tls) -----------------------------------------------------------
class ClientEcho:
    """Copies what the kernel knows of the client connection into response headers."""

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        assert flow.response is not None
        c = flow.client
        h = flow.response.headers
        h["x-tls"] = str(c.tls).lower()
        h["x-tls-version"] = c.tls_version or "-"
        h["x-alpn"] = c.alpn or "-"
        h["x-sni"] = c.sni or "-"
        h["x-client-cert"] = c.client_cert_subject or "-"
        h["x-http-version"] = flow.request.http_version


def tls_config(
    upstream: Any,
    certs: list[tuple[CertFiles, list[str]]],
    *,
    tls: str = "",
    listener: str = "",
    server: str = "",
) -> str:
    """One TLS listener ("main") with ``certs`` (the first is the default), and ClientEcho."""
    blocks = "".join(
        f'[[listeners.tls.certificates]]\ncert = "{c.cert}"\nkey = "{c.key}"\n'
        f"names = {json.dumps(names)}\n"
        for c, names in certs
    )
    return f"""
[kernel]
watch_config = false
shutdown_grace_s = 2
plugins = ["echo"]
[server]
{server}
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
{listener}
[listeners.tls]
{tls}
{blocks}
[[routes]]
name = "default"
upstream = "http://127.0.0.1:{upstream.port}"
"""


async def start_tls(start_proxy: Any, cfg: str) -> Any:
    return await start_proxy(cfg, extra_plugins={"echo": ClientEcho()})


async def tls_connect(
    port: int, ctx: ssl.SSLContext, server_hostname: str | None = "a.test"
) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=server_hostname)
    try:
        with trio.fail_after(5):
            await stream.do_handshake()
    except BaseException:
        await tcp.aclose()
        raise
    return stream


async def tls_get(stream: trio.abc.Stream, client: Any, path: str = "/echo") -> dict[str, Any]:
    """One HTTP/1.1 request with ``Connection: close``; the parsed response."""
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n".encode()
    )
    raw = b""
    with trio.fail_after(5):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            raw += chunk
    (resp,) = client.parse_responses(raw)
    return dict(resp)


def san(stream: trio.SSLStream[trio.SocketStream]) -> list[str]:
    cert = stream.getpeercert()
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


@pytest.fixture
def site(cert_factory: CertFactory) -> CertFiles:
    return cert_factory.issue("a.test")


async def test_tls_alpn_picks_http2_or_http11(
    start_proxy: Any, upstream: Any, client: Any, tls_ca: Any, site: CertFiles
) -> None:
    app = await start_tls(start_proxy, tls_config(upstream, [(site, [])]))
    # h2 by ALPN: an HTTP/2 connection, and the flow knows it.
    ctx = client_context(tls_ca, alpn=["h2", "http/1.1"])
    async with await H2Client.connect(app.port(), tls=ctx, server_hostname="a.test") as c:
        assert isinstance(c.stream, trio.SSLStream)
        assert c.stream.selected_alpn_protocol() == "h2"
        r = await c.get(b"/echo", authority=b"a.test")
    assert r.status == 200
    assert r.header(b"x-alpn") == b"h2"
    assert r.header(b"x-http-version") == b"2"
    assert r.header(b"x-sni") == b"a.test"
    assert r.header(b"x-tls") == b"true"
    assert r.header(b"x-tls-version") in (b"TLSv1.2", b"TLSv1.3")
    assert dict(json.loads(r.body)["headers"])["x-forwarded-proto"] == "https"
    # http/1.1 by ALPN, and no ALPN at all: HTTP/1.1.
    for alpn, expected in ((["http/1.1"], "http/1.1"), (None, "-")):
        stream = await tls_connect(app.port(), client_context(tls_ca, alpn=alpn))
        async with stream:
            assert stream.selected_alpn_protocol() == (None if alpn is None else "http/1.1")
            resp = await tls_get(stream, client)
        assert resp["status"] == 200
        assert resp["headers"]["x-alpn"] == expected
        assert resp["headers"]["x-http-version"] == "1.1"
    assert len(upstream.requests) == 3


async def test_tls_listener_without_http2_never_offers_h2(
    start_proxy: Any, upstream: Any, client: Any, tls_ca: Any, site: CertFiles
) -> None:
    app = await start_tls(start_proxy, tls_config(upstream, [(site, [])], listener="http2 = false"))
    stream = await tls_connect(app.port(), client_context(tls_ca, alpn=["h2", "http/1.1"]))
    async with stream:
        assert stream.selected_alpn_protocol() == "http/1.1"
        resp = await tls_get(stream, client)
    assert resp["status"] == 200
    assert resp["headers"]["x-alpn"] == "http/1.1"


async def test_tls_http2_connection_idles_out_and_drains_with_goaway(
    start_proxy: Any, upstream: Any, tls_ca: Any, site: CertFiles
) -> None:
    cfg = tls_config(upstream, [(site, [])], listener="keepalive_timeout_s = 0.5")
    app = await start_tls(start_proxy, cfg)
    ctx = client_context(tls_ca, alpn=["h2"])
    async with await H2Client.connect(app.port(), tls=ctx, server_hostname="a.test") as c:
        assert (await c.get(b"/one", authority=b"a.test")).status == 200
        start = trio.current_time()
        await c.until(lambda: c.goaway is not None, timeout=3)
        assert 0.4 < trio.current_time() - start < 1.5
        assert c.goaway is not None
        assert (c.goaway.error_code, c.goaway.last_stream_id) == (0, 1)
    async with await H2Client.connect(app.port(), tls=ctx, server_hostname="a.test") as c:
        sid = await c.request(b"GET", b"/sleep/0.5", authority=b"a.test")
        with trio.fail_after(2):
            while len(upstream.requests) < 2:
                await trio.sleep(0.01)
        app.stop()
        await c.until(lambda: c.goaway is not None, timeout=1)
        r = await c.response(sid)
        assert (r.status, bytes(r.body)) == (200, b"slept\n")
        await c.read_until_closed(timeout=3)


async def test_tls_http2_flood_from_a_client_that_never_reads(
    start_proxy: Any, upstream: Any, client: Any, tls_ca: Any, site: CertFiles
) -> None:
    """The GOAWAY reaches a TLS client that flooded without reading (no reset destroys it)."""
    app = await start_tls(start_proxy, tls_config(upstream, [(site, [])]))
    ctx = client_context(tls_ca, alpn=["h2"])
    raw = await RawH2.connect(app.port(), tls=ctx, server_hostname="a.test")
    async with raw:
        with trio.move_on_after(3):
            for i in range(0, 50_000, 500):
                await raw.send(
                    *[PingFrame(0, opaque_data=j.to_bytes(8, "big")) for j in range(i, i + 500)]
                )
        assert not raw.closed
        stream = await tls_connect(app.port(), client_context(tls_ca))
        async with stream:
            assert (await tls_get(stream, client))["status"] == 200
        await raw.until(lambda: raw.goaway is not None)
        assert raw.goaway is not None
        assert raw.goaway.error_code == 0xB
        assert (
            len([f for f in raw.frames if isinstance(f, PingFrame)]) <= 1050
        )  # the budget (1000), refilled at 100/s
    assert len(upstream.requests) == 1


async def test_sni_selects_exact_wildcard_or_default_certificate(
    start_proxy: Any, upstream: Any, client: Any, tls_ca: Any, cert_factory: CertFactory
) -> None:
    default = cert_factory.issue("default.test")
    exact = cert_factory.issue("a.test")
    wild = cert_factory.issue("*.w.test")
    certs = [(default, []), (wild, ["*.w.test"]), (exact, ["a.test"])]
    app = await start_tls(start_proxy, tls_config(upstream, certs))
    ctx = client_context(tls_ca)
    ctx.check_hostname = False  # we look at which certificate came, not whether it fits
    cases = {
        "a.test": ["a.test"],
        "A.Test": ["a.test"],
        "x.w.test": ["*.w.test"],
        "a.b.w.test": ["default.test"],  # a wildcard covers one label only
        "w.test": ["default.test"],
        "other.test": ["default.test"],
        None: ["default.test"],  # no SNI at all
    }
    for name, expected in cases.items():
        stream = await tls_connect(app.port(), ctx, server_hostname=name)
        async with stream:
            assert san(stream) == expected, name
            resp = await tls_get(stream, client)
        assert resp["status"] == 200
        assert resp["headers"]["x-sni"] == (name.lower() if name else "-")


async def test_min_version_13_refuses_a_tls12_client(
    start_proxy: Any, upstream: Any, client: Any, tls_ca: Any, site: CertFiles
) -> None:
    app = await start_tls(
        start_proxy, tls_config(upstream, [(site, [])], tls='min_version = "1.3"')
    )
    old = client_context(tls_ca, max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(trio.BrokenResourceError) as info:
        await tls_connect(app.port(), old)
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert "protocol version" in str(info.value.__cause__)  # the alert, not just EOF
    stream = await tls_connect(app.port(), client_context(tls_ca))
    async with stream:
        assert stream.version() == "TLSv1.3"
        resp = await tls_get(stream, client)
    assert resp["headers"]["x-tls-version"] == "TLSv1.3"
    assert len(upstream.requests) == 1


async def test_max_version_12_is_held_to(
    start_proxy: Any, upstream: Any, client: Any, tls_ca: Any, site: CertFiles
) -> None:
    app = await start_tls(
        start_proxy, tls_config(upstream, [(site, [])], tls='max_version = "1.2"')
    )
    stream = await tls_connect(app.port(), client_context(tls_ca))
    async with stream:
        assert stream.version() == "TLSv1.2"
        resp = await tls_get(stream, client)
    assert resp["headers"]["x-tls-version"] == "TLSv1.2"


async def test_client_certificate_required(
    start_proxy: Any,
    upstream: Any,
    client: Any,
    tls_ca: Any,
    site: CertFiles,
    cert_factory: CertFactory,
) -> None:
    tls = f'client_auth = "required"\nclient_ca = "{cert_factory.ca_file}"'
    app = await start_tls(start_proxy, tls_config(upstream, [(site, [])], tls=tls))
    # Without a certificate: no request gets through (TLS 1.3 tells the client
    # after its side of the handshake, with an alert at its first read).
    stream = await tls_connect(app.port(), client_context(tls_ca))
    async with stream:
        await stream.send_all(b"GET /echo HTTP/1.1\r\nHost: a.test\r\n\r\n")
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError) as info:
            await stream.receive_some(65536)
        assert "certificate required" in str(info.value.__cause__)
    assert upstream.requests == []
    # With one: served, and plugins see who it is.
    alice = cert_factory.issue("alice.test", common_name="alice")
    stream = await tls_connect(app.port(), client_context(tls_ca, cert=alice.leaf))
    async with stream:
        resp = await tls_get(stream, client)
    assert resp["status"] == 200
    subject = resp["headers"]["x-client-cert"]
    assert "CN=alice" in subject.split(",")
    assert len(upstream.requests) == 1


async def test_client_certificate_optional(
    start_proxy: Any,
    upstream: Any,
    client: Any,
    tls_ca: Any,
    site: CertFiles,
    cert_factory: CertFactory,
) -> None:
    tls = f'client_auth = "optional"\nclient_ca = "{cert_factory.ca_file}"'
    app = await start_tls(start_proxy, tls_config(upstream, [(site, [])], tls=tls))
    stream = await tls_connect(app.port(), client_context(tls_ca))
    async with stream:
        assert (await tls_get(stream, client))["headers"]["x-client-cert"] == "-"
    bob = cert_factory.issue("bob.test", common_name="bob")
    stream = await tls_connect(app.port(), client_context(tls_ca, cert=bob.leaf, alpn=["h2"]))
    async with H2Client(stream) as c:
        await c.start()
        r = await c.get(b"/echo", authority=b"a.test")
    assert r.header(b"x-alpn") == b"h2"
    assert b"CN=bob" in (r.header(b"x-client-cert") or b"").split(b",")


async def test_silent_client_is_closed_after_the_handshake_timeout(
    start_proxy: Any, upstream: Any, client: Any, tls_ca: Any, site: CertFiles
) -> None:
    cfg = tls_config(upstream, [(site, [])], listener="request_head_timeout_s = 0.5")
    app = await start_tls(start_proxy, cfg)
    # The clock starts before the connect: the kernel's deadline runs from its
    # accept, which a loaded client may see well after it happened.
    start = trio.current_time()
    silent = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with silent:
        with trio.fail_after(3):
            try:
                got = await silent.receive_some(1024)
            except trio.BrokenResourceError:
                got = b""
        assert got == b""
        assert 0.4 < trio.current_time() - start < 1.5
    # A handshake that starts but stalls halfway is cut too.
    start = trio.current_time()
    stalled = await trio.open_tcp_stream("127.0.0.1", app.port())
    async with stalled:
        await stalled.send_all(client_hello("a.test")[:20])
        with trio.fail_after(3):
            try:
                while await stalled.receive_some(1024):
                    pass
            except trio.BrokenResourceError:
                pass
        assert 0.4 < trio.current_time() - start < 1.5
    stream = await tls_connect(app.port(), client_context(tls_ca))
    async with stream:
        assert (await tls_get(stream, client))["status"] == 200


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
        bytes(range(256)) * 4,
    ],
    ids=["http1", "h2c-preface", "bad-record", "noise"],
)
async def test_garbage_instead_of_a_client_hello(
    start_proxy: Any,
    upstream: Any,
    client: Any,
    tls_ca: Any,
    site: CertFiles,
    garbage: bytes,
) -> None:
    app = await start_tls(start_proxy, tls_config(upstream, [(site, [])]))
    async with trio.open_nursery() as nursery:
        # A good client in the middle of it all.
        stream = await tls_connect(app.port(), client_context(tls_ca))
        for _ in range(3):
            bad = await trio.open_tcp_stream("127.0.0.1", app.port())
            nursery.start_soon(_send_garbage, bad, garbage)
        async with stream:
            assert (await tls_get(stream, client))["status"] == 200
    assert [r["target"] for r in upstream.requests] == ["/echo"]


async def _send_garbage(stream: trio.SocketStream, garbage: bytes) -> None:
    """The proxy closes at once; what comes back is at most a TLS alert."""
    async with stream:
        got = b""
        with trio.fail_after(2):
            try:
                await stream.send_all(garbage)
                while chunk := await stream.receive_some(1024):
                    got += chunk
            except trio.BrokenResourceError:
                pass
        assert b"HTTP/" not in got
        assert got == b"" or got[0] == 0x15  # nothing, or an alert record


class Mint:
    """Supplies a certificate for names no configured certificate serves exactly."""

    def __init__(self, files: CertFiles) -> None:
        self.files = files
        self.asked: list[str] = []

    @sdk.hookimpl
    def trellis_tls_certificate(self, server_name: str) -> sdk.TlsCertificate | None:
        self.asked.append(server_name)
        if server_name != "minted.test":
            return None
        return sdk.TlsCertificate(self.files.chain_pem, self.files.key_pem)


async def test_a_plugin_supplies_the_certificate_at_handshake_time(
    start_proxy: Any, upstream: Any, client: Any, tls_ca: Any, cert_factory: CertFactory
) -> None:
    mint = Mint(cert_factory.issue("minted.test"))
    cfg = tls_config(upstream, [(cert_factory.issue("a.test"), [])]).replace(
        'plugins = ["echo"]', 'plugins = ["echo", "mint"]'
    )
    app = await start_proxy(cfg, extra_plugins={"echo": ClientEcho(), "mint": mint})
    ctx = client_context(tls_ca)  # verifies the name: the minted certificate must fit
    for _ in range(2):
        stream = await tls_connect(app.port(), ctx, server_hostname="minted.test")
        async with stream:
            assert san(stream) == ["minted.test"]
            assert (await tls_get(stream, client))["status"] == 200
    # Answers are cached per name: the plugin was asked once for it.
    assert mint.asked.count("minted.test") == 1
    # A configured exact name wins without asking the plugin.
    stream = await tls_connect(app.port(), ctx, server_hostname="a.test")
    async with stream:
        assert san(stream) == ["a.test"]
    assert "a.test" not in mint.asked


async def test_a_bug_while_serving_tls_ends_that_connection_only(
    start_proxy: Any, upstream: Any, client: Any, tls_ca: Any, site: CertFiles, monkeypatch: Any
) -> None:
    from kernel.io import listeners

    app = await start_tls(start_proxy, tls_config(upstream, [(site, [])]))
    real = listeners.peer_subject
    calls = {"n": 0}

    def peer_subject(obj: Any) -> str | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated bug after the handshake")
        return real(obj)

    monkeypatch.setattr(listeners, "peer_subject", peer_subject)
    ctx = client_context(tls_ca)
    stream = await tls_connect(app.port(), ctx)
    async with stream:
        with pytest.raises(ValueError):  # closed: no response at all
            await tls_get(stream, client)
    # The proxy is still there for the next client.
    stream = await tls_connect(app.port(), ctx)
    async with stream:
        assert (await tls_get(stream, client))["status"] == 200
