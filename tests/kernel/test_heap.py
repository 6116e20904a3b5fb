"""kernel/heap.py: freezing the long-lived heap, and thawing it to collect cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from kernel import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture(autouse=True)
def _thaw() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_settle_freezes_what_is_alive_and_not_what_is_garbage() -> None:
    garbage = weakref.ref(_Node())  # unreachable at once, but in a cycle
    alive = _Node()
    heap.settle()
    assert garbage() is None  # collected first, not frozen
    assert gc.get_freeze_count() > 0
    ref = weakref.ref(alive)
    del alive
    gc.collect()
    assert ref() is not None  # a frozen cycle: the collector no longer sees it


def test_resettle_collects_cycles_left_among_frozen_objects() -> None:
    node = _Node()
    heap.settle()
    ref = weakref.ref(node)
    del node
    gc.collect()
    assert ref() is not None
    heap.resettle()
    assert ref() is None
    assert gc.get_freeze_count() > 0
