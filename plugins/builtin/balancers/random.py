"""``random``: a weighted random draw per request (uniform when the weights are equal).

``[plugins.random]`` takes one option::

    [plugins.random]
    seed = 42        # fixes the sequence of draws (tests, reproducible benchmarks)

Each group's balancer has its own :class:`random.Random`, seeded with
``seed`` (so two groups with the same seed draw the same sequence) or, by
default, from the operating system. A candidate is drawn with probability
``weight / sum of the candidates' weights``; targets that are not
candidates take no share.

May import: stdlib, attrs, sdk, ._common.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import final

import attrs

import sdk

from ._common import weighted_draw

__all__ = ["RandomBalancer", "RandomConfig", "RandomPlugin"]


@attrs.frozen(kw_only=True)
class RandomConfig:
    """The ``[plugins.random]`` table."""

    #: Seed of every group's generator; ``None``: seeded from the OS.
    seed: int | None = None


@final
class RandomBalancer:
    """A group's random generator."""

    __slots__ = ("_random",)

    def __init__(self, rng: random.Random) -> None:
        self._random: Callable[[], float] = rng.random

    def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target:
        if len(candidates) == 1:
            return candidates[0]
        return weighted_draw(self._random, candidates)


class RandomPlugin:
    """Load balancing: a random target per request, in proportion to the weights."""

    config_class = RandomConfig

    def __init__(self, config: RandomConfig | None = None) -> None:
        self.config = config if config is not None else RandomConfig()

    @sdk.hookimpl
    def trellis_balancer(self, group: sdk.Group) -> sdk.Balancer:
        return RandomBalancer(random.Random(self.config.seed))
