"""HTTP/2 clients through a real ``kernel run`` process, cleartext (h2c prior knowledge).

curl and h2load (nghttp2) speak HTTP/2 to the proxy's cleartext listener,
which also serves HTTP/1.1 on the same port; ``Upgrade: h2c`` is never
honoured (RFC 9113 §3.1 deprecates it). SIGTERM while a stream is in flight
lets it finish and says GOAWAY.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.conftest import ProxyProcess, SpawnProxy, free_port, proxy_config
from tests.helpers import client
from tests.helpers.h2client import NO_ERROR, H2Client

pytestmark = pytest.mark.slow

CURL = shutil.which("curl")
H2LOAD = shutil.which("h2load")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
needs_h2load = pytest.mark.skipif(H2LOAD is None, reason="h2load (nghttp2-client) is not installed")


@pytest.fixture
async def proxy(spawn_proxy: SpawnProxy, upstream: Any) -> ProxyProcess:
    port = free_port()
    return await spawn_proxy(proxy_config(upstream.port, port), port=port)


async def run(*args: str, timeout: float = 30.0) -> tuple[int, bytes, str]:
    with trio.fail_after(timeout):
        done = await trio.run_process(
            list(args), capture_stdout=True, capture_stderr=True, check=False
        )
    return done.returncode, done.stdout, done.stderr.decode(errors="replace")


async def curl(*args: str) -> bytes:
    assert CURL is not None
    code, out, err = await run(CURL, "-sS", "--noproxy", "*", "--max-time", "20", *args)
    assert code == 0, err
    return out


def h2load_summary(output: str) -> dict[str, int]:
    """The counters of h2load's ``requests:`` line, and its 2xx count."""
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        output,
    )
    assert m is not None, output
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    out = dict(zip(keys, map(int, m.groups()), strict=True))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    assert codes is not None, output
    out["2xx"] = int(codes.group(1))
    return out


@needs_curl
async def test_curl_prior_knowledge(proxy: ProxyProcess, upstream: Any, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{proxy.port}"
    h2 = "--http2-prior-knowledge"
    # GET
    out = await curl(h2, "-w", "\n%{http_version} %{http_code}", f"{base}/echo?q=1")
    body, _, tail = out.rpartition(b"\n")
    assert tail == b"2 200"
    seen = json.loads(body)
    assert seen["target"] == "/echo?q=1"
    assert seen["headers"][0] == ["host", f"127.0.0.1:{proxy.port}"]
    # POST with a body (several DATA frames, more than one window)
    payload = os.urandom(300_000)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    out = await curl(h2, "--data-binary", f"@{upload}", f"{base}/upload")
    got = json.loads(out)
    assert (got["method"], got["body_length"]) == ("POST", len(payload))
    assert got["body_sha256"] == hashlib.sha256(payload).hexdigest()
    # HEAD
    out = await curl(h2, "-I", f"{base}/bytes/1234")
    assert out.startswith(b"HTTP/2 200")
    assert b"content-length: 1234" in out.lower()
    assert out.endswith(b"\r\n\r\n")  # no body
    # 10 MB streamed through
    n = 10 * 1024 * 1024
    dest = tmp_path / "big.bin"
    out = await curl(
        h2, "-o", str(dest), "-w", "%{http_version} %{size_download}", f"{base}/stream/{n}"
    )
    assert out == f"2 {n}".encode()
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(b"s" * n).digest()
    assert [r["method"] for r in upstream.requests] == ["GET", "POST", "HEAD", "GET"]


@needs_curl
async def test_http11_on_the_same_port_and_upgrade_is_not_honoured(
    proxy: ProxyProcess, upstream: Any
) -> None:
    base = f"http://127.0.0.1:{proxy.port}"
    out = await curl("--http1.1", "-w", "\n%{http_version}", f"{base}/echo?plain")
    assert out.rpartition(b"\n")[2] == b"1.1"
    # curl --http2 on http:// asks for Upgrade: h2c: answered in HTTP/1.1.
    out = await curl("--http2", "-i", f"{base}/echo?upgrade")
    assert out.startswith(b"HTTP/1.1 200")
    assert b"101" not in out.split(b"\r\n", 1)[0]
    # The same by hand, with and without the Connection options listed.
    for fields in (
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
        b"Connection: upgrade\r\nUpgrade: h2c\r\n",
    ):
        raw = await client.exchange(
            proxy.port,
            b"GET /echo?raw HTTP/1.1\r\nHost: a\r\n" + fields + b"Connection: close\r\n\r\n",
        )
        (resp,) = client.parse_responses(raw)
        assert resp["status"] == 200
    for r in upstream.requests:
        names = {n for n, _ in r["headers"]}
        assert not names & {"upgrade", "http2-settings", "connection"}, r
    assert [r["target"] for r in upstream.requests] == [
        "/echo?plain", "/echo?upgrade", "/echo?raw", "/echo?raw",
    ]  # fmt: skip


@needs_h2load
async def test_h2load_h2c(proxy: ProxyProcess, upstream: Any) -> None:
    assert H2LOAD is not None
    code, out, err = await run(
        H2LOAD, "-n", "2000", "-c", "10", "-m", "10", f"http://127.0.0.1:{proxy.port}/", timeout=60
    )
    text = out.decode()
    assert code == 0, text + err
    summary = h2load_summary(text)
    assert summary["succeeded"] == summary["2xx"] == 2000, text
    assert "Application protocol: h2c" in text
    assert len(upstream.requests) == 2000


@needs_h2load
async def test_a_client_using_every_allowed_stream_is_never_refused(
    proxy: ProxyProcess, upstream: Any
) -> None:
    # h2load -m 100 keeps max_concurrent_streams (100) open: the moment a
    # response ends it opens the next stream, while that response's task may
    # still be unwinding here. That task must not count (it once did:
    # REFUSED_STREAM for 2-6% of the requests).
    assert H2LOAD is not None
    code, out, err = await run(
        H2LOAD, "-n", "3000", "-c", "2", "-m", "100", f"http://127.0.0.1:{proxy.port}/", timeout=60
    )
    summary = h2load_summary(out.decode())
    assert code == 0, err
    assert summary["succeeded"] == summary["2xx"] == 3000, out.decode()


async def test_sigterm_lets_an_http2_stream_finish(proxy: ProxyProcess, upstream: Any) -> None:
    async with await H2Client.connect(proxy.port) as c:
        idle = await H2Client.connect(proxy.port)
        sid = await c.request(b"GET", b"/sleep/1")
        with trio.fail_after(5):
            while not any(r["target"] == "/sleep/1" for r in upstream.requests):
                await trio.sleep(0.01)
        proxy.signal(signal.SIGTERM)
        await c.until(lambda: c.goaway is not None, timeout=2)
        assert not c.streams[sid].done  # told first, answered after
        r = await c.response(sid, timeout=5)
        assert (r.status, bytes(r.body)) == (200, b"slept\n")
        await c.read_until_closed(timeout=3)
        async with idle:
            await idle.read_until_closed(timeout=3)
            assert idle.goaway is not None
            assert idle.goaway.error_code == NO_ERROR
    assert c.goaway is not None
    assert (c.goaway.error_code, c.goaway.last_stream_id) == (NO_ERROR, sid)
    assert await proxy.wait(10) == 0


async def test_floods_leave_the_proxy_memory_bounded(proxy: ProxyProcess, upstream: Any) -> None:
    """Many flooding connections at once: RSS stays bounded, everyone else is served."""
    import psutil
    from hyperframe.frame import PingFrame, SettingsFrame

    from tests.helpers.h2client import RawH2, request_fields

    proc = psutil.Process(proxy.proc.pid)
    await curl("--http2-prior-knowledge", f"http://127.0.0.1:{proxy.port}/")  # warm
    before = proc.memory_info().rss

    async def rapid_reset() -> None:
        raw = await RawH2.connect(proxy.port)
        async with raw:
            fields = request_fields(b"GET", b"/sleep/1")
            frames: list[Any] = []
            for sid in range(1, 4001, 2):
                frames += [raw.headers(sid, fields), raw.rst(sid)]
            with trio.move_on_after(5):
                await raw.send(*frames)
                await raw.until_closed()

    async def never_reads() -> None:
        raw = await RawH2.connect(proxy.port)
        async with raw:
            frames = [PingFrame(0, opaque_data=b"12345678") for _ in range(20000)]
            frames += [SettingsFrame(0) for _ in range(5000)]
            with trio.move_on_after(3):  # blocks once the proxy stops reading us
                await raw.send(*frames)

    async def continuation() -> None:
        raw = await RawH2.connect(proxy.port)
        async with raw:
            head = raw.headers(1, [], end_headers=False)
            head.data = raw.block(request_fields(b"GET", b"/"))
            frames: list[Any] = [head] + [raw.continuation(1, b"x" * 16000) for _ in range(200)]
            with trio.move_on_after(5):
                await raw.send(*frames)
                await raw.until_closed()

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(rapid_reset)
            nursery.start_soon(never_reads)
            nursery.start_soon(continuation)
        # While they flood, a normal client is served.
        await trio.sleep(0.5)
        body = await curl("--http2-prior-knowledge", f"http://127.0.0.1:{proxy.port}/")
        assert body == upstream.body_1k

    grown = proc.memory_info().rss - before
    assert grown < 20 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB"
    # The rapid resets cancelled their flows: no more upstream requests than
    # 5 connections x the reset budget could have started (200 each).
    assert len(upstream.requests) <= 2 + 5 * 200
    assert proc.is_running()


@needs_curl
@needs_h2load
@pytest.mark.parametrize("engine", ["trellis", "h2"])
async def test_both_engines_serve_the_same(
    spawn_proxy: SpawnProxy, upstream: Any, tmp_path: Path, engine: str
) -> None:
    port = free_port()
    config = proxy_config(upstream.port, port, extra=f'[server.h2]\nengine = "{engine}"\n')
    proxy = await spawn_proxy(config, port=port)
    base = f"http://127.0.0.1:{proxy.port}"
    out = await curl("--http2-prior-knowledge", "-w", "\n%{http_version}", f"{base}/echo?e=1")
    body, _, version = out.rpartition(b"\n")
    assert (version, json.loads(body)["target"]) == (b"2", "/echo?e=1")
    payload = os.urandom(200_000)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    out = await curl("--http2-prior-knowledge", "--data-binary", f"@{upload}", f"{base}/upload")
    assert json.loads(out)["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert H2LOAD is not None
    code, h2out, err = await run(H2LOAD, "-n", "500", "-c", "5", "-m", "10", f"{base}/", timeout=60)
    summary = h2load_summary(h2out.decode())
    assert code == 0, err
    assert summary["succeeded"] == summary["2xx"] == 500
    # Where they differ, which shows the setting took: h2 parses content-length
    # itself and makes a bad one a connection error; ours refuses the stream.
    async with await H2Client.connect(proxy.port) as c:
        sid = await c.request(b"POST", b"/echo", extra=[(b"content-length", b"abc")], end=False)
        if engine == "h2":
            await c.until(lambda: c.goaway is not None)
        else:
            assert (await c.response(sid)).status == 400
            assert c.goaway is None
    assert not any(r["target"] == "/echo" for r in upstream.requests)
