"""``[[groups]]`` tables: values checked with their paths; names resolved in the generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.config import loads_config
from kernel.config.groups import split_urls
from kernel.generation import build_generation
from sdk import ConfigError


def problems_of(tmp_path: Path, text: str) -> list[str]:
    settings = loads_config(text, base_dir=tmp_path, environ={}).settings
    with pytest.raises(ConfigError) as info:
        build_generation(settings)
    return info.value.problems


def test_split_urls() -> None:
    assert split_urls("http://a:1, http://b:2\nhttp://c:3,,") == [
        "http://a:1",
        "http://b:2",
        "http://c:3",
    ]
    assert split_urls("") == []


def test_a_full_group_loads(tmp_path: Path) -> None:
    text = """
[[routes]]
name = "r"
group = "app"

[[groups]]
name = "app"
strategy = "weighted"
urls = "http://127.0.0.1:9001, http://127.0.0.1:9002/base"
when_none_available = "panic"
[[groups.targets]]
name = "big"
url = "https://10.0.0.1:8443"
weight = 3
[groups.targets.transport]
response_timeout_s = 1.5
[groups.health]
path = "/healthz"
expect = [200, 204]
interval_s = 1
[groups.passive]
failures = 2
cooldown_s = 5
[groups.sticky]
cookie = "app_srv"
max_age_s = 3600
"""
    settings = loads_config(text, base_dir=tmp_path, environ={}).settings
    gen = build_generation(settings)
    group = gen.groups["app"]
    assert [t.name for t in group.targets] == ["big", "127.0.0.1:9001", "127.0.0.1:9002"]
    assert [t.weight for t in group.targets] == [3.0, 1.0, 1.0]
    assert group.targets[2].base_path == "/base"
    assert group.config.health is not None
    assert group.config.health.expect == [200, 204]
    # The target's transport overrides the route's and [upstream]'s, for that target only.
    route = gen.routes["r"]
    assert route.response_timeout_s == 30.0
    per_target = route.per_target["app"]
    assert [r.response_timeout_s for r in per_target] == [1.5, 30.0, 30.0]
    assert per_target[0].client_tls is not None  # https target: a client context
    assert per_target[1].client_tls is None


def test_every_problem_with_its_path(tmp_path: Path) -> None:
    text = """
[[routes]]
name = "a"
group = "nope"

[[routes]]
name = "b"
group = "app"
upstream = "http://127.0.0.1:1"

[[groups]]
name = "app"
strategy = "no-such-strategy"
urls = "http://127.0.0.1:1"

[[groups]]
name = "empty"

[[groups]]
name = "twice"
urls = "http://127.0.0.1:1 http://127.0.0.1:1"

[[groups]]
name = "notlb"
strategy = "respond"
urls = "http://127.0.0.1:1"

[[groups]]
name = "app"
urls = "http://127.0.0.1:2"
"""
    found = problems_of(tmp_path, text)
    expected = [
        "$.routes[0].group: no group named 'nope'",
        "$.routes[1]: set either upstream or group, not both",
        "$.groups[0].strategy: unknown plugin 'no-such-strategy'",
        "$.groups[1].targets: a group needs at least one target",
        "$.groups[2].urls: target name '127.0.0.1:1' is used twice",
        "$.groups[3].strategy: plugin instance 'respond' does not implement trellis_balancer",
        "$.groups[4].name: a group named 'app' is defined twice",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in found), (prefix, found)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[[groups]]\nname = "g"\nurls = "ftp://x"', "$.groups[0].urls"),
        ('[[groups]]\nname = "g"\n[[groups.targets]]\nurl = "x"', "$.groups[0].targets[0].url"),
        (
            '[[groups]]\nname = "g"\n[[groups.targets]]\nurl = "http://a:1"\nweight = -1',
            "$.groups[0].targets[0].weight",
        ),
        (
            '[[groups]]\nname = "g"\nurls = "http://a:1"\n[groups.health]\npath = "health"',
            "$.groups[0].health.path",
        ),
        (
            '[[groups]]\nname = "g"\nurls = "http://a:1"\n[groups.health]\nexpect = [999]',
            "$.groups[0].health.expect",
        ),
        (
            '[[groups]]\nname = "g"\nurls = "http://a:1"\n[groups.sticky]\ncookie = "a b"',
            "$.groups[0].sticky.cookie",
        ),
        (
            '[[groups]]\nname = "g"\nurls = "http://a:1"\nwhen_none_available = "maybe"',
            "$.groups[0].when_none_available",
        ),
        (
            '[[groups]]\nname = "g"\n[[groups.targets]]\nurl = "http://a:1"\n'
            "[groups.targets.transport.retry]\nattempts = 2",
            "$.groups[0].targets[0]",
        ),
        ('[[groups]]\nname = "g"\nurls = "http://a:1"\nbogus = 1', "$.groups[0].bogus"),
    ],
)
def test_bad_values_are_refused_with_their_path(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_config(table, base_dir=tmp_path, environ={})
    assert any(p.startswith(message) for p in info.value.problems), info.value.problems


def test_urls_come_from_the_environment(tmp_path: Path) -> None:
    text = '[[groups]]\nname = "g"\nurls = "${UPS:-http://127.0.0.1:9001}"\n'
    env = {"UPS": "http://127.0.0.1:7001,http://127.0.0.1:7002"}
    settings = loads_config(text, base_dir=tmp_path, environ=env).settings
    assert split_urls(settings.groups[0].urls) == ["http://127.0.0.1:7001", "http://127.0.0.1:7002"]
