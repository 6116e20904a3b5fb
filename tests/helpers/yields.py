"""Counting a task's yields to the trio scheduler, for tests of who checkpoints where."""

from __future__ import annotations

import trio


class Yields(trio.abc.Instrument):
    """Counts the times ``task`` was put back in the run queue (its yields).

    Use with :func:`trio.lowlevel.add_instrument` / ``remove_instrument``
    around the call under test.
    """

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1
