"""The shipped scenario configs run as their comments say.

``config/reverse.toml``: ``TRELLIS_LISTEN`` / ``TRELLIS_UPSTREAM`` choose the
ports, the defaults are valid on their own, and ``kernel explain`` shows the
route ``default`` with its upstream.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, SpawnProxy, free_port, run_kernel
from tests.helpers import client

pytestmark = pytest.mark.slow

REVERSE = ROOT / "config" / "reverse.toml"


async def test_reverse_checks_with_and_without_env() -> None:
    code, out, err = await run_kernel("check", "-c", str(REVERSE))
    assert code == 0, err
    assert "ok (1 listener(s), 1 route(s)" in out
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
