"""Upstream groups as plugins see them: :class:`Target`, :class:`Group`, :class:`Balancer`.

A route may send to a named *group* of targets (``[[groups]]`` in the
config). The kernel owns each group: its targets, their live state (health,
requests in flight, latency) and its load balancer. The balancer comes from
the plugin instance the group's ``strategy`` names, through the
``trellis_balancer`` hook, so a third party can add a strategy; the builtin
ones are ``roundrobin``, ``weighted``, ``random``, ``leastconn``, ``p2c``
and ``hash``.

May import: stdlib, attrs, sdk._http; types only under TYPE_CHECKING.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, final

import attrs

from sdk._http import Origin

if TYPE_CHECKING:
    from sdk._flow import Flow

__all__ = ["Balancer", "Group", "Target"]


@final
@attrs.define(slots=True, eq=False)
class Target:
    """One target of an upstream group, and the live state the kernel keeps on it.

    The identity fields come from the configuration. The state fields are
    written by the kernel only; strategies and other plugins read them.
    A target object lives as long as its group is unchanged, across
    configuration reloads.
    """

    #: The group's name.
    group: str
    #: The target's name inside the group (``[[groups.targets]] name``, or
    #: ``host:port`` of its URL).
    name: str
    #: Where requests go.
    origin: Origin
    #: Path prefix from the target's URL (``http://h:1/base`` -> ``/base``).
    base_path: str = ""
    #: Relative weight (``> 0``); ``0`` drains the target: no strategy sees it.
    weight: float = 1.0
    #: Position in the group's ``targets`` (stable while the group is unchanged).
    index: int = 0

    # -- live state (kernel-written) -------------------------------------------
    #: The last verdict of the active health checks (``True`` without checks).
    healthy: bool = True
    #: Ejected by passive checks until this ``time.monotonic()`` instant.
    ejected_until: float = 0.0
    #: Whether strategies may pick it now: healthy, not ejected, weight > 0.
    available: bool = True
    #: Requests sent to it that have not finished yet.
    active: int = 0
    #: Exponentially weighted moving average of the seconds from sending a
    #: request to its response head; ``0.0`` before the first response.
    ewma_s: float = 0.0
    #: Consecutive failures seen by passive checks.
    failures: int = 0
    #: Requests sent to it in total.
    requests: int = 0

    def __repr__(self) -> str:
        state = "up" if self.available else "down"
        return f"<Target {self.group}/{self.name} {self.origin} {state}>"


@final
@attrs.frozen(slots=True)
class Group:
    """What ``trellis_balancer`` is given: a group's name and its targets, in order."""

    name: str
    targets: tuple[Target, ...]


class Balancer(Protocol):
    """A group's load-balancing strategy: picks one target per request.

    ``pick`` is called on the event loop for every request sent to the
    group (and again for a retry or a failover), so it must be quick and
    must not block. ``candidates`` is never empty and holds only targets
    that may be used now (available, and not yet tried by this request),
    in group order; the balancer keeps whatever state it needs between
    calls (a counter, current weights). It should return one of
    ``candidates``; returning ``None`` (or a target that is not a candidate)
    makes the kernel use the first candidate.

    A balancer outlives the plugin instance that made it when the group is
    unchanged by a reload, so it must not hold the instance's resources.
    """

    def pick(self, flow: Flow, candidates: Sequence[Target]) -> Target | None: ...
