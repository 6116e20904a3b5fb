"""Typed per-flow storage: ``flow.stash[KEY]`` instead of string-keyed dicts.

A plugin keeps private per-flow state under a module-level ``StashKey[T]()``;
values that plugins share are published as keys in :mod:`sdk` (pytest's
``Stash``, as opposed to mitmproxy's ``flow.metadata["..."]``).

May import: stdlib.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast, final

__all__ = ["AUTH_USER", "Stash", "StashKey"]

T = TypeVar("T")
D = TypeVar("D")


@final
class StashKey(Generic[T]):
    """A key for :class:`Stash`; identity, not name, is what matters.

    ``name`` only shows up in reprs and logs.
    """

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<StashKey {self.name or hex(id(self))}>"


@final
class Stash:
    """A mapping from :class:`StashKey` ``[T]`` to values of type ``T``."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], object] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._data[key])

    def get(self, key: StashKey[T], default: D) -> T | D:
        try:
            return self[key]
        except KeyError:
            return default

    def setdefault(self, key: StashKey[T], default: T) -> T:
        try:
            return self[key]
        except KeyError:
            self[key] = default
            return default

    def __delitem__(self, key: StashKey[T]) -> None:
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


#: The authenticated user name, set by auth plugins, read by logs and policies.
AUTH_USER: StashKey[str] = StashKey("auth_user")
