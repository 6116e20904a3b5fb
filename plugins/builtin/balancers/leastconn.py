"""``leastconn``: the candidate with the fewest requests in flight per unit of weight.

The cost of a candidate is ``active / weight`` (``Target.active`` is kept
by the kernel). Ties are frequent (every idle target costs 0), so they are
broken round-robin, not in favour of the first target: the scan starts at
a cursor over the group indices that moves past each pick, and the first
candidate with the lowest cost from there wins. Hence weights only matter
under concurrency; with requests one at a time, every target is idle and
they simply take turns.

May import: stdlib, sdk, ._common.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import sdk

from ._common import position_at_or_after

__all__ = ["LeastConnBalancer", "LeastConnPlugin"]


@final
class LeastConnBalancer:
    """A group's tie-breaking cursor."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        #: The group index the next scan starts from.
        self._next = 0

    def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target:
        n = len(candidates)
        i = position_at_or_after(candidates, self._next)
        best = candidates[i]
        best_cost = best.active / best.weight
        for _ in range(n - 1):
            i += 1
            if i == n:
                i = 0
            t = candidates[i]
            cost = t.active / t.weight
            if cost < best_cost:
                best, best_cost = t, cost
        self._next = best.index + 1
        return best


class LeastConnPlugin:
    """Load balancing: the target with the fewest requests in flight per unit of weight."""

    @sdk.hookimpl
    def trellis_balancer(self, group: sdk.Group) -> sdk.Balancer:
        return LeastConnBalancer()
