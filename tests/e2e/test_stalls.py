"""A plain ``def`` hook that blocks holds a real ``kernel run``'s event loop.

No deadline can cut it (only an awaited call can be cancelled), and every
connection waits meanwhile; the loop watchdog (kernel/stuck.py) says so in
the log, naming the plugin, its hook and the code that runs.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.conftest import ROOT, SpawnProxy, free_port, proxy_config
from tests.helpers import client

pytestmark = pytest.mark.slow

SLEEPY = """
import time

import sdk


class Sleepy:
    @sdk.hookimpl
    def trellis_request(self, flow):
        if flow.request.path == "/block":
            time.sleep(2)
"""


async def test_a_hook_that_blocks_the_loop_is_named_in_the_log(
    spawn_proxy: SpawnProxy, upstream: Any, tmp_path: Path
) -> None:
    """Before, nothing was logged: every connection just waited."""
    (tmp_path / "sleepy_plugin.py").write_text(SLEEPY)
    port = free_port()
    toml = proxy_config(
        upstream.port,
        port,
        kernel_extra='plugins = ["sleepy"]\nstall_warning_s = 0.5',
        extra='[kernel.modules]\nsleepy = "sleepy_plugin:Sleepy"\n',
    )
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    proxy = await spawn_proxy(toml, port=port, env=env)
    t0 = time.monotonic()
    raw = await client.exchange(
        port, b"GET /block HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n"
    )
    assert client.parse_responses(raw)[0]["status"] == 200
    assert time.monotonic() - t0 >= 2.0
    with trio.fail_after(5):
        while "turned again" not in proxy.stderr():
            await trio.sleep(0.05)
    err = proxy.stderr()
    # Once per stall, with what runs: the plugin, its hook, its flow, the line.
    (stall,) = [line for line in err.splitlines() if "has not turned" in line]
    sleeps = SLEEPY.splitlines().index("            time.sleep(2)") + 1
    assert re.search(
        r"WARNING +kernel\.stuck: the event loop has not turned for 0\.\d+s"
        r" \(every connection waits\): it runs plugin 'sleepy' in trellis_request"
        rf" \(flow [0-9a-f-]+\), at .*sleepy_plugin\.py:{sleeps} in trellis_request",
        stall,
    ), stall
    assert re.search(r"the event loop turned again after [12]\.\d+s", err), err
    # A request that does not block says nothing.
    mark = len(err)
    raw = await client.exchange(
        port, b"GET /echo HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n"
    )
    assert client.parse_responses(raw)[0]["status"] == 200
    await trio.sleep(1.0)
    assert proxy.stderr()[mark:] == ""
    proxy.signal(signal.SIGTERM)
    assert await proxy.wait(timeout=10) == 0
