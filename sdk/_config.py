"""Config helpers: one strict cattrs converter, and problem lists with paths.

The kernel structures its own tables and every plugin's ``[plugins.<name>]``
table with the converter built here (L6), so a plugin author gets exactly the
same rules and messages as the kernel:

* Unknown keys are errors; the message lists the known ones.
* Scalars are strict. A ``str`` field takes only a string, ``int`` only an
  integer (not ``true``, not ``"5"``), ``float`` an integer or a float, and
  ``bool`` only ``true``/``false``. ``Literal[...]`` values are checked.
  ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``X | None``, unions and
  nested attrs classes work; ``Any`` passes plain values through.
* tomlkit wrapper items (``tomlkit.items.Integer``, ``Table`` ...) are
  unwrapped, so a parsed document can be passed in as is.
* Every problem is collected, never just the first, and each one carries the
  path of its value. attrs field validators are run field by field so their
  ``ValueError`` message lands on the field's own path
  (``$.server.max_body_bytes: must be >= 0, got -1``); the members of
  ``deep_iterable`` and ``deep_mapping`` validators are checked one by one,
  so each bad item is listed on its own path (``$.plugins.x.codes[2]: ...``).
  They are checked even when other items of the same list or table did not
  structure (``[1]: must be a string, got 5`` and ``[2]: invalid method``
  in one report, in the list's order); a check of the whole value (a plain
  validator, ``max_len``) waits until every item structures.

:class:`EnvText` marks a string that came from the environment (a
``${VAR}`` placeholder that made up a whole value, or a ``TRELLIS_*``
override). It is a ``str``; a field that wants an ``int``, ``float`` or
``bool`` reads it as a TOML scalar instead, so ``"${PORT}"`` works for both
``port: int`` and ``password: str``.

We build on plain :class:`cattrs.Converter` rather than cattrs' tomlkit preconf:
the preconf's union passthrough accepts any scalar for a scalar union, which is
the opposite of strict. Unwrapping tomlkit items up front is all it would add.

The rules live in three modules this one puts together: :mod:`sdk._scalars`
(scalars, literals, unions, :class:`EnvText`), :mod:`sdk._containers` (lists,
tables, attrs classes and their validators) and :mod:`sdk._problems` (paths
and messages, re-exported here for the kernel's loader).

May import: stdlib, attrs, cattrs, sdk._errors, sdk._problems, sdk._scalars,
sdk._containers.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_origin

import attrs
import cattrs

from sdk._containers import attrs_hook, mapping_hook, sequence_hook
from sdk._errors import ConfigError
from sdk._problems import (
    STRUCTURE_ERRORS,
    ConfigPath,
    collect_problems,
    describe_type,
    format_path,
    format_problems,
    show_value,
)
from sdk._scalars import (
    ACCEPTS,
    EnvText,
    literal_hook,
    structure_any,
    structure_scalar,
    union_hook,
    unwrap,
)

__all__ = [
    "STRUCTURE_ERRORS",
    "ConfigPath",
    "EnvText",
    "collect_problems",
    "describe_type",
    "format_path",
    "format_problems",
    "make_converter",
    "show_value",
    "structure",
    "unstructure",
]

T = TypeVar("T")


def _is_literal(tp: Any) -> bool:
    return get_origin(tp) is Literal


def _is_any(tp: Any) -> bool:
    return tp is Any


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_sequence(tp: Any) -> bool:
    return (get_origin(tp) or tp) in (list, tuple)


def _is_mapping(tp: Any) -> bool:
    return (get_origin(tp) or tp) in (dict, Mapping)


def make_converter() -> cattrs.Converter:
    """Build the one strict converter (see the module docstring for its rules)."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    # Exact scalar classes go through singledispatch, which cattrs consults
    # first; bool must be registered or it would fall back to the int hook.
    for scalar in ACCEPTS:
        conv.register_structure_hook(scalar, structure_scalar)
    # Later registrations are tried first, so these beat cattrs' own factories.
    conv.register_structure_hook_func(_is_any, structure_any)
    conv.register_structure_hook_factory(_is_literal, literal_hook)
    conv.register_structure_hook_factory(_is_union, lambda t: union_hook(conv, t))
    conv.register_structure_hook_factory(_is_sequence, lambda t: sequence_hook(conv, t))
    conv.register_structure_hook_factory(_is_mapping, lambda t: mapping_hook(conv, t))
    conv.register_structure_hook_factory(attrs.has, lambda t: attrs_hook(conv, t))
    return conv


_CONVERTER = make_converter()


def structure(data: Mapping[str, Any], cls: type[T], *, path: str = "$") -> T:
    """Structure ``data`` into ``cls`` with the strict converter.

    Raises :class:`ConfigError` listing every problem, each prefixed with its
    path under ``path`` (``"$.plugins.cache"`` when structuring that table).
    """
    try:
        return _CONVERTER.structure(unwrap(data), cls)
    except STRUCTURE_ERRORS as exc:
        raise ConfigError(format_problems(exc, path=path)) from exc


def unstructure(obj: Any) -> dict[str, Any]:
    """An attrs instance as plain dicts, lists and scalars (for comparison and JSON)."""
    if not attrs.has(type(obj)):
        raise TypeError(f"expected an attrs instance, got {type(obj).__name__}")
    result: dict[str, Any] = _CONVERTER.unstructure(obj)
    return result
