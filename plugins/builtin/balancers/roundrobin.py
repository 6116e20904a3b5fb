"""``roundrobin``: every candidate in turn, ignoring weights.

The balancer keeps a cursor over the group's target *indices*, not over the
candidates: each pick returns the first candidate at or after the cursor
and moves the cursor just past it. With every target available that is
plain round-robin; with a subset (one target down, or a retry leaving out
the tried one) the remaining candidates still take turns evenly, and when
the missing target comes back it rejoins at its own place in the cycle.

May import: stdlib, sdk, ._common.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import sdk

from ._common import position_at_or_after

__all__ = ["RoundRobinBalancer", "RoundRobinPlugin"]


@final
class RoundRobinBalancer:
    """A group's round-robin cursor."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        #: The group index the next pick starts looking from.
        self._next = 0

    def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target:
        target = candidates[position_at_or_after(candidates, self._next)]
        self._next = target.index + 1
        return target


class RoundRobinPlugin:
    """Load balancing: each available target in turn, ignoring weights."""

    @sdk.hookimpl
    def trellis_balancer(self, group: sdk.Group) -> sdk.Balancer:
        return RoundRobinBalancer()
