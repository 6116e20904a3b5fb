"""HeaderEdit: remove, then set, then add; order and duplicates as documented."""

from __future__ import annotations

import pytest

import sdk
from plugins.builtin.headers.edit import HeaderEdit


def fields(*pairs: tuple[str, str]) -> sdk.Headers:
    return sdk.Headers(pairs)


def test_empty_edit_changes_nothing() -> None:
    edit = HeaderEdit.build()
    assert not edit
    h = fields(("a", "1"), ("b", "2"))
    edit.apply(h)
    assert list(h.items()) == [("a", "1"), ("b", "2")]


def test_remove_drops_every_field_of_the_name() -> None:
    h = fields(("a", "1"), ("Cookie", "x"), ("b", "2"), ("cookie", "y"))
    HeaderEdit.build(remove=["COOKIE", "absent"]).apply(h)
    assert list(h.items()) == [("a", "1"), ("b", "2")]


def test_set_replaces_at_the_first_place_and_appends_when_absent() -> None:
    h = fields(("a", "1"), ("x", "old1"), ("b", "2"), ("X", "old2"))
    HeaderEdit.build(set_={"X": "new", "y": "added"}).apply(h)
    assert list(h.items()) == [("a", "1"), ("x", "new"), ("b", "2"), ("y", "added")]


def test_add_appends_in_order_and_keeps_existing() -> None:
    h = fields(("set-cookie", "a=0"))
    HeaderEdit.build(add={"Set-Cookie": ["a=1", "b=2"], "x": "1"}).apply(h)
    assert h.get_all("set-cookie") == ["a=0", "a=1", "b=2"]
    assert list(h)[-1] == "x"


def test_order_is_remove_then_set_then_add() -> None:
    h = fields(("x", "client"), ("keep", "1"))
    HeaderEdit.build(remove=["x"], set_={"x": "set"}, add={"x": "added"}).apply(h)
    # Removed first, so "set" finds nothing to replace and appends; "add" comes after.
    assert list(h.items()) == [("keep", "1"), ("x", "set"), ("x", "added")]


def test_values_are_normalised_like_the_sdk_does() -> None:
    edit = HeaderEdit.build(set_={"X-A": "  padded\t"})
    h = sdk.Headers()
    edit.apply(h)
    assert h.fields == [(b"x-a", b"padded")]
    assert h == sdk.Headers([("x-a", "padded")])


def test_build_rejects_what_config_would() -> None:
    with pytest.raises(sdk.LocalProtocolError):
        HeaderEdit.build(set_={"x": "a\r\nb"})


def test_apply_on_from_wire_headers_and_repr() -> None:
    wire = [(b"host", b"h"), (b"x", b"1")]
    h = sdk.Headers.from_wire(wire)
    edit = HeaderEdit.build(remove=["x"], add={"y": "2"})
    edit.apply(h)
    assert h.fields == [(b"host", b"h"), (b"y", b"2")]
    assert "to_remove=[b'x']" in repr(edit)
