"""A third-party load-balancing strategy: active/standby by priority.

Every request goes to the first *available* target in group order: the
others are standbys that take over, in order, only while the ones before
them are down (active health checks, passive ejection) or already tried by
this request (failover, retries). Dispa's "priority tiers", in a few lines.

Load it and name it as a group's strategy::

    [kernel.modules]
    standby = "examples.plugins.standby:StandbyPlugin"

    [[groups]]
    name = "db-api"
    strategy = "standby"
    urls = "http://10.0.0.1:8080 http://10.0.0.2:8080"   # primary, then standby
    [groups.health]
    path = "/health"
    interval_s = 1

The kernel calls ``trellis_balancer`` once per group it builds and keeps the
balancer while the group is unchanged; ``pick`` runs for every request, so
it only looks at what it is given.

May import: sdk.
"""

from __future__ import annotations

from collections.abc import Sequence

import sdk


class FirstAvailable:
    """The balancer: candidates come in group order, so the first one is the answer."""

    __slots__ = ()

    def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target:
        return candidates[0]


class StandbyPlugin:
    """Active/standby strategy: the first available target of a group, in order."""

    @sdk.hookimpl
    def trellis_balancer(self, group: sdk.Group) -> sdk.Balancer:
        return FirstAvailable()
