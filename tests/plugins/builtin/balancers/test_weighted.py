"""weighted: nginx's smooth weighted round-robin, exact proportions, interleaved."""

from __future__ import annotations

from plugins.builtin.balancers.weighted import SmoothWeightedBalancer, WeightedPlugin
from tests.plugins.builtin.balancers.support import (
    FLOW,
    assert_picks_only_candidates,
    balancers_via_pluggy,
    make_group,
    tally,
)


def test_five_three_two_is_exact() -> None:
    """10,000 picks with weights 5:3:2: exactly 5000/3000/2000 (no tolerance)."""
    group = make_group(5, 3, 2)
    assert tally(SmoothWeightedBalancer(group), group.targets, 10_000) == {
        "a": 5000,
        "b": 3000,
        "c": 2000,
    }


def test_picks_are_interleaved_as_nginx_does() -> None:
    # nginx's documented example: weights 5, 1, 1 give a a b a c a a.
    group = make_group(5, 1, 1)
    swrr = SmoothWeightedBalancer(group)
    names = "".join(swrr.pick(FLOW, group.targets).name for _ in range(14))
    assert names == "aabacaa" * 2


def test_fractional_weights() -> None:
    group = make_group(0.5, 0.25, 0.25)
    assert tally(SmoothWeightedBalancer(group), group.targets, 4_000) == {
        "a": 2000,
        "b": 1000,
        "c": 1000,
    }


def test_only_candidates_take_part_in_a_round() -> None:
    """With ``b`` (weight 3) down, ``a`` and ``c`` share 5:2 exactly over 7,000 picks."""
    group = make_group(5, 3, 2)
    a, _, c = group.targets
    swrr = SmoothWeightedBalancer(group)
    assert tally(swrr, (a, c), 7_000) == {"a": 5000, "c": 2000}
    # Back up: the next full window is exact again.
    assert tally(swrr, group.targets, 10_000) == {"a": 5000, "b": 3000, "c": 2000}


def test_only_candidates_are_returned() -> None:
    group = make_group(1, 5, 2)
    assert_picks_only_candidates(SmoothWeightedBalancer(group), group.targets)


def test_the_hookimpl_gives_a_fresh_balancer_per_group() -> None:
    plugin = WeightedPlugin()
    group = make_group(2, 1)
    (first,) = balancers_via_pluggy(plugin, group)
    (second,) = balancers_via_pluggy(plugin, group)
    assert isinstance(first, SmoothWeightedBalancer)
    assert first is not second
