"""The shipped scenario configs run as their comments say.

``config/reverse.toml``: ``TRELLIS_LISTEN`` / ``TRELLIS_UPSTREAM`` choose the
ports, the defaults are valid on their own, ``kernel explain`` shows the
route ``default`` with its upstream, and HTTP/2 with prior knowledge shares
the port. ``config/reverse-tls.toml``: refuses to start without its
certificate, then serves h2 and HTTP/1.1 by ALPN.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.conftest import ROOT, SpawnProxy, cpu_seconds, free_port, run_kernel, sleeps
from tests.helpers import client

pytestmark = pytest.mark.slow

REVERSE = ROOT / "config" / "reverse.toml"


async def test_reverse_checks_with_and_without_env() -> None:
    code, out, err = await run_kernel("check", "-c", str(REVERSE))
    assert code == 0, err
    assert "ok (3 listener(s), 1 route(s)" in out
    assert "plugin instances: metrics, health, trafficlog" in out
    env = {"TRELLIS_LISTEN": "127.0.0.1:18999", "TRELLIS_UPSTREAM": "http://127.0.0.1:19000"}
    code, out, err = await run_kernel("check", "-c", str(REVERSE), env=env)
    assert code == 0, err


async def test_reverse_explain_shows_the_route_and_its_upstream() -> None:
    code, out, err = await run_kernel("explain", "-c", str(REVERSE))
    assert code == 0, err
    assert "listener main on 127.0.0.1:8080" in out
    assert "route default (default): upstream http://127.0.0.1:9000" in out

    env = {"TRELLIS_LISTEN": "127.0.0.1:18999", "TRELLIS_UPSTREAM": "http://127.0.0.1:19000"}
    code, out, err = await run_kernel("explain", "-c", str(REVERSE), env=env)
    assert code == 0, err
    assert "listener main on 127.0.0.1:18999" in out
    assert "route default (default): upstream http://127.0.0.1:19000" in out


async def test_reverse_proxies_to_the_upstream(spawn_proxy: SpawnProxy, upstream: Any) -> None:
    port = free_port()
    env = {
        "TRELLIS_LISTEN": f"127.0.0.1:{port}",
        "TRELLIS_UPSTREAM": f"http://127.0.0.1:{upstream.port}",
    }
    code, _, err = await run_kernel("check", "-c", str(REVERSE), env=env)
    assert code == 0, err
    proxy = await spawn_proxy(config=REVERSE, port=port, env=env)
    raw = await client.exchange(
        port,
        b"GET /echo?from=reverse HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    )
    (resp,) = client.parse_responses(raw)
    assert resp["status"] == 200
    seen = json.loads(resp["body"])
    assert seen["target"] == "/echo?from=reverse"
    headers = dict(seen["headers"])
    assert headers["host"] == "site.test"
    assert headers["via"] == "1.1 trellis"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    proxy.signal(signal.SIGTERM)
    assert await proxy.wait(timeout=10) == 0


@pytest.mark.parametrize(("watch", "budget"), [("false", 10), ("true", 20)])
async def test_reverse_sleeps_when_idle(
    spawn_proxy: SpawnProxy, upstream: Any, watch: str, budget: int
) -> None:
    """Once its connections are gone, the proxy is not woken up by its own timers.

    What still wakes it, counted over all its threads (6-7 times in 2 s here):
    the metrics plugin's sampling and the pool's reaper while it holds a
    connection (once a second each); with the config file watched, also
    watchfiles' thread looking at its changes (twice a second,
    ``WATCH_STEP_MS``; 12-15 in all).
    """
    port = free_port()
    env = {
        "TRELLIS_LISTEN": f"127.0.0.1:{port}",
        "TRELLIS_UPSTREAM": f"http://127.0.0.1:{upstream.port}",
        "TRELLIS_KERNEL_WATCH_CONFIG": watch,
    }
    proxy = await spawn_proxy(config=REVERSE, port=port, env=env)
    # Requests arm and disarm the hot-path timeouts, and leave an idle
    # keep-alive connection to the upstream in the pool.
    for _ in range(3):
        raw = await client.exchange(
            port, b"GET /echo HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n"
        )
        assert client.parse_responses(raw)[0]["status"] == 200
    await trio.sleep(0.5)
    before, cpu_before = sleeps(proxy.pid), cpu_seconds(proxy.pid)
    await trio.sleep(2.0)
    woke, cpu = sleeps(proxy.pid) - before, cpu_seconds(proxy.pid) - cpu_before
    # A 50 ms sweep that never parks would wake it 40 times more here, and so
    # would a watcher thread looking every 50 ms (watchfiles' default step).
    assert woke <= budget, f"woke {woke} times in 2 s of idleness"
    assert cpu <= 0.03, f"used {cpu:.3f} s of CPU in 2 s of idleness"


REVERSE_TLS = ROOT / "config" / "reverse-tls.toml"


async def test_reverse_accepts_h2c_prior_knowledge(spawn_proxy: SpawnProxy, upstream: Any) -> None:
    port = free_port()
    env = {
        "TRELLIS_LISTEN": f"127.0.0.1:{port}",
        "TRELLIS_UPSTREAM": f"http://127.0.0.1:{upstream.port}",
    }
    proxy = await spawn_proxy(config=REVERSE, port=port, env=env)
    for flag, version in (("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")):
        result = await trio.run_process(
            ["curl", "-s", flag, "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             f"http://127.0.0.1:{port}/echo"],
            capture_stdout=True, check=False,
        )  # fmt: skip
        assert result.stdout.decode() == f"{version} 200"
    assert len(upstream.requests) == 2
    proxy.signal(signal.SIGTERM)
    assert await proxy.wait(timeout=10) == 0


async def test_reverse_tls_needs_its_certificate() -> None:
    code, _, err = await run_kernel("check", "-c", str(REVERSE_TLS))
    assert code == 1
    assert "TRELLIS_TLS_CERT" in err
    assert "TRELLIS_TLS_KEY" in err


async def test_reverse_tls_serves_h2_and_http11(
    spawn_proxy: SpawnProxy, upstream: Any, cert_factory: Any
) -> None:
    files = cert_factory.issue("localhost")
    port = free_port()
    env = {
        "TRELLIS_TLS_LISTEN": f"127.0.0.1:{port}",
        "TRELLIS_TLS_CERT": str(files.cert),
        "TRELLIS_TLS_KEY": str(files.key),
        "TRELLIS_UPSTREAM": f"http://127.0.0.1:{upstream.port}",
    }
    code, _, err = await run_kernel("check", "-c", str(REVERSE_TLS), env=env)
    assert code == 0, err
    # The readiness probe speaks cleartext HTTP: wait for a TLS answer instead.
    proxy = await spawn_proxy(config=REVERSE_TLS, port=port, env=env, ready=False)

    async def curl(flag: str) -> str:
        result = await trio.run_process(
            ["curl", "-s", flag, "--cacert", str(cert_factory.ca_file),
             "--resolve", f"localhost:{port}:127.0.0.1", "-o", "/dev/null",
             "-w", "%{http_version} %{http_code}", f"https://localhost:{port}/echo"],
            capture_stdout=True, check=False,
        )  # fmt: skip
        return result.stdout.decode()

    with trio.fail_after(15):
        while await curl("--http1.1") != "1.1 200":
            await trio.sleep(0.1)
    assert await curl("--http2") == "2 200"
    seen = [dict(r["headers"]) for r in upstream.requests]
    assert {h["x-forwarded-proto"] for h in seen} == {"https"}
    assert len(seen) >= 2
    proxy.signal(signal.SIGTERM)
    assert await proxy.wait(timeout=10) == 0


async def test_reverse_passes_websocket_through(
    spawn_proxy: SpawnProxy, nursery: trio.Nursery
) -> None:
    from trio_websocket import open_websocket_url

    from tests.e2e.test_websocket import EchoServer

    echo = await nursery.start(EchoServer().serve)
    port = free_port()
    env = {
        "TRELLIS_LISTEN": f"127.0.0.1:{port}",
        "TRELLIS_UPSTREAM": f"http://127.0.0.1:{echo.port}",
    }
    proxy = await spawn_proxy(config=REVERSE, port=port, env=env)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            for i in range(100):
                await ws.send_message(f"m{i}")
                assert await ws.get_message() == f"m{i}"
    assert echo.accepted == 1
    proxy.signal(signal.SIGTERM)
    assert await proxy.wait(timeout=10) == 0


async def test_reverse_serves_metrics_health_and_a_traffic_log(
    spawn_proxy: SpawnProxy, upstream: Any, tmp_path: Path
) -> None:
    """config/reverse.toml as shipped: /metrics, /health, /ready, and traffic-YYYY-MM-DD.log."""
    from prometheus_client.parser import text_string_to_metric_families

    port, metrics, health = free_port(), free_port(), free_port()
    env = {
        "TRELLIS_LISTEN": f"127.0.0.1:{port}",
        "TRELLIS_UPSTREAM": f"http://127.0.0.1:{upstream.port}",
        "TRELLIS_METRICS_LISTEN": f"127.0.0.1:{metrics}",
        "TRELLIS_HEALTH_LISTEN": f"127.0.0.1:{health}",
        "TRELLIS_LOG_DIR": str(tmp_path / "logs"),
    }
    await spawn_proxy(config=REVERSE, port=port, env=env)
    for i in range(5):
        raw = await client.exchange(
            port, f"GET /r/{i} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n".encode()
        )
        assert client.parse_responses(raw)[0]["status"] == 200

    async def get(p: int, path: str) -> dict[str, Any]:
        raw = await client.exchange(
            p, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        resp: dict[str, Any] = client.parse_responses(raw)[0]
        return resp

    scrape = await get(metrics, "/metrics")
    assert scrape["status"] == 200
    families = {f.name: f for f in text_string_to_metric_families(scrape["body"].decode())}
    requests = families["trellis_requests"]
    counted = {
        (s.labels["route"], s.labels["method"], s.labels["status_class"]): s.value
        for s in requests.samples
        if s.name == "trellis_requests_total"
    }
    # The readiness probe (spawn_proxy: "GET / HTTP/1.1" without Host, a 400)
    # was refused before routing: a flow too, counted with route "".
    probes = counted.pop(("", "GET", "4xx"), 0.0)
    assert probes >= 1
    assert counted == {("default", "GET", "2xx"): 5.0}
    ready = await get(health, "/ready")
    assert ready["status"] == 200
    assert json.loads(ready["body"])["ready"] is True
    assert (await get(health, "/health"))["status"] == 200
    with trio.fail_after(10):
        while True:
            files = list((tmp_path / "logs").glob("traffic-*.log"))
            lines = files[0].read_text().splitlines() if files else []
            if len(lines) >= 5 + probes:
                break
            await trio.sleep(0.1)
    records = [json.loads(line) for line in lines]
    refused = [r for r in records if r["route"] == ""]  # the readiness probes
    assert len(refused) == probes
    assert {(r["status"], r["method"], r["path"]) for r in refused} == {(400, "GET", "/")}
    records = [r for r in records if r not in refused]
    assert [r["path"] for r in records] == [f"/r/{i}" for i in range(5)]
    assert {r["route"] for r in records} == {"default"}  # scrapes and probes are not logged
