"""The sample config classes of the sdk config tests (not a test module)."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import pytest

from kernel.config.model import Settings
from sdk._config import structure
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
