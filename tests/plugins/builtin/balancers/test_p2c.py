"""p2c: two uniform draws, the cheaper by latency EWMA x (in flight + 1) / weight."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import pytest

import sdk
from plugins.builtin.balancers.p2c import P2CBalancer, P2CConfig, P2CPlugin
from tests.plugins.builtin.balancers.support import (
    FLOW,
    assert_picks_only_candidates,
    balancers_via_pluggy,
    make_group,
    make_targets,
    tally,
)


def p2c(seed: int = 1, default_latency_s: float = 0.01) -> P2CBalancer:
    return P2CBalancer(random.Random(seed), default_latency_s)


def simulate(targets: tuple[sdk.Target, ...], latencies: list[float], n: int) -> Counter[str]:
    """``n`` requests, 16 at a time; each takes its target's latency to finish.

    The kernel's bookkeeping is faked: ``active`` counts in-flight requests and
    ``ewma_s`` is the target's fixed latency once it has answered once.
    """
    balancer = p2c(seed=4)
    finishing: list[tuple[float, int]] = []  # (finish time, target index)
    counts: Counter[str] = Counter()
    now = 0.0
    for _ in range(n):
        if len(finishing) == 16:
            now, done = heapq.heappop(finishing)
            targets[done].active -= 1
            targets[done].ewma_s = latencies[done]
        t = balancer.pick(FLOW, targets)
        t.active += 1
        counts[t.name] += 1
        heapq.heappush(finishing, (now + latencies[t.index], t.index))
    return counts


def test_prefers_the_fast_target() -> None:
    """ewma 1 ms vs 100 ms, both idle: the fast one gets every pick (> 80% required)."""
    fast, slow = targets = make_targets(1, 1)
    fast.ewma_s, slow.ewma_s = 0.001, 0.1
    assert tally(p2c(), targets, 10_000) == {"a": 10_000}


def test_prefers_the_fast_target_under_load() -> None:
    """10,000 requests 16 at a time, 1 ms vs 100 ms: the fast target serves over 80%."""
    counts = simulate(make_targets(1, 1), [0.001, 0.1], 10_000)
    assert counts["a"] > 8_000, counts


def test_the_fastest_of_three_gets_its_two_draws_in_three() -> None:
    """1 ms vs two 100 ms targets: the fast one wins whenever drawn, 2/3 within 3 points."""
    targets = make_targets(1, 1, 1)
    for t, ewma in zip(targets, (0.001, 0.1, 0.1), strict=True):
        t.ewma_s = ewma
    counts = tally(p2c(), targets, 10_000)
    assert abs(counts["a"] / 100 - 200 / 3) <= 3, counts


def test_prefers_the_idle_target_when_latencies_are_equal() -> None:
    """Both 50 ms; a has 3 in flight, b none: b gets every pick."""
    busy, idle = targets = make_targets(1, 1)
    busy.ewma_s = idle.ewma_s = 0.05
    busy.active = 3
    assert tally(p2c(), targets, 10_000) == {"b": 10_000}


def test_equal_costs_are_drawn_uniformly() -> None:
    """Identical targets, 9,000 picks, seed 1: each within 3 points of a third."""
    counts = tally(p2c(), make_targets(1, 1, 1), 9_000)
    assert all(abs(counts[n] / 90 - 100 / 3) <= 3 for n in "abc"), counts


def test_weight_divides_the_cost() -> None:
    heavy, light = targets = make_targets(3, 1)
    heavy.ewma_s = light.ewma_s = 0.05
    heavy.active = 1  # 0.05 * 2 / 3 < 0.05 * 1 / 1
    assert tally(p2c(), targets, 1_000) == {"a": 1_000}
    heavy.active = 3  # 0.05 * 4 / 3 > 0.05
    assert tally(p2c(), targets, 1_000) == {"b": 1_000}


def test_a_target_without_latency_uses_the_default() -> None:
    _cold, warm = targets = make_targets(1, 1)
    warm.ewma_s = 0.05
    assert tally(p2c(default_latency_s=0.01), targets, 1_000) == {"a": 1_000}
    assert tally(p2c(default_latency_s=1.0), targets, 1_000) == {"b": 1_000}


def test_only_candidates_are_returned() -> None:
    targets = make_targets(1, 5, 2)
    targets[1].ewma_s = 0.0001  # the best one, and not always a candidate
    assert_picks_only_candidates(p2c(), targets)
    (only,) = targets[:1]
    assert p2c().pick(FLOW, (only,)) is only


def test_config_and_hookimpl() -> None:
    path = "$.plugins.p2c"
    config = sdk.structure({"seed": 3, "default_latency_s": 0.2}, P2CConfig, path=path)
    assert config == P2CConfig(seed=3, default_latency_s=0.2)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(sdk.ConfigError) as info:
            sdk.structure({"default_latency_s": bad}, P2CConfig, path=path)
        assert info.value.problems[0].startswith(f"{path}.default_latency_s: must be a positive")
    plugin = P2CPlugin(config)
    group = make_group(1, 1)
    (first,) = balancers_via_pluggy(plugin, group)
    (second,) = balancers_via_pluggy(plugin, group)
    assert isinstance(first, P2CBalancer)
    assert first is not second
    picks = [first.pick(FLOW, group.targets) for _ in range(20)]
    assert picks == [second.pick(FLOW, group.targets) for _ in range(20)]  # same seed
