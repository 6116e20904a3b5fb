"""sdk/_validators.py: every bad member of a list or table, each with its index or key."""

from __future__ import annotations

from typing import Any

import attrs
from cattrs.errors import IterableValidationError

from sdk._validators import validate


def _at_least_100(_: object, a: attrs.Attribute[Any], value: int) -> None:
    if value < 100:
        raise ValueError(f"must be >= 100, got {value}")


@attrs.define
class _T:
    codes: list[int] = attrs.field(
        factory=list, validator=attrs.validators.deep_iterable(_at_least_100)
    )


def _where(found: list[Exception]) -> list[Any]:
    (outer,) = found
    assert isinstance(outer, IterableValidationError)
    return [err.__notes__[-1].index for err in outer.exceptions]


def test_every_bad_member_of_a_list_with_its_index() -> None:
    a = attrs.fields(_T).codes
    assert _where(validate(a.validator, None, a, [1, 200, 3])) == [0, 2]
    assert validate(a.validator, None, a, [100, 200]) == []


def test_inside_optional_and_and() -> None:
    a = attrs.fields(_T).codes
    composite = attrs.validators.optional(
        attrs.validators.and_(attrs.validators.instance_of(list), a.validator)
    )
    assert _where(validate(composite, None, a, [5, 500, 6])) == [0, 2]
    assert validate(composite, None, a, None) == []
    # A whole-value check that fails ends the field's checks, as in attrs.
    (only,) = validate(composite, None, a, (5,))
    assert isinstance(only, TypeError)


def test_every_bad_value_of_a_table_with_its_key() -> None:
    a = attrs.fields(_T).codes
    mapping = attrs.validators.deep_mapping(attrs.validators.instance_of(str), _at_least_100)
    assert _where(validate(mapping, None, a, {"a": 1, "b": 300, "c": 2})) == ["a", "c"]
