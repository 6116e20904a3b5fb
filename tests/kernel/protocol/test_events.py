"""The wire events are small immutable values."""

from __future__ import annotations

import attrs
import pytest

from kernel.protocol.events import NEED_DATA, PAUSED, Data, EndOfMessage, RequestHead


def test_events_are_frozen_values() -> None:
    head = RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"a")])
    assert head == RequestHead(method=b"GET", target=b"/", headers=[(b"host", b"a")])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        head.method = b"POST"  # type: ignore[misc]
    assert Data(b"x") != Data(b"y")
    assert EndOfMessage().trailers == []


def test_sentinels_are_named_singletons() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(PAUSED) == "PAUSED"
    assert NEED_DATA is not PAUSED
