"""The HTTP/2 vocabulary: the preface helper, H2Limits, RateBudget, the events."""

from __future__ import annotations

import attrs
import pytest

from kernel.protocol.events import RequestHead
from kernel.protocol.h2_common import (
    H2_PREFACE,
    ConnectionEnding,
    H2Limits,
    RateBudget,
    StreamData,
    StreamEnd,
    StreamRequest,
    looks_like_h2_preface,
)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"", None),
        (b"P", None),
        (H2_PREFACE[:-1], None),
        (H2_PREFACE, True),
        (H2_PREFACE + b"\x00\x00\x12\x04", True),
        (b"GET / HTTP/1.1\r\n", False),
        (b"PRI * HTTP/1.1\r\n", False),
        (b"\x16\x03\x01", False),  # a TLS ClientHello
    ],
)
def test_looks_like_h2_preface(prefix: bytes, expected: bool | None) -> None:
    assert looks_like_h2_preface(prefix) is expected


def test_preface_constant() -> None:
    assert H2_PREFACE == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_limits_defaults() -> None:
    lim = H2Limits()
    assert (lim.max_concurrent_streams, lim.max_header_list_size, lim.header_table_size) == (
        100,
        65536,
        4096,
    )
    assert (lim.initial_window_size, lim.connection_window, lim.max_frame_size) == (
        65535,
        1 << 20,
        16384,
    )
    assert (lim.reset_budget, lim.control_budget, lim.empty_data_budget) == (200, 1000, 100)
    assert lim.budget_window_s == 10.0
    assert lim.max_continuation_frames == 16
    assert lim.max_outbound_buffer == 256 * 1024


@pytest.mark.parametrize(
    "bad",
    [
        {"max_frame_size": 16383},
        {"max_frame_size": 1 << 24},
        {"connection_window": 65534},
        {"initial_window_size": 2**31},
        {"initial_window_size": 0},
        {"max_concurrent_streams": 0},
        {"reset_budget": 0},
        {"budget_window_s": 0.0},
        {"header_table_size": -1},
    ],
)
def test_limits_refuse_values_http2_cannot_carry(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        H2Limits(**bad)  # type: ignore[arg-type]


def test_rate_budget_burst_then_refill() -> None:
    budget = RateBudget(3, 10.0)  # 3 per 10 s: 0.3 tokens a second
    assert [budget.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not budget.take(3.0)  # 0.9 tokens
    assert budget.take(3.4)  # 1.02
    assert not budget.take(3.4)
    assert not budget.take(1.0)  # time going backwards refills nothing
    assert [budget.take(1000.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_events_are_frozen_and_slotted() -> None:
    head = RequestHead(b"GET", b"/", [(b"host", b"a")], http_version=b"2")
    event = StreamRequest(1, head, b"https", b"a", True)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.stream_id = 3  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    assert StreamEnd(1) == StreamEnd(1, [])
    assert StreamData(1, b"x", 10).flow_length == 10
    assert ConnectionEnding(0, "bye", 7).remote is False
