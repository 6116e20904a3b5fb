"""The ``[plugins.headers]`` table: :class:`HeadersConfig`.

Names and values are checked here, so a bad one is reported at config time
with its path (``$.plugins.headers.request_set: invalid header name ...``)
and never reaches a message. Framing fields (``content-length``,
``transfer-encoding``) are refused: framing is the kernel's job.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

import sdk

__all__ = ["FRAMING", "HeadersConfig", "check_field", "check_name"]

#: Fields a plugin must not touch: the kernel frames every message itself.
FRAMING = frozenset({"content-length", "transfer-encoding"})


def check_name(name: str) -> None:
    """Raise :class:`ValueError` unless ``name`` is a field name this plugin may edit."""
    try:
        sdk.Headers([(name, "")])
    except (sdk.LocalProtocolError, UnicodeEncodeError):
        raise ValueError(f"invalid header name {name!r}") from None
    if name.lower() in FRAMING:
        raise ValueError(f"{name!r} cannot be changed: the kernel frames messages itself")


def check_field(name: str, value: str) -> None:
    """Raise :class:`ValueError` unless ``name: value`` is a field this plugin may send."""
    check_name(name)
    try:
        sdk.Headers([(name, value)])
    except (sdk.LocalProtocolError, UnicodeEncodeError):
        raise ValueError(
            f"invalid value for header {name!r}: {value!r} (a control character or non-Latin-1)"
        ) from None


def _values(value: str | list[str]) -> Iterable[str]:
    return [value] if isinstance(value, str) else value


def _names(_: object, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    problems = []
    for name in value:
        try:
            check_name(name)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:  # every one, not only the first
        raise ValueError("; ".join(problems))


def _fields(_: object, attribute: attrs.Attribute[Any], value: dict[str, str]) -> None:
    for name, item in value.items():
        check_field(name, item)


def _multi_fields(_: object, attribute: attrs.Attribute[Any], value: dict[str, Any]) -> None:
    for name, items in value.items():
        for item in _values(items):
            check_field(name, item)


@attrs.frozen(kw_only=True)
class HeadersConfig:
    """The ``[plugins.headers]`` table. Per phase: remove, then set, then add."""

    # Names of request fields to remove (every field of each name).
    request_remove: list[str] = attrs.field(factory=list, validator=_names)
    # Request fields to set: name -> value, replacing any fields of that name.
    request_set: dict[str, str] = attrs.field(factory=dict, validator=_fields)
    # Request fields to append: name -> value, or a list of values (one field each).
    request_add: dict[str, str | list[str]] = attrs.field(factory=dict, validator=_multi_fields)
    # Names of response fields to remove.
    response_remove: list[str] = attrs.field(factory=list, validator=_names)
    # Response fields to set: name -> value.
    response_set: dict[str, str] = attrs.field(factory=dict, validator=_fields)
    # Response fields to append: name -> value, or a list of values.
    response_add: dict[str, str | list[str]] = attrs.field(factory=dict, validator=_multi_fields)
