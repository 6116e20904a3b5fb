"""Counting a task's yields to the trio scheduler, for tests of who checkpoints where."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class Yields(trio.abc.Instrument):
    """Counts the times ``task`` was put back in the run queue (its yields)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


class YieldsByTask(trio.abc.Instrument):
    """Counts every task's yields, for when the task under test is not known yet."""

    def __init__(self) -> None:
        self.counts: collections.Counter[trio.lowlevel.Task] = collections.Counter()

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        self.counts[task] += 1


async def counting_yields(fn: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """``await fn()`` in the current task: its result and how often the task yielded."""
    yields = Yields(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(yields)
    try:
        result = await fn()
    finally:
        trio.lowlevel.remove_instrument(yields)
    return result, yields.count
