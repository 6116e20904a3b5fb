"""The repeat limiter for per-request log lines (kernel/lograte.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

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
