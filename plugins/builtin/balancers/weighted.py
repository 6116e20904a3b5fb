"""``weighted``: smooth weighted round-robin, as nginx's upstream module does it.

Each target has a *current weight*, kept by the balancer per group index.
At every pick each candidate's current weight grows by its weight; the
candidate with the largest current weight wins (the first one in group
order on a tie) and loses the sum of the candidates' weights. Over any
window of ``sum(weights)`` picks each target is chosen exactly ``weight``
times when the weights are integers, and the picks are interleaved
(weights 5:1:1 give ``a a b a c a a``, not ``a a a a a b c``).

Only candidates take part in a round: a target that is down or already
tried by this request neither gains nor loses, so it comes back where it
left off.

May import: stdlib, sdk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import final

import sdk

__all__ = ["SmoothWeightedBalancer", "WeightedPlugin"]


@final
class SmoothWeightedBalancer:
    """A group's current weights, by target index."""

    __slots__ = ("_current",)

    def __init__(self, group: sdk.Group) -> None:
        self._current = [0.0] * len(group.targets)

    def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target:
        current = self._current
        total = 0.0
        best = candidates[0]
        best_weight = -math.inf
        for t in candidates:
            w = current[t.index] + t.weight
            current[t.index] = w
            total += t.weight
            if w > best_weight:
                best, best_weight = t, w
        current[best.index] = best_weight - total
        return best


class WeightedPlugin:
    """Load balancing: smooth weighted round-robin (nginx's), in proportion to the weights."""

    @sdk.hookimpl
    def trellis_balancer(self, group: sdk.Group) -> sdk.Balancer:
        return SmoothWeightedBalancer(group)
