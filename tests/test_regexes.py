"""Every regex the project compiles at import matches the same on every CPython 3.11.

CPython 3.11.0-3.11.4 matched a possessive quantifier on a group wrongly when
the group can backtrack (gh-106052: ``re.fullmatch(b"(?:ab?c)*+", b"a")``
matched). Debian 12's python3 is 3.11.2, and on it the request framing
accepted ``Transfer-Encoding: gzip;`` and the chunk line ``3;``. The project
writes such repeats as atomic groups, ``(?>(?:...)*)``, which every 3.11
matches right; this test finds a possessive repeat of anything wider than
one character in any pattern held by a module of kernel/, sdk/ or plugins/,
so the rule holds on a fixed interpreter too, where the framing tests alone
would pass.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from re import _constants as C  # sre's opcodes, named as re itself names them
from re import _parser  # the parser re.compile uses (private, but 3.11+ has it)
from typing import Any

import pytest

PACKAGES = ("kernel", "sdk", "plugins")
#: Subpatterns one possessive repeat may hold: a single character each time
#: (a literal, a class, any), which cannot backtrack inside.
_ONE_CHARACTER = {C.LITERAL, C.NOT_LITERAL, C.IN, C.ANY}


def _patterns() -> Iterator[tuple[str, re.Pattern[Any]]]:
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if info.name.endswith(".__main__"):
                continue  # importing it runs the command line
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if isinstance(value, re.Pattern):
                    yield f"{info.name}.{name}", value


def _wide_possessive(items: Any) -> bool:
    """Whether a parsed pattern holds a possessive repeat of more than one character."""
    for op, av in items:
        if op is C.POSSESSIVE_REPEAT:
            body = list(av[2])
            if len(body) != 1 or body[0][0] not in _ONE_CHARACTER:
                return True
            continue
        for sub in _children(op, av):
            if _wide_possessive(sub):
                return True
    return False


def _children(op: Any, av: Any) -> Iterator[Any]:
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        yield av[2]
    elif op is C.SUBPATTERN:
        yield av[3]
    elif op in (C.ATOMIC_GROUP, C.ASSERT, C.ASSERT_NOT):
        yield av if op is C.ATOMIC_GROUP else av[1]
    elif op is C.BRANCH:
        yield from av[1]
    elif op is C.GROUPREF_EXISTS:
        yield from (branch for branch in av[1:] if branch is not None)


PATTERNS = sorted(_patterns(), key=lambda item: item[0])


def test_the_scan_finds_patterns() -> None:
    names = {name for name, _ in PATTERNS}
    assert "kernel.protocol.validate._CODING" in names
    assert len(PATTERNS) > 20


@pytest.mark.parametrize(
    ("source", "wide"),
    [
        (b"(?:ab?c)*+", True),  # gh-106052's own example
        (b"x(?:;[ \\t]*+a)*+y", True),
        (b"(?>(?:ab?c)*)", False),
        (b"[a-z]*+", False),
        (b"a++b?+", False),
        (b"(?:[a-z]++:)*", False),  # possessive inside a plain repeat: one class each
    ],
)
def test_the_check_tells_wide_from_narrow(source: bytes, wide: bool) -> None:
    assert _wide_possessive(_parser.parse(source.decode("latin-1"))) is wide


@pytest.mark.parametrize(("name", "pattern"), PATTERNS, ids=[n for n, _ in PATTERNS])
def test_no_possessive_repeat_of_a_group(name: str, pattern: re.Pattern[Any]) -> None:
    source = pattern.pattern
    text = source.decode("latin-1") if isinstance(source, bytes) else source
    assert not _wide_possessive(_parser.parse(text, pattern.flags)), (
        f"{name} repeats a group possessively: write (?>(?:...)*) instead"
    )


def test_the_framing_is_right_whatever_the_interpreter() -> None:
    from kernel.protocol import chunked, validate

    assert validate._CODING.fullmatch(b"gzip;") is None
    assert chunked._CHUNK_LINE.fullmatch(b"3;\r\n") is None
    assert validate._CODING.fullmatch(b"gzip; q=1") is not None
    assert chunked._CHUNK_LINE.fullmatch(b"3;name=value\r\n") is not None
