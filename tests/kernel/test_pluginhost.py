"""The plugin host: discovery, instances, named instances, every problem listed."""

from __future__ import annotations

import attrs
import pytest

import sdk
from kernel.config.model import KernelSection, RouteConfig, Settings
from kernel.pluginhost import PluginHost, PluginInfo, available_plugins, instance_plugin


@attrs.frozen(kw_only=True)
class GreetConfig:
    greeting: str = "hi"
    times: int = attrs.field(default=1, validator=attrs.validators.ge(1))


class GreetPlugin:
    """Greets."""

    config_class = GreetConfig

    def __init__(self, config: GreetConfig) -> None:
        self.config = config

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        return None


class Plain:
    """No config."""

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        return None


def _info(name: str, obj: object) -> PluginInfo:
    return PluginInfo(name, obj, "test", "", getattr(obj, "config_class", None))


AVAILABLE = {"greet": _info("greet", GreetPlugin), "plain": _info("plain", Plain)}


def _settings(
    chain: list[str], plugins: dict[str, object], routes: list[RouteConfig] | None = None
) -> Settings:
    return Settings(kernel=KernelSection(plugins=chain), plugins=plugins, routes=routes or [])


def test_named_instances_inherit_the_base_table() -> None:
    settings = _settings(
        ["greet", "greet.loud"],
        {"greet": {"greeting": "hello", "loud": {"times": 3}}},
    )
    host, problems = PluginHost.build(settings, available=AVAILABLE)
    assert problems == []
    base, loud = host.instances["greet"], host.instances["greet.loud"]
    assert isinstance(base, GreetPlugin)
    assert isinstance(loud, GreetPlugin)
    assert base.config == GreetConfig(greeting="hello", times=1)
    assert loud.config == GreetConfig(greeting="hello", times=3)
    assert host.pm.get_plugin("greet.loud") is loud


def test_every_problem_is_listed_with_its_path() -> None:
    settings = _settings(
        ["nosuch", "greet", "greet.missing", "plain.x"],
        {"greet": {"times": 0, "colour": "red"}, "ghost": {}},
        routes=[RouteConfig(name="r", plugins=["alsonot"])],
    )
    _, problems = PluginHost.build(settings, available=AVAILABLE)
    text = "\n".join(problems)
    assert "$.plugins.ghost: no plugin named 'ghost' is installed" in text
    assert "$.kernel.plugins[0]: unknown plugin 'nosuch'" in text
    assert "$.routes[0].plugins[0]: unknown plugin 'alsonot'" in text
    assert "$.plugins.greet.times" in text
    assert "$.plugins.greet.colour" in text
    assert "$.plugins.greet.missing: no table [plugins.greet.missing]" in text
    assert "$.plugins.plain.x: plugin 'plain' has no configuration" not in text  # plain is a class
    assert len(problems) >= 6


@attrs.frozen(kw_only=True)
class NeedsConfig:
    target: str  # required
    times: int = attrs.field(default=1, validator=attrs.validators.ge(1))


class Needy(GreetPlugin):
    """Needs a target."""

    config_class = NeedsConfig  # type: ignore[assignment]


def test_tables_no_chain_uses_are_checked_too() -> None:
    """Before, a mistake in a table no chain used passed, and failed only on
    the reload that put the plugin on a chain."""
    available = {**AVAILABLE, "needy": _info("needy", Needy)}
    settings = _settings(
        ["greet.used"],
        {
            "greet": {"colour": "red", "used": {"times": 2}, "spare": {"times": 0}},
            "needy": {"times": 0, "shared": {"target": "x"}},
        },
    )
    _, problems = PluginHost.build(settings, available=available)
    # A base table's mistake shows under each instance built from it (the
    # base alone is not one here: a named instance of it is in use).
    assert [p.split(":")[0] for p in problems if "colour" in p] == [
        "$.plugins.greet.used.colour",
        "$.plugins.greet.spare.colour",
    ]
    assert any(p.startswith("$.plugins.greet.spare.times") for p in problems)
    assert any(p.startswith("$.plugins.needy.times") for p in problems)
    assert any(p.startswith("$.plugins.needy.shared.times") for p in problems)
    # A required key may wait for an instance that uses the table.
    assert not any(p.endswith(": required") for p in problems)


@pytest.mark.parametrize("chain", [["greet", "plain"], []])
def test_a_plugin_table_that_is_not_a_table_is_a_problem(chain: list[str]) -> None:
    """``plugins.greet = 5`` crashed the host (``TypeError`` in ``dict(5)``):
    exit 70 with a traceback instead of exit 1 with the list."""
    settings = _settings(chain, {"greet": 5, "plain": ["x"]})
    host, problems = PluginHost.build(settings, available=AVAILABLE)
    assert problems == [
        "$.plugins.greet: must be a table, got 5",
        "$.plugins.plain: must be a table, got ['x']",
    ]
    assert host.instances == {}


def test_a_missing_named_instance_table_does_not_hide_the_base_table_s_problems() -> None:
    """Before, the base table was left to the named instances in use; one of
    them had no table, the other overrode the bad key, and the base's mistake
    (which the missing instance would inherit) showed nowhere."""
    settings = _settings(
        ["greet.missing", "greet.spare"],
        {"greet": {"times": 0, "colour": "red", "spare": {"times": 2}}},
    )
    _, problems = PluginHost.build(settings, available=AVAILABLE)
    assert problems == [
        "$.plugins.greet.missing: no table [plugins.greet.missing] for instance 'greet.missing'",
        "$.plugins.greet.spare.colour: unknown key (known: greeting, times)",
        "$.plugins.greet.times: 'times' must be >= 1: 0",
        "$.plugins.greet.colour: unknown key (known: greeting, times)",
    ]


def test_a_plugin_that_failed_to_import_adds_no_lines_of_its_own() -> None:
    settings = _settings(["gone"], {"gone": {"x": 1}})
    _, problems = PluginHost.build(settings, available=AVAILABLE, broken=["gone"])
    assert problems == []  # the import problem is the caller's to say


def test_a_non_class_plugin_is_used_as_is() -> None:
    obj = Plain()
    available = {"obj": _info("obj", obj)}
    host, problems = PluginHost.build(_settings(["obj"], {}), available=available)
    assert problems == []
    assert host.instances["obj"] is obj
    _, problems = PluginHost.build(_settings(["obj.two"], {}), available=available)
    assert problems == [
        "$.plugins.obj.two: plugin 'obj' has no configuration and cannot be"
        " instantiated under several names"
    ]


class Picky(GreetPlugin):
    """Refuses its configuration in its constructor, as PLUGINS.md allows."""

    def __init__(self, config: GreetConfig) -> None:
        raise sdk.ConfigError(["greeting: too polite", "$.routes: none fit"])


def test_problems_a_constructor_raises_get_the_tables_path() -> None:
    # As trellis_config_check's: one without a "$" path is the table's.
    available = {"picky": _info("picky", Picky)}
    settings = _settings(["picky", "picky.x"], {"picky": {"x": {}}})
    _host, problems = PluginHost.build(settings, available=available)
    assert problems == [
        "$.plugins.picky.greeting: too polite",
        "$.routes: none fit",
        "$.plugins.picky.x.greeting: too polite",
        "$.routes: none fit",
    ]


def test_misspelled_hook_is_refused_at_registration() -> None:
    class Typo:
        @sdk.hookimpl
        def trellis_requets(self, flow: sdk.Flow) -> None:
            return None

    _host, problems = PluginHost.build(_settings(["t"], {}), available={}, extra={"t": Typo()})
    # One line, at the instance's table, with the hook it most likely meant
    # (pluggy's own message held the object's repr and its address).
    assert problems == ["$.plugins.t: unknown hook trellis_requets (did you mean trellis_request?)"]


class WrongParameters:
    @sdk.hookimpl
    def trellis_request(self, flw: sdk.Flow) -> None:
        return None

    @sdk.hookimpl
    def trellis_request_body(self, flow: sdk.Flow, chunk: bytes, ending: bool) -> None:
        return None

    @sdk.hookimpl
    def trellis_shutdown(self, now: bool) -> None:
        return None

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow, extra: int = 1) -> None:
        return None  # a parameter with a default is the plugin's own business


def test_a_misspelled_hook_parameter_is_one_line_per_hook() -> None:
    """Before, pluggy's three-line message, and only for the first such hook."""
    _host, problems = PluginHost.build(
        _settings(["w"], {}), available={}, extra={"w": WrongParameters()}
    )
    assert problems == [
        "$.plugins.w: hook trellis_request has unknown parameter 'flw' (accepted: flow)",
        "$.plugins.w: hook trellis_request_body has unknown parameter 'ending'"
        " (accepted: flow, chunk, end)",
        "$.plugins.w: hook trellis_shutdown has unknown parameter 'now' (accepted: none)",
    ]


def test_builtins_are_entry_points_and_blocking_skips_import() -> None:
    found, problems = available_plugins()
    assert problems == []
    assert {"router", "headers", "respond"} <= set(found)
    assert found["router"].source.startswith("entry point")
    found, _ = available_plugins(blocked=["router"])
    assert "router" not in found


def test_modules_table_loads_by_reference() -> None:
    found, problems = available_plugins({"greet": "tests.kernel.test_pluginhost:GreetPlugin"})
    assert problems == []
    assert found["greet"].factory is GreetPlugin
    assert found["greet"].summary == "Greets."
    _, problems = available_plugins({"bad": "no.such.module:X"})
    assert problems
    assert problems[0].startswith("$.kernel.modules.bad: cannot import 'no.such.module:X'")


@pytest.mark.parametrize(("inst", "plugin"), [("a", "a"), ("a.b", "a"), ("a.b.c", "a")])
def test_instance_plugin(inst: str, plugin: str) -> None:
    assert instance_plugin(inst) == plugin


def test_a_module_named_like_an_installed_plugin_replaces_it_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="kernel.plugins"):
        found, problems = available_plugins({"router": "tests.kernel.test_pluginhost:Plain"})
    assert problems == []
    assert found["router"].factory is Plain
    assert "replaces the installed plugin 'router' (entry point in" in caplog.text
