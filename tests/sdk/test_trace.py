"""sdk.TraceContext: W3C traceparent parsing, new traces and child spans."""

from __future__ import annotations

import pytest

from sdk import TRACE, TraceContext

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_parse_a_valid_header() -> None:
    ctx = TraceContext.parse(VALID, "congo=t61rcWkgMzE")
    assert ctx == TraceContext(
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "", True, "congo=t61rcWkgMzE"
    )
    assert ctx.traceparent == VALID
    assert TraceContext.parse(VALID.replace("-01", "-00")).sampled is False  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # three fields
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        VALID + "-extra",  # version 00 has exactly four fields
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
    ],
)
def test_invalid_headers_are_ignored(header: str | None) -> None:
    assert TraceContext.parse(header) is None


def test_a_future_version_may_carry_more_fields() -> None:
    ctx = TraceContext.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
    assert ctx is not None
    assert ctx.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_bad_tracestate_is_dropped() -> None:
    ctx = TraceContext.parse(VALID, "a=1\r\nb=2")
    assert ctx is not None
    assert ctx.tracestate == ""


def test_child_and_new() -> None:
    parent = TraceContext.parse(VALID, "k=v")
    assert parent is not None
    child = parent.child()
    assert (child.trace_id, child.parent_id, child.tracestate) == (
        parent.trace_id,
        parent.span_id,
        "k=v",
    )
    assert child.span_id != parent.span_id
    assert len(child.span_id) == 16
    fresh = TraceContext.new()
    assert len(fresh.trace_id) == 32
    assert fresh.parent_id == ""
    assert TraceContext.parse(fresh.traceparent) == TraceContext(
        fresh.trace_id, fresh.span_id, "", True, ""
    )
    assert repr(TRACE) == "<StashKey trace>"
