"""1 GiB through a real ``kernel run`` process, for both HTTP/1.1 codecs.

The proxy is a child process in front of the real upstream (which streams:
``/stream/N`` generates its bytes, ``/upload`` hashes the body as it comes).
The client here never holds a body either: it counts (download) or generates
(upload) 1 MiB at a time. Meanwhile the proxy's RSS is sampled every 100 ms;
streaming means it must stay flat, well under :data:`RSS_LIMIT`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.e2e.conftest import SpawnProxy, cpu_seconds, free_port, proxy_config, rss_bytes

pytestmark = pytest.mark.slow

GIB = 1 << 30
MIB = 1 << 20
RSS_LIMIT = 100 * MIB
#: Per transfer; the brief asks for under ~30 s on a 2-core machine.
TRANSFER_TIMEOUT = 60.0
#: The upload body: 1024 blocks of 1 MiB, each starting with its own index so a
#: lost, repeated or reordered block changes the digest.
_BASE_BLOCK = bytes(range(256)) * (MIB // 256)


def _block(i: int) -> bytes:
    return i.to_bytes(8, "big") + _BASE_BLOCK[8:]


class RssSampler:
    """The max RSS of a process, sampled every ``interval`` seconds while running."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.max = 0
        self.samples = 0
        self.cpu = 0.0

    async def run(self) -> None:
        while True:
            self.max = max(self.max, rss_bytes(self.pid))
            self.samples += 1
            await trio.sleep(self.interval)


@asynccontextmanager
async def sampling(pid: int) -> AsyncIterator[RssSampler]:
    sampler = RssSampler(pid)
    cpu0 = cpu_seconds(pid)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        yield sampler
        nursery.cancel_scope.cancel()
    sampler.max = max(sampler.max, rss_bytes(pid))
    sampler.cpu = cpu_seconds(pid) - cpu0


async def read_head(stream: trio.SocketStream, buf: bytearray) -> tuple[int, dict[str, str]]:
    """Read one response head; what follows it stays in ``buf``."""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        assert chunk, f"connection closed before a response head: {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), fields


async def read_body(stream: trio.SocketStream, buf: bytearray, length: int) -> bytes:
    while len(buf) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, "connection closed mid-body"
        buf += chunk
    return bytes(buf[:length])


def report(
    record_property: Any, what: str, codec: str, seconds: float, sampler: RssSampler
) -> None:
    rate = GIB / MIB / seconds
    line = (
        f"{what} [{codec}]: {seconds:.1f}s ({rate:.0f} MiB/s),"
        f" proxy CPU {sampler.cpu:.1f}s, max RSS {sampler.max / MIB:.1f} MiB"
        f" ({sampler.samples} samples)"
    )
    print(line)
    record_property(f"{what}-{codec}", line)


async def start(spawn_proxy: SpawnProxy, upstream: Any, codec: str) -> Any:
    port = free_port()
    return await spawn_proxy(proxy_config(upstream.port, port, http1=codec), port=port)


async def test_download_1gib(
    spawn_proxy: SpawnProxy, upstream: Any, codec: str, record_property: Any
) -> None:
    proxy = await start(spawn_proxy, upstream, codec)
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    async with stream, sampling(proxy.pid) as sampler:
        t0 = time.monotonic()
        with trio.fail_after(TRANSFER_TIMEOUT):
            await stream.send_all(
                f"GET /stream/{GIB} HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n".encode()
            )
            buf = bytearray()
            status, fields = await read_head(stream, buf)
            assert status == 200
            assert fields["content-length"] == str(GIB)
            total = len(buf)
            del buf
            while chunk := await stream.receive_some(MIB):
                total += len(chunk)  # discarded as it comes
        seconds = time.monotonic() - t0
    assert total == GIB
    report(record_property, "download", codec, seconds, sampler)
    assert sampler.max < RSS_LIMIT, f"proxy RSS reached {sampler.max / MIB:.1f} MiB"
    assert upstream.requests[-1]["target"] == f"/stream/{GIB}"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_upload_1gib(
    spawn_proxy: SpawnProxy, upstream: Any, codec: str, framing: str, record_property: Any
) -> None:
    proxy = await start(spawn_proxy, upstream, codec)
    chunked = framing == "chunked"
    frame = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {GIB}"
    digest = hashlib.sha256()
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    async with stream, sampling(proxy.pid) as sampler:
        t0 = time.monotonic()
        with trio.fail_after(TRANSFER_TIMEOUT):
            await stream.send_all(
                f"POST /upload HTTP/1.1\r\nHost: e2e\r\n{frame}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n".encode()
            )
            for i in range(GIB // MIB):
                block = _block(i)
                digest.update(block)
                if chunked:
                    await stream.send_all(b"100000\r\n" + block + b"\r\n")
                else:
                    await stream.send_all(block)
            if chunked:
                await stream.send_all(b"0\r\n\r\n")
            buf = bytearray()
            status, fields = await read_head(stream, buf)
            body = await read_body(stream, buf, int(fields["content-length"]))
        seconds = time.monotonic() - t0
    assert status == 200, body
    seen = json.loads(body)
    assert seen["body_length"] == GIB
    assert seen["body_sha256"] == digest.hexdigest()
    report(record_property, f"upload-{framing}", codec, seconds, sampler)
    assert sampler.max < RSS_LIMIT, f"proxy RSS reached {sampler.max / MIB:.1f} MiB"
