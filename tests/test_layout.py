"""Tests mirror the source tree (mitmproxy's ``test/filename_matching.py``).

Every module ``kernel/**/X.py``, ``sdk/**/X.py`` and ``plugins/**/X.py``
(``__init__.py`` and ``__main__.py`` aside) has ``tests/<same dirs>/test_X.py``;
a private module ``_X.py`` maps to ``test_X.py``. Every
``tests/{kernel,sdk,plugins}/**/test_X.py`` names an existing module
(``X.py``, ``_X.py`` or the package ``X/__init__.py``).

Exceptions are listed below with a reason. :data:`KNOWN_GAPS` is the list of
modules that do not have their test *yet*: it may only shrink - the test fails
when an entry gets its test (remove the entry) or its module disappears.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kernel", "sdk", "plugins")
NOT_MODULES = {"__init__.py", "__main__.py"}

#: Modules that are deliberately tested elsewhere, with the reason.
UNTESTED_BY_DESIGN: dict[str, str] = {
    # (none yet)
}

#: Test files that do not map to one module, with the reason.
TESTS_WITHOUT_MODULE: dict[str, str] = {
    # Pins sdk.__all__ and the public submodules: it tests sdk/__init__.py.
    "tests/sdk/test_exports.py": "tests the public door, sdk/__init__.py",
    # h11 and httptools must agree byte for byte (ARCHITECTURE.md, "Protocols"):
    # one test over both codec modules.
    "tests/kernel/protocol/test_differential.py": "compares h11_codec.py and httptools_codec.py",
}

#: Modules that lack their test today. The lead shrinks this set; never add to
#: it to make a new module pass - write its test instead.
KNOWN_GAPS: set[str] = {}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _modules() -> list[Path]:
    found: list[Path] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name not in NOT_MODULES and "__pycache__" not in path.parts:
                found.append(path)
    return found


def _expected_test(module: Path) -> Path:
    rel = module.relative_to(ROOT)
    return ROOT / "tests" / rel.parent / f"test_{rel.stem.lstrip('_')}.py"


def _module_candidates(test: Path) -> list[Path]:
    rel = test.relative_to(ROOT / "tests")
    name = rel.stem.removeprefix("test_")
    directory = ROOT / rel.parent
    return [directory / f"{name}.py", directory / f"_{name}.py", directory / name / "__init__.py"]


def _tests() -> list[Path]:
    found: list[Path] = []
    for package in PACKAGES:
        base = ROOT / "tests" / package
        if base.is_dir():
            found.extend(sorted(base.rglob("test_*.py")))
    return found


def test_the_tree_is_where_this_test_expects_it() -> None:
    assert (ROOT / "pyproject.toml").is_file()
    assert len(_modules()) > 10
    assert _expected_test(ROOT / "sdk" / "_http.py") == ROOT / "tests" / "sdk" / "test_http.py"
    assert _expected_test(ROOT / "kernel" / "io" / "exchange.py") == (
        ROOT / "tests" / "kernel" / "io" / "test_exchange.py"
    )


def test_every_module_has_its_test() -> None:
    missing = sorted(
        _rel(m)
        for m in _modules()
        if not _expected_test(m).is_file()
        and _rel(m) not in KNOWN_GAPS
        and _rel(m) not in UNTESTED_BY_DESIGN
    )
    assert not missing, "modules without tests/<same dirs>/test_<name>.py:\n" + "\n".join(
        f"  {m} -> {_rel(_expected_test(ROOT / m))}" for m in missing
    )


def test_every_test_file_names_a_module() -> None:
    orphans = sorted(
        _rel(t)
        for t in _tests()
        if _rel(t) not in TESTS_WITHOUT_MODULE
        and not any(c.is_file() for c in _module_candidates(t))
    )
    assert not orphans, (
        "test files whose module does not exist (rename the test to follow the module,"
        " or list it in TESTS_WITHOUT_MODULE with a reason):\n"
        + "\n".join(f"  {t}" for t in orphans)
    )


def test_known_gaps_only_shrink() -> None:
    closed = sorted(g for g in KNOWN_GAPS if _expected_test(ROOT / g).is_file())
    assert not closed, "these modules have tests now: remove them from KNOWN_GAPS:\n" + "\n".join(
        f"  {g}" for g in closed
    )
    gone = sorted(g for g in KNOWN_GAPS if not (ROOT / g).is_file())
    assert not gone, "these KNOWN_GAPS modules no longer exist: remove them:\n" + "\n".join(
        f"  {g}" for g in gone
    )


def test_exception_lists_are_not_stale() -> None:
    for module in UNTESTED_BY_DESIGN:
        assert (ROOT / module).is_file(), f"UNTESTED_BY_DESIGN names a missing module {module}"
        assert module not in KNOWN_GAPS
    for test in TESTS_WITHOUT_MODULE:
        assert (ROOT / test).is_file(), f"TESTS_WITHOUT_MODULE names a missing test {test}"


def test_no_async_autouse_fixtures() -> None:
    """pytest-trio runs an ``async`` fixture only for tests that name it: an
    autouse one is silently skipped (test_tunnel's socket cleanup was, and
    leaked 16 sockets per run). Cleanup that must always run is a plain fixture."""
    pattern = re.compile(r"@pytest\.fixture\([^)]*autouse=True[^)]*\)\s*\nasync def (\w+)")
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for name in pattern.findall(path.read_text())
    ]
    assert found == []
