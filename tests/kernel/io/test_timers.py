"""The coarse timer registry."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from kernel.io.timers import TICK, Timers


async def test_fires_once_after_its_time_and_not_when_disarmed(
    autojump_clock: trio.abc.Clock,
) -> None:
    timers = Timers()
    fired: list[str] = []
    timers.arm("a", 1.0, lambda: fired.append("a"))
    timers.arm("b", 1.0, lambda: fired.append("b"))
    timers.arm("c", 5.0, lambda: fired.append("c"))
    timers.disarm("b")
    timers.disarm("missing")  # no error
    assert timers.fire_expired() == 0
    await trio.sleep(1.0)
    assert timers.fire_expired() == 1
    assert fired == ["a"]
    assert len(timers) == 1
    assert timers.fire_expired() == 0  # never twice


async def test_rearming_a_key_replaces_its_deadline(autojump_clock: trio.abc.Clock) -> None:
    timers = Timers()
    fired: list[int] = []
    timers.arm("k", 1.0, lambda: fired.append(1))
    timers.arm("k", 3.0, lambda: fired.append(2))
    await trio.sleep(2.0)
    assert timers.fire_expired() == 0
    await trio.sleep(1.0)
    timers.fire_expired()
    assert fired == [2]


async def test_the_sweeper_fires_within_a_tick(autojump_clock: trio.abc.Clock) -> None:
    timers = Timers()
    event = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        start = trio.current_time()
        timers.arm("x", 0.3, event.set)
        await event.wait()
        assert trio.current_time() - start == pytest.approx(0.3, abs=TICK + 1e-9)
        nursery.cancel_scope.cancel()


class _Counting(Timers):
    """Counts the sweeps (calls of fire_expired)."""

    __slots__ = ("sweeps",)

    def __init__(self) -> None:
        super().__init__()
        self.sweeps = 0

    def fire_expired(self) -> int:
        self.sweeps += 1
        return super().fire_expired()


async def test_with_nothing_armed_the_sweeper_parks_until_the_next_arm(
    autojump_clock: trio.abc.Clock,
) -> None:
    timers = _Counting()
    fired = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.testing.wait_all_tasks_blocked()
        assert timers.parked
        await trio.sleep(60)  # an idle minute: not one sweep
        assert timers.sweeps == 0
        start = trio.current_time()
        timers.arm("x", 0.3, fired.set)
        assert not timers.parked
        await fired.wait()
        assert trio.current_time() - start == pytest.approx(0.3, abs=TICK + 1e-9)
        ticking = timers.sweeps
        assert ticking >= 6  # it ticked while "x" was armed
        await trio.testing.wait_all_tasks_blocked()
        assert timers.parked  # nothing armed again: parked after the sweep that fired
        await trio.sleep(60)
        assert timers.sweeps == ticking
        nursery.cancel_scope.cancel()


async def test_a_disarmed_timer_lets_the_sweeper_park(autojump_clock: trio.abc.Clock) -> None:
    timers = _Counting()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        timers.arm("k", 30.0, lambda: None)
        await trio.sleep(1.0)
        assert not timers.parked
        timers.disarm("k")  # as a request that finished in time does
        await trio.sleep(TICK * 2)
        assert timers.parked
        swept = timers.sweeps
        await trio.sleep(60)
        assert timers.sweeps == swept
        nursery.cancel_scope.cancel()


class _Pulse:
    """Records what the sweeper tells its pulse (kernel/stuck.py's watchdog)."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def beat(self) -> None:
        if self.said[-1:] != ["beat"]:
            self.said.append("beat")  # consecutive beats as one

    def parked(self) -> None:
        self.said.append("parked")

    def awake(self) -> None:
        self.said.append("awake")


async def test_the_pulse_hears_every_sweep_and_when_the_sweeper_parks(
    autojump_clock: trio.abc.Clock,
) -> None:
    timers = _Counting()
    pulse = _Pulse()
    timers.pulse = pulse
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.testing.wait_all_tasks_blocked()
        assert pulse.said == ["parked"]
        timers.arm("k", 0.5, lambda: None)
        # Awake at once, in the arm: the sweeper task has not run yet (a
        # plain def hook that blocks the loop right now would keep it so).
        assert pulse.said == ["parked", "awake"]
        await trio.sleep(1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert pulse.said == ["parked", "awake", "beat", "parked"]
        timers.pulse = None  # unset: the sweeper goes on without it
        timers.arm("k", 0.5, lambda: None)
        await trio.sleep(1.0)
        assert pulse.said == ["parked", "awake", "beat", "parked"]
        nursery.cancel_scope.cancel()


async def test_a_pulse_set_while_timeouts_are_armed_hears_at_once_that_the_sweeper_runs(
    autojump_clock: trio.abc.Clock,
) -> None:
    """As on a reload that turns the watchdog on, or before the sweeper started."""
    timers = Timers()
    timers.arm("k", 0.5, lambda: None)
    pulse = _Pulse()
    timers.pulse = pulse
    assert pulse.said == ["awake"]
    idle = Timers()
    idle.pulse = other = _Pulse()
    assert other.said == []  # nothing armed: it will park, or it has
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.sleep(1.0)
        assert pulse.said == ["awake", "awake", "beat", "parked"]
        nursery.cancel_scope.cancel()
