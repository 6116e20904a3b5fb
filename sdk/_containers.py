"""Lists, tables and attrs classes for the converter of :mod:`sdk._config`,
every problem of every item collected.

* :func:`sequence_hook` (``list[X]``, ``tuple[X, ...]``, fixed tuples) and
  :func:`mapping_hook` (``dict[K, V]``) structure every item, and when some
  fail raise one error holding them all, each with its index or key, and
  (as :class:`~sdk._validators.Holey`) the items that did structure.
* :func:`attrs_hook` structures an attrs class field by field, then runs
  each field's validator alone, so a ``ValueError`` lands on the field's own
  path; the member validators of a list or table with holes still run on the
  items that structured, and their findings are listed in the items' order
  beside the items' own errors. Unknown keys are errors.

May import: stdlib, attrs, cattrs, sdk._problems, sdk._scalars, sdk._validators.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from sdk._problems import STRUCTURE_ERRORS, show_value
from sdk._scalars import unwrap
from sdk._validators import REFUSED, Holey
from sdk._validators import validate as _validate

__all__ = ["attrs_hook", "mapping_hook", "sequence_hook"]


class _Incomplete(IterableValidationError):
    """A list or table some of whose items did not structure.

    ``holey`` holds the items that did, for the field's member validators
    (:func:`sdk._validators.validate`); None on a copy made by ``derive``.
    """

    holey: Holey | None = None


def _incomplete(
    tp: Any, errors: list[Exception], members: list[tuple[Any, Any]], *, mapping: bool, order: Any
) -> _Incomplete:
    err = _Incomplete(f"While structuring {tp!r}", errors, tp)
    err.holey = Holey(tuple(members), mapping, tuple(order))
    return err


def _holey_or(exc: Exception, default: Any) -> Any:
    """What stands in for an item that did not structure: its own holey
    rest when it is a list or table with holes, else ``default``."""
    if isinstance(exc, _Incomplete) and exc.holey is not None:
        return exc.holey
    return default


_SKIP: Any = object()  # an item left out of a holey list


def sequence_hook(conv: cattrs.Converter, tp: Any) -> Callable[[Any, Any], Any]:
    origin = get_origin(tp) or tp
    args = get_args(tp)
    variadic = origin is not tuple or (len(args) == 2 and args[1] is Ellipsis)
    item_types: list[Any] = [args[0] if args else Any] if variadic else list(args)

    def hook(value: Any, _: Any) -> Any:
        value = unwrap(value)
        if not isinstance(value, list | tuple):
            raise TypeError(f"must be an array, got {show_value(value)}")
        if not variadic and len(value) != len(item_types):
            raise ValueError(f"must be an array of {len(item_types)} items, got {len(value)}")
        out: list[Any] = []
        errors: list[Exception] = []
        for i, item in enumerate(value):
            item_tp = item_types[0] if variadic else item_types[i]
            try:
                out.append(conv.structure(item, item_tp))
            except STRUCTURE_ERRORS as exc:
                out.append(_holey_or(exc, _SKIP))
                exc.add_note(IterableValidationNote(f"Structuring {tp} @ index {i}", i, item_tp))
                errors.append(exc)
        if errors:
            # What did structure goes with the error, for the member validators.
            members = [(i, item) for i, item in enumerate(out) if item is not _SKIP]
            raise _incomplete(tp, errors, members, mapping=False, order=range(len(value)))
        return tuple(out) if origin is tuple else out

    return hook


def mapping_hook(conv: cattrs.Converter, tp: Any) -> Callable[[Any, Any], Any]:
    args = get_args(tp)
    key_tp, val_tp = args if len(args) == 2 else (Any, Any)

    def hook(value: Any, _: Any) -> Any:
        value = unwrap(value)
        if not isinstance(value, Mapping):
            raise TypeError(f"must be a table, got {show_value(value)}")
        out: dict[Any, Any] = {}
        errors: list[Exception] = []
        members: list[tuple[Any, Any]] = []  # (key as written, (key, value)), for validators
        for key, item in value.items():
            try:
                k = conv.structure(key, key_tp)
            except STRUCTURE_ERRORS as exc:
                err = ValueError(f"invalid key: {exc}")
                err.add_note(IterableValidationNote(f"Structuring {tp} key", key, key_tp))
                errors.append(err)
                continue
            try:
                out[k] = conv.structure(item, val_tp)
            except STRUCTURE_ERRORS as exc:
                members.append((key, (k, _holey_or(exc, REFUSED))))
                exc.add_note(IterableValidationNote(f"Structuring {tp} @ key {key!r}", key, val_tp))
                errors.append(exc)
            else:
                members.append((key, (k, out[k])))
        if errors:
            raise _incomplete(tp, errors, members, mapping=True, order=list(value))
        return out

    return hook


def attrs_hook(conv: cattrs.Converter, cl: type[Any]) -> Callable[[Any, Any], Any]:
    """Field by field: structure, then run that field's validator, collecting everything."""
    attrs.resolve_types(cl)
    fields = [a for a in attrs.fields(cl) if a.init]
    names = {a.name for a in fields}

    def hook(value: Any, _: Any) -> Any:
        value = unwrap(value)
        if not isinstance(value, Mapping):
            raise TypeError(f"must be a table, got {show_value(value)}")
        kwargs: dict[str, Any] = {}
        done: dict[str, Any] = {}
        # A list or table with items that did not structure: its error waits
        # for the member validators' findings on the rest, to be listed together.
        incomplete: dict[str, _Incomplete] = {}
        errors: list[tuple[int, Exception]] = []  # (field index, error): reported in field order

        def fail(exc: Exception, i: int) -> None:
            a = fields[i]
            note = f"Structuring class {cl.__qualname__} @ attribute {a.name}"
            exc.add_note(AttributeValidationNote(note, a.name, a.type))
            errors.append((i, exc))

        for i, a in enumerate(fields):
            if a.name not in value:
                if a.default is attrs.NOTHING:
                    fail(KeyError(a.name), i)
                continue
            try:
                done[a.name] = conv.structure(value[a.name], a.type)
            except _Incomplete as exc:
                if exc.holey is not None and a.validator is not None:
                    incomplete[a.name] = exc
                else:
                    fail(exc, i)
            except STRUCTURE_ERRORS as exc:
                fail(exc, i)
        # Validators run here, one field at a time, so a failure is attributed to
        # its field. They get a stand-in instance holding the fields structured so
        # far, which is enough for the validators that look at a sibling field.
        stand_in = types.SimpleNamespace(**_defaults(fields, value), **done)
        for i, a in enumerate(fields):
            if a.name in incomplete:
                partial = incomplete[a.name]
                assert partial.holey is not None
                try:
                    found = _validate(a.validator, stand_in, a, partial.holey)
                except AttributeError:
                    found = []  # it looked at a sibling: the field's own error stands
                fail(_with_members(partial, found, partial.holey.order), i)
            if a.name in done and a.validator is not None:
                try:
                    for found_one in _validate(a.validator, stand_in, a, done[a.name]):
                        fail(found_one, i)
                except AttributeError:
                    if not errors:
                        raise  # not a broken sibling: a bug in the validator
            if a.name in done:
                kwargs[a.alias or a.name] = done[a.name]
        extra = set(value) - names
        if extra:
            errors.append((len(fields), ForbiddenExtraKeysError(None, cl, {str(k) for k in extra})))
        if errors:
            errors.sort(key=lambda pair: pair[0])
            excs = [exc for _, exc in errors]
            raise ClassValidationError(f"While structuring {cl.__name__}", excs, cl)
        # Whatever still fails here (say, __attrs_post_init__) is the table's problem.
        return cl(**kwargs)

    return hook


def _with_members(exc: _Incomplete, found: list[Exception], order: tuple[Any, ...]) -> Exception:
    """A field's structuring error and its member validators' findings
    (:func:`sdk._validators.validate` on the rest) as one error, each item's
    problems in the list's or table's order."""
    if not found:
        return exc
    parts: list[Exception] = list(exc.exceptions)
    for each in found:
        # Member findings come as one group of per-item errors, each with its note.
        parts.extend(each.exceptions if isinstance(each, IterableValidationError) else [each])
    rank = {where: n for n, where in enumerate(order)}

    def position(err: Exception) -> int:
        for note in getattr(err, "__notes__", ()):
            if isinstance(note, IterableValidationNote):
                return rank.get(note.index, len(rank))
        return len(rank)

    parts.sort(key=position)  # stable: an item's type error before its other problems
    return IterableValidationError(exc.message, parts, exc.cl)


def _defaults(fields: list[attrs.Attribute[Any]], given: Mapping[Any, Any]) -> dict[str, Any]:
    """Default values of the fields absent from ``given`` (for the validators' stand-in)."""
    out: dict[str, Any] = {}
    for a in fields:
        if a.name in given or a.default is attrs.NOTHING:
            continue
        default: Any = a.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            if not default.takes_self:
                out[a.name] = default.factory()
        else:
            out[a.name] = default
    return out
