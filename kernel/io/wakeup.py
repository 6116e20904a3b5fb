"""A background task that sleeps until there is work for it.

The timeout sweeper (:mod:`.timers`) and the upstream pool's reaper
(:mod:`.upstream`) each run in one task that has nothing to do while their
table is empty. Rather than waking on a clock to find nothing, such a task
waits on a :class:`Wakeup`, and whoever fills the table rings it. Ringing
costs one attribute test when nobody waits, so it can sit on the per-request
path. A ring that does let the task go on also calls :attr:`Wakeup.on_ring`,
at once (the task itself runs later): the loop watchdog (kernel/stuck.py)
learns there that the timeout sweeper runs again.

May import: stdlib, trio.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["Wakeup"]


class Wakeup:
    """One waiter at a time; :meth:`ring` lets it go on."""

    __slots__ = ("_event", "on_ring")

    def __init__(self) -> None:
        self._event: trio.Event | None = None
        #: Called by a :meth:`ring` that lets the waiter go on, or None.
        self.on_ring: Callable[[], None] | None = None

    @property
    def waiting(self) -> bool:
        """Whether a task waits for the next :meth:`ring`."""
        return self._event is not None

    def ring(self) -> None:
        """Let the waiting task go on (nothing when none waits)."""
        event = self._event
        if event is not None:
            self._event = None
            event.set()
            if self.on_ring is not None:
                self.on_ring()

    async def wait(self) -> None:
        """Wait for the next :meth:`ring`."""
        self._event = event = trio.Event()
        await event.wait()
