"""Building a generation: validation across settings and plugins, compiled chains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

import sdk
from kernel.config.model import (
    KernelSection,
    ListenerConfig,
    PluginPolicy,
    RouteConfig,
    Settings,
)
from kernel.explain import explain
from kernel.generation import build_generation
from kernel.pluginhost import PluginInfo


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


def test_a_plugins_policy_covers_its_named_instances() -> None:
    # [kernel.policy.headers] with only "headers.x" in a chain is no mistake.
    settings = Settings(
        kernel=KernelSection(
            plugins=["headers.x"], policy={"headers": PluginPolicy(deadline_s=1.0)}
        ),
        plugins={"headers": {"x": {}}},
    )
    gen = build_generation(settings)
    (impl,) = gen.pre_route["main"].request
    assert (impl.instance, impl.deadline) == ("headers.x", 1.0)


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
    text = explain(gen)
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


@attrs.frozen(kw_only=True)
class PickConfig:
    route: str = "main"  # no route of that name below
    routes: list[str] = attrs.field(factory=list)
    weight: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    owner: str = ""


@attrs.frozen(kw_only=True)
class StrictPickConfig(PickConfig):
    owner: str  # required


class Pick:
    """Checks its routes against the configured ones."""

    config_class: type[PickConfig] = PickConfig

    def __init__(self, config: PickConfig) -> None:
        self.config = config

    @sdk.hookimpl
    def trellis_config_check(self, routes: tuple[str, ...]) -> list[str]:
        out = [
            f"routes[{i}]: no route named {r!r}"
            for i, r in enumerate(self.config.routes)
            if r not in routes
        ]
        if self.config.route not in routes:
            out.append(f"route: no route named {self.config.route!r}")
        return out


class StrictPick(Pick):
    config_class = StrictPickConfig


def _pick(chain: list[str], table: dict[str, Any], cls: type[Pick] = Pick) -> list[str]:
    settings = Settings(
        kernel=KernelSection(plugins=chain), plugins={"pick": table}, routes=[RouteConfig(name="a")]
    )
    info = PluginInfo("pick", cls, "test", "", cls.config_class)
    with pytest.raises(sdk.ConfigError) as exc:
        build_generation(settings, available={"pick": info})
    return exc.value.problems


def test_a_table_with_a_value_problem_still_gets_its_config_check() -> None:
    """Before, a refused value skipped the plugin's trellis_config_check, so
    its problems showed only on the next try. It now runs on the table with
    the refused values left out; what it says at, under or above one of them
    is left out too (there it only saw the stand-in default)."""
    table = {"weight": 0, "route": 5, "routes": ["a", "b", "c"], "x": {"routes": ["d"]}}
    assert _pick(["pick", "pick.x"], table) == [
        "$.plugins.pick.route: must be a string, got 5",
        "$.plugins.pick.weight: 'weight' must be >= 1: 0",
        "$.plugins.pick.x.route: must be a string, got 5",
        "$.plugins.pick.x.weight: 'weight' must be >= 1: 0",
        "$.plugins.pick.routes[1]: no route named 'b'",
        "$.plugins.pick.routes[2]: no route named 'c'",
        "$.plugins.pick.x.routes[0]: no route named 'd'",
    ]


def test_no_config_check_when_the_table_cannot_be_salvaged() -> None:
    """A required value refused (or missing) leaves no instance to check."""
    table = {"owner": 7, "route": "zzz", "routes": ["b"]}
    assert _pick(["pick"], table, StrictPick) == ["$.plugins.pick.owner: must be a string, got 7"]
    assert _pick(["pick"], {"owner": "me", "weight": 0, "routes": ["b"]}, StrictPick) == [
        "$.plugins.pick.weight: 'weight' must be >= 1: 0",
        "$.plugins.pick.routes[0]: no route named 'b'",
        "$.plugins.pick.route: no route named 'main'",
    ]


@attrs.frozen(kw_only=True)
class TaggedPickConfig(PickConfig):
    tags: dict[str, str] = attrs.field(
        factory=dict,
        validator=attrs.validators.deep_mapping(attrs.validators.matches_re("[a-z]+")),
    )


class TaggedPick(Pick):
    config_class = TaggedPickConfig


def test_a_refused_list_item_leaves_no_instance_to_check() -> None:
    """docs/PLUGINS.md: a list item refused (by its type or its validator)
    cannot be left out without shifting the items after it, so there is no
    salvaged instance and no trellis_config_check (its ``route`` is not
    looked at). An entry of a table of values is no list item: it is left
    out of its table, and the check runs on the rest."""
    assert _pick(["pick"], {"routes": ["a", 5, "b"]}) == [
        "$.plugins.pick.routes[1]: must be a string, got 5",
    ]
    assert _pick(["pick"], {"routes": ["b"], "tags": {"x": 5, "y": "ok", "Z": 6}}, TaggedPick) == [
        "$.plugins.pick.tags.x: must be a string, got 5",
        # Two problems at one path (its value's type, its key): left out once.
        "$.plugins.pick.tags.Z: must be a string, got 6",
        "$.plugins.pick.tags.Z: 'tags' must match regex '[a-z]+' ('Z' doesn't)",
        "$.plugins.pick.routes[0]: no route named 'b'",
        "$.plugins.pick.route: no route named 'main'",
    ]


@pytest.mark.parametrize(
    ("returned", "problem"),
    [
        ("not a list", "returned str, not a list of problems: 'not a list'"),
        (7, "returned int, not a list of problems: 7"),
        (["fine: x", 3], "returned a int: 3"),
        (ValueError("boom"), "failed: ValueError('boom')"),
    ],
    ids=["str", "int", "non-str-item", "raises"],
)
def test_a_config_check_that_misbehaves_is_reported_whole(returned: object, problem: str) -> None:
    """A string used to become one "problem" per character; an exception's
    line read as if "check failed" were a key."""

    class Odd:
        @sdk.hookimpl
        def trellis_config_check(self) -> object:
            if isinstance(returned, Exception):
                raise returned
            return returned

    settings = Settings(kernel=KernelSection(plugins=["odd"]))
    with pytest.raises(sdk.ConfigError) as info:
        build_generation(settings, extra_plugins={"odd": Odd()})
    assert info.value.problems[-1] == f"$.plugins.odd: trellis_config_check {problem}"
    assert len(info.value.problems) == (2 if isinstance(returned, list) else 1)


@pytest.mark.parametrize("error", [SystemExit(7), KeyboardInterrupt()], ids=["exit", "KI"])
def test_a_config_check_raising_a_base_exception_is_a_problem_too(error: BaseException) -> None:
    """It used to go through: ``kernel check`` exited with the plugin's code
    and listed nothing, and a reload ended the running process."""

    class Exits:
        @sdk.hookimpl
        def trellis_config_check(self) -> list[str]:
            raise error

    settings = Settings(kernel=KernelSection(plugins=["exits"]))
    with pytest.raises(sdk.ConfigError) as info:
        build_generation(settings, extra_plugins={"exits": Exits()})
    assert info.value.problems == [
        f"$.plugins.exits: trellis_config_check failed: {error!r}",
    ]


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


# ------------------------------------------------------------------------ TLS
def _tls_settings(files: Any, *, passthrough: bool = False, **kernel: Any) -> Settings:
    from kernel.config.model import CertificateConfig, ListenerTls, ServerSection

    tls = ListenerTls(
        certificates=[CertificateConfig(cert=str(files.cert), key=str(files.key))],
        passthrough=passthrough,
    )
    return Settings(
        kernel=KernelSection(**kernel),
        server=ServerSection(http2=False),
        listeners=[
            ListenerConfig(name="plain"),
            ListenerConfig(name="tls", bind="127.0.0.1:8443", tls=tls, http2=True),
        ],
        routes=[
            RouteConfig(name="web", upstream="http://127.0.0.1:9000"),
            RouteConfig(name="secure", upstream="https://backend.example"),
        ],
    )


def test_a_generation_carries_tls_and_http2(cert_factory: Any) -> None:
    gen = build_generation(_tls_settings(cert_factory.issue("a.example")))
    plain, tls = gen.listeners["plain"], gen.listeners["tls"]
    assert plain.tls is None
    assert plain.http2 is False
    assert tls.tls is not None
    assert tls.http2 is True
    assert tls.tls.alpn == ("h2", "http/1.1")
    assert tls.h2 == gen.settings.server.h2
    assert gen.routes["web"].client_tls is None
    assert gen.routes["secure"].client_tls is not None
    text = explain(gen)
    assert "listener tls on 127.0.0.1:8443 (http1=" in text
    assert "http2=on" in text
    assert "  tls: a.example; alpn h2,http/1.1" in text


def test_certificate_problems_fail_the_generation(cert_factory: Any, tmp_path: Path) -> None:
    files = cert_factory.issue("a.example")
    files.key.write_text("not a key\n")
    with pytest.raises(sdk.ConfigError) as info:
        build_generation(_tls_settings(files))
    assert info.value.problems == [
        f"$.listeners[1].tls.certificates[0].key: not a PEM private key ({files.key})"
    ]


def test_load_generation_rereads_certificates(cert_factory: Any, tmp_path: Path) -> None:
    from kernel.generation import load_generation

    files = cert_factory.issue("a.example")
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"""
        [[listeners]]
        bind = "127.0.0.1:8443"
        [listeners.tls]
        [[listeners.tls.certificates]]
        cert = "{files.cert}"
        key = "{files.key}"
        """
    )
    assert load_generation(config, environ={}).listeners["main"].tls is not None
    other = cert_factory.issue("b.example")
    files.key.write_bytes(other.key.read_bytes())  # a renewal gone wrong
    with pytest.raises(sdk.ConfigError) as info:
        load_generation(config, environ={}, number=2)
    assert info.value.problems == [
        f"$.listeners[0].tls.certificates[0].key: key does not match the certificate"
        f" in {files.cert}"
    ]


def test_passthrough_needs_a_plugin(cert_factory: Any) -> None:
    files = cert_factory.issue("a.example")
    with pytest.raises(sdk.ConfigError) as info:
        build_generation(_tls_settings(files, passthrough=True))
    assert info.value.problems == [
        "$.listeners[1].tls.passthrough: no plugin in the global or listener chain"
        " implements trellis_tls_passthrough"
    ]

    class Relay:
        @sdk.hookimpl
        def trellis_tls_passthrough(self, server_name: str) -> None:
            return None

    gen = build_generation(
        _tls_settings(files, passthrough=True, plugins=["relay"]), extra_plugins={"relay": Relay()}
    )
    assert [i.instance for i in gen.pre_route["tls"].tls_passthrough] == ["relay"]
    assert gen.listeners["tls"].tls is not None
    assert gen.listeners["tls"].tls.passthrough is True


def test_certificate_hook_is_the_listeners_provider(cert_factory: Any, tls_ca: Any) -> None:
    from tests.helpers.certs import client_context, handshake

    minted = cert_factory.issue("minted.example")

    class Mint:
        @sdk.hookimpl
        def trellis_tls_certificate(self, server_name: str) -> sdk.TlsCertificate | None:
            if server_name != "minted.example":
                return None
            return sdk.TlsCertificate(minted.chain_pem, minted.key_pem)

    settings = _tls_settings(cert_factory.issue("a.example"), plugins=["mint"])
    gen = build_generation(settings, extra_plugins={"mint": Mint()})
    server = gen.listeners["tls"].tls
    assert server is not None
    _, client = handshake(server.context, client_context(tls_ca), "minted.example")
    assert client.getpeercert() is not None
    handshake(server.context, client_context(tls_ca), "a.example")


def test_a_broken_plugin_only_fails_configurations_that_use_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import kernel.generation as generation
    from kernel.pluginhost import LoadProblem, available_plugins

    def with_broken(*args: Any, **kwargs: Any) -> Any:
        found, problems = available_plugins(*args, **kwargs)
        broken = LoadProblem("plugin 'shiny' (x:Y) failed to import: boom", "shiny", False)
        return found, [*problems, broken]

    monkeypatch.setattr(generation, "available_plugins", with_broken)
    unused = Settings(routes=[RouteConfig(name="r")])
    with caplog.at_level("WARNING", logger="kernel.generation"):
        build_generation(unused)
    assert "plugin 'shiny' (x:Y) failed to import: boom (this configuration does not use it)" in (
        caplog.text
    )
    used = Settings(routes=[RouteConfig(name="r", plugins=["shiny"])])
    with pytest.raises(sdk.ConfigError) as info:
        build_generation(used)
    # At the place the configuration uses it, like every other problem.
    assert info.value.problems == [
        "$.routes[0].plugins[0]: plugin 'shiny' (x:Y) failed to import: boom"
    ]


def test_one_pass_lists_loader_and_generation_problems(tmp_path: Path) -> None:
    """A wrong kernel value no longer hides the problems of the routes."""
    from kernel.generation import load_generation

    path = tmp_path / "c.toml"
    path.write_text(
        '[server]\nhttp1 = "h3"\nmax_body_bytes = -1\n'
        '[[routes]]\nname = "a"\ngroup = "nogroup"\nplugins = ["ghost"]\n'
        '[[routes]]\nname = "b"\nupstream = "http://127.0.0.1:1"\nconnect_timeout_s = "x"\n'
    )
    with pytest.raises(sdk.ConfigError) as exc:
        load_generation(path)
    paths = [p.partition(": ")[0] for p in exc.value.problems]
    assert paths == [
        "$.server.http1",
        "$.server.max_body_bytes",
        "$.routes[1].connect_timeout_s",
        "$.routes[0].plugins[0]",
        "$.routes[0].group",
    ]


def test_no_second_round_when_a_list_item_itself_is_wrong(tmp_path: Path) -> None:
    """A route without its name cannot be left out without moving the others."""
    from kernel.config.loader import salvage_settings

    data = {"routes": [{"upstream": "http://a:1"}, {"name": "b", "plugins": ["ghost"]}]}
    assert salvage_settings(data) is None
    data = {"server": {"http1": "h3"}, "routes": [{"name": "b", "plugins": ["ghost"]}]}
    settings = salvage_settings(data)
    assert settings is not None
    assert settings.server.http1 == "auto"
    assert settings.routes[0].plugins == ["ghost"]
