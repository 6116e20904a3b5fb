"""PassthroughPlugin: its table, name matching, and the hook through sdk.testing.Harness."""

from __future__ import annotations

import re
from typing import Any

import pytest

import sdk
from plugins.builtin.passthrough import (
    PassthroughConfig,
    PassthroughPlugin,
    parse_name,
    parse_upstream,
)
from sdk.testing import Harness

NAMES = {
    "db.example.com": "tls://127.0.0.1:5433",
    "*.internal.example": "tls://10.0.0.9",
    "*.deep.internal.example": "tls://10.0.0.10:8443",
}


def harness(names: dict[str, str] = NAMES) -> Harness:
    return Harness(PassthroughPlugin, config={"names": names})


def client() -> sdk.ClientInfo:
    return sdk.ClientInfo(address="192.0.2.1", port=40000, listener="edge", tls=True)


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("db.example.com", sdk.Origin("tls", "127.0.0.1", 5433)),
        ("DB.Example.COM.", sdk.Origin("tls", "127.0.0.1", 5433)),
        ("a.internal.example", sdk.Origin("tls", "10.0.0.9", 443)),
        ("a.b.internal.example", sdk.Origin("tls", "10.0.0.9", 443)),  # any depth
        ("x.deep.internal.example", sdk.Origin("tls", "10.0.0.10", 8443)),  # longest wins
        ("internal.example", None),  # not the domain itself
        ("badinternal.example", None),  # dot boundary
        ("other.example.com", None),
        ("", None),  # no SNI
    ],
)
async def test_hook_through_the_harness(server_name: str, expected: sdk.Origin | None) -> None:
    got = await harness().call("trellis_tls_passthrough", server_name, client(), firstresult=True)
    assert got == expected


async def test_an_empty_table_relays_nothing() -> None:
    h = Harness(PassthroughPlugin)
    assert await h.call("trellis_tls_passthrough", "db.example.com", client()) == [None]


async def test_http_flows_are_untouched() -> None:
    flow = await harness().run(sdk.testing.make_flow("GET", "http://db.example.com/"))
    assert flow.response is not None
    assert flow.response.status_code == 200


@pytest.mark.parametrize(
    ("names", "where", "message"),
    [
        ({"*.a.*": "tls://h:1"}, '["*.a.*"]', "invalid name '\\*.a.\\*'"),
        ({"db": "https://h:1"}, ".db", "'https://h:1' is not a tls://host\\[:port\\] address"),
        ({"db": "tls://h:1/x"}, ".db", "'tls://h:1/x' has a path"),
        ({"db": "tls://h:0"}, ".db", "port 0 out of range"),
        ({"db": "tls://"}, ".db", "has no host|invalid host"),
        ({"a.b": "tls://h", "A.B.": "tls://i"}, "", "'A.B.' and 'a.b' are the same name"),
    ],
)
def test_bad_tables(names: dict[str, str], where: str, message: str) -> None:
    with pytest.raises(sdk.ConfigError) as info:
        Harness(PassthroughPlugin, config={"names": names})
    (problem,) = info.value.problems
    assert problem.startswith(f"$.plugins.names{where}: ")
    assert re.search(message, problem), problem


def test_every_bad_entry_beside_one_of_the_wrong_type() -> None:
    """The table was checked by one loop, which stopped at the first bad
    entry and did not run at all beside an address of the wrong type (the
    others' problems showed only once it was fixed). Each entry is checked
    alone now, at its own key."""
    with pytest.raises(sdk.ConfigError) as info:
        sdk.structure(
            {"names": {"db": 5, "*.a.*": "tls://h:1", "ok": "tls://h", "web": "http://h"}},
            PassthroughConfig,
            path="$.plugins.passthrough",
        )
    assert info.value.problems == [
        "$.plugins.passthrough.names.db: must be a string, got 5",
        "$.plugins.passthrough.names[\"*.a.*\"]: invalid name '*.a.*': a wildcard is only"
        " allowed as the whole first label ('*.example.com')",
        "$.plugins.passthrough.names.web: 'http://h' is not a tls://host[:port] address",
    ]


def test_parse_helpers() -> None:
    assert parse_name("*.Example.com") == ("example.com", True)
    assert parse_name("db") == ("db", False)
    assert parse_upstream("tls://[::1]:5433") == sdk.Origin("tls", "::1", 5433)
    assert parse_upstream("tls://h/") == sdk.Origin("tls", "h", 443)


def test_unit_select_without_the_kernel() -> None:
    plugin = PassthroughPlugin(PassthroughConfig(names={"*.a": "tls://x:1", "b.a": "tls://y:2"}))
    assert plugin.select("b.a") == sdk.Origin("tls", "y", 2)  # exact beats wildcard
    assert plugin.select("c.a") == sdk.Origin("tls", "x", 1)
    assert plugin.select("a") is None
    assert PassthroughPlugin().select("b.a") is None


def test_config_class_is_declared() -> None:
    cfg: Any = PassthroughPlugin.config_class
    assert cfg is PassthroughConfig
    assert cfg().names == {}
