"""HeadersConfig: names and values checked at config time, with their paths."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

import sdk
from plugins.builtin.headers.config import HeadersConfig, check_name, check_value

PATH = "$.plugins.headers"
#: What a bad name or method is told it may hold.
TOKEN = "only letters, digits and !#$%&'*+-.^_`|~"


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
        f"{PATH}.request_remove[0]: 'Content-Length' cannot be changed: the kernel frames"
        " messages itself",
        f"{PATH}.request_set[\"bad name\"]: invalid header name 'bad name' (' ' is not allowed:"
        f" {TOKEN})",
        f"{PATH}.request_add.x-a[1]: invalid header value 'bad\\nvalue' (a control character:"
        " '\\n')",
        f"{PATH}.response_remove: must be an array, got 'server'",
        f"{PATH}.response_set.x-b: invalid header value 'nul\\x00' (a control character: '\\x00')",
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


def test_latin1_and_empty_values_are_fine() -> None:
    check_value("caf\xe9")
    check_value("")


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
        f"{PATH}.response_remove[0]: 'Content-Length' cannot be changed: the kernel frames"
        " messages itself",
        f"{PATH}.response_remove[2]: invalid header name 'bad name' (' ' is not allowed: {TOKEN})",
    ]


def test_every_bad_value_of_an_add_list_is_listed_at_its_own_path() -> None:
    assert problems({"response_add": {"x-a": ["a\nb", "ok", "\u20ac"]}}) == [
        f"{PATH}.response_add.x-a[0]: invalid header value 'a\\nb' (a control character: '\\n')",
        f"{PATH}.response_add.x-a[2]: invalid header value '\u20ac' ('\u20ac' is not ISO-8859-1)",
    ]


def test_a_wrongly_typed_add_value_hides_no_other_items_problem() -> None:
    """A list with an item of the wrong type used to be left unchecked (its
    check ran on the whole list, which does not run on one with a hole):
    ``[2]`` was reported only once ``[1]`` was fixed."""
    assert problems(
        {
            "request_add": {"x-a": ["ok", 5, "bad\x01", "fine", "\u20ac"], "x-b": "a\x02"},
            "response_add": {"x-c": [True, "c\rd"], "x-d": ["ok"], "bad name": ["x", 3]},
        }
    ) == [
        f"{PATH}.request_add.x-a[1]: must be a string, got 5",
        f"{PATH}.request_add.x-a[2]: invalid header value 'bad\\x01' (a control character:"
        " '\\x01')",
        f"{PATH}.request_add.x-a[4]: invalid header value '\u20ac' ('\u20ac' is not ISO-8859-1)",
        f"{PATH}.request_add.x-b: invalid header value 'a\\x02' (a control character: '\\x02')",
        f"{PATH}.response_add.x-c[0]: must be a string, got true",
        f"{PATH}.response_add.x-c[1]: invalid header value 'c\\rd' (a control character: '\\r')",
        f'{PATH}.response_add["bad name"][1]: must be a string, got 3',
        f"{PATH}.response_add[\"bad name\"]: invalid header name 'bad name' (' ' is not allowed:"
        f" {TOKEN})",
    ]


def test_a_single_add_value_is_checked_whole() -> None:
    cfg = sdk.structure(
        {"response_add": {"x-a": "caf\xe9 \tau lait", "x-b": ["", " "]}}, HeadersConfig, path=PATH
    )
    assert cfg.response_add == {"x-a": "caf\xe9 \tau lait", "x-b": ["", " "]}
    assert HeadersConfig(request_add={"x-a": "plain"}).request_add == {"x-a": "plain"}
    with pytest.raises(ValueError, match="invalid header value 'a\\\\x00b'"):
        HeadersConfig(request_add={"x-a": "a\x00b"})
    with pytest.raises(ValueError, match="invalid header value 'b\\\\nc'"):
        HeadersConfig(request_add={"x-a": ["ok", "b\nc"]})


def test_bad_items_are_listed_beside_one_of_the_wrong_type() -> None:
    """A name or an entry of the wrong type used to hide the other items'
    problems until it was fixed: the check looped over the whole list or
    table, which does not run on one with an item missing. Each item is
    checked alone now, at its own path."""
    assert problems(
        {
            "request_remove": ["x-ok", 5, "bad name", "Transfer-Encoding"],
            "request_set": {"x-a": 5, "bad name": "1", "x-b": "a\rb"},
            "response_add": {"x-c": ["ok"], "x-d": 7, "Content-Length": "1"},
        }
    ) == [
        f"{PATH}.request_remove[1]: must be a string, got 5",
        f"{PATH}.request_remove[2]: invalid header name 'bad name' (' ' is not allowed: {TOKEN})",
        f"{PATH}.request_remove[3]: 'Transfer-Encoding' cannot be changed: the kernel frames"
        " messages itself",
        f"{PATH}.request_set.x-a: must be a string, got 5",
        f"{PATH}.request_set[\"bad name\"]: invalid header name 'bad name' (' ' is not allowed:"
        f" {TOKEN})",
        f"{PATH}.request_set.x-b: invalid header value 'a\\rb' (a control character: '\\r')",
        f"{PATH}.response_add.x-d: must be a string or an array, got 7",
        f"{PATH}.response_add.Content-Length: 'Content-Length' cannot be changed: the kernel"
        " frames messages itself",
    ]


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00b", "\u20ac"])
def test_check_value(value: str) -> None:
    with pytest.raises(ValueError, match="invalid header value"):
        check_value(value)
    check_value("caf\xe9")


ROOT = Path(__file__).parents[4]
KERNEL = str(Path(sys.executable).with_name("kernel"))


def test_kernel_check_lists_every_bad_item(tmp_path: Path) -> None:
    """``kernel check`` in a child process, as run by hand: the wrongly
    typed name and the bad one, the wrongly typed value and the bad one,
    an ``*_add`` list's wrongly typed item and its bad one, in one report."""
    path = tmp_path / "c.toml"
    path.write_text(
        """
[kernel]
plugins = ["headers"]
watch_config = false

[[listeners]]
bind = "127.0.0.1:0"

[[routes]]
name = "a"
upstream = "http://127.0.0.1:9"

[plugins.headers]
request_remove = ["cookie", 5, "x y"]
response_set = { "x-a" = 5, "x-b" = "a\\u0000b" }
response_add = { "X-Foo" = ["ok", 5, "a\\u0001b"], "X-Bar" = "c\\u0002" }
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    done = subprocess.run(
        [KERNEL, "check", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].endswith("c.toml: 7 problem(s)"), done.stderr
    assert [line.strip() for line in lines[1:]] == [
        f"{PATH}.request_remove[1]: must be a string, got 5",
        f"{PATH}.request_remove[2]: invalid header name 'x y' (' ' is not allowed: {TOKEN})",
        f"{PATH}.response_set.x-a: must be a string, got 5",
        f"{PATH}.response_set.x-b: invalid header value 'a\\x00b' (a control character: '\\x00')",
        f"{PATH}.response_add.X-Foo[1]: must be a string, got 5",
        f"{PATH}.response_add.X-Foo[2]: invalid header value 'a\\x01b' (a control character:"
        " '\\x01')",
        f"{PATH}.response_add.X-Bar: invalid header value 'c\\x02' (a control character: '\\x02')",
    ]
