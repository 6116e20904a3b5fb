"""Counting a task's yields to the trio scheduler, and starting tasks in the same
scheduler round: for tests of who checkpoints where."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
import trio.testing

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


async def in_one_round(*fns: Callable[[], Awaitable[object]]) -> None:
    """Run each of ``fns`` in a task of its own, all woken in the same
    scheduler round (in an order trio picks), and wait for them all."""
    go = trio.Event()

    async def run(fn: Callable[[], Awaitable[object]]) -> None:
        await go.wait()
        await fn()

    async with trio.open_nursery() as nursery:
        for fn in fns:
            nursery.start_soon(run, fn)
        await trio.testing.wait_all_tasks_blocked()
        go.set()
