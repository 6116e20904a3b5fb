"""Every shipped ``config/*.toml`` loads, and ``default.toml`` equals the model's defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from kernel.config import load_config
from kernel.config.model import (
    CertificateConfig,
    GroupConfig,
    H2Section,
    HealthCheckConfig,
    KernelSection,
    ListenerConfig,
    ListenerTls,
    PassiveHealthConfig,
    RetryConfig,
    RouteConfig,
    ServerSection,
    Settings,
    StickyConfig,
    TargetConfig,
    TransportConfig,
    UpstreamSection,
    UpstreamTls,
)
from sdk import ConfigError
from sdk._config import unstructure

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
CONFIGS = sorted(CONFIG_DIR.glob("*.toml"))
#: No TRELLIS_* overrides, and no variables for ${...} placeholders: configs
#: must work from their ${VAR:-default} defaults alone.
CLEAN_ENV: dict[str, str] = {}


def test_there_are_configs() -> None:
    assert CONFIG_DIR / "default.toml" in CONFIGS


#: Variables a scenario config needs beyond its defaults (certificates have none).
NEEDS = {"reverse-tls.toml": ("TRELLIS_TLS_CERT", "TRELLIS_TLS_KEY")}


@pytest.fixture
def scenario_env(cert_factory: Any) -> dict[str, str]:
    """CLEAN_ENV plus what NEEDS names: a real certificate and key."""
    files = cert_factory.issue("localhost", "127.0.0.1")
    return {"TRELLIS_TLS_CERT": str(files.cert), "TRELLIS_TLS_KEY": str(files.key)}


def env_for(path: Path, scenario_env: dict[str, str]) -> dict[str, str]:
    return {k: scenario_env[k] for k in NEEDS.get(path.name, ())} | CLEAN_ENV


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads(path: Path, scenario_env: dict[str, str]) -> None:
    loaded = load_config(path, environ=env_for(path, scenario_env))
    assert loaded.files[0] == path.resolve()


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_config_without_its_variables_names_them(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG_DIR / name, environ=CLEAN_ENV)
    text = str(info.value)
    for var in NEEDS[name]:
        assert var in text


@pytest.fixture(scope="module")
def default() -> Settings:
    return load_config(CONFIG_DIR / "default.toml", environ=CLEAN_ENV).settings


# Section by section, so routes and [plugins.*] examples can be added to the file.
def test_default_kernel(default: Settings) -> None:
    assert unstructure(default.kernel) == unstructure(KernelSection())


def test_default_server(default: Settings) -> None:
    assert unstructure(default.server) == unstructure(ServerSection())


def test_default_upstream(default: Settings) -> None:
    assert unstructure(default.upstream) == unstructure(UpstreamSection())


def test_default_nested_tables_are_written_out(default: Settings) -> None:
    text = (CONFIG_DIR / "default.toml").read_text(encoding="utf-8")
    assert "\n[server.h2]\n" in text
    assert "\n[upstream.tls]\n" in text
    assert "\n[upstream.retry]\n" in text
    assert default.upstream.retry == RetryConfig()
    assert default.server.h2 == H2Section()
    assert default.upstream.tls == UpstreamTls()


def test_default_listener(default: Settings) -> None:
    assert unstructure(default.listeners[0]) == unstructure(ListenerConfig())


def test_default_documents_every_key() -> None:
    """Every key of the documented sections appears: set, commented out, or as a table header."""
    text = (CONFIG_DIR / "default.toml").read_text(encoding="utf-8")
    sections = (
        KernelSection,
        ServerSection,
        H2Section,
        UpstreamSection,
        UpstreamTls,
        RetryConfig,
        ListenerConfig,
        ListenerTls,
        CertificateConfig,
        RouteConfig,
        TransportConfig,
        GroupConfig,
        TargetConfig,
        HealthCheckConfig,
        PassiveHealthConfig,
        StickyConfig,
    )
    for cls in sections:
        for field in attrs.fields(cls):
            key = re.escape(field.name)
            # `key = `, `# key = `, or a table header ending in (or under) it:
            # `[server.h2]`, `# [listeners.tls]`, `# [[listeners.tls.certificates]]`.
            header = rf"^(# )?\[{{1,2}}(\w+\.)*{key}[.\]]"
            assert re.search(rf"^(# )?{key} = |{header}", text, re.M), (cls.__name__, field.name)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_builds_a_generation(path: Path, scenario_env: dict[str, str]) -> None:
    """What `kernel check` does: plugins exist, tables structure, chains resolve."""
    from kernel.generation import build_generation

    loaded = load_config(path, environ=env_for(path, scenario_env))
    gen = build_generation(loaded.settings, modules=loaded.settings.kernel.modules)
    assert gen.routes
    assert gen.listeners


def test_default_plugin_tables_equal_the_plugins_defaults(default: Settings) -> None:
    """Each builtin's base table documents its defaults (named instances aside)."""
    from kernel.pluginhost import available_plugins

    found, problems = available_plugins()
    assert problems == []
    for name in ("router", "headers", "respond"):
        cls = found[name].config_class
        assert cls is not None
        table = {
            k: v
            for k, v in default.plugins[name].items()
            if not isinstance(v, dict) or k in {a.name for a in attrs.fields(cls)}
        }
        assert unstructure(cls(**table)) == unstructure(cls()), name


def test_default_route_example_uses_route_defaults(default: Settings) -> None:
    from kernel.config.model import RouteConfig

    (route,) = default.routes
    assert attrs.evolve(route, name="x", plugins=[]) == RouteConfig(name="x")
