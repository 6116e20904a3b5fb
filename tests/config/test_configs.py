"""Every shipped ``config/*.toml`` loads, and ``default.toml`` equals the model's defaults."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from kernel.config import load_config
from kernel.config.model import (
    KernelSection,
    ListenerConfig,
    ServerSection,
    Settings,
    UpstreamSection,
)
from sdk._config import unstructure

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
CONFIGS = sorted(CONFIG_DIR.glob("*.toml"))
#: No TRELLIS_* overrides, and no variables for ${...} placeholders: configs
#: must work from their ${VAR:-default} defaults alone.
CLEAN_ENV: dict[str, str] = {}


def test_there_are_configs() -> None:
    assert CONFIG_DIR / "default.toml" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads(path: Path) -> None:
    loaded = load_config(path, environ=CLEAN_ENV)
    assert loaded.files[0] == path.resolve()


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


def test_default_listener(default: Settings) -> None:
    assert unstructure(default.listeners[0]) == unstructure(ListenerConfig())


def test_default_documents_every_key() -> None:
    """Every key of the documented sections appears: set, commented out, or as a table header."""
    text = (CONFIG_DIR / "default.toml").read_text(encoding="utf-8")
    for cls in (KernelSection, ServerSection, UpstreamSection, ListenerConfig):
        for field in attrs.fields(cls):
            key = re.escape(field.name)
            assert re.search(rf"^(# )?{key} = |^# \[\w+\.{key}\.", text, re.M), field.name
