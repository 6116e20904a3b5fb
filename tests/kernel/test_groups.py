"""GroupRuntime: picking among available targets, passive ejection, health, stickiness, reuse.

Pure unit tests: a scripted balancer stands in for a strategy plugin (the
strategies are tested in tests/plugins/builtin/balancers/, the whole path
with real upstreams in tests/kernel/io/test_balance.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import kernel.groups as groups_mod
import sdk
from kernel.config import loads_config
from kernel.generation import build_generation
from kernel.groups import GroupRuntime
from sdk.testing import make_flow


class First:
    """Always the first candidate; records what it was offered."""

    def __init__(self) -> None:
        self.offered: list[list[str]] = []

    def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target | None:
        self.offered.append([t.name for t in candidates])
        return candidates[0]


class FirstPlugin:
    """A strategy plugin for these tests."""

    def __init__(self) -> None:
        self.made: list[First] = []

    @sdk.hookimpl
    def trellis_balancer(self, group: sdk.Group) -> sdk.Balancer:
        balancer = First()
        self.made.append(balancer)
        return balancer


GROUP = """
[[groups]]
name = "g"
strategy = "first"
urls = "http://127.0.0.1:1 http://127.0.0.1:2 http://127.0.0.1:3"
{extra}
"""


def build(
    tmp_path: Path, extra: str = "", previous: Any = None, plugin: FirstPlugin | None = None
) -> tuple[GroupRuntime, FirstPlugin]:
    plugin = plugin or FirstPlugin()
    text = GROUP.format(extra=extra)
    settings = loads_config(text, base_dir=tmp_path, environ={}).settings
    gen = build_generation(settings, extra_plugins={"first": plugin}, previous_groups=previous)
    return gen.groups["g"], plugin


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(groups_mod, "_now", lambda: now[0])
    return now


def names(targets: Sequence[sdk.Target]) -> list[str]:
    return [t.name for t in targets]


def test_pick_avoids_tried_targets_while_others_are_left(tmp_path: Path) -> None:
    group, plugin = build(tmp_path)
    a, b, c = group.targets
    flow = make_flow()
    assert group.pick(flow) is a
    assert group.pick(flow, (a,)) is b  # a tie on load: the next one after a
    assert group.pick(flow, (a, b)) is c
    # Everything tried: the available ones again (a retry still has somewhere to go).
    assert group.pick(flow, (a, b, c)) is a
    # Only first tries ask the strategy.
    assert plugin.made[0].offered == [names((a, b, c))]


def test_a_retry_goes_to_the_least_busy_untried_target(tmp_path: Path) -> None:
    group, plugin = build(tmp_path)
    a, b, c = group.targets
    b.active = 5
    c.active = 1
    assert group.pick(make_flow(), (a,)) is c
    c.weight = 0.1  # 1 / 0.1 = 10 per unit of weight: b is less busy now
    assert group.pick(make_flow(), (a,)) is b
    assert plugin.made[0].offered == []


def test_unhealthy_targets_are_not_offered_and_changes_are_reported(tmp_path: Path) -> None:
    group, _ = build(tmp_path)
    seen: list[tuple[str, bool, str]] = []
    group.on_change = lambda t, up, why: seen.append((t.name, up, why))
    a, b, _c = group.targets
    group.set_health(a, False, "health check: 3 failed")
    group.set_health(a, False, "again")  # no change, no report
    assert group.pick(make_flow()) is b
    assert not a.available
    assert names(group.candidates) == ["127.0.0.1:2", "127.0.0.1:3"]
    group.set_health(a, True, "health check: 2 passed")
    assert group.pick(make_flow()) is a
    assert seen == [
        ("127.0.0.1:1", False, "health check: 3 failed"),
        ("127.0.0.1:1", True, "health check: 2 passed"),
    ]


def test_none_available_refuses_or_panics(tmp_path: Path) -> None:
    group, _ = build(tmp_path)
    for t in group.targets:
        group.set_health(t, False, "down")
    assert group.pick(make_flow()) is None
    panic, _ = build(tmp_path, 'when_none_available = "panic"')
    for t in panic.targets:
        panic.set_health(t, False, "down")
    assert panic.pick(make_flow()) is panic.targets[0]
    assert panic.pick(make_flow(), (panic.targets[0],)) is panic.targets[1]


def test_weight_zero_drains_a_target(tmp_path: Path) -> None:
    extra = '[[groups.targets]]\nurl = "http://127.0.0.1:4"\nweight = 0'
    group, _ = build(tmp_path, extra)
    drained = group.targets[0]
    assert drained.weight == 0
    assert not drained.available
    assert drained not in group.candidates


def test_passive_ejection_and_cooldown(tmp_path: Path, clock: list[float]) -> None:
    group, _ = build(tmp_path, "[groups.passive]\nfailures = 3\ncooldown_s = 10")
    seen: list[tuple[bool, str]] = []
    group.on_change = lambda t, up, why: seen.append((up, why))
    a = group.targets[0]
    group.observe(a, False, None, "connection refused")
    group.observe(a, False, None, "connection refused")
    group.observe(a, True, 0.01, "status 200")  # a success forgives
    assert a.failures == 0
    assert a.available
    for _ in range(3):
        group.observe(a, False, None, "connection refused")
    assert not a.available
    assert a.ejected_until == 1010.0
    assert seen[-1][0] is False
    assert seen[-1][1].endswith("3 failures in a row (connection refused); ejected for 10s")
    clock[0] = 1009.0
    assert group.pick(make_flow()) is not a
    clock[0] = 1010.5
    assert group.pick(make_flow()) is a  # back after the cooldown
    assert seen[-1] == (True, "passive: cooldown over")
    group.observe(a, False, None, "status 503")  # one more failure: out again
    assert not a.available


def test_an_ejection_says_a_passing_probe_ends_it(tmp_path: Path, clock: list[float]) -> None:
    """With active checks the cooldown is an upper bound (probe_passed lifts it):
    the log line and ``kernel explain`` say so."""
    group, _ = build(
        tmp_path, '[groups.passive]\nfailures = 1\ncooldown_s = 30\n[groups.health]\npath = "/h"'
    )
    seen: list[tuple[bool, str]] = []
    group.on_change = lambda t, up, why: seen.append((up, why))
    a = group.targets[0]
    group.observe(a, False, None, "status 503")
    assert seen[-1][1].endswith("ejected for 30s or until a health check passes")
    assert any(line.endswith("for 30s or until a health check passes") for line in group.describe())
    group.probe_passed(a)
    assert a.available


def test_passive_checks_can_be_off(tmp_path: Path) -> None:
    group, _ = build(tmp_path, "[groups.passive]\nfailures = 0")
    a = group.targets[0]
    for _ in range(100):
        group.observe(a, False, None, "refused")
    assert a.available


def test_latency_ewma(tmp_path: Path) -> None:
    group, _ = build(tmp_path)
    a = group.targets[0]
    group.observe(a, True, 0.1, "status 200")
    assert a.ewma_s == pytest.approx(0.1)
    group.observe(a, True, 0.2, "status 200")
    assert a.ewma_s == pytest.approx(0.1 + groups_mod.EWMA_ALPHA * 0.1)


def test_sticky_cookie_pins_and_is_set_once(tmp_path: Path) -> None:
    group, _ = build(tmp_path, '[groups.sticky]\ncookie = "srv"\nmax_age_s = 60')
    a, b, _c = group.targets
    flow = make_flow()
    assert group.pick(flow) is a
    cookie = group.sticky_cookie(flow, a, secure=False)
    assert cookie is not None
    value = cookie.split(";")[0].split("=", 1)[1]
    assert cookie == f"srv={value}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
    assert "127.0.0.1" not in cookie  # a digest, not the address
    # The cookie for b takes the client to b, and is not set again.
    b_cookie = group.sticky_cookie(make_flow(), b, secure=True)
    assert b_cookie is not None
    assert b_cookie.endswith("; Secure")
    pinned = make_flow(headers=[("cookie", "x=1; " + b_cookie.split(";")[0])])
    assert group.pick(pinned) is b
    assert group.sticky_cookie(pinned, b, secure=False) is None
    # b goes down: the strategy decides, and the response re-pins.
    group.set_health(b, False, "down")
    assert group.pick(pinned) is a
    assert group.sticky_cookie(pinned, a, secure=False) is not None
    # A retry (tried targets) does not follow the cookie.
    group.set_health(b, True, "up")
    assert group.pick(pinned, (b,)) is not b


def test_a_failing_balancer_is_a_plugin_error(tmp_path: Path) -> None:
    group, _ = build(tmp_path)

    class Broken:
        def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target | None:
            raise RuntimeError("boom")

    group.balancer = Broken()
    with pytest.raises(sdk.PluginError) as info:
        group.pick(make_flow())
    assert info.value.plugin == "first"


def test_a_balancer_answer_outside_the_candidates_is_replaced(tmp_path: Path) -> None:
    group, _ = build(tmp_path)
    a, b, _c = group.targets

    class Wrong:
        def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target | None:
            return a

    group.balancer = Wrong()
    group.set_health(a, False, "down")
    assert group.pick(make_flow()) is b


def test_an_unchanged_group_is_kept_across_a_rebuild(tmp_path: Path) -> None:
    group, plugin = build(tmp_path)
    group.set_health(group.targets[1], False, "down")
    again, _ = build(tmp_path, previous={"g": group}, plugin=plugin)
    assert again is group
    assert len(plugin.made) == 1  # the balancer (and its state) survived


def test_a_changed_group_is_rebuilt_and_keeps_target_health(tmp_path: Path) -> None:
    group, _plugin = build(tmp_path)
    group.set_health(group.targets[1], False, "down")
    changed, _ = build(tmp_path, "[groups.passive]\nfailures = 2", previous={"g": group})
    assert changed is not group
    assert [t.healthy for t in changed.targets] == [True, False, True]
    assert names(changed.candidates) == ["127.0.0.1:1", "127.0.0.1:3"]


def test_describe_for_explain(tmp_path: Path) -> None:
    group, _ = build(tmp_path, '[groups.health]\npath = "/h"\ninterval_s = 1\n')
    lines = group.describe()
    assert lines[0].startswith("lb: first over 3 targets: http://127.0.0.1:1, ")
    assert lines[1] == (
        "health: GET /h every 1s (timeout 2s, expect 2xx/3xx, down after 3, up after 2)"
    )
    assert lines[2].startswith("passive: eject after 5 failures in a row")
    assert lines[-1] == "none available: 503, Retry-After 5"


def test_a_passing_health_check_ends_a_passive_ejection(tmp_path: Path, clock: list[float]) -> None:
    group, _ = build(tmp_path, "[groups.passive]\nfailures = 1\ncooldown_s = 30")
    a = group.targets[0]
    group.set_health(a, False, "health check: down")
    group.observe(a, False, None, "connection refused")
    assert a.ejected_until == 1030.0
    group.set_health(a, True, "health check: 2 passed in a row")
    assert a.available
    assert (a.ejected_until, a.failures) == (0.0, 0)


def test_a_passing_probe_lifts_a_passive_ejection(tmp_path: Path, clock: list[float]) -> None:
    group, _ = build(tmp_path, "[groups.passive]\nfailures = 1\ncooldown_s = 30")
    seen: list[tuple[bool, str]] = []
    group.on_change = lambda t, up, why: seen.append((up, why))
    a = group.targets[0]
    group.observe(a, False, None, "connection refused")
    assert not a.available
    group.probe_passed(group.targets[1])  # not ejected: nothing happens
    group.probe_passed(a)
    assert a.available
    assert seen[-1] == (True, "health check passed: passive ejection lifted")
