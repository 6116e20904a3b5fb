"""Running an attrs field validator so that every bad member is found.

attrs' ``deep_iterable`` and ``deep_mapping`` stop at the first bad member
of a list or table. :func:`validate` looks into them (and into ``and_`` and
``optional``, which may hold them) and validates each member alone; a
failure carries its index or key as a cattrs note, so
:func:`sdk._config.collect_problems` lists each bad item on its own path
(``$.plugins.x.codes[2]: ...``).

attrs keeps these composites in private classes: they are recognised by the
class of a sample, and an ``and_`` whose list is not where this module
looks (a future attrs) is run whole, which is what attrs itself does.

May import: stdlib, attrs, cattrs.
"""

from __future__ import annotations

from typing import Any

import attrs
from cattrs.errors import IterableValidationError, IterableValidationNote

__all__ = ["validate"]


def _noop(*_: Any) -> None:
    return None


# attrs' composite validators, by the class of a sample (their classes are private).
_DEEP_ITERABLE = type(attrs.validators.deep_iterable(_noop))
_DEEP_MAPPING = type(attrs.validators.deep_mapping(_noop, _noop))
_AND = type(attrs.validators.and_(_noop, _noop))
_OPTIONAL = type(attrs.validators.optional(_noop))


def validate(validator: Any, inst: Any, a: attrs.Attribute[Any], value: Any) -> list[Exception]:
    """Run one field's validator; every failure, not only the first.

    attrs' ``deep_iterable`` and ``deep_mapping`` stop at the first bad
    member. Here each member is validated alone and a failure carries its
    index or key (``rules[2]``, ``limits.api``), so every bad item is listed
    with its own path. ``and_`` (a list of validators) and ``optional`` are
    looked into for them; as in attrs, a whole-value check that fails (the
    ``iterable_validator``, a validator listed earlier) ends the field's checks.
    """
    v: Any = validator  # attrs types the composites as plain callables
    kind: type[Any] | None = type(v)
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
    if kind is _DEEP_ITERABLE:
        if v.iterable_validator is not None:
            found = validate(v.iterable_validator, inst, a, value)
            if found:
                return found
        return _members(
            [(i, validate(v.member_validator, inst, a, item)) for i, item in enumerate(value)], a
        )
    if kind is _DEEP_MAPPING:
        if v.mapping_validator is not None:
            found = validate(v.mapping_validator, inst, a, value)
            if found:
                return found
        per_key: list[tuple[Any, list[Exception]]] = []
        for key, item in value.items():
            found = []
            if v.key_validator is not None:
                found = validate(v.key_validator, inst, a, key)
            if not found and v.value_validator is not None:
                found = validate(v.value_validator, inst, a, item)
            per_key.append((key, found))
        return _members(per_key, a)
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
