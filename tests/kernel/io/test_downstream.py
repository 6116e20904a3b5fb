"""The Downstream interface (kernel/io/downstream.py) and its two carriers."""

from __future__ import annotations

import inspect

import pytest

from kernel.io.connection import Http1Connection
from kernel.io.downstream import Downstream
from kernel.io.h2stream import H2Stream

MEMBERS = [
    name
    for name, value in vars(Downstream).items()
    if not name.startswith("_") and (callable(value) or isinstance(value, property))
]


def test_the_interface_is_what_exchanges_use() -> None:
    assert set(MEMBERS) == {
        "protocol",
        "keep_alive",
        "next_body_event",
        "begin_response",
        "write_body",
        "end_response",
        "flush",
        "send_informational",
        "switch_protocols",
        "retract_response",
        "cut",
        "abandon_request",
    }


@pytest.mark.parametrize("carrier", [Http1Connection, H2Stream])
@pytest.mark.parametrize("name", MEMBERS)
def test_each_carrier_implements_every_member(carrier: type, name: str) -> None:
    assert hasattr(carrier, name), f"{carrier.__name__} lacks {name}"
    ours, theirs = getattr(Downstream, name), getattr(carrier, name)
    if inspect.isfunction(ours):
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs), name
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(theirs).parameters
        ), name


def test_carriers_name_their_protocol() -> None:
    assert Http1Connection.protocol == "1.1"
    assert H2Stream.protocol == "2"
