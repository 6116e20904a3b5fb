"""kernel.io.wakeup: a waiting task goes on at the next ring, and only then."""

from __future__ import annotations

import trio
import trio.testing

from kernel.io.wakeup import Wakeup


async def test_a_ring_lets_the_waiter_go_on(autojump_clock: trio.abc.Clock) -> None:
    wakeup = Wakeup()
    woke = trio.Event()

    async def waiter() -> None:
        await wakeup.wait()
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert wakeup.waiting
        await trio.sleep(3600)
        assert not woke.is_set()
        wakeup.ring()
        assert not wakeup.waiting
        await woke.wait()


async def test_a_ring_with_no_waiter_is_not_kept(autojump_clock: trio.abc.Clock) -> None:
    wakeup = Wakeup()
    wakeup.ring()  # nobody waits: nothing happens, and nothing is remembered
    assert not wakeup.waiting
    with trio.move_on_after(10) as scope:
        await wakeup.wait()
    assert scope.cancelled_caught


async def test_on_ring_is_called_by_a_ring_that_lets_the_waiter_go_on() -> None:
    wakeup = Wakeup()
    rang: list[bool] = []
    wakeup.on_ring = lambda: rang.append(wakeup.waiting)
    wakeup.ring()  # nobody waits: no call
    assert rang == []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wakeup.wait)
        await trio.testing.wait_all_tasks_blocked()
        wakeup.ring()
        assert rang == [False]  # at once, in the ring, the waiter no longer counted
        wakeup.ring()
        assert rang == [False]
