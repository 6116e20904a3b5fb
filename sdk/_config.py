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

May import: stdlib, attrs, cattrs, tomlkit.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
import tomlkit.container
import tomlkit.items
from cattrs.errors import (
    AttributeValidationNote,
    CattrsError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from sdk._errors import ConfigError
from sdk._validators import REFUSED, Holey
from sdk._validators import validate as _validate

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

#: A value's position in a document: table keys and array indices, outermost first.
ConfigPath = tuple[str | int, ...]

#: What structuring may raise for bad *data*; anything else is a bug and propagates (L10).
STRUCTURE_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, LookupError, CattrsError)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


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


class EnvText(str):
    """A string taken from the environment, readable as a TOML scalar on demand.

    A ``str`` field gets the text; an ``int``/``float``/``bool`` field gets
    :attr:`scalar` when the text parses as a TOML value of that type.
    """

    __slots__ = ()

    @property
    def scalar(self) -> int | float | bool | None:
        """The text as a TOML integer, float or boolean, or ``None`` if it is none of those."""
        try:
            doc = tomllib.loads(f"v = {self}")
        except tomllib.TOMLDecodeError:
            return None
        value = doc.get("v")
        # One key only: a value with a newline must not smuggle in a second key.
        if len(doc) != 1 or not isinstance(value, int | float):  # bool is an int
            return None
        return value


# --------------------------------------------------------------------- paths
def format_path(parts: ConfigPath, root: str = "$") -> str:
    """``("routes", 2, "upstream")`` -> ``$.routes[2].upstream``.

    Keys that are not TOML bare keys are quoted: ``$.plugins["my plugin"]``.
    """
    out = [root]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _BARE_KEY.match(part):
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


# -------------------------------------------------------------- strict hooks
def _plain(value: Any) -> Any:
    """Unwrap tomlkit wrapper types into plain Python values (deeply)."""
    if isinstance(value, tomlkit.items.Item | tomlkit.container.Container):
        return value.unwrap()
    return value


#: What each scalar class accepts (bool apart: it is an int, and an int is no bool).
_ACCEPTS: dict[type, tuple[type, ...]] = {
    bool: (bool,),
    str: (str,),
    int: (int,),
    float: (int, float),
}


def _structure_scalar(value: Any, cl: type[Any]) -> Any:
    """Strict ``str``/``int``/``float``/``bool`` (and subclasses such as StrEnum, IntEnum)."""
    base = next(b for b in _ACCEPTS if issubclass(cl, b))
    value = _plain(value)
    got = value
    if isinstance(value, EnvText) and base is not str:
        got = value.scalar  # environment text, read as the field wants it
    if isinstance(got, bool) != (base is bool) or not isinstance(got, _ACCEPTS[base]):
        raise TypeError(f"must be {describe_type(base)}, got {show_value(value)}")
    plain = str.__str__(got) if base is str else base(got)  # drops EnvText, tomlkit types
    return plain if cl is base else cl(plain)


def _structure_any(value: Any, _: Any) -> Any:
    return _plain(value)


def _literal_hook(tp: Any) -> Callable[[Any, Any], Any]:
    choices = get_args(tp)

    def hook(value: Any, _: Any) -> Any:
        value = _plain(value)
        candidates = [value]
        if isinstance(value, EnvText) and value.scalar is not None:
            candidates.append(value.scalar)
        for cand in candidates:
            for choice in choices:
                # type() equality too: True == 1 must not match Literal[1].
                same_kind = type(cand) is type(choice) or (
                    isinstance(cand, str) and isinstance(choice, str)
                )
                if same_kind and cand == choice:
                    return choice
        raise ValueError(f"must be {describe_type(tp)}, got {show_value(value)}")

    return hook


def _union_hook(conv: cattrs.Converter, tp: Any) -> Callable[[Any, Any], Any]:
    members = [m for m in get_args(tp) if m is not type(None)]
    nullable = len(members) < len(get_args(tp))

    def hook(value: Any, _: Any) -> Any:
        value = _plain(value)
        if value is None and nullable:
            return None
        if len(members) == 1:  # X | None: X's own message is the clearest
            return conv.structure(value, members[0])
        for member in members:
            try:
                return conv.structure(value, member)
            except (ClassValidationError, IterableValidationError):
                raise  # the shape matched and the contents did not: say what inside
            except STRUCTURE_ERRORS:
                continue
        raise TypeError(f"must be {describe_type(tp)}, got {show_value(value)}")

    return hook


def _sequence_hook(conv: cattrs.Converter, tp: Any) -> Callable[[Any, Any], Any]:
    origin = get_origin(tp) or tp
    args = get_args(tp)
    variadic = origin is not tuple or (len(args) == 2 and args[1] is Ellipsis)
    item_types: list[Any] = [args[0] if args else Any] if variadic else list(args)

    def hook(value: Any, _: Any) -> Any:
        value = _plain(value)
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


def _mapping_hook(conv: cattrs.Converter, tp: Any) -> Callable[[Any, Any], Any]:
    args = get_args(tp)
    key_tp, val_tp = args if len(args) == 2 else (Any, Any)

    def hook(value: Any, _: Any) -> Any:
        value = _plain(value)
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


def _attrs_hook(conv: cattrs.Converter, cl: type[Any]) -> Callable[[Any, Any], Any]:
    """Field by field: structure, then run that field's validator, collecting everything."""
    attrs.resolve_types(cl)
    fields = [a for a in attrs.fields(cl) if a.init]
    names = {a.name for a in fields}

    def hook(value: Any, _: Any) -> Any:
        value = _plain(value)
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
    for scalar in _ACCEPTS:
        conv.register_structure_hook(scalar, _structure_scalar)
    # Later registrations are tried first, so these beat cattrs' own factories.
    conv.register_structure_hook_func(_is_any, _structure_any)
    conv.register_structure_hook_factory(_is_literal, _literal_hook)
    conv.register_structure_hook_factory(_is_union, lambda t: _union_hook(conv, t))
    conv.register_structure_hook_factory(_is_sequence, lambda t: _sequence_hook(conv, t))
    conv.register_structure_hook_factory(_is_mapping, lambda t: _mapping_hook(conv, t))
    conv.register_structure_hook_factory(attrs.has, lambda t: _attrs_hook(conv, t))
    return conv


_CONVERTER = make_converter()


def structure(data: Mapping[str, Any], cls: type[T], *, path: str = "$") -> T:
    """Structure ``data`` into ``cls`` with the strict converter.

    Raises :class:`ConfigError` listing every problem, each prefixed with its
    path under ``path`` (``"$.plugins.cache"`` when structuring that table).
    """
    try:
        return _CONVERTER.structure(_plain(data), cls)
    except STRUCTURE_ERRORS as exc:
        raise ConfigError(format_problems(exc, path=path)) from exc


def unstructure(obj: Any) -> dict[str, Any]:
    """An attrs instance as plain dicts, lists and scalars (for comparison and JSON)."""
    if not attrs.has(type(obj)):
        raise TypeError(f"expected an attrs instance, got {type(obj).__name__}")
    result: dict[str, Any] = _CONVERTER.unstructure(obj)
    return result
