"""Paths and messages: where a config value is and what is wrong with it."""

from __future__ import annotations

from typing import Literal

import pytest

from kernel.config.model import Settings
from sdk._config import make_converter
from sdk._problems import (
    collect_problems,
    describe_type,
    format_path,
    format_problems,
    show_value,
)


def test_format_path() -> None:
    assert format_path(()) == "$"
    assert format_path(("routes", 2, "upstream")) == "$.routes[2].upstream"
    assert format_path(("plugins", "a b"), root="$") == '$.plugins["a b"]'
    assert format_path(("x",), root="$.plugins.cache") == "$.plugins.cache.x"
    # A key ending in a newline is quoted, not printed bare across two lines.
    assert format_path(("headers", "x-a\n")) == '$.headers["x-a\\n"]'


def test_format_and_collect_problems_from_a_raw_cattrs_error() -> None:
    conv = make_converter()
    with pytest.raises(Exception) as info:
        conv.structure({"server": {"via": 1}}, Settings)
    assert collect_problems(info.value) == [(("server", "via"), "must be a string, got 1")]
    assert format_problems(info.value, path="$") == ["$.server.via: must be a string, got 1"]


def test_values_and_types_in_toml_words() -> None:
    assert [show_value(v) for v in (True, False, {"a": 1}, "x", 1.5, [1])] == [
        "true",
        "false",
        "a table",
        "'x'",
        "1.5",
        "[1]",
    ]
    assert [
        describe_type(t)
        for t in (str, bool, int, float, list[int], tuple[int, ...], dict[str, int])
    ] == ["a string", "true or false", "an integer", "a number", "an array", "an array", "a table"]
    assert describe_type(Literal["a", "b"]) == "one of 'a', 'b'"
    assert describe_type(int | list[int]) == "an integer or an array"
    assert describe_type(float | None) == "a number"
