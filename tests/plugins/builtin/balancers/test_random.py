"""random: weighted draws with a per-group, seedable generator."""

from __future__ import annotations

import random

import pytest

import sdk
from plugins.builtin.balancers.random import RandomBalancer, RandomConfig, RandomPlugin
from tests.plugins.builtin.balancers.support import (
    FLOW,
    assert_picks_only_candidates,
    balancers_via_pluggy,
    make_group,
    tally,
)


def seeded(group: sdk.Group, seed: int = 1) -> sdk.Balancer:
    (balancer,) = balancers_via_pluggy(RandomPlugin(RandomConfig(seed=seed)), group)
    return balancer


def test_weight_shares() -> None:
    """5:3:2 over 10,000 picks, seed 1: each share within 3 points of 50/30/20%.

    (The binomial standard deviation is at most 0.5 points: 6 sd.)
    """
    group = make_group(5, 3, 2)
    counts = tally(seeded(group), group.targets, 10_000)
    for name, share in (("a", 50), ("b", 30), ("c", 20)):
        assert abs(counts[name] / 100 - share) <= 3, counts


def test_equal_weights_are_uniform() -> None:
    """Equal weights, 10,000 picks, seed 2: each within 3 points of 25%."""
    group = make_group(1, 1, 1, 1)
    counts = tally(seeded(group, 2), group.targets, 10_000)
    assert all(abs(counts[n] / 100 - 25) <= 3 for n in "abcd"), counts


def test_a_subset_shares_the_weights_of_the_candidates() -> None:
    """``b`` down: ``a`` and ``c`` split 5:2 (71.4/28.6%) within 3 points, seed 3."""
    group = make_group(5, 3, 2)
    a, _, c = group.targets
    counts = tally(seeded(group, 3), (a, c), 10_000)
    assert set(counts) == {"a", "c"}
    assert abs(counts["a"] / 100 - 500 / 7) <= 3, counts


def test_a_seed_repeats_the_sequence_and_each_group_has_its_own_generator() -> None:
    group = make_group(1, 1, 1)
    first, second = seeded(group, 42), seeded(group, 42)
    seq1 = [first.pick(FLOW, group.targets) for _ in range(50)]
    seq2 = [second.pick(FLOW, group.targets) for _ in range(50)]
    assert seq1 == seq2
    unseeded = RandomPlugin()  # from the OS: balancers differ (50 draws of 3: never equal)
    (x,), (y,) = balancers_via_pluggy(unseeded, group), balancers_via_pluggy(unseeded, group)
    assert [x.pick(FLOW, group.targets) for _ in range(50)] != [
        y.pick(FLOW, group.targets) for _ in range(50)
    ]


def test_only_candidates_are_returned() -> None:
    group = make_group(1, 5, 2)
    assert_picks_only_candidates(RandomBalancer(random.Random(5)), group.targets)
    (only,) = group.targets[:1]
    assert RandomBalancer(random.Random()).pick(FLOW, (only,)) is only


def test_config() -> None:
    path = "$.plugins.random"
    assert sdk.structure({}, RandomConfig, path=path).seed is None
    assert sdk.structure({"seed": 9}, RandomConfig, path=path).seed == 9
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure({"seed": "nine"}, RandomConfig, path=path)
    assert all(p.startswith(f"{path}.seed:") for p in info.value.problems), info.value.problems
