"""The coarse timer registry."""

from __future__ import annotations

import pytest
import trio

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
