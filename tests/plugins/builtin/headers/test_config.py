"""HeadersConfig: names and values checked at config time, with their paths."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

import sdk
from plugins.builtin.headers.config import HeadersConfig, check_field, check_name

PATH = "$.plugins.headers"


def problems(table: dict[str, Any]) -> list[str]:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(table, HeadersConfig, path=PATH)
    return info.value.problems


def test_defaults_are_empty() -> None:
    cfg = HeadersConfig()
    assert cfg.request_set == cfg.response_set == {}
    assert cfg.request_add == cfg.response_add == {}
    assert cfg.request_remove == cfg.response_remove == []


def test_full_table() -> None:
    cfg = sdk.structure(
        {
            "request_remove": ["Cookie"],
            "request_set": {"X-Env": "prod"},
            "request_add": {"Via-Extra": "a", "Link": ["<a>", "<b>"]},
            "response_remove": ["server"],
            "response_set": {"cache-control": "no-store"},
            "response_add": {"set-cookie": ["a=1", "b=2"]},
        },
        HeadersConfig,
        path=PATH,
    )
    assert cfg.request_add == {"Via-Extra": "a", "Link": ["<a>", "<b>"]}


def test_every_problem_with_its_path() -> None:
    assert problems(
        {
            "request_set": {"bad name": "1"},
            "request_add": {"x-a": ["ok", "bad\nvalue"]},
            "request_remove": ["Content-Length"],
            "response_set": {"x-b": "nul\x00"},
            "response_add": {"x-c": 1},
            "response_remove": "server",
            "reqest_set": {},
        }
    ) == [
        f"{PATH}.request_remove: 'Content-Length' cannot be changed: the kernel frames messages"
        " itself",
        f"{PATH}.request_set: invalid header name 'bad name'",
        f"{PATH}.request_add: invalid value for header 'x-a': 'bad\\nvalue' (a control"
        " character or non-Latin-1)",
        f"{PATH}.response_remove: must be an array, got 'server'",
        f"{PATH}.response_set: invalid value for header 'x-b': 'nul\\x00' (a control"
        " character or non-Latin-1)",
        f"{PATH}.response_add.x-c: must be a string or an array, got 1",
        f"{PATH}.reqest_set: unknown key (known: request_remove, request_set, request_add,"
        " response_remove, response_set, response_add)",
    ]


@pytest.mark.parametrize("name", ["x-ok", "X-Mixed_Case", "a!#$%&'*+.^_`|~"])
def test_good_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "invalid header name"),
        ("a b", "invalid header name"),
        ("a:b", "invalid header name"),
        ("é", "invalid header name"),
        ("\u20ac", "invalid header name"),
        ("transfer-encoding", "cannot be changed"),
        ("CONTENT-LENGTH", "cannot be changed"),
    ],
)
def test_bad_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_name(name)


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00b", "\u20ac"])
def test_bad_values(value: str) -> None:
    with pytest.raises(ValueError, match="invalid value for header 'x'"):
        check_field("x", value)


def test_latin1_and_empty_values_are_fine() -> None:
    check_field("x", "caf\xe9")
    check_field("x", "")


# -- the TOML examples in docs/routing-basics.md must stay valid -------------------
DOC = Path(__file__).parents[4] / "docs" / "routing-basics.md"


def doc_tables(plugin: str, config_class: type[Any]) -> list[dict[str, Any]]:
    """Every ``[plugins.<plugin>]`` instance table in the doc's TOML blocks."""
    names = {a.name for a in attrs.fields(config_class)}
    out: list[dict[str, Any]] = []
    for block in re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S):
        table = tomllib.loads(block).get("plugins", {}).get(plugin)
        if table is None:
            continue
        base = {k: v for k, v in table.items() if k in names}
        named = [v for k, v in table.items() if k not in names]
        out.extend([base] if base or not named else [])
        out.extend({**base, **sub} for sub in named)
    return out


def test_doc_examples_structure() -> None:
    tables = doc_tables("headers", HeadersConfig)
    assert len(tables) >= 2
    for table in tables:
        sdk.structure(table, HeadersConfig, path="$.plugins.headers")


def test_every_bad_name_of_a_remove_list_is_listed() -> None:
    assert problems({"response_remove": ["Content-Length", "x-ok", "bad name"]}) == [
        f"{PATH}.response_remove: 'Content-Length' cannot be changed: the kernel frames"
        " messages itself; invalid header name 'bad name'"
    ]
