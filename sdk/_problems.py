"""Where a config value is and what is wrong with it, in words for people.

The vocabulary every config message is written in, by the strict converter
(:mod:`sdk._config`, :mod:`sdk._strict`) and by the kernel's loader alike:

* :data:`ConfigPath` and :func:`format_path`: a value's position,
  ``("routes", 2, "upstream")`` written ``$.routes[2].upstream``.
* :func:`show_value`, :func:`describe_type`: a value and what a type accepts,
  in TOML words (``true``, ``a table``, ``one of 'a', 'b'``).
* :func:`collect_problems`, :func:`format_problems`: a (detailed) cattrs
  error flattened into ``(path, message)`` pairs, or ``"$.a.b[0]: message"``
  lines; :data:`STRUCTURE_ERRORS`, what structuring raises for bad data.

May import: stdlib, attrs, cattrs.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

import attrs
from cattrs.errors import (
    CattrsError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

__all__ = [
    "STRUCTURE_ERRORS",
    "ConfigPath",
    "collect_problems",
    "describe_type",
    "format_path",
    "format_problems",
    "show_value",
]

#: A value's position in a document: table keys and array indices, outermost first.
ConfigPath = tuple[str | int, ...]

#: What structuring may raise for bad *data*; anything else is a bug and propagates (L10).
STRUCTURE_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, LookupError, CattrsError)

# (fullmatch, not "$": "$" also matches before a final newline.)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# --------------------------------------------------------------------- paths
def format_path(parts: ConfigPath, root: str = "$") -> str:
    """``("routes", 2, "upstream")`` -> ``$.routes[2].upstream``.

    Keys that are not TOML bare keys are quoted: ``$.plugins["my plugin"]``.
    """
    out = [root]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _BARE_KEY.fullmatch(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


def show_value(value: object) -> str:
    """A value as a message shows it: TOML words for booleans, repr otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, str):
        return repr(str(value))
    return repr(value)


def describe_type(tp: Any) -> str:
    """What a type accepts, in TOML words, for "must be ..." messages."""
    origin = get_origin(tp) or tp
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if origin in (list, tuple):
        return "an array"
    if origin in (dict, Mapping) or attrs.has(origin):
        return "a table"
    if origin is Literal:
        return "one of " + ", ".join(show_value(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", repr(tp))


# ------------------------------------------------------------------- problems
def collect_problems(exc: BaseException, parts: ConfigPath = ()) -> list[tuple[ConfigPath, str]]:
    """Flatten a (detailed) cattrs error into ``(path, message)`` pairs.

    Works like :func:`cattrs.transform_error`, but keeps paths as tuples and
    writes messages for people: ``required``, ``unknown key (known: ...)``, or
    the exception's own text (strict hooks and attrs validators word theirs).
    """
    out: list[tuple[ConfigPath, str]] = []
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, anote in with_notes:
            out.extend(collect_problems(sub, (*parts, anote.name)))
        for sub in without:
            out.extend(collect_problems(sub, parts))
    elif isinstance(exc, IterableValidationError):
        inotes, others = exc.group_exceptions()
        for sub, inote in inotes:
            out.extend(collect_problems(sub, (*parts, inote.index)))
        for sub in others:
            out.extend(collect_problems(sub, parts))
    elif isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            out.extend(collect_problems(inner, parts))
    elif isinstance(exc, ForbiddenExtraKeysError):
        known = (
            ", ".join(a.name for a in attrs.fields(exc.cl) if a.init) if attrs.has(exc.cl) else ""
        )
        for key in sorted(exc.extra_fields):
            out.append(((*parts, key), f"unknown key (known: {known})"))
    elif isinstance(exc, KeyError):
        out.append((parts, "required"))
    elif len(exc.args) > 1 and isinstance(exc.args[0], str):
        # attrs' validators (in_, instance_of, ...) raise (message, attribute,
        # expected, value): the message is the part for people.
        out.append((parts, exc.args[0]))
    else:
        out.append((parts, str(exc) or type(exc).__name__))
    return out


def format_problems(exc: BaseException, *, path: str = "$") -> list[str]:
    """Every problem in ``exc`` as one ``"$.a.b[0]: message"`` line."""
    return [f"{format_path(parts, path)}: {msg}" for parts, msg in collect_problems(exc)]
