"""Fakes shared by the balancer tests: targets, groups, flows, a pluggy manager.

Not a test module (no ``test_`` prefix): ``tests/test_layout.py`` maps test
modules to source modules, and this one maps to none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pluggy

import sdk
import sdk.hookspecs
from sdk.testing import make_flow

NAMES = "abcdefghij"


def make_targets(*weights: float) -> tuple[sdk.Target, ...]:
    """Targets ``a``, ``b``, ``c``... of group ``g`` with these weights, indexed in order."""
    return tuple(
        sdk.Target(
            group="g",
            name=NAMES[i],
            origin=sdk.Origin("http", f"10.0.0.{i + 1}", 8080),
            weight=w,
            index=i,
        )
        for i, w in enumerate(weights)
    )


def make_group(*weights: float) -> sdk.Group:
    return sdk.Group(name="g", targets=make_targets(*weights))


def client(i: int) -> str:
    """The ``i``-th of 16 million distinct client addresses."""
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def flow_from(i: int, headers: Sequence[tuple[str, str]] = (), path: str = "/") -> sdk.Flow:
    return make_flow("GET", f"http://site.test{path}", headers, client=(client(i), 40000))


FLOW = flow_from(0)


def tally(balancer: sdk.Balancer, candidates: Sequence[sdk.Target], n: int) -> Counter[str]:
    """How many of ``n`` picks (all with one flow) went to each target, by name."""
    counts: Counter[str] = Counter()
    for _ in range(n):
        target = balancer.pick(FLOW, candidates)
        assert target is not None
        counts[target.name] += 1
    return counts


def assert_picks_only_candidates(balancer: sdk.Balancer, targets: Sequence[sdk.Target]) -> None:
    """Every pick is one of the candidates: all targets, all but ``b``, only ``b``."""
    subsets = (tuple(targets), tuple(t for t in targets if t.name != "b"), (targets[1],))
    for candidates in subsets:
        for i in range(500):
            target = balancer.pick(flow_from(i), candidates)
            assert any(target is c for c in candidates), (target, candidates)


def balancers_via_pluggy(plugin: object, group: sdk.Group) -> list[sdk.Balancer]:
    """Register ``plugin`` as the kernel does and call its ``trellis_balancer``."""
    pm = pluggy.PluginManager(sdk.PROJECT)
    pm.add_hookspecs(sdk.hookspecs)
    pm.register(plugin)
    result: list[sdk.Balancer] = pm.hook.trellis_balancer(group=group)
    return result
