"""Active health checks against real sockets: probes, Dispa's fallback paths, thresholds."""

from __future__ import annotations

from pathlib import Path

import trio

import sdk
from kernel.config import loads_config
from kernel.config.groups import HealthCheckConfig
from kernel.generation import build_generation
from kernel.io.healthcheck import check_target, run_health_checks
from tests.helpers.statusorigin import Origin


def target(port: int, base: str = "") -> sdk.Target:
    return sdk.Target(
        group="g", name="t", origin=sdk.Origin("http", "127.0.0.1", port), base_path=base
    )


async def test_a_probe_with_a_path(nursery: trio.Nursery) -> None:
    origin = await nursery.start(Origin({"/ready": 204, "/bad": 500}).serve)
    cfg = HealthCheckConfig(path="/ready")
    assert await check_target(target(origin.port), cfg, None, "h11") == (True, "status 204")
    head = dict(origin.heads[0])
    assert head[b"host"] == f"127.0.0.1:{origin.port}".encode()
    assert head[b"user-agent"] == b"trellis-health-check"
    bad = HealthCheckConfig(path="/bad")
    assert await check_target(target(origin.port), bad, None, "httptools") == (False, "status 500")
    # expect decides what healthy means
    strict = HealthCheckConfig(path="/ready", expect=[200])
    assert (await check_target(target(origin.port), strict, None, "h11"))[0] is False
    # the target's base path is put in front
    await check_target(target(origin.port, "/base"), cfg, None, "h11")
    assert origin.paths[-1] == "/base/ready"


async def test_dispa_fallback_paths_move_on_after_404(nursery: trio.Nursery) -> None:
    origin = await nursery.start(Origin({"/health": 404, "/healthz": 404, "/ping": 200}).serve)
    ok, why = await check_target(target(origin.port), HealthCheckConfig(), None, "h11")
    assert (ok, why) == (True, "status 200")
    assert origin.paths == ["/health", "/healthz", "/ping"]
    # Another status than 404 decides at once.
    origin2 = await nursery.start(Origin({"/health": 503}).serve)
    assert await check_target(target(origin2.port), HealthCheckConfig(), None, "h11") == (
        False,
        "status 503",
    )
    assert origin2.paths == ["/health"]
    # All four 404: unhealthy.
    origin3 = await nursery.start(Origin({}, default=404).serve)
    assert (await check_target(target(origin3.port), HealthCheckConfig(), None, "h11"))[0] is False
    assert origin3.paths == ["/health", "/healthz", "/ping", "/"]


async def test_a_refused_or_slow_target_fails(nursery: trio.Nursery) -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    ok, why = await check_target(target(dead), HealthCheckConfig(path="/"), None, "h11")
    assert not ok
    assert "cannot connect" in why
    origin = await nursery.start(Origin({}).serve)
    origin.delay = 1.0
    ok, why = await check_target(
        target(origin.port), HealthCheckConfig(path="/", timeout_s=0.1), None, "h11"
    )
    assert not ok
    assert "within 0.1s" in why


async def test_thresholds_move_a_target_down_and_up(nursery: trio.Nursery, tmp_path: Path) -> None:
    origin = await nursery.start(Origin({}).serve)
    text = f"""
[[groups]]
name = "g"
urls = "http://127.0.0.1:{origin.port}"
[groups.health]
path = "/h"
interval_s = 0.02
unhealthy_threshold = 3
healthy_threshold = 2
"""
    gen = build_generation(loads_config(text, base_dir=tmp_path, environ={}).settings)
    group = gen.groups["g"]
    changes: list[tuple[bool, str, int]] = []
    group.on_change = lambda t, up, why: changes.append((up, why, len(origin.paths)))
    nursery.start_soon(run_health_checks, group, lambda t: None, "h11")
    with trio.fail_after(5):
        while len(origin.paths) < 3:
            await trio.sleep(0.01)
    assert changes == []  # healthy probes: nothing to report
    origin.default = 500
    with trio.fail_after(5):
        while not changes:
            await trio.sleep(0.01)
    up, why, probes = changes[0]
    assert up is False
    assert why == "health check: 3 failed in a row (status 500)"
    failed_at = probes
    origin.default = 200
    with trio.fail_after(5):
        while len(changes) < 2:
            await trio.sleep(0.01)
    assert changes[1][:2] == (True, "health check: 2 passed in a row")
    # Exactly the thresholds: 2 good probes after the bad ones that followed the report.
    assert changes[1][2] - failed_at >= 2


async def test_without_health_config_nothing_runs(tmp_path: Path) -> None:
    gen = build_generation(
        loads_config(
            '[[groups]]\nname = "g"\nurls = "http://127.0.0.1:1"', base_dir=tmp_path, environ={}
        ).settings
    )
    with trio.fail_after(1):
        await run_health_checks(gen.groups["g"], lambda t: None, "h11")
