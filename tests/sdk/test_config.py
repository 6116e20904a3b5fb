"""The strict converter: scalar strictness, paths, every problem at once, round trips."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

import attrs
import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.config.model import (
    KernelSection,
    PluginPolicy,
    RouteConfig,
    ServerSection,
    Settings,
    UpstreamSection,
)
from sdk._config import (
    EnvText,
    collect_problems,
    format_path,
    format_problems,
    make_converter,
    structure,
    unstructure,
)
from sdk._errors import ConfigError


def problems(data: Any, cls: type[Any] = Settings, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        structure(data, cls, **kw)
    return info.value.problems


@attrs.frozen(kw_only=True)
class Inner:
    n: int = 0


@attrs.frozen(kw_only=True)
class Sample:
    """Every shape a plugin's config class might use."""

    s: str = ""
    i: int = 0
    f: float = 0.0
    b: bool = False
    lit: Literal["a", "b"] = "a"
    num_lit: Literal[1, 2] = 1
    opt: float | None = None
    either: int | list[int] = 0
    names: list[str] = attrs.field(factory=list)
    pair: tuple[str, int] = ("", 0)
    many: tuple[int, ...] = ()
    table: dict[str, int] = attrs.field(factory=dict)
    inner: Inner = attrs.field(factory=Inner)
    inners: list[Inner] = attrs.field(factory=list)
    raw: Any = None


# ------------------------------------------------------------------ scalars
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


def test_union_reports_inside_the_matching_shape() -> None:
    assert problems({"either": [1, "x"]}, Sample) == ["$.either[1]: must be an integer, got 'x'"]


# ------------------------------------------------------------ the kernel model
def test_unknown_keys_at_every_level() -> None:
    data = {
        "nope": 1,
        "kernel": {"plugin": [], "policy": {"router": {"deadline": 1}}},
        "server": {"htt1": "h11"},
        "upstream": {"timeout": 1},
        "listeners": [{"name": "a", "port": 1}],
        "routes": [{"name": "r", "upsteam": "http://x"}],
    }
    known_server = ", ".join(a.name for a in attrs.fields(ServerSection))
    got = problems(data)
    assert got == [
        "$.kernel.policy.router.deadline: unknown key (known: deadline_s, on_error)",
        "$.kernel.plugin: unknown key (known: "
        + ", ".join(a.name for a in attrs.fields(KernelSection))
        + ")",
        f"$.server.htt1: unknown key (known: {known_server})",
        "$.upstream.timeout: unknown key (known: "
        + ", ".join(a.name for a in attrs.fields(UpstreamSection))
        + ")",
        "$.listeners[0].port: unknown key (known: name, bind, plugins, http1,"
        " request_head_timeout_s, keepalive_timeout_s, http2, default_route, tls)",
        "$.routes[0].upsteam: unknown key (known: name, plugins, upstream, group,"
        " connect_timeout_s, response_timeout_s, max_body_bytes, websocket, transport)",
        "$.nope: unknown key (known: kernel, server, upstream, listeners, routes, groups, plugins)",
    ]
    assert got[2].startswith("$.server.htt1: unknown key (known: http1, request_head_timeout_s, ")


def test_every_problem_at_once_with_validator_messages() -> None:
    data = {
        "kernel": {"log_level": "loud"},
        "server": {"max_body_bytes": -1},
        "listeners": [{"bind": "nowhere"}],
        "routes": [{"upstream": "ftp://x"}],
    }
    assert problems(data) == [
        "$.kernel.log_level: must be one of 'debug', 'info', 'warning', 'error', got 'loud'",
        "$.server.max_body_bytes: must be >= 0, got -1",
        "$.listeners[0].bind: 'nowhere' is not HOST:PORT",
        "$.routes[0].name: required",
        "$.routes[0].upstream: 'ftp://x' is not an http(s)://host[:port][/path] URL",
    ]


def test_path_prefix() -> None:
    assert problems({"connect_timeout_s": 0}, UpstreamSection, path="$.upstream") == [
        "$.upstream.connect_timeout_s: must be > 0, got 0.0"
    ]


def test_root_must_be_a_table() -> None:
    assert problems([1]) == ["$: must be a table, got [1]"]


def test_tomlkit_document_structures() -> None:
    doc = tomlkit.parse(
        "[server]\nmax_body_bytes = 5\nx_forwarded = false\nrequest_head_timeout_s = 3\n"
        '[kernel.policy.r]\ndeadline_s = 1.5\n[[routes]]\nname = "a"\n'
        "[plugins.x]\ny = [1, {a = 2}]\n"
    )
    s = structure(doc, Settings)
    assert s.server.max_body_bytes == 5
    assert type(s.server.max_body_bytes) is int
    assert s.server.x_forwarded is False
    assert s.server.request_head_timeout_s == 3.0
    assert s.kernel.policy == {"r": PluginPolicy(deadline_s=1.5)}
    assert s.routes == [RouteConfig(name="a")]
    assert s.plugins == {"x": {"y": [1, {"a": 2}]}}
    assert type(s.plugins["x"]) is dict
    assert type(s.plugins["x"]["y"][0]) is int
    assert type(s.routes[0].name) is str


def test_tomlkit_items_rejected_like_plain_values() -> None:
    doc = tomlkit.parse("[server]\nmax_body_bytes = true\nvia = 1\n")
    assert problems(doc) == [
        "$.server.max_body_bytes: must be an integer, got true",
        "$.server.via: must be a string, got 1",
    ]


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


# ------------------------------------------------------------------ helpers
def test_format_path() -> None:
    assert format_path(()) == "$"
    assert format_path(("routes", 2, "upstream")) == "$.routes[2].upstream"
    assert format_path(("plugins", "a b"), root="$") == '$.plugins["a b"]'
    assert format_path(("x",), root="$.plugins.cache") == "$.plugins.cache.x"


def test_format_and_collect_problems_from_a_raw_cattrs_error() -> None:
    conv = make_converter()
    with pytest.raises(Exception) as info:
        conv.structure({"server": {"via": 1}}, Settings)
    assert collect_problems(info.value) == [(("server", "via"), "must be a string, got 1")]
    assert format_problems(info.value, path="$") == ["$.server.via: must be a string, got 1"]


def test_unstructure() -> None:
    s = Settings(routes=[RouteConfig(name="a")])
    raw = unstructure(s)
    assert raw["routes"] == [
        {
            "name": "a",
            "plugins": [],
            "upstream": "",
            "group": "",
            "connect_timeout_s": None,
            "response_timeout_s": None,
            "max_body_bytes": None,
            "websocket": False,
            "transport": None,
        }
    ]
    assert structure({k: v for k, v in raw.items() if k != "routes"}, Settings) == Settings()
    with pytest.raises(TypeError):
        unstructure({"a": 1})


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


# --------------------------------------------------------------- hypothesis
_pos_float = st.floats(min_value=0.001, max_value=1e6, allow_nan=False) | st.integers(1, 10**6)
_pos_int = st.integers(min_value=1, max_value=2**40)
_cidr = st.builds(
    lambda addr, bits: str(ipaddress.ip_network(f"{addr}/{bits}", strict=False)),
    st.ip_addresses(v=4),
    st.integers(0, 32),
)
_codec = st.sampled_from(["auto", "h11", "httptools"])

_server = st.fixed_dictionaries(
    {},
    optional={
        "http1": _codec,
        "request_head_timeout_s": _pos_float,
        "keepalive_timeout_s": _pos_float,
        "body_timeout_s": _pos_float,
        "max_request_line": _pos_int,
        "max_header_bytes": _pos_int,
        "max_header_count": _pos_int,
        "max_body_bytes": st.integers(0, 2**40),
        "trusted_proxies": st.lists(_cidr, max_size=3),
        "x_forwarded": st.booleans(),
        "forwarded": st.booleans(),
        "via": st.from_regex(r"[a-z0-9.-]{0,10}", fullmatch=True),
    },
)
_upstream = st.fixed_dictionaries(
    {},
    optional={
        "connect_timeout_s": _pos_float,
        "response_timeout_s": _pos_float,
        "read_timeout_s": _pos_float,
        "max_idle_per_host": st.integers(0, 1000),
        "idle_timeout_s": _pos_float,
        "http1": _codec,
    },
)


@settings(max_examples=60, deadline=None)
@given(server=_server, upstream=_upstream)
def test_round_trip(server: dict[str, Any], upstream: dict[str, Any]) -> None:
    s = structure({"server": server, "upstream": upstream}, Settings)
    raw = unstructure(s)
    assert raw["server"] == unstructure(ServerSection()) | server
    assert raw["upstream"] == unstructure(UpstreamSection()) | upstream
    assert structure(raw, Settings) == s


_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(["", "x", "5"])
_value = _scalar | st.lists(_scalar, max_size=2)
_keys = st.sampled_from(["http1", "max_body_bytes", "name", "bind", "plugins", "policy", "zzz"])
_table = st.dictionaries(_keys, _value | st.dictionaries(_keys, _value, max_size=2), max_size=4)
_sections = st.dictionaries(
    st.sampled_from(["kernel", "server", "upstream", "listeners", "routes", "plugins", "x"]),
    _value | _table | st.lists(_table, max_size=2),
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(_sections)
def test_garbage_in_config_error_out(data: dict[str, Any]) -> None:
    problems: list[str] = []
    try:
        structure(data, Settings)
    except ConfigError as exc:  # the only exception bad data may raise
        problems = exc.problems or ["<no problems listed>"]
    assert all(p.startswith("$") for p in problems)
