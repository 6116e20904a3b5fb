"""The queue and the writer: batching, overflow accounting, failures, shutdown, reloads, metrics."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import trio

from plugins.builtin.trafficlog import writer
from plugins.builtin.trafficlog.record import Record
from plugins.builtin.trafficlog.writer import Pipeline
from tests.plugins.builtin.trafficlog.support import (
    wait_for,
)


class ListSink:
    """Keeps every batch; fails the writes listed in ``fail`` (by call number, from 1)."""

    label = "list"

    def __init__(self, fail: tuple[int, ...] = ()) -> None:
        self.batches: list[list[Record]] = []
        self.calls = 0
        self.fail = fail
        self.opened = self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def write(self, records: list[Record]) -> None:
        self.calls += 1
        if self.calls in self.fail:
            raise OSError(28, "No space left on device")
        self.batches.append(list(records))

    def close(self) -> None:
        self.closed += 1

    @property
    def ids(self) -> list[Any]:
        return [r["id"] for b in self.batches for r in b]


def recs(n: int, start: int = 0) -> list[Record]:
    return [{"id": i} for i in range(start, start + n)]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "_BACKOFF_FIRST_S", 0.01)


# ---------------------------------------------------------------- pipeline
async def test_batches_fill_up_to_batch_then_flush_on_the_interval(nursery: trio.Nursery) -> None:
    sink = ListSink()
    p = Pipeline("k", sink, capacity=100, batch=4, flush_interval_s=0.2)
    nursery.start_soon(p.run)
    for r in recs(10):
        assert p.put(r)
    await wait_for(lambda: p.written == 8)
    assert [len(b) for b in sink.batches] == [4, 4]
    start = trio.current_time()
    await wait_for(lambda: p.written == 10)
    assert trio.current_time() - start > 0.1  # the last two waited for the interval
    assert sink.ids == list(range(10))
    assert (sink.opened, p.dropped, p.queued) == (1, 0, 0)


async def test_overflow_drops_and_counts_exactly(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ListSink()
    gate = threading.Event()
    write = sink.write

    def stuck_write(records: list[Record]) -> None:
        gate.wait(10)
        write(records)

    sink.write = stuck_write  # type: ignore[method-assign]
    p = Pipeline("k", sink, capacity=5, batch=2, flush_interval_s=0.001)
    nursery.start_soon(p.run)
    p.put({"id": 0})
    await wait_for(lambda: p.queued == 0)  # the writer holds record 0, stuck
    accepted = [p.put(r) for r in recs(99, start=1)]
    assert accepted == [True] * 5 + [False] * 94
    assert (p.dropped, p.queued) == (94, 5)
    gate.set()
    await wait_for(lambda: p.written == 6)
    assert sink.ids == list(range(6))
    assert p.written + p.dropped == 100
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["traffic log (list): 1 record(s) dropped (queue full), 1 in total"]


async def test_drop_warnings_are_rate_limited_and_carry_the_count(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(writer, "WARN_EVERY_S", 0.05)
    p = Pipeline("k", ListSink(), capacity=1)
    p.put({"id": 0})
    for i in range(4):
        assert not p.put({"id": i})
    await trio.sleep(0.06)
    assert not p.put({"id": 9})
    p.close(wait=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "traffic log (list): 1 record(s) dropped (queue full), 1 in total",
        "traffic log (list): 4 record(s) dropped (queue full), 5 in total",
    ]


async def test_a_failed_write_is_counted_and_the_writer_goes_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ListSink(fail=(1,))
    p = Pipeline("k", sink, capacity=100, batch=3, flush_interval_s=0.001)
    nursery.start_soon(p.run)
    for r in recs(3):
        p.put(r)
    await wait_for(lambda: p.failed_batches == 1)
    for r in recs(3, start=3):
        p.put(r)
    await wait_for(lambda: p.written == 3)
    assert sink.ids == [3, 4, 5]
    assert p.dropped == 3
    assert "writing 3 records failed, they are dropped: OSError(28" in caplog.text


async def test_close_writes_what_is_queued() -> None:
    sink = ListSink()
    p = Pipeline("k", sink, capacity=100, batch=4)
    for r in recs(10):
        p.put(r)
    p.close(wait=True)
    assert sink.ids == list(range(10))
    assert [len(b) for b in sink.batches] == [4, 4, 2]
    assert (p.written, sink.closed, p.closed) == (10, 1, True)
    assert not p.put({"id": 99})
    assert p.dropped == 1


async def test_close_after_a_failure_drops_the_rest() -> None:
    sink = ListSink(fail=(2,))
    p = Pipeline("k", sink, capacity=100, batch=2)
    for r in recs(7):
        p.put(r)
    p.close(wait=True)
    assert sink.ids == [0, 1]
    assert (p.written, p.dropped, sink.calls, sink.closed) == (2, 5, 2, 1)


async def test_close_in_a_thread() -> None:
    sink = ListSink()
    p = Pipeline("k", sink, capacity=100, batch=4)
    for r in recs(5):
        p.put(r)
    p.close(wait=False)
    p.join(5)
    assert sink.ids == list(range(5))
    assert sink.closed == 1


async def test_registry_counts_holders() -> None:
    sinks: list[ListSink] = []

    def make() -> ListSink:
        sinks.append(ListSink())
        return sinks[-1]

    a = writer.acquire(("list", "x"), make, capacity=10, batch=2, flush_interval_s=1.0)
    b = writer.acquire(("list", "x"), make, capacity=20, batch=3, flush_interval_s=0.5)
    assert a is b
    assert len(sinks) == 1
    assert (a.holders, a.capacity, a.batch, a.flush_interval_s) == (2, 20, 3, 0.5)
    a.put({"id": 1})
    writer.release(a, wait=True)
    assert sinks[0].closed == 0
    assert writer.pipelines()[("list", "x")] is a
    writer.release(b, wait=True)
    assert (sinks[0].closed, sinks[0].ids) == (1, [1])
    assert ("list", "x") not in writer.pipelines()
    c = writer.acquire(("list", "x"), make, capacity=10, batch=2, flush_interval_s=1.0)
    assert c is not a
    writer.release(c, wait=True)


async def test_the_last_writes_at_shutdown_leave_the_event_loop_free() -> None:
    """``release_async`` (the process is stopping): the final drain runs in a
    thread; the loop goes on meanwhile, and a cancelled caller still awaits it."""

    class SlowSink(ListSink):
        def __init__(self) -> None:
            super().__init__()
            self.gate = threading.Event()

        def write(self, records: list[Record]) -> None:
            assert self.gate.wait(5)  # a database another worker holds
            super().write(records)

    sink = SlowSink()
    p = writer.acquire(("slow", "x"), lambda: sink, capacity=100, batch=4, flush_interval_s=1.0)
    for r in recs(6):
        p.put(r)
    ticks = 0
    done = trio.Event()

    async def last_holder() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()  # as the retired generation's writer task is
            await writer.release_async(p)
        done.set()

    async with trio.open_nursery() as n:
        n.start_soon(last_holder)
        while ticks < 5:
            await trio.sleep(0.01)
            ticks += 1
        assert not done.is_set()
        sink.gate.set()
    assert done.is_set()
    assert sink.ids == list(range(6))
    assert (p.closed, sink.closed, p.written) == (True, 1, 6)
    assert ("slow", "x") not in writer.pipelines()
