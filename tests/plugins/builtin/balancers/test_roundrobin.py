"""roundrobin: exact turns over every candidate set, weights ignored."""

from __future__ import annotations

from plugins.builtin.balancers.roundrobin import RoundRobinBalancer, RoundRobinPlugin
from tests.plugins.builtin.balancers.support import (
    FLOW,
    assert_picks_only_candidates,
    balancers_via_pluggy,
    make_group,
    make_targets,
    tally,
)


def test_even_exactly_and_in_order() -> None:
    """10,000 picks over three targets: 3334/3333/3333, in a fixed cycle (no tolerance)."""
    a, b, c = targets = make_targets(1, 1, 1)
    rr = RoundRobinBalancer()
    assert [rr.pick(FLOW, targets) for _ in range(6)] == [a, b, c, a, b, c]
    assert tally(RoundRobinBalancer(), targets, 10_000) == {"a": 3334, "b": 3333, "c": 3333}


def test_weights_are_ignored() -> None:
    targets = make_targets(5, 3, 2)
    assert tally(RoundRobinBalancer(), targets, 9_000) == {"a": 3000, "b": 3000, "c": 3000}


def test_a_subset_still_takes_even_turns_and_the_missing_one_rejoins() -> None:
    """With ``b`` down, ``a`` and ``c`` alternate exactly; back up, ``b`` rejoins in its place."""
    a, b, c, d = targets = make_targets(1, 1, 1, 1)
    rr = RoundRobinBalancer()
    assert tally(rr, (a, c, d), 9_000) == {"a": 3000, "c": 3000, "d": 3000}
    assert [rr.pick(FLOW, (a, c)) for _ in range(4)] == [a, c, a, c]
    assert [rr.pick(FLOW, targets) for _ in range(5)] == [d, a, b, c, d]


def test_a_retry_subset_does_not_skip_anyone() -> None:
    # The request tried b (picked at the cursor); its retry gets c, and the
    # next request goes on with d: nobody is skipped or picked twice in a row.
    a, b, c, d = targets = make_targets(1, 1, 1, 1)
    rr = RoundRobinBalancer()
    assert rr.pick(FLOW, targets) is a
    assert rr.pick(FLOW, targets) is b
    assert rr.pick(FLOW, (a, c, d)) is c
    assert rr.pick(FLOW, targets) is d


def test_only_candidates_are_returned() -> None:
    assert_picks_only_candidates(RoundRobinBalancer(), make_targets(1, 2, 3))
    (only,) = make_targets(1)
    assert all(RoundRobinBalancer().pick(FLOW, (only,)) is only for _ in range(3))


def test_the_hookimpl_gives_a_fresh_balancer_per_group() -> None:
    plugin = RoundRobinPlugin()
    group = make_group(1, 1)
    (first,) = balancers_via_pluggy(plugin, group)
    (second,) = balancers_via_pluggy(plugin, group)
    assert isinstance(first, RoundRobinBalancer)
    assert first is not second
    summary = RoundRobinPlugin.__doc__
    assert summary
    assert "\n" not in summary.strip()  # one line for `kernel plugins`
