"""A compiled header edit: remove, then set, then add, in one pass over the fields.

Names and values are validated and encoded once (:meth:`HeaderEdit.build`),
so :meth:`HeaderEdit.apply` works on the wire pairs of :attr:`sdk.Headers.fields`
directly, without re-checking them per request.

May import: stdlib, sdk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import final

import sdk

__all__ = ["HeaderEdit"]

Field = tuple[bytes, bytes]


def _wire(name: str, value: str) -> Field:
    # The sdk's own normalisation (lower-cased name, trimmed value), so a field
    # set here is byte-identical to one a plugin sets through the Headers API.
    return sdk.Headers([(name, value)]).fields[0]


@final
class HeaderEdit:
    """What one phase does to a message's header fields."""

    __slots__ = ("to_add", "to_remove", "to_set")

    def __init__(
        self,
        to_remove: Iterable[bytes] = (),
        to_set: Mapping[bytes, bytes] | None = None,
        to_add: Iterable[Field] = (),
    ) -> None:
        #: Lower-case names whose fields are dropped.
        self.to_remove: frozenset[bytes] = frozenset(to_remove)
        #: name -> value; replaces every field of that name by one (at the first one's place).
        self.to_set: dict[bytes, bytes] = dict(to_set or {})
        #: Fields appended, in order.
        self.to_add: tuple[Field, ...] = tuple(to_add)

    @classmethod
    def build(
        cls,
        remove: Iterable[str] = (),
        set_: Mapping[str, str] | None = None,
        add: Mapping[str, str | list[str]] | None = None,
    ) -> HeaderEdit:
        """Compile config values (checked already; raises ``LocalProtocolError`` if not)."""
        set_fields = [_wire(n, v) for n, v in (set_ or {}).items()]
        add_fields = [
            _wire(n, v)
            for n, vs in (add or {}).items()
            for v in ([vs] if isinstance(vs, str) else vs)
        ]
        return cls(
            to_remove=(_wire(n, "")[0] for n in remove),
            to_set=dict(set_fields),
            to_add=add_fields,
        )

    def __bool__(self) -> bool:
        return bool(self.to_remove or self.to_set or self.to_add)

    def __repr__(self) -> str:
        return (
            f"HeaderEdit(to_remove={sorted(self.to_remove)!r}, to_set={self.to_set!r},"
            f" to_add={self.to_add!r})"
        )

    def apply(self, headers: sdk.Headers) -> None:
        """Edit ``headers`` in place: remove, then set, then add."""
        remove, assign = self.to_remove, self.to_set
        if remove or assign:
            out: list[Field] = []
            placed: set[bytes] = set()
            for field in headers.fields:
                name = field[0]
                if name in remove:
                    continue
                value = assign.get(name)
                if value is None:
                    out.append(field)
                elif name not in placed:
                    placed.add(name)
                    out.append((name, value))
            if len(placed) < len(assign):
                out.extend(f for f in assign.items() if f[0] not in placed)
            headers.fields = out
        if self.to_add:
            headers.fields.extend(self.to_add)
