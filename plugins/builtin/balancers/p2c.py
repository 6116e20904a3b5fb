"""``p2c``: the power of two choices: draw two candidates, send to the cheaper one.

Each pick draws two *distinct* candidates uniformly at random and returns
the one with the lower cost::

    cost = latency * (active + 1) / weight

where ``latency`` is the target's latency EWMA (``Target.ewma_s``, kept by
the kernel), or ``default_latency_s`` before its first response, and
``active`` its requests in flight. This is Finagle's and Linkerd's "peak
EWMA" load estimate: a slow target and a busy target both look expensive,
and the ``+ 1`` lets latency decide between idle targets. On a tie the
first drawn wins (itself a random choice). A single candidate is returned
as is.

Weights: the draw is uniform and the weight divides the cost, so a target
of weight 2 is as attractive as a weight-1 target with half its load or
latency. (Drawing by weight as well would count the weight twice.) As with
any power-of-two-choices scheme, the most expensive of three or more
candidates is never chosen, and the cheapest one gets at most
``2 / len(candidates)`` of the picks while it stays the cheapest: load
feedback through ``active``, not the draw, is what spreads requests.

``[plugins.p2c]``::

    [plugins.p2c]
    seed = 42                   # fixes the draws; default: seeded from the OS
    default_latency_s = 0.01    # a target's latency until its first response

A small default makes a new target attractive, so it is probed quickly;
it gets its real EWMA from its first response on.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any, final

import attrs

import sdk

__all__ = ["DEFAULT_LATENCY_S", "P2CBalancer", "P2CConfig", "P2CPlugin"]

#: The latency assumed for a target before its first response, in seconds.
DEFAULT_LATENCY_S = 0.01


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0.0 and math.isfinite(value)):  # also refuses nan
        raise ValueError(f"must be a positive number of seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class P2CConfig:
    """The ``[plugins.p2c]`` table."""

    #: Seed of every group's generator; ``None``: seeded from the OS.
    seed: int | None = None
    #: Latency assumed for a target that has not answered yet, in seconds.
    default_latency_s: float = attrs.field(default=DEFAULT_LATENCY_S, validator=_positive)


@final
class P2CBalancer:
    """A group's random generator and default latency."""

    __slots__ = ("_default", "_random")

    def __init__(self, rng: random.Random, default_latency_s: float = DEFAULT_LATENCY_S) -> None:
        self._random: Callable[[], float] = rng.random
        self._default = default_latency_s

    def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target:
        n = len(candidates)
        if n == 1:
            return candidates[0]
        rand = self._random
        # Two distinct positions, uniformly. int(random() * n) can round up to
        # n for some n: clamp (random.choice avoids it with _randbelow, which
        # costs three times as much).
        i = min(int(rand() * n), n - 1)
        j = min(int(rand() * (n - 1)), n - 2)
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        default = self._default
        cost_a = (a.ewma_s or default) * (a.active + 1) / a.weight
        cost_b = (b.ewma_s or default) * (b.active + 1) / b.weight
        return b if cost_b < cost_a else a


class P2CPlugin:
    """Load balancing: the less loaded of two random targets (latency EWMA x requests in flight)."""

    config_class = P2CConfig

    def __init__(self, config: P2CConfig | None = None) -> None:
        self.config = config if config is not None else P2CConfig()

    @sdk.hookimpl
    def trellis_balancer(self, group: sdk.Group) -> sdk.Balancer:
        c = self.config
        return P2CBalancer(random.Random(c.seed), c.default_latency_s)
