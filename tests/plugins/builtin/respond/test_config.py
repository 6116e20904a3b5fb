"""RespondConfig: status range, body-less statuses, header checks, with paths."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

import sdk
from plugins.builtin.respond.config import NO_BODY, RespondConfig

PATH = "$.plugins.respond"
#: What a bad name or method is told it may hold.
TOKEN = "only letters, digits and !#$%&'*+-.^_`|~"


def problems(table: dict[str, Any]) -> list[str]:
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(table, RespondConfig, path=PATH)
    return info.value.problems


def test_defaults() -> None:
    cfg = sdk.structure({}, RespondConfig)
    assert cfg == RespondConfig()
    assert (cfg.status, cfg.content_type, cfg.body, cfg.headers) == (
        200,
        "text/plain; charset=utf-8",
        "",
        {},
    )


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"status": 99}, "status: must be between 200 and 599 (a final status), got 99"),
        ({"status": 100}, "status: must be between 200 and 599 (a final status), got 100"),
        ({"status": 199}, "status: must be between 200 and 599 (a final status), got 199"),
        ({"status": 600}, "status: must be between 200 and 599 (a final status), got 600"),
        ({"status": "200"}, "status: must be an integer, got '200'"),
        ({"status": 204, "body": "x"}, "body: must be empty: a 204 response has no body"),
        ({"status": 304, "body": "x"}, "body: must be empty: a 304 response has no body"),
        ({"content_type": "text/plain\r\nx: y"}, "content_type: invalid header value"),
        (
            {"headers": {"bad name": "1"}},
            f"headers[\"bad name\"]: invalid header name 'bad name' (' ' is not allowed: {TOKEN})",
        ),
        ({"headers": {"x": "a\nb"}}, "headers.x: invalid header value"),
        ({"headers": {"x": "\u20ac"}}, "headers.x: invalid header value '\u20ac'"),
        (
            {"headers": {"Content-Type": "a/b"}},
            "headers.Content-Type: 'Content-Type' cannot be set here: use",
        ),
        (
            {"headers": {"content-length": "1"}},
            "headers.content-length: 'content-length' cannot be set here: the",
        ),
        ({"code": 200}, "code: unknown key (known: status, content_type, body, headers)"),
    ],
)
def test_problems(table: dict[str, Any], expected: str) -> None:
    (problem,) = problems(table)
    assert problem.startswith(f"{PATH}.{expected}")


def test_every_bad_header_beside_one_of_the_wrong_type() -> None:
    """The fields were checked by one loop, which stopped at the first bad
    one and did not run at all beside a value of the wrong type (the others'
    problems showed only once it was fixed). Each entry is checked alone
    now, at its own key."""
    assert problems(
        {"headers": {"x-a": 5, "bad name": "1", "x-b": "a\r\nb", "ok": "1", "Content-Type": "t"}}
    ) == [
        f"{PATH}.headers.x-a: must be a string, got 5",
        f"{PATH}.headers[\"bad name\"]: invalid header name 'bad name' (' ' is not allowed:"
        f" {TOKEN})",
        f"{PATH}.headers.x-b: invalid header value 'a\\r\\nb' (a control character: '\\r')",
        f"{PATH}.headers.Content-Type: 'Content-Type' cannot be set here: use the"
        " 'content_type' key",
    ]


def test_no_body_statuses() -> None:
    assert {204, 304} == NO_BODY
    assert not {200, 205, 404, 503} & NO_BODY


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
    tables = doc_tables("respond", RespondConfig)
    assert len(tables) >= 3
    for table in tables:
        sdk.structure(table, RespondConfig, path="$.plugins.respond")
