"""sdk.Target, sdk.Group and the Balancer protocol as plugin authors meet them."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest

import sdk
from sdk.testing import make_flow


def test_a_target_starts_available_with_empty_state() -> None:
    t = sdk.Target(group="g", name="a", origin=sdk.Origin("http", "10.0.0.1", 80))
    assert (t.healthy, t.available, t.active, t.ewma_s, t.failures, t.requests) == (
        True,
        True,
        0,
        0.0,
        0,
        0,
    )
    assert (t.weight, t.index, t.base_path, t.ejected_until) == (1.0, 0, "", 0.0)
    assert repr(t) == "<Target g/a http://10.0.0.1 up>"
    t.available = False
    assert repr(t).endswith(" down>")


def test_targets_compare_by_identity() -> None:
    origin = sdk.Origin("http", "h", 80)
    a = sdk.Target(group="g", name="a", origin=origin)
    b = sdk.Target(group="g", name="a", origin=origin)
    assert a != b
    assert a in (a,)
    assert b not in (a,)


def test_a_group_is_frozen() -> None:
    t = sdk.Target(group="g", name="a", origin=sdk.Origin("http", "h", 80))
    group = sdk.Group("g", (t,))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        group.name = "other"  # type: ignore[misc]


def test_any_object_with_pick_is_a_balancer() -> None:
    class First:
        def pick(self, flow: sdk.Flow, candidates: Sequence[sdk.Target]) -> sdk.Target | None:
            return candidates[0]

    balancer: sdk.Balancer = First()
    t = sdk.Target(group="g", name="a", origin=sdk.Origin("http", "h", 80))
    assert balancer.pick(make_flow(), (t,)) is t


def test_upstream_unavailable_is_a_503_with_retry_after() -> None:
    err = sdk.UpstreamUnavailable("nothing up", retry_after_s=7)
    assert isinstance(err, sdk.UpstreamError)
    assert (err.status_hint, err.retry_after_s, str(err)) == (503, 7, "nothing up")
