"""Real clients (curl, httpx) through a real ``kernel run`` process, both codecs.

Raw-socket tests pin the bytes; these check that the clients people use
actually work through the proxy: uploads, ``Expect: 100-continue``, HEAD,
chunked bodies both ways, and connection reuse (one client connection and one
upstream connection for many requests).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.conftest import ProxyProcess, SpawnProxy, free_port, proxy_config

pytestmark = pytest.mark.slow

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(
    CURL is None, reason="curl is not installed (`make deps-system` installs it)"
)


@pytest.fixture
async def proxy(spawn_proxy: SpawnProxy, upstream: Any, codec: str) -> ProxyProcess:
    port = free_port()
    return await spawn_proxy(proxy_config(upstream.port, port, http1=codec), port=port)


def url(proxy: ProxyProcess, path: str) -> str:
    return f"http://127.0.0.1:{proxy.port}{path}"


async def curl(*args: str, timeout: float = 20.0) -> str:
    assert CURL is not None
    with trio.fail_after(timeout):
        done = await trio.run_process(
            [CURL, "-sS", "--http1.1", "--noproxy", "*", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode("latin-1")


def split_response(output: str) -> tuple[list[str], str]:
    """``curl -i`` output -> (every status line, including 1xx ones; the final body)."""
    statuses = []
    rest = output
    while rest.startswith("HTTP/"):
        head, _, rest = rest.partition("\r\n\r\n")
        statuses.append(head.split("\r\n", 1)[0])
    return statuses, rest


def head_fields(output: str) -> dict[str, str]:
    head = output.split("\r\n\r\n", 1)[0]
    return {
        n.strip().lower(): v.strip()
        for n, _, v in (line.partition(":") for line in head.split("\r\n")[1:])
    }


@needs_curl
async def test_curl_get(proxy: ProxyProcess, upstream: Any) -> None:
    out = await curl("-i", url(proxy, "/echo?q=1"))
    statuses, body = split_response(out)
    assert statuses == ["HTTP/1.1 200 OK"]
    assert head_fields(out)["via"] == "1.1 trellis"
    seen = json.loads(body)
    assert seen["method"] == "GET"
    assert seen["target"] == "/echo?q=1"
    assert dict(seen["headers"])["user-agent"].startswith("curl/")


@needs_curl
async def test_curl_trace_is_refused_and_max_forwards_0_is_answered_here(
    proxy: ProxyProcess, upstream: Any
) -> None:
    out = await curl("-i", "-X", "TRACE", "-H", "Cookie: s=1", url(proxy, "/t"))
    assert split_response(out)[0] == ["HTTP/1.1 501 Not Implemented"]  # [server] trace = false
    out = await curl("-i", "-X", "OPTIONS", "-H", "Max-Forwards: 0", url(proxy, "/o"))
    assert split_response(out) == (["HTTP/1.1 200 OK"], "")
    assert upstream.requests == []
    out = await curl("-i", "-X", "OPTIONS", "-H", "Max-Forwards: 9", url(proxy, "/o"))
    assert split_response(out)[0] == ["HTTP/1.1 200 OK"]
    (seen,) = upstream.requests
    assert (seen["method"], dict(seen["headers"])["max-forwards"]) == ("OPTIONS", "8")


@needs_curl
async def test_curl_form_and_binary_uploads(
    proxy: ProxyProcess, upstream: Any, tmp_path: Path
) -> None:
    # -d sends the file as it is minus CR/LF: a text file without newlines.
    text = tmp_path / "form.txt"
    text.write_bytes(b"field=" + b"abcdefgh" * 20_000)
    out = await curl("-i", "-d", f"@{text}", url(proxy, "/upload"))
    statuses, body = split_response(out)
    assert statuses[-1] == "HTTP/1.1 200 OK"
    seen = json.loads(body)
    assert seen["method"] == "POST"
    assert seen["body_length"] == text.stat().st_size
    assert seen["body_sha256"] == hashlib.sha256(text.read_bytes()).hexdigest()
    assert dict(seen["headers"])["content-type"] == "application/x-www-form-urlencoded"

    binary = tmp_path / "blob.bin"
    binary.write_bytes(os.urandom(3 << 20))
    seen = json.loads(await curl("--data-binary", f"@{binary}", url(proxy, "/upload")))
    assert seen["body_length"] == 3 << 20
    assert seen["body_sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()


@needs_curl
async def test_curl_expect_100_continue(proxy: ProxyProcess, upstream: Any, tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(os.urandom(64 * 1024))
    t0 = time.monotonic()
    # With a 10 s expect timeout, a proxy that never says 100 would stall the upload.
    out = await curl(
        "-i", "-H", "Expect: 100-continue", "--expect100-timeout", "10",
        "--data-binary", f"@{body}", url(proxy, "/upload"),
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    statuses, rest = split_response(out)
    assert statuses == ["HTTP/1.1 100 Continue", "HTTP/1.1 200 OK"]
    assert elapsed < 5, f"curl waited {elapsed:.1f}s: no 100 Continue in time"
    seen = json.loads(rest)
    assert seen["body_length"] == 64 * 1024
    assert seen["body_sha256"] == hashlib.sha256(body.read_bytes()).hexdigest()


@needs_curl
async def test_curl_reuses_one_connection_for_many_urls(proxy: ProxyProcess, upstream: Any) -> None:
    paths = ["/echo?n=1", "/bytes/70000?chunked=1", "/echo?n=2", "/stream/300000", "/"]
    args = ["--keepalive", "-w", "%{num_connects} %{http_code} %{size_download}\n"]
    for p in paths:
        args += ["-o", "/dev/null", url(proxy, p)]
    out = await curl(*args)
    lines = [line.split() for line in out.splitlines()]
    assert [code for _, code, _ in lines] == ["200"] * len(paths)
    assert [int(n) for n, _, _ in lines] == [1] + [0] * (len(paths) - 1), out
    assert int(lines[1][2]) == 70000
    assert int(lines[3][2]) == 300000
    assert [r["target"] for r in upstream.requests] == paths
    assert upstream.connections == 1


def _httpx_session(base: str) -> dict[str, Any]:
    """Many requests on one httpx.Client (runs in a thread); what it saw."""
    connects: list[str] = []

    def trace(event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            connects.append(event)

    results: dict[str, Any] = {}
    blob = os.urandom(200_000)
    ext = {"trace": trace}
    with httpx.Client(base_url=base, trust_env=False, timeout=10) as c:
        results["get"] = [c.get(f"/echo?n={i}", extensions=ext) for i in range(3)]
        results["post"] = c.post("/upload", content=blob, extensions=ext)
        results["chunked_post"] = c.post(
            "/upload", content=iter([blob[:1000], blob[1000:]]), extensions=ext
        )
        results["head"] = c.head("/bytes/1000", extensions=ext)
        results["chunked_get"] = c.get("/bytes/70000?chunked=1", extensions=ext)
        results["after_head"] = c.get("/", extensions=ext)
    results["connects"] = len(connects)
    results["blob_sha256"] = hashlib.sha256(blob).hexdigest()
    return results


async def test_httpx_keep_alive_get_post_head(proxy: ProxyProcess, upstream: Any) -> None:
    with trio.fail_after(30):
        r = await trio.to_thread.run_sync(_httpx_session, url(proxy, ""))
    for i, resp in enumerate(r["get"]):
        assert resp.status_code == 200
        assert resp.json()["target"] == f"/echo?n={i}"
        assert resp.headers["via"] == "1.1 trellis"
    for key in ("post", "chunked_post"):
        seen = r[key].json()
        assert (seen["body_length"], seen["body_sha256"]) == (200_000, r["blob_sha256"]), key
    assert dict(upstream.requests[4]["headers"]).get("transfer-encoding") == "chunked"
    head = r["head"]
    assert head.status_code == 200
    assert head.headers["content-length"] == "1000"
    assert head.content == b""
    assert r["chunked_get"].content == b"b" * 70000
    assert r["after_head"].content == b"x" * 1024
    assert r["connects"] == 1, "httpx opened more than one connection to the proxy"
    assert upstream.connections == 1
    assert len(upstream.requests) == 8
