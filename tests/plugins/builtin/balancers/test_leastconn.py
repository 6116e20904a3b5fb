"""leastconn: fewest requests in flight per unit of weight; ties take turns."""

from __future__ import annotations

from plugins.builtin.balancers.leastconn import LeastConnBalancer, LeastConnPlugin
from tests.plugins.builtin.balancers.support import (
    FLOW,
    assert_picks_only_candidates,
    balancers_via_pluggy,
    make_group,
    make_targets,
    tally,
)


def test_prefers_fewer_active_and_spreads_ties() -> None:
    """a has 5 in flight, b and c one each: 10,000 picks split 5000/5000 between b and c."""
    targets = make_targets(1, 1, 1)
    for t, active in zip(targets, (5, 1, 1), strict=True):
        t.active = active
    assert tally(LeastConnBalancer(), targets, 10_000) == {"b": 5000, "c": 5000}


def test_idle_targets_take_turns() -> None:
    a, b, c = targets = make_targets(1, 1, 1)
    lc = LeastConnBalancer()
    assert [lc.pick(FLOW, targets) for _ in range(6)] == [a, b, c, a, b, c]


def test_cost_is_active_per_weight() -> None:
    a, b = targets = make_targets(2, 1)
    a.active, b.active = 3, 2  # 1.5 vs 2
    assert tally(LeastConnBalancer(), targets, 100) == {"a": 100}
    a.active = 4  # 2 vs 2: a tie, shared
    assert tally(LeastConnBalancer(), targets, 100) == {"a": 50, "b": 50}


def test_in_flight_requests_fill_the_targets_by_weight() -> None:
    """Requests that never finish: after 6,000 picks the in-flight counts are 3000/2000/1000."""
    targets = make_targets(3, 2, 1)
    lc = LeastConnBalancer()
    for _ in range(6_000):
        lc.pick(FLOW, targets).active += 1
    assert [t.active for t in targets] == [3000, 2000, 1000]


def test_a_subset_is_balanced_without_the_missing_target() -> None:
    a, b, c = make_targets(1, 1, 1)
    b.active = 0  # the least loaded, but not a candidate
    a.active = c.active = 7
    assert tally(LeastConnBalancer(), (a, c), 1_000) == {"a": 500, "c": 500}


def test_only_candidates_are_returned() -> None:
    targets = make_targets(1, 5, 2)
    targets[1].active = 0
    targets[0].active = targets[2].active = 9
    assert_picks_only_candidates(LeastConnBalancer(), targets)


def test_the_hookimpl_gives_a_fresh_balancer_per_group() -> None:
    plugin = LeastConnPlugin()
    (first,) = balancers_via_pluggy(plugin, make_group(1, 1))
    (second,) = balancers_via_pluggy(plugin, make_group(1, 1))
    assert isinstance(first, LeastConnBalancer)
    assert first is not second
