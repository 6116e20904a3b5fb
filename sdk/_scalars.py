"""Strict scalars, literals and unions for the converter of :mod:`sdk._config`.

* :func:`structure_scalar`: a ``str`` field takes only a string, ``int``
  only an integer (not ``true``, not ``"5"``), ``float`` an integer or a
  float, ``bool`` only ``true``/``false`` (subclasses such as ``StrEnum``
  too; :data:`ACCEPTS` is the table of what each accepts).
* :func:`literal_hook`, :func:`union_hook`: ``Literal[...]`` values checked,
  a union's members tried in order (``X | None``: ``X``'s own message).
* :class:`EnvText`: a string that came from the environment, read as a TOML
  scalar by a field that wants an ``int``, ``float`` or ``bool``.
* :func:`unwrap`: tomlkit wrapper items unwrapped, so a parsed document can be
  structured as is.

May import: stdlib, cattrs, tomlkit, sdk._problems.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from typing import Any, get_args

import cattrs
import tomlkit.container
import tomlkit.items
from cattrs.errors import ClassValidationError, IterableValidationError

from sdk._problems import STRUCTURE_ERRORS, describe_type, show_value

__all__ = [
    "ACCEPTS",
    "EnvText",
    "literal_hook",
    "structure_any",
    "structure_scalar",
    "union_hook",
    "unwrap",
]


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


def unwrap(value: Any) -> Any:
    """Unwrap tomlkit wrapper types into plain Python values (deeply)."""
    if isinstance(value, tomlkit.items.Item | tomlkit.container.Container):
        return value.unwrap()
    return value


#: What each scalar class accepts (bool apart: it is an int, and an int is no bool).
ACCEPTS: dict[type, tuple[type, ...]] = {
    bool: (bool,),
    str: (str,),
    int: (int,),
    float: (int, float),
}


def structure_scalar(value: Any, cl: type[Any]) -> Any:
    """Strict ``str``/``int``/``float``/``bool`` (and subclasses such as StrEnum, IntEnum)."""
    base = next(b for b in ACCEPTS if issubclass(cl, b))
    value = unwrap(value)
    got = value
    if isinstance(value, EnvText) and base is not str:
        got = value.scalar  # environment text, read as the field wants it
    if isinstance(got, bool) != (base is bool) or not isinstance(got, ACCEPTS[base]):
        raise TypeError(f"must be {describe_type(base)}, got {show_value(value)}")
    plain = str.__str__(got) if base is str else base(got)  # drops EnvText, tomlkit types
    return plain if cl is base else cl(plain)


def structure_any(value: Any, _: Any) -> Any:
    return unwrap(value)


def literal_hook(tp: Any) -> Callable[[Any, Any], Any]:
    choices = get_args(tp)

    def hook(value: Any, _: Any) -> Any:
        value = unwrap(value)
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


def union_hook(conv: cattrs.Converter, tp: Any) -> Callable[[Any, Any], Any]:
    members = [m for m in get_args(tp) if m is not type(None)]
    nullable = len(members) < len(get_args(tp))

    def hook(value: Any, _: Any) -> Any:
        value = unwrap(value)
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
