"""Strict scalars, literals, unions and EnvText, through the converter."""

from __future__ import annotations

from typing import Any

import pytest

from sdk._config import EnvText, structure
from tests.sdk.configsample import Sample, problems


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("s", 5, "must be a string, got 5"),
        ("s", True, "must be a string, got true"),
        ("i", True, "must be an integer, got true"),
        ("i", "5", "must be an integer, got '5'"),
        ("i", 2.5, "must be an integer, got 2.5"),
        ("f", False, "must be a number, got false"),
        ("f", "1.5", "must be a number, got '1.5'"),
        ("b", 1, "must be true or false, got 1"),
        ("b", "true", "must be true or false, got 'true'"),
        ("lit", "c", "must be one of 'a', 'b', got 'c'"),
        ("num_lit", True, "must be one of 1, 2, got true"),
        ("num_lit", "1", "must be one of 1, 2, got '1'"),
        ("opt", "x", "must be a number, got 'x'"),
        ("either", "x", "must be an integer or an array, got 'x'"),
        ("names", "a,b", "must be an array, got 'a,b'"),
        ("pair", ["a"], "must be an array of 2 items, got 1"),
        ("table", [1], "must be a table, got [1]"),
        ("inner", 3, "must be a table, got 3"),
    ],
)
def test_scalars_are_strict(key: str, value: Any, message: str) -> None:
    assert problems({key: value}, Sample) == [f"$.{key}: {message}"]


def test_lenient_where_it_is_safe() -> None:
    got = structure(
        {"f": 3, "opt": 2, "either": [1, 2], "pair": ["x", 1], "many": [1, 2], "raw": {"a": [1]}},
        Sample,
    )
    assert got.f == 3.0
    assert type(got.f) is float
    assert got.opt == 2.0
    assert type(got.opt) is float
    assert got.either == [1, 2]
    assert got.pair == ("x", 1)
    assert got.many == (1, 2)
    assert got.raw == {"a": [1]}
    assert structure({"opt": None}, Sample).opt is None


def test_union_reports_inside_the_matching_shape() -> None:
    assert problems({"either": [1, "x"]}, Sample) == ["$.either[1]: must be an integer, got 'x'"]


# ------------------------------------------------------------------ EnvText
def test_env_text_reads_as_the_field_wants() -> None:
    got = structure(
        {
            "s": EnvText("1234"),
            "i": EnvText("5"),
            "f": EnvText("2"),
            "b": EnvText("false"),
            "num_lit": EnvText("2"),
            "lit": EnvText("b"),
        },
        Sample,
    )
    assert (got.s, got.i, got.f, got.b, got.num_lit, got.lit) == ("1234", 5, 2.0, False, 2, "b")
    assert type(got.s) is str
    assert type(got.lit) is str


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("i", "1.5", "must be an integer, got '1.5'"),
        ("i", "true", "must be an integer, got 'true'"),
        ("f", "fast", "must be a number, got 'fast'"),
        ("b", "1", "must be true or false, got '1'"),
        ("i", "5\nx = 1", "must be an integer, got '5\\nx = 1'"),
    ],
)
def test_env_text_that_does_not_fit(key: str, text: str, message: str) -> None:
    assert problems({key: EnvText(text)}, Sample) == [f"$.{key}: {message}"]


def test_env_text_scalar() -> None:
    assert EnvText("0x10").scalar == 16
    assert EnvText("1e3").scalar == 1000.0
    assert EnvText("true").scalar is True
    assert EnvText("h11").scalar is None
    assert EnvText('"5"').scalar is None
