"""Validators for numbers in the config tables, shared by every table module.

Each is an attrs validator: it raises :class:`ValueError` with a message the
loader reports under the field's path. ``None`` (an unset override) passes.
A number must be finite: ``nan`` passes every comparison test written as a
refusal (``nan <= 0`` is false), and ``inf`` would reach trio and the timers.

May import: stdlib, attrs.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = ["non_negative", "positive"]


def _finite(value: float) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")


def positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    """``value > 0`` (or unset)."""
    if value is None:
        return
    _finite(value)
    if value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")


def non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    """``value >= 0`` (or unset)."""
    if value is None:
        return
    _finite(value)
    if value < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
