"""sdk/_validators.py: every bad member of a list or table, each with its index or key."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from cattrs.errors import IterableValidationError

from sdk._validators import REFUSED, Holey, one_or_many, validate


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


def test_a_holey_value_gets_its_members_checked_and_nothing_else() -> None:
    """What did structure of a list or table with holes: the member
    validators run on it, at each member's own index or key; checks of the
    whole value (a plain validator, the iterable or mapping validator) do not."""
    a = attrs.fields(_T).codes
    holey = Holey(((0, 1), (2, 300), (3, 4)), mapping=False, order=(0, 1, 2, 3))
    assert _where(validate(a.validator, None, a, holey)) == [0, 3]
    whole = attrs.validators.deep_iterable(_at_least_100, attrs.validators.max_len(1))
    assert _where(validate(whole, None, a, holey)) == [0, 3]
    assert validate(attrs.validators.max_len(1), None, a, holey) == []
    assert validate(attrs.validators.and_(attrs.validators.max_len(1), a.validator), None, a, holey)
    # A table: a key is checked even where its value did not structure.
    table = Holey(
        (("a", ("a", 1)), ("B", ("B", REFUSED)), ("c", ("c", 200))),
        mapping=True,
        order=("a", "B", "c"),
    )
    mapping = attrs.validators.deep_mapping(attrs.validators.matches_re("[a-z]"), _at_least_100)
    assert _where(validate(mapping, None, a, table)) == ["a", "B"]
    # Holes inside a member: checked the same way, one level down.
    nested = Holey(((0, holey),), mapping=False, order=(0,))
    (outer,) = validate(attrs.validators.deep_iterable(a.validator), None, a, nested)
    assert isinstance(outer, IterableValidationError)


@attrs.define
class _OneOrMany:
    code: int | list[int] = attrs.field(default=100, validator=one_or_many(_at_least_100))


def test_one_or_many_checks_a_single_value_whole_and_a_list_item_by_item() -> None:
    a = attrs.fields(_OneOrMany).code
    # One value: its own failure, at the setting's path (no index).
    (only,) = validate(a.validator, None, a, 5)
    assert isinstance(only, ValueError)
    assert str(only) == "must be >= 100, got 5"
    assert validate(a.validator, None, a, 500) == []
    # A list (or tuple): every bad item, each at its index.
    assert _where(validate(a.validator, None, a, [1, 200, 3])) == [0, 2]
    assert _where(validate(a.validator, None, a, (1,))) == [0]
    assert validate(a.validator, None, a, []) == []
    # A list with holes: the items that structured, each at its own index.
    holey = Holey(((0, 1), (2, 300), (3, 4)), mapping=False, order=(0, 1, 2, 3))
    assert _where(validate(a.validator, None, a, holey)) == [0, 3]


def test_one_or_many_called_by_attrs_raises_for_the_first_bad_value() -> None:
    assert _OneOrMany(code=[100, 200]).code == [100, 200]
    assert _OneOrMany(code=150).code == 150
    with pytest.raises(ValueError, match=r"^must be >= 100, got 7$"):
        _OneOrMany(code=[100, 7, 8])
    with pytest.raises(ValueError, match=r"^must be >= 100, got 9$"):
        _OneOrMany(code=9)
    assert "one_or_many" in repr(attrs.fields(_OneOrMany).code.validator)


def test_one_or_many_never_looks_inside_a_single_string() -> None:
    seen: list[Any] = []
    checker = one_or_many(lambda _i, _a, value: seen.append(value))
    a = attrs.fields(_OneOrMany).code
    assert validate(checker, None, a, "abc") == []
    assert validate(checker, None, a, ["de", "f"]) == []
    checker(None, a, "gh")
    assert seen == ["abc", "de", "f", "gh"]
