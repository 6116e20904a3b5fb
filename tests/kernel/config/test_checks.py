"""The numeric validators every config table uses (kernel/config/checks.py)."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from kernel.config.checks import non_negative, positive


@attrs.frozen
class Numbers:
    pos: float | None = attrs.field(default=None, validator=positive)
    nonneg: float | None = attrs.field(default=None, validator=non_negative)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"pos": 1}, {"pos": 0.001}, {"nonneg": 0}, {"nonneg": 0.0}, {"nonneg": 5}],
)
def test_accepted(kwargs: dict[str, Any]) -> None:
    Numbers(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pos": 0}, "must be > 0, got 0"),
        ({"pos": -1.5}, "must be > 0, got -1.5"),
        ({"nonneg": -1}, "must be >= 0, got -1"),
        ({"pos": math.nan}, "must be a finite number, got nan"),
        ({"nonneg": math.nan}, "must be a finite number, got nan"),
        ({"pos": math.inf}, "must be a finite number, got inf"),
        ({"nonneg": -math.inf}, "must be a finite number, got -inf"),
    ],
)
def test_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Numbers(**kwargs)
