"""The ``[plugins.headers]`` table: :class:`HeadersConfig`.

Names and values are checked here, so a bad one is reported at config time
with its own path (``$.plugins.headers.request_set["bad name"]: invalid
header name ...``, ``$.plugins.headers.request_remove[2]: ...``,
``$.plugins.headers.response_add.X-Foo[2]: ...``) and never reaches a
message: the rules are :func:`sdk.header_name_validator`'s and
:func:`sdk.header_value_validator`'s (no control character but HTAB, nothing
outside ISO-8859-1; whitespace at either end is allowed, as ``sdk.Headers``
trims it). Framing fields (``content-length``, ``transfer-encoding``) are refused:
framing is the kernel's job.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

from typing import Any

import attrs

import sdk

__all__ = ["FRAMING", "HeadersConfig", "check_name", "check_value"]

#: Fields a plugin must not touch: the kernel frames every message itself.
FRAMING = frozenset({"content-length", "transfer-encoding"})


# The sdk's checks (the kernel's send rules). Values go out through
# sdk.Headers (edit.py), which trims them: whitespace at either end is fine.
_SDK_NAME = sdk.header_name_validator()
_SDK_VALUE = sdk.header_value_validator(trimmed=True)


def check_name(name: str) -> None:
    """Raise :class:`ValueError` unless ``name`` is a field name this plugin may edit."""
    _SDK_NAME(None, None, name)
    if name.lower() in FRAMING:
        raise ValueError(f"{name!r} cannot be changed: the kernel frames messages itself")


def check_value(value: str) -> None:
    """Raise :class:`ValueError` unless ``value`` may be sent as a field's value."""
    _SDK_VALUE(None, None, value)


# One name, one value: in deep_iterable / deep_mapping, so each bad item is
# listed at its own path (``request_remove[2]``, ``request_set.x-a``), even
# beside an item of the wrong type.
def _name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    check_name(value)


# A ``*_add`` value is one value or a list of values (one field each): the
# single value is checked at the entry's path, a list's items each at its
# own (``response_add.x-a[2]``), also beside an item of the wrong type.
_VALUES = sdk.one_or_many(_SDK_VALUE)

_NAMES = attrs.validators.deep_iterable(_name)
_FIELDS = attrs.validators.deep_mapping(_name, _SDK_VALUE)
_MULTI_FIELDS = attrs.validators.deep_mapping(_name, _VALUES)


@attrs.frozen(kw_only=True)
class HeadersConfig:
    """The ``[plugins.headers]`` table. Per phase: remove, then set, then add."""

    # Names of request fields to remove (every field of each name).
    request_remove: list[str] = attrs.field(factory=list, validator=_NAMES)
    # Request fields to set: name -> value, replacing any fields of that name.
    request_set: dict[str, str] = attrs.field(factory=dict, validator=_FIELDS)
    # Request fields to append: name -> value, or a list of values (one field each).
    request_add: dict[str, str | list[str]] = attrs.field(factory=dict, validator=_MULTI_FIELDS)
    # Names of response fields to remove.
    response_remove: list[str] = attrs.field(factory=list, validator=_NAMES)
    # Response fields to set: name -> value.
    response_set: dict[str, str] = attrs.field(factory=dict, validator=_FIELDS)
    # Response fields to append: name -> value, or a list of values.
    response_add: dict[str, str | list[str]] = attrs.field(factory=dict, validator=_MULTI_FIELDS)
