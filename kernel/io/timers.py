"""Coarse timeouts for the per-request hot path, swept by one task.

A trio cancel scope with a deadline costs several microseconds to enter and
leave, and moving a deadline almost as much; a proxy arms two or three such
timeouts per request. Here a timeout is an entry in a dict (``arm`` /
``disarm``: two dict operations), and one background task checks the entries
every :data:`TICK` seconds and calls the expired ones' ``fire`` callback
(cancel a connection's scope, close a stalled upstream socket).

Timeouts fire up to one tick late; they exist to reclaim resources from
stalled peers, where 50 ms does not matter. Rare, long waits (body reads)
keep using trio deadlines.

With nothing armed the sweeper does not tick: it parks until the next
``arm``, so an idle proxy never wakes (ticking, it woke 20 times a second
and spent about 1% of a core doing nothing). ``arm`` rings a
:class:`~kernel.io.wakeup.Wakeup` for that.

The sweeps are also the loop's heartbeat: a :class:`Pulse` (the loop
watchdog, kernel/stuck.py) is told of each sweep, and when the sweeper parks
and when an ``arm`` wakes it (right in that ``arm``, before whatever the
arming task does next: a plain ``def`` hook that blocks the loop keeps the
sweeper itself from running). That is one call per sweep, and none per
``arm`` but those that find the sweeper parked.

May import: stdlib, trio, kernel.io.wakeup.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

import trio

from kernel.io.wakeup import Wakeup

__all__ = ["TICK", "Pulse", "Timers"]

#: Seconds between two sweeps.
TICK = 0.05


class Pulse(Protocol):
    """Who wants to know that the sweeper (and so the event loop) runs."""

    def beat(self) -> None:
        """A sweep has just run."""

    def parked(self) -> None:
        """The sweeper waits for an ``arm``: no beats until :meth:`awake`."""

    def awake(self) -> None:
        """The sweeper goes on: beats follow every :data:`TICK`."""


class Timers:
    """Armed timeouts by key; :meth:`run` fires the expired ones."""

    __slots__ = ("_armed", "_pulse", "_wakeup")

    def __init__(self) -> None:
        self._armed: dict[Hashable, tuple[float, Callable[[], None]]] = {}
        #: Rung by :meth:`arm`: the sweeper waits on it while nothing is armed.
        self._wakeup = Wakeup()
        self._pulse: Pulse | None = None

    @property
    def pulse(self) -> Pulse | None:
        """Told of the sweeps (the loop watchdog), or None; may change any time."""
        return self._pulse

    @pulse.setter
    def pulse(self, pulse: Pulse | None) -> None:
        self._pulse = pulse
        self._wakeup.on_ring = pulse.awake if pulse is not None else None
        if pulse is not None and self._armed:
            pulse.awake()  # the sweeper sweeps (or will, once started)

    def arm(self, key: Hashable, seconds: float, fire: Callable[[], None]) -> None:
        """Call ``fire()`` once ``seconds`` have passed, unless disarmed first."""
        self._armed[key] = (trio.current_time() + seconds, fire)
        self._wakeup.ring()

    def disarm(self, key: Hashable) -> None:
        self._armed.pop(key, None)

    def fire_expired(self) -> int:
        """Fire and forget every expired entry; returns how many fired."""
        now = trio.current_time()
        expired = [key for key, (when, _) in self._armed.items() if when <= now]
        for key in expired:
            _, fire = self._armed.pop(key)
            fire()
        return len(expired)

    def __len__(self) -> int:
        return len(self._armed)

    @property
    def parked(self) -> bool:
        """Whether the sweeper waits for an :meth:`arm` (nothing is armed)."""
        return self._wakeup.waiting

    async def run(self) -> None:
        """Sweep every :data:`TICK` while anything is armed (run it in a nursery).

        :attr:`pulse` is read on every use: it may be set or unset meanwhile.
        """
        if self._armed and self._pulse is not None:
            self._pulse.awake()  # armed before this task started: no ring woke it
        while True:
            if not self._armed:
                if self._pulse is not None:
                    self._pulse.parked()
                await self._wakeup.wait()  # the arm that rings says "awake"
            await trio.sleep(TICK)
            self.fire_expired()
            if self._pulse is not None:
                self._pulse.beat()
