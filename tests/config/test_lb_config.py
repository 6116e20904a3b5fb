"""``config/lb.toml``: the load-balancing scenario checks, and explains, as its comment says.

``kernel check`` and ``kernel explain`` run as the ``kernel`` command does
(a child process, with no ``TRELLIS_*`` of the caller's): with the file's
defaults alone, with each of the six builtin strategies in ``TRELLIS_LB``,
and with ``TRELLIS_UPSTREAMS`` / ``TRELLIS_LISTEN`` set. What the config
holds is checked from the loaded settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.config import load_config
from kernel.config.groups import PassiveHealthConfig

ROOT = Path(__file__).resolve().parents[2]
LB = ROOT / "config" / "lb.toml"
KERNEL = str(Path(sys.executable).with_name("kernel"))
STRATEGIES = ["roundrobin", "weighted", "random", "leastconn", "p2c", "hash"]


def kernel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``kernel ARGS`` with our environment minus any ``TRELLIS_*``, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    full.update(env or {})
    return subprocess.run(
        [KERNEL, *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=60, check=False
    )


def test_checks_with_its_defaults() -> None:
    done = kernel("check", "-c", str(LB))
    assert done.returncode == 0, done.stderr
    assert (
        "ok (3 listener(s), 1 route(s), plugin instances: metrics, health, trafficlog,"
        " roundrobin)" in done.stdout
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_checks_with_each_strategy(strategy: str) -> None:
    done = kernel("check", "-c", str(LB), env={"TRELLIS_LB": strategy})
    assert done.returncode == 0, done.stderr
    assert f"plugin instances: metrics, health, trafficlog, {strategy})" in done.stdout


def test_an_unknown_strategy_is_refused_with_its_path() -> None:
    done = kernel("check", "-c", str(LB), env={"TRELLIS_LB": "nosuch"})
    assert done.returncode == 1
    assert "nosuch" in done.stderr
    assert "$.groups[0].strategy" in done.stderr


def test_explain_with_defaults_shows_the_group() -> None:
    done = kernel("explain", "-c", str(LB))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "listener main on 127.0.0.1:8080" in out
    assert "route default (default): group app" in out
    assert "lb: roundrobin over 2 targets: http://127.0.0.1:9001, http://127.0.0.1:9002" in out
    assert (
        "health: GET /health every 1s (timeout 1s, expect 2xx/3xx, down after 3, up after 2)"
    ) in out
    assert "passive: eject after 5 failures in a row (errors or 502,503,504) for 30s" in out
    assert "none available: 503, Retry-After 5" in out
    # 3 attempts: 2 retries.
    assert "retry 2x on 502,503,504" in out


def test_explain_follows_the_environment() -> None:
    env = {
        "TRELLIS_LISTEN": "127.0.0.1:18080",
        "TRELLIS_UPSTREAMS": "http://10.0.0.1:80, http://10.0.0.2:80 http://10.0.0.3:8080",
        "TRELLIS_LB": "p2c",
    }
    done = kernel("explain", "-c", str(LB), env=env)
    assert done.returncode == 0, done.stderr
    assert "listener main on 127.0.0.1:18080" in done.stdout
    assert (
        "lb: p2c over 3 targets: http://10.0.0.1:80, http://10.0.0.2:80, http://10.0.0.3:8080"
    ) in done.stdout


def test_settings_are_the_scenarios() -> None:
    """What the issue asks of the file, read back from the loaded settings."""
    settings = load_config(LB, environ={}).settings
    assert [(lst.name, lst.bind) for lst in settings.listeners] == [
        ("main", "127.0.0.1:8080"),
        ("metrics", "127.0.0.1:9090"),
        ("health", "127.0.0.1:8081"),
    ]
    (route,) = settings.routes
    assert route.group == "app"
    assert not route.upstream
    assert route.transport is not None
    retry = route.transport.retry
    assert retry is not None
    assert retry.attempts == 3
    assert "POST" not in retry.methods
    assert 0 < retry.backoff_s <= 0.05
    (group,) = settings.groups
    assert group.strategy == "roundrobin"
    assert group.urls == "http://127.0.0.1:9001,http://127.0.0.1:9002"
    assert group.when_none_available == "refuse"
    assert group.health is not None
    assert group.health.path == "/health"
    assert group.health.interval_s == 1.0
    assert group.sticky is None
    # Passive ejection with its defaults.
    assert group.passive == PassiveHealthConfig()
    # Metrics, health and the file traffic log, as in config/reverse.toml.
    assert settings.kernel.plugins == ["metrics", "health", "trafficlog"]
    assert settings.plugins["trafficlog"] == {
        "type": "file",
        "directory": "logs",
        "exclude_listeners": ["metrics", "health"],
    }
