"""Running an attrs field validator so that every bad member is found.

attrs' ``deep_iterable`` and ``deep_mapping`` stop at the first bad member
of a list or table. :func:`validate` looks into them (and into ``and_`` and
``optional``, which may hold them) and validates each member alone; a
failure carries its index or key as a cattrs note, so
:func:`sdk._problems.collect_problems` lists each bad item on its own path
(``$.plugins.x.codes[2]: ...``).

A list or table some of whose items did not even structure (a ``5`` among
strings) reaches the validators as a :class:`Holey`: the items that did,
at their own index or key. Their member validators still run, so a bad
type at ``[1]`` and a bad value at ``[2]`` are listed together; checks of
the whole value (a plain validator, ``max_len``, the ``iterable_validator``)
are not run on a value with holes in it.

A setting that takes one value or a list of them (``add = "a"`` or
``add = ["a", "b"]``) validates with :func:`one_or_many`: the value itself
when it is one, each item at its own index when it is a list.

attrs keeps these composites in private classes: they are recognised by the
class of a sample, and an ``and_`` whose list is not where this module
looks (a future attrs) is run whole, which is what attrs itself does.

May import: stdlib, attrs, cattrs.
"""

from __future__ import annotations

from typing import Any

import attrs
from cattrs.errors import IterableValidationError, IterableValidationNote

__all__ = ["REFUSED", "Holey", "OneOrMany", "one_or_many", "validate"]


def _noop(*_: Any) -> None:
    return None


# attrs' composite validators, by the class of a sample (their classes are private).
_DEEP_ITERABLE = type(attrs.validators.deep_iterable(_noop))
_DEEP_MAPPING = type(attrs.validators.deep_mapping(_noop, _noop))
_AND = type(attrs.validators.and_(_noop, _noop))
_OPTIONAL = type(attrs.validators.optional(_noop))


class _Refused:
    """The value of a table entry that did not structure (its key did)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REFUSED"


#: Stands in a :class:`Holey` table for a value that did not structure: its
#: key is still checked, the value is not.
REFUSED: Any = _Refused()


@attrs.frozen
class Holey:
    """A list or table of values that did not structure whole: what did.

    ``members``: for a list, ``(index, item)``; for a table (``mapping``),
    ``(key as written, (key, value))``, the value :data:`REFUSED` when only
    the key structured. An item that is itself a list or table with holes is
    a :class:`Holey` too. ``order``: every index or key as written, in order
    (for listing the problems in the document's order).
    """

    members: tuple[tuple[Any, Any], ...]
    mapping: bool
    order: tuple[Any, ...]


@attrs.frozen(repr=False)
class OneOrMany:
    """The validator :func:`one_or_many` makes (recognised by :func:`validate`)."""

    member_validator: Any

    def __call__(self, inst: Any, a: attrs.Attribute[Any], value: Any) -> None:
        # Called by attrs itself (a class made in code): the first failure raises.
        if isinstance(value, list | tuple):
            for item in value:
                self.member_validator(inst, a, item)
        else:
            self.member_validator(inst, a, value)

    def __repr__(self) -> str:
        return f"<one_or_many validator for {self.member_validator!r}>"


def one_or_many(member_validator: Any) -> OneOrMany:
    """A validator for a setting that is one value or a list of values.

    ``member_validator`` checks one value: the setting's own when it is a
    single value (a problem at the setting's path), each item's when it is
    a list (a problem at the item's index, every bad item listed, also
    beside an item of the wrong type). A list is any ``list`` or ``tuple``:
    give the setting a type such as ``str | list[str]``.
    """
    return OneOrMany(member_validator)


def validate(validator: Any, inst: Any, a: attrs.Attribute[Any], value: Any) -> list[Exception]:
    """Run one field's validator; every failure, not only the first.

    attrs' ``deep_iterable`` and ``deep_mapping`` stop at the first bad
    member. Here each member is validated alone and a failure carries its
    index or key (``rules[2]``, ``limits.api``), so every bad item is listed
    with its own path. ``and_`` (a list of validators) and ``optional`` are
    looked into for them; as in attrs, a whole-value check that fails (the
    ``iterable_validator``, a validator listed earlier) ends the field's checks.

    ``value`` may be a :class:`Holey`: then only member validators run, on
    the members it has; every check of the whole value is skipped (it
    would judge a value with items missing).
    """
    v: Any = validator  # attrs types the composites as plain callables
    kind: type[Any] | None = type(v)
    holey = isinstance(value, Holey)
    if kind is _AND and not hasattr(v, "_validators"):
        kind = None  # an attrs whose and_ keeps its list elsewhere: run it whole
    if kind is _AND:
        for each in v._validators:
            found = validate(each, inst, a, value)
            if found:
                return found
        return []
    if kind is _OPTIONAL:
        return [] if value is None else validate(v.validator, inst, a, value)
    if kind is OneOrMany and not (holey or isinstance(value, list | tuple)):
        return validate(v.member_validator, inst, a, value)
    if kind is _DEEP_ITERABLE or kind is OneOrMany:
        if holey:
            if value.mapping:
                return []  # a table's keys, as attrs would iterate them: not all there
            items: Any = value.members
        else:
            if kind is _DEEP_ITERABLE and v.iterable_validator is not None:
                found = validate(v.iterable_validator, inst, a, value)
                if found:
                    return found
            items = enumerate(value)
        return _members([(i, validate(v.member_validator, inst, a, item)) for i, item in items], a)
    if kind is _DEEP_MAPPING:
        if holey:
            if not value.mapping:
                return []
            entries: Any = ((where, k, item) for where, (k, item) in value.members)
        else:
            if v.mapping_validator is not None:
                found = validate(v.mapping_validator, inst, a, value)
                if found:
                    return found
            entries = ((key, key, item) for key, item in value.items())
        per_key: list[tuple[Any, list[Exception]]] = []
        for where, key, item in entries:
            found = []
            if v.key_validator is not None:
                found = validate(v.key_validator, inst, a, key)
            if not found and v.value_validator is not None and item is not REFUSED:
                found = validate(v.value_validator, inst, a, item)
            per_key.append((where, found))
        return _members(per_key, a)
    if holey:
        return []  # a check of the whole value: not on one with holes
    try:
        v(inst, a, value)
    except (ValueError, TypeError) as exc:
        return [exc]
    return []


def _members(found: list[tuple[Any, list[Exception]]], a: attrs.Attribute[Any]) -> list[Exception]:
    """Member failures as one error whose parts carry their index or key."""
    errors: list[Exception] = []
    for where, excs in found:
        if excs:
            err = IterableValidationError(f"member {where!r} of {a.name}", excs, object)
            err.add_note(IterableValidationNote(f"validating {a.name} @ {where!r}", where, object))
            errors.append(err)
    if not errors:
        return []
    return [IterableValidationError(f"While validating {a.name}", errors, object)]
