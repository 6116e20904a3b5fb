"""kernel/protocol/httpdate.py: the Date of the responses the proxy sends."""

from __future__ import annotations

import email.utils
import time

import pytest

from kernel.protocol import httpdate
from kernel.protocol.events import ResponseHead


def test_now_is_an_imf_fixdate_of_the_current_second() -> None:
    before = int(time.time())
    value = httpdate.now()
    after = int(time.time())
    assert value.endswith(b" GMT")
    assert len(value) == 29  # "Sun, 06 Nov 1994 08:49:37 GMT"
    moment = email.utils.parsedate_to_datetime(value.decode()).timestamp()
    assert before <= moment <= after


def test_the_value_is_formatted_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [784111777.2]
    monkeypatch.setattr(httpdate, "_clock", lambda: clock[0])
    first = httpdate.now()
    assert first == b"Sun, 06 Nov 1994 08:49:37 GMT"  # RFC 9110's own example
    clock[0] = 784111777.9
    assert httpdate.now() is first
    clock[0] = 784111778.0
    assert httpdate.now() == b"Sun, 06 Nov 1994 08:49:38 GMT"


def test_with_date_keeps_a_date_that_is_there_and_adds_one_that_is_not() -> None:
    dated = [(b"content-length", b"2"), (b"date", b"Sun, 06 Nov 1994 08:49:37 GMT")]
    assert httpdate.with_date(dated) is dated
    bare = [(b"content-length", b"2")]
    out = httpdate.with_date(bare)
    assert bare == [(b"content-length", b"2")]  # not changed in place
    assert out[:1] == bare
    assert out[1][0] == b"date"
    assert [name for name, _ in httpdate.with_date([])] == [b"date"]


def test_dated_copies_a_head_only_when_it_lacks_a_date() -> None:
    with_one = ResponseHead(200, [(b"date", b"Sun, 06 Nov 1994 08:49:37 GMT")], b"OK")
    assert httpdate.dated(with_one) is with_one
    without = ResponseHead(404, [(b"content-length", b"0")], b"Not Found", b"1.0", False)
    out = httpdate.dated(without)
    assert (out.status_code, out.reason, out.http_version, out.keep_alive) == (
        404,
        b"Not Found",
        b"1.0",
        False,
    )
    assert [name for name, _ in out.headers] == [b"content-length", b"date"]
