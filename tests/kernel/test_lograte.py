"""The repeat limiter for per-request log lines (kernel/lograte.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from kernel import lograte
from kernel.log import _Context as log_context
from kernel.lograte import RepeatLimiter
from tests.conftest import basic_config
from tests.helpers.sockets import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_burst_passes_then_the_rest_is_counted() -> None:
    clock = Clock()
    lim = RepeatLimiter(burst=3, window_s=10, clock=clock)
    verdicts = [lim.hit("k") for _ in range(8)]
    assert [emit for emit, _ in verdicts] == [True] * 3 + [False] * 5
    assert all(due == [] for _, due in verdicts)
    clock.now += 9.9
    assert lim.hit("k") == (False, [])  # still the same window
    clock.now += 0.1
    assert lim.hit("k") == (True, [("k", 6)])  # a new window, with the count
    clock.now += 10
    assert lim.hit("k") == (True, [])  # nothing was dropped in that one


def test_keys_are_counted_apart() -> None:
    clock = Clock()
    lim = RepeatLimiter(burst=1, window_s=10, clock=clock)
    assert lim.hit("a") == (True, [])
    assert lim.hit("b") == (True, [])
    assert lim.hit("a") == (False, [])
    clock.now += 10
    assert lim.hit("b") == (True, [])
    assert lim.hit("a") == (True, [("a", 1)])


def test_keys_are_bounded_and_an_evicted_count_is_reported() -> None:
    clock = Clock()
    lim = RepeatLimiter(burst=1, window_s=10, max_keys=3, clock=clock)
    for _ in range(4):
        lim.hit("old")
    clock.now += 1
    lim.hit("b")
    lim.hit("c")
    assert lim.hit("d") == (True, [("old", 3)])  # the oldest window goes
    assert len(lim) == 3
    for i in range(100):
        lim.hit(i)
    assert len(lim) == 3


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RepeatLimiter(burst=0)
    with pytest.raises(ValueError):
        RepeatLimiter(window_s=0)


def test_log_writes_the_summary_first_on_the_owning_logger(caplog: Any) -> None:
    clock = Clock()
    lim = RepeatLimiter(burst=2, window_s=10, max_keys=1, clock=clock)
    a, b = logging.getLogger("test.lograte.a"), logging.getLogger("test.lograte.b")
    with caplog.at_level(logging.INFO, logger="test.lograte"):
        for i in range(5):
            lograte.log(a, logging.WARNING, ("r", "Err"), "line %d", i, limiter=lim)
        clock.now += 10
        lograte.log(a, logging.WARNING, ("r", "Err"), "line %d", 5, limiter=lim)
        for _ in range(3):
            lograte.log(b, logging.INFO, "x", "other", limiter=lim)  # evicts a's key
    got = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [
        ("test.lograte.a", logging.WARNING, "line 0"),
        ("test.lograte.a", logging.WARNING, "line 1"),
        ("test.lograte.a", logging.WARNING, "... and 3 more like it in the last 10s (r Err)"),
        ("test.lograte.a", logging.WARNING, "line 5"),
        ("test.lograte.b", logging.INFO, "other"),
        ("test.lograte.b", logging.INFO, "other"),
    ]


def test_a_disabled_level_is_not_counted(caplog: Any) -> None:
    lim = RepeatLimiter(burst=1, clock=Clock())
    quiet = logging.getLogger("test.lograte.quiet")
    with caplog.at_level(logging.ERROR, logger="test.lograte.quiet"):
        lograte.log(quiet, logging.WARNING, "k", "dropped", limiter=lim)
    assert len(lim) == 0


async def test_a_dead_upstream_logs_a_burst_and_then_one_summary(
    start_proxy: Any, client: Any, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(lograte, "LIMITER", RepeatLimiter(clock=clock))
    app = await start_proxy(basic_config(free_port()))  # nothing listens there
    request = b"GET /dead HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    # The process's handler stamps the flow id (kernel/log.py): so does caplog's here.
    caplog.handler.addFilter(log_context(None))
    with caplog.at_level(logging.WARNING, logger="kernel"):
        for _ in range(200):
            (resp,) = client.parse_responses(await client.exchange(app.port(), request))
            assert resp["status"] == 502
        lines = [r for r in caplog.records if "GET /dead" in r.getMessage()]
        assert len(lines) == lograte.BURST
        assert all(r.flow_id for r in lines)  # type: ignore[attr-defined]
        clock.now += lograte.WINDOW_S  # the window ends; the next failure reports
        (resp,) = client.parse_responses(await client.exchange(app.port(), request))
    summaries = [r for r in caplog.records if "more like it" in r.getMessage()]
    assert len(summaries) == 1
    (summary,) = summaries
    assert summary.getMessage() == (
        "... and 190 more like it in the last 10s (default UpstreamConnectError)"
    )
    assert summary.flow_id  # type: ignore[attr-defined]
    assert summary.levelno == logging.WARNING
    assert len([r for r in caplog.records if "GET /dead" in r.getMessage()]) == lograte.BURST + 1


# -------------------------------------------- summaries when the window ends
def test_flush_reports_ended_windows_and_announces_the_next() -> None:
    clock = Clock()
    told: list[float] = []
    lim = RepeatLimiter(burst=2, window_s=10, clock=clock, on_pending=told.append)
    for _ in range(2):
        lim.hit("a")
    assert (told, lim.pending) == ([], 0)  # nothing dropped, nothing to arm
    clock.now += 4
    for _ in range(5):
        lim.hit("b")  # window 1004..1014, 3 dropped
    assert (told, lim.pending) == ([10.0], 1)  # told once, at the first drop
    clock.now += 1
    lim.hit("a")  # a's first drop: due at 1010
    assert told == [10.0, 5.0]
    assert lim.flush() == []  # nothing due yet: the earliest is announced again
    assert told[-1] == 5.0
    clock.now += 5
    assert lim.flush() == [("a", 1)]
    assert told[-1] == 4.0  # b is left
    clock.now += 4
    assert lim.flush() == [("b", 3)]
    assert (lim.pending, len(lim)) == (0, 0)
    assert len(told) == 4  # nothing left: nothing announced
    assert lim.hit("b") == (True, [])  # a new window, the count already reported


def test_a_summary_is_reported_once() -> None:
    clock = Clock()
    lim = RepeatLimiter(burst=1, window_s=10, clock=clock)
    lim.hit("k")
    lim.hit("k")
    clock.now += 10
    assert lim.hit("k") == (True, [("k", 1)])  # the next occurrence came first
    assert lim.flush() == []
    assert lim.pending == 0


async def test_a_summary_comes_out_when_its_window_ends(
    caplog: Any, autojump_clock: trio.abc.Clock
) -> None:
    lim = lograte.process_limiter(burst=1, window_s=10, clock=trio.current_time)
    timer = lim.on_pending
    assert isinstance(timer, lograte.SummaryTimer)
    log = logging.getLogger("test.lograte.timed")
    start = trio.current_time()
    caplog.handler.addFilter(log_context(None))
    with caplog.at_level(logging.INFO, logger="test.lograte"):
        lograte.log(log, logging.WARNING, "a", "a line", limiter=lim)
        await trio.sleep(5)
        lograte.log(log, logging.INFO, "b", "b line", limiter=lim)
        assert not timer.armed  # nothing is pending: nothing waits
        await trio.sleep(1)
        lograte.log(log, logging.INFO, "b", "b line", limiter=lim)  # due at 15
        assert timer.armed
        await trio.sleep(1)
        for _ in range(3):
            lograte.log(log, logging.WARNING, "a", "a line", limiter=lim)  # due at 10
        await trio.sleep_until(start + 10.01)
        got = [(r.levelno, r.getMessage(), r.flow_id) for r in caplog.records]  # type: ignore[attr-defined]
        assert got[-1] == (logging.WARNING, "... and 3 more like it in the last 10s (a)", "")
        assert timer.armed  # for b
        await trio.sleep_until(start + 15.01)
        got = [(r.levelno, r.getMessage()) for r in caplog.records]
        assert got[-1] == (logging.INFO, "... and 1 more like it in the last 10s (b)")
        assert not timer.armed  # nothing left: no task, no more wake-ups
        assert lim.pending == 0
        await trio.sleep(100)
    assert len(caplog.records) == 4


def test_outside_a_trio_run_nothing_is_armed(caplog: Any) -> None:
    clock = Clock()
    lim = lograte.process_limiter(burst=1, clock=clock)
    log = logging.getLogger("test.lograte.sync")
    with caplog.at_level(logging.INFO, logger="test.lograte"):
        for _ in range(3):
            lograte.log(log, logging.INFO, "k", "line", limiter=lim)
        assert isinstance(lim.on_pending, lograte.SummaryTimer)
        assert not lim.on_pending.armed
        clock.now += lograte.WINDOW_S
        assert lograte.flush(lim) == 1  # what the timer would call
    assert [r.getMessage() for r in caplog.records] == [
        "line",
        "... and 2 more like it in the last 10s (k)",
    ]


async def test_a_dead_upstream_that_stops_being_used_still_gets_its_summary(
    start_proxy: Any, client: Any, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = 1.0
    monkeypatch.setattr(lograte, "LIMITER", lograte.process_limiter(window_s=window))
    app = await start_proxy(basic_config(free_port()))  # nothing listens there
    request = b"GET /dead HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    with caplog.at_level(logging.WARNING, logger="kernel"):
        sent = 0
        start = trio.current_time()
        while sent < 30 and trio.current_time() - start < window * 0.8:
            (resp,) = client.parse_responses(await client.exchange(app.port(), request))
            assert resp["status"] == 502
            sent += 1
        assert sent > lograte.BURST
        # No more requests: the window ends, and the summary comes anyway.
        await trio.sleep(window + 0.3)
    summaries = [r.getMessage() for r in caplog.records if "more like it" in r.getMessage()]
    assert summaries == [
        f"... and {sent - lograte.BURST} more like it in the last {window:g}s"
        " (default UpstreamConnectError)"
    ]
