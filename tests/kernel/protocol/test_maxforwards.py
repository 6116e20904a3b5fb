"""kernel/protocol/maxforwards.py: reading Max-Forwards, and a TRACE's reflection."""

from __future__ import annotations

import pytest

from kernel.protocol.maxforwards import METHODS, SECRET_FIELDS, hops_left, trace_body


def test_only_trace_and_options_count_hops() -> None:
    assert {"TRACE", "OPTIONS"} == METHODS


@pytest.mark.parametrize(("values", "hops"), [([], None), (["0"], 0), (["7"], 7), (["010"], 10)])
def test_hops_left(values: list[str], hops: int | None) -> None:
    assert hops_left(values) == hops


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["1", "1"], "more than one Max-Forwards field"),
        ([""], "a number of hops, got ''"),
        (["-1"], "a number of hops, got '-1'"),
        (["+1"], "a number of hops"),
        (["1, 2"], "a number of hops"),
        (["1 "], "a number of hops"),
        (["\u0663"], "a number of hops"),  # ARABIC-INDIC DIGIT THREE: a digit, not ASCII
        (["1" * 11], "a number of hops"),
    ],
)
def test_hops_left_refuses_what_is_not_one_number(values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        hops_left(values)


def test_trace_body_is_the_request_less_its_secrets() -> None:
    fields = [
        (b"host", b"a.test"),
        (b"authorization", b"Bearer t"),
        (b"x-a", b"1"),
        (b"cookie", b"s=1"),
        (b"proxy-authorization", b"Basic eA=="),
        (b"max-forwards", b"0"),
    ]
    assert trace_body(b"TRACE", b"/p?q", b"1.1", fields) == (
        b"TRACE /p?q HTTP/1.1\r\nhost: a.test\r\nx-a: 1\r\nmax-forwards: 0\r\n\r\n"
    )
    assert {b"authorization", b"proxy-authorization", b"cookie"} == SECRET_FIELDS


def test_an_http2_request_is_written_with_a_message_http_version() -> None:
    assert trace_body(b"TRACE", b"/", b"2", []) == b"TRACE / HTTP/2.0\r\n\r\n"
    assert trace_body(b"TRACE", b"/", b"1.0", []) == b"TRACE / HTTP/1.0\r\n\r\n"
