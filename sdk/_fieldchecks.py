"""Checks of HTTP field names, field values and methods in a plugin's config table.

A plugin that puts a configured name or value into a message should refuse
a bad one when the table is loaded, at its path
(``$.plugins.x.headers["bad name"]: invalid header name ...``), not meet it
per request: the kernel checks every field it sends and ends the flow with
an error for one it refuses. The rules here are the kernel's send checks
(``send_fields`` in ``kernel/protocol/http1.py``; RFC 9110 §5.1, §5.5, §5.6.2):

* a name or a method is a token: one or more of the letters, digits and
  ``!#$%&'*+-.^_`|~``. Names are case-insensitive; the validator takes any
  case and keeps it (:class:`sdk.Headers` lower-cases a name it is given);
* a value is ISO-8859-1 text without control characters other than HTAB
  (``\\x80``-``\\xff``, obs-text, is allowed) and without whitespace at
  either end. It may be empty. A value that reaches the message through
  :class:`sdk.Headers` loses such whitespace there (``" v "`` is sent as
  ``"v"``): ``header_value_validator(trimmed=True)`` allows it.

:func:`header_name_validator`, :func:`header_value_validator` and
:func:`method_validator` build attrs validators: for ``attrs.field(validator=...)``,
and as the member, key or value validator of ``attrs.validators.deep_iterable``
and ``deep_mapping``, where each bad item is listed at its own path.
:func:`is_token` is the predicate, for a name inside a longer setting.

May import: stdlib, attrs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["header_name_validator", "header_value_validator", "is_token", "method_validator"]

#: What the validators are: called as attrs calls a validator, they raise
#: :class:`ValueError` for a bad value (:class:`TypeError` for a non-string).
Validator = Callable[[Any, Any, Any], None]

# RFC 9110 §5.6.2 token (fullmatch, not "$": "$" also matches before a trailing newline).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_TCHAR = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_TCHARS = "letters, digits and !#$%&'*+-.^_`|~"
# RFC 9110 §5.5: no CTL but HTAB; ISO-8859-1 only (the wire's bytes).
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_LATIN1 = re.compile(r"[^\x00-\xff]")


def is_token(text: str) -> bool:
    """Whether ``text`` is an RFC 9110 token: a field name, a method, a cookie name.

    ``"x-request-id"`` and ``"X-Request-ID"`` are; ``""``, ``"x y"``,
    ``"x:"`` and ``"é"`` are not.
    """
    return _TOKEN.fullmatch(text) is not None


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a string, got {type(value).__name__}")
    return value


def _token_problem(value: str) -> str | None:
    """Why ``value`` is no token, or ``None``."""
    if _TOKEN.fullmatch(value):
        return None
    if not value:
        return "empty"
    bad = _NOT_TCHAR.search(value)
    assert bad is not None
    return f"{bad.group()!r} is not allowed: only {_TCHARS}"


def _value_problem(value: str, trimmed: bool, secret: bool) -> str | None:
    """Why ``value`` cannot be sent as a field value (once trimmed, if so), or ``None``."""
    if (bad := _CTL.search(value)) is not None:
        return "a control character" if secret else f"a control character: {bad.group()!r}"
    if (bad := _NOT_LATIN1.search(value)) is not None:
        return "a character outside ISO-8859-1" if secret else f"{bad.group()!r} is not ISO-8859-1"
    if trimmed:
        return None
    if value[:1] in (" ", "\t"):
        return "whitespace at the start"
    if value[-1:] in (" ", "\t"):
        return "whitespace at the end"
    return None


@attrs.frozen(repr=False)
class _HeaderName:
    allow_empty: bool

    def __call__(self, inst: Any, attribute: Any, value: Any) -> None:
        name = _string(value)
        if self.allow_empty and not name:
            return
        problem = _token_problem(name)
        if problem is not None:
            raise ValueError(f"invalid header name {name!r} ({problem})")

    def __repr__(self) -> str:
        return "<header name validator" + (", empty allowed>" if self.allow_empty else ">")


@attrs.frozen(repr=False)
class _HeaderValue:
    trimmed: bool
    secret: bool

    def __call__(self, inst: Any, attribute: Any, value: Any) -> None:
        problem = _value_problem(_string(value), self.trimmed, self.secret)
        if problem is None:
            return
        if self.secret:
            raise ValueError(f"invalid header value ({problem}; the value is not shown)")
        raise ValueError(f"invalid header value {value!r} ({problem})")

    def __repr__(self) -> str:
        flags = [name for name in ("trimmed", "secret") if getattr(self, name)]
        return "<header value validator" + "".join(f", {f}" for f in flags) + ">"


@attrs.frozen(repr=False)
class _Method:
    def __call__(self, inst: Any, attribute: Any, value: Any) -> None:
        problem = _token_problem(_string(value))
        if problem is not None:
            raise ValueError(f"invalid method {value!r} ({problem})")

    def __repr__(self) -> str:
        return "<method validator>"


def header_name_validator(*, allow_empty: bool = False) -> Validator:
    """An attrs validator: the string is a field name (a token, any case).

    The name is not changed (a validator cannot): :class:`sdk.Headers`
    lower-cases a name it is given; lower-case it yourself before putting it
    in :attr:`sdk.Headers.fields`, whose names the kernel sends as they are
    (and refuses upper-case ones). With
    ``allow_empty``, ``""`` passes too (a setting where empty means "none")::

        response_header: str = attrs.field(
            default="", validator=sdk.header_name_validator(allow_empty=True)
        )

    Refused: ``invalid header name 'x y' (' ' is not allowed: only letters,
    digits and !#$%&'*+-.^_`|~)``.
    """
    return _HeaderName(allow_empty)


def header_value_validator(*, trimmed: bool = False, secret: bool = False) -> Validator:
    """An attrs validator: the string can be sent as a field value.

    ISO-8859-1, no control character but HTAB, no space or HTAB at either
    end; may be empty. With ``trimmed``, space and HTAB at the ends are
    allowed: say so when the value goes into a message through
    :class:`sdk.Headers` or :meth:`sdk.Response.make` (which drop them), or
    when you strip it yourself; not when it goes into :attr:`sdk.Headers.fields`
    or to another library as it is. With ``secret``, the message does not
    show the value (a token, a password)::

        headers: dict[str, str] = attrs.field(
            factory=dict,
            validator=attrs.validators.deep_mapping(
                sdk.header_name_validator(), sdk.header_value_validator(secret=True)
            ),
        )

    Refused: ``invalid header value 'a\\nb' (a control character: '\\n')``,
    ``invalid header value 'v ' (whitespace at the end)``.
    """
    return _HeaderValue(trimmed, secret)


def method_validator() -> Validator:
    """An attrs validator: the string is a request method (a token; any case).

    Methods are case-sensitive on the wire (RFC 9110 §9.1): upper-case a
    configured one yourself if you compare it case-insensitively.
    Refused: ``invalid method 'G T' (' ' is not allowed: only letters, ...)``.
    """
    return _Method()
