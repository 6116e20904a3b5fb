"""sdk._stash: typed per-flow storage (L7)."""

from __future__ import annotations

import re

import pytest

import sdk
import sdk._stash
from sdk import Stash, StashKey

COUNT = StashKey[int]("count")
NAME = StashKey[str]("name")


def test_set_get_contains_len() -> None:
    s = Stash()
    assert len(s) == 0
    assert COUNT not in s
    s[COUNT] = 3
    s[NAME] = "x"
    assert s[COUNT] == 3
    assert s[NAME] == "x"
    assert COUNT in s
    assert len(s) == 2
    s[COUNT] = 4
    assert s[COUNT] == 4
    assert len(s) == 2


def test_missing_key_raises_keyerror() -> None:
    with pytest.raises(KeyError):
        Stash()[COUNT]


def test_get_with_default() -> None:
    s = Stash()
    assert s.get(COUNT, None) is None
    assert s.get(COUNT, -1) == -1
    s[COUNT] = 0
    assert s.get(COUNT, -1) == 0  # a falsy value is still a value


def test_setdefault() -> None:
    s = Stash()
    assert s.setdefault(COUNT, 1) == 1
    assert s.setdefault(COUNT, 2) == 1
    assert s[COUNT] == 1


def test_delete() -> None:
    s = Stash()
    s[COUNT] = 1
    del s[COUNT]
    assert COUNT not in s
    assert len(s) == 0
    with pytest.raises(KeyError):
        del s[COUNT]


def test_keys_with_the_same_name_are_different() -> None:
    a, b = StashKey[int]("same"), StashKey[int]("same")
    s = Stash()
    s[a] = 1
    assert b not in s
    s[b] = 2
    assert (s[a], s[b]) == (1, 2)
    assert len(s) == 2


def test_strings_are_not_keys() -> None:
    s = Stash()
    s[NAME] = "v"
    assert "name" not in s
    with pytest.raises(KeyError):
        s["name"]  # type: ignore[index]


def test_stashes_are_independent() -> None:
    a, b = Stash(), Stash()
    a[COUNT] = 1
    assert COUNT not in b


def test_repr() -> None:
    assert repr(COUNT) == "<StashKey count>"
    assert re.fullmatch(r"<StashKey 0x[0-9a-f]+>", repr(StashKey[int]()))


def test_shared_key_auth_user() -> None:
    s = Stash()
    s[sdk.AUTH_USER] = "alice"
    assert s[sdk.AUTH_USER] == "alice"
    assert sdk.AUTH_USER is sdk._stash.AUTH_USER


def test_no_attribute_sprawl() -> None:
    with pytest.raises(AttributeError):
        Stash().anything = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        COUNT.other = 1  # type: ignore[attr-defined]
