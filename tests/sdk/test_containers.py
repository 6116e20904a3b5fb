"""Lists, tables and attrs classes: every item's problem at its own path,
attrs validators field by field, member validators item by item."""

from __future__ import annotations

from typing import Any

import attrs

from sdk._config import structure
from tests.sdk.configsample import Sample, problems


def test_nested_paths() -> None:
    data = {
        "names": ["ok", 1],
        "table": {"a": 1, "b": "2", "with space": True},
        "inner": {"n": "x"},
        "inners": [{}, {"n": 1, "m": 2}],
        "many": [1, "2"],
    }
    assert problems(data, Sample) == [
        "$.names[1]: must be a string, got 1",
        "$.many[1]: must be an integer, got '2'",
        "$.table.b: must be an integer, got '2'",
        '$.table["with space"]: must be an integer, got true',
        "$.inner.n: must be an integer, got 'x'",
        "$.inners[1].m: unknown key (known: n)",
    ]


def test_validators_that_look_at_a_sibling() -> None:
    def below_max(instance: Any, attribute: Any, value: int) -> None:
        if value > instance.hi:
            raise ValueError(f"must be <= hi ({instance.hi}), got {value}")

    @attrs.frozen(kw_only=True)
    class Range:
        lo: int = attrs.field(default=0, validator=below_max)
        hi: int = 10

    assert structure({"lo": 3}, Range) == Range(lo=3)
    assert problems({"lo": 11}, Range) == ["$.lo: must be <= hi (10), got 11"]
    # A broken sibling is reported once; its dependent validator stays quiet.
    assert problems({"lo": 1, "hi": "x"}, Range) == ["$.hi: must be an integer, got 'x'"]


_v = attrs.validators


@attrs.frozen(kw_only=True)
class StatusRule:
    status: int = attrs.field(default=200, validator=_v.in_(range(100, 600)))


@attrs.frozen(kw_only=True)
class ListTable:
    rules: list[StatusRule] = attrs.field(factory=list)
    statuses: list[int] = attrs.field(
        factory=list, validator=[_v.max_len(5), _v.deep_iterable(_v.in_(range(100, 600)))]
    )
    limits: dict[str, int] = attrs.field(
        factory=dict, validator=_v.deep_mapping(_v.matches_re(r"[a-z]+"), _v.ge(0))
    )
    nested: list[list[int]] | None = attrs.field(
        default=None, validator=_v.optional(_v.deep_iterable(_v.deep_iterable(_v.ge(0))))
    )


def test_member_validators_report_every_bad_item_with_its_path() -> None:
    """attrs' deep_iterable and deep_mapping stop at the first bad member:
    items 0 and 2 both bad showed only item 0, at the list's own path."""
    data = {
        "rules": [{"status": 7}, {"status": 200}, {"status": 9}],
        "statuses": [7, 200, 9],
        "limits": {"api": -1, "ok": 1, "B": 2, "web": -2},
        "nested": [[1], [0, -1]],
    }
    assert problems(data, ListTable, path="$.plugins.deny") == [
        "$.plugins.deny.rules[0].status: 'status' must be in range(100, 600) (got 7)",
        "$.plugins.deny.rules[2].status: 'status' must be in range(100, 600) (got 9)",
        "$.plugins.deny.statuses[0]: 'statuses' must be in range(100, 600) (got 7)",
        "$.plugins.deny.statuses[2]: 'statuses' must be in range(100, 600) (got 9)",
        "$.plugins.deny.limits.api: 'limits' must be >= 0: -1",
        "$.plugins.deny.limits.B: 'limits' must match regex '[a-z]+' ('B' doesn't)",
        "$.plugins.deny.limits.web: 'limits' must be >= 0: -2",
        "$.plugins.deny.nested[1][1]: 'nested' must be >= 0: -1",
    ]
    # A whole-value check that fails still ends the field's checks, as in attrs.
    assert problems({"statuses": [7] * 6}, ListTable) == [
        "$.statuses: Length of 'statuses' must be <= 5: 6"
    ]
    assert structure({"statuses": [200], "nested": None}, ListTable) == ListTable(statuses=[200])


def test_items_of_the_right_type_are_checked_beside_one_of_the_wrong_type() -> None:
    """An item that did not structure (a string among integers) used to stop
    the field there: its type error was the only problem listed, and the
    member validators of the other items ran only once it was fixed. Now
    every item's problem is listed, in the list's (or table's) order."""
    data = {
        "statuses": [7, "x", 200, 9],
        "limits": {"api": -1, "ok": "x", "B": 2, "C": "y"},
        "nested": [[1, "x", -1], [-2], "y"],
    }
    assert problems(data, ListTable, path="$.plugins.deny") == [
        "$.plugins.deny.statuses[0]: 'statuses' must be in range(100, 600) (got 7)",
        "$.plugins.deny.statuses[1]: must be an integer, got 'x'",
        "$.plugins.deny.statuses[3]: 'statuses' must be in range(100, 600) (got 9)",
        "$.plugins.deny.limits.api: 'limits' must be >= 0: -1",
        "$.plugins.deny.limits.ok: must be an integer, got 'x'",
        "$.plugins.deny.limits.B: 'limits' must match regex '[a-z]+' ('B' doesn't)",
        # A value of the wrong type under a bad key: both.
        "$.plugins.deny.limits.C: must be an integer, got 'y'",
        "$.plugins.deny.limits.C: 'limits' must match regex '[a-z]+' ('C' doesn't)",
        "$.plugins.deny.nested[0][1]: must be an integer, got 'x'",
        "$.plugins.deny.nested[0][2]: 'nested' must be >= 0: -1",
        "$.plugins.deny.nested[1][0]: 'nested' must be >= 0: -2",
        "$.plugins.deny.nested[2]: must be an array, got 'y'",
    ]
    # A check of the whole list (max_len) waits for every item to structure:
    # on a list with holes it would judge something else than what was written.
    assert problems({"statuses": [200] * 5 + ["x", 7]}, ListTable) == [
        "$.statuses[5]: must be an integer, got 'x'",
        "$.statuses[6]: 'statuses' must be in range(100, 600) (got 7)",
    ]


@attrs.frozen(kw_only=True)
class Looped:
    """A validator that loops over the list itself (no deep_iterable)."""

    names: list[str] = attrs.field(factory=list)

    @names.validator
    def _names(self, a: attrs.Attribute[Any], value: list[str]) -> None:
        for name in value:
            if not name.islower():
                raise ValueError(f"{name!r} is not lower-case")


def test_a_validator_of_the_whole_list_does_not_run_on_one_with_holes() -> None:
    """It would see a shorter list, its indices shifted: the type error alone."""
    assert problems({"names": ["a", 5, "B"]}, Looped) == ["$.names[1]: must be a string, got 5"]
    assert problems({"names": ["a", "B"]}, Looped) == ["$.names: 'B' is not lower-case"]
