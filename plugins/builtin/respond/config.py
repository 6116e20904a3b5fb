"""The ``[plugins.respond]`` table: :class:`RespondConfig`.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

from typing import Any

import attrs

import sdk

__all__ = ["NO_BODY", "RespondConfig"]

#: Statuses whose responses never carry a body (RFC 9110 §6.4.1, §15.3.5, §15.4.5).
NO_BODY = frozenset({204, 304})
# Framing is the kernel's job; content-type has its own key.
_OWN_KEYS = {"content-length": "", "transfer-encoding": "", "content-type": "content_type"}


# The sdk's checks: the kernel's rules for what it sends. The response is
# built through sdk.Headers, which trims values: whitespace at the ends is fine.
_NAME = sdk.header_name_validator()
_VALUE = sdk.header_value_validator(trimmed=True)


def _status(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    # A final answer: after a 1xx the client would wait for one that never comes.
    if not 200 <= value <= 599:
        raise ValueError(f"must be between 200 and 599 (a final status), got {value}")


# A field's name and its value, checked one entry at a time (a deep_mapping):
# each bad one is listed at its own key (``headers.x-a``), even beside an
# entry of the wrong type.
def _header_name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    _NAME(_, attribute, value)
    own = _OWN_KEYS.get(value.lower())
    if own is not None:
        raise ValueError(
            f"{value!r} cannot be set here: "
            + (f"use the {own!r} key" if own else "the kernel frames responses itself")
        )


def _body(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and inst.status in NO_BODY:
        raise ValueError(f"must be empty: a {inst.status} response has no body")


@attrs.frozen(kw_only=True)
class RespondConfig:
    """The ``[plugins.respond]`` table: the response sent for every request reaching it."""

    # Status code (200..599, a final answer); 204 and 304 responses have no body.
    status: int = attrs.field(default=200, validator=_status)
    # Content-Type of the body; "" for none. Not sent when the status has no body.
    content_type: str = attrs.field(default="text/plain; charset=utf-8", validator=_VALUE)
    # The body, sent UTF-8 encoded (content-length is set by the kernel).
    body: str = attrs.field(default="", validator=_body)
    # More response fields: name -> value.
    headers: dict[str, str] = attrs.field(
        factory=dict, validator=attrs.validators.deep_mapping(_header_name, _VALUE)
    )
