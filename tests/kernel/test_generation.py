"""Building a generation: validation across settings and plugins, compiled chains."""

from __future__ import annotations

import pytest

import sdk
from kernel.config.model import (
    KernelSection,
    ListenerConfig,
    PluginPolicy,
    RouteConfig,
    Settings,
)
from kernel.generation import build_generation


class Tag:
    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        return None


def test_without_routes_there_is_one_implicit_route() -> None:
    gen = build_generation(Settings())
    assert list(gen.routes) == ["default"]
    assert gen.routes["default"].upstream is None
    assert gen.listeners["main"].default_route == "default"


def test_route_upstream_is_split_into_origin_and_base_path() -> None:
    gen = build_generation(Settings(routes=[RouteConfig(name="r", upstream="http://h:81/base/")]))
    route = gen.routes["r"]
    assert route.upstream == sdk.Origin("http", "h", 81)
    assert route.base_path == "/base"


def test_route_overrides_inherit_the_rest() -> None:
    settings = Settings(routes=[RouteConfig(name="r", response_timeout_s=2.0, max_body_bytes=10)])
    route = build_generation(settings).routes["r"]
    assert route.response_timeout_s == 2.0
    assert route.connect_timeout_s == settings.upstream.connect_timeout_s
    assert route.max_body_bytes == 10


def test_problems_from_every_layer_are_collected() -> None:
    settings = Settings(
        kernel=KernelSection(plugins=["ghost"], policy={"nobody": PluginPolicy(deadline_s=1.0)}),
        listeners=[ListenerConfig(default_route="missing")],
        routes=[RouteConfig(name="r")],
    )
    with pytest.raises(sdk.ConfigError) as info:
        build_generation(settings)
    problems = info.value.problems
    assert any(p.startswith("$.kernel.plugins[0]: unknown plugin 'ghost'") for p in problems)
    assert "$.kernel.policy.nobody: no plugin instance 'nobody' in any chain" in problems
    assert "$.listeners[0].default_route: no route named 'missing'" in problems


def test_chains_are_global_then_listener_then_route_and_explained() -> None:
    settings = Settings(
        kernel=KernelSection(plugins=["g"]),
        listeners=[ListenerConfig(plugins=["l"])],
        routes=[RouteConfig(name="a", plugins=["r", "g"]), RouteConfig(name="b")],
    )
    gen = build_generation(settings, extra_plugins={"g": Tag(), "l": Tag(), "r": Tag()})
    assert gen.pre_route["main"].names == ("g", "l")
    assert gen.chains[("main", "a")].names == ("g", "l", "r")
    assert [i.instance for i in gen.chains[("main", "a")].response] == ["g", "l", "r"]
    assert gen.chains[("main", "b")].names == ("g", "l")
    text = gen.explain()
    assert "route a (default): upstream (none)" in text
    assert "chain: g -> l -> r" in text
    assert "response: g, l, r" in text


def test_config_check_problems_get_the_table_path() -> None:
    class Picky:
        @sdk.hookimpl
        def trellis_config_check(self, routes: tuple[str, ...]) -> list[str]:
            return [f"routes are {list(routes)}"]

    settings = Settings(kernel=KernelSection(plugins=["picky"]), routes=[RouteConfig(name="a")])
    with pytest.raises(sdk.ConfigError) as info:
        build_generation(settings, extra_plugins={"picky": Picky()})
    assert info.value.problems == ["$.plugins.picky.routes are ['a']"]


def test_reference_counting_retires_after_the_last_flow() -> None:
    gen = build_generation(Settings())
    gen.acquire()
    gen.retire()
    assert not gen.idle.is_set()
    gen.release()
    assert gen.idle.is_set()


def test_codec_body_limit_is_the_largest_any_route_allows() -> None:
    from kernel.config.model import ServerSection

    tight = Settings(server=ServerSection(max_body_bytes=10), routes=[RouteConfig(name="a")])
    assert build_generation(tight).listeners["main"].limits.max_body_bytes == 10
    looser = Settings(
        server=ServerSection(max_body_bytes=10),
        routes=[RouteConfig(name="a"), RouteConfig(name="big", max_body_bytes=100)],
    )
    gen = build_generation(looser)
    assert gen.listeners["main"].limits.max_body_bytes == 100
    assert gen.routes["a"].max_body_bytes == 10
    unlimited = Settings(
        server=ServerSection(max_body_bytes=10),
        routes=[RouteConfig(name="a"), RouteConfig(name="any", max_body_bytes=0)],
    )
    assert build_generation(unlimited).listeners["main"].limits.max_body_bytes == 0
