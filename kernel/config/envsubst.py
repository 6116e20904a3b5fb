"""The environment's two ways into a config: ``${VAR}`` placeholders and ``TRELLIS_*`` overrides.

Placeholders (:func:`substitute`) are expanded in string values only, after
the TOML is parsed, so an environment value can never add keys or tables:

* ``${NAME}`` is the variable's value; unset is a problem (``environment
  variable NAME is not set``), set-but-empty is the empty string.
* ``${NAME:-default}`` is the default when the variable is unset *or empty*
  (as in the shell). The default is literal text and cannot contain ``}``.
* ``$${`` is a literal ``${``. A ``$`` anywhere else is just a ``$``.
* A string that is exactly one placeholder becomes :class:`sdk.EnvText`: a
  string that a number or boolean field reads as a TOML scalar, so
  ``connect_timeout_s = "${T:-5}"`` is 5.0 while ``password = "${PW}"`` stays
  text even when ``PW=1234``. Mixed strings (``"http://${HOST}:8080"``) stay
  plain strings.

Overrides (:func:`apply_overrides`): ``TRELLIS_<SECTION>_<KEY>=value`` sets
``<key>`` in ``[kernel]``, ``[server]`` or ``[upstream]``, replacing what the
files said. The value is read as a TOML value when it is an array, an inline
table or a quoted string (``'["router","headers"]'``, ``'"h11"'``); anything
else is :class:`sdk.EnvText`, so ``2.5`` and ``true`` become numbers and
booleans where the field wants them and ``h11`` is plain text. A variable
that names a known section but an unknown key is a problem; every other
``TRELLIS_*`` variable (``TRELLIS_LISTEN``, ``TRELLIS_UPSTREAM``,
``TRELLIS_UPSTREAMS``, ``TRELLIS_LOG`` ...) is not ours and is ignored.

May import: stdlib, attrs, sdk, kernel.config.model.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

import attrs

from kernel.config.model import KernelSection, ServerSection, UpstreamSection
from sdk._config import ConfigPath, EnvText

__all__ = ["OVERRIDE_SECTIONS", "apply_overrides", "expand", "parse_override", "substitute"]

#: The tables ``TRELLIS_<SECTION>_<KEY>`` may reach.
OVERRIDE_SECTIONS: Mapping[str, type[Any]] = {
    "kernel": KernelSection,
    "server": ServerSection,
    "upstream": UpstreamSection,
}

_PREFIX = "TRELLIS_"
# `$${` (escape), a complete `${...}`, or a `${` that never closes.
_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHOLE = re.compile(r"\$\{[^}]*\}")


def expand(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand the placeholders in one string: ``(result, problems)``."""
    out: list[str] = []
    problems: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token == "$${":
            out.append("${")
            continue
        inner = m.group(1)
        if inner is None:
            problems.append("unterminated '${' (write '$${' for a literal '${')")
            continue
        name, sep, default = inner.partition(":-")
        if not _NAME.fullmatch(name):
            problems.append(f"invalid placeholder {token!r} (use ${{NAME}} or ${{NAME:-default}})")
            continue
        value = environ.get(name)
        if sep and not value:
            value = default
        if value is None:
            problems.append(f"environment variable {name} is not set")
            continue
        out.append(value)
    out.append(text[pos:])
    return "".join(out), problems


def substitute(
    data: Any, environ: Mapping[str, str], parts: ConfigPath = ()
) -> tuple[Any, list[tuple[ConfigPath, str]]]:
    """Expand placeholders in every string value of ``data`` (a new tree comes back).

    A string with a problem is left as written; each problem carries its path.
    """
    problems: list[tuple[ConfigPath, str]] = []

    def walk(value: Any, at: ConfigPath) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*at, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*at, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        result, found = expand(value, environ)
        if found:
            problems.extend((at, p) for p in found)
            return value
        return EnvText(result) if _WHOLE.fullmatch(value) else result

    return walk(data, parts), problems


def parse_override(raw: str) -> Any:
    """An override's value: a TOML array, inline table or quoted string, else :class:`EnvText`."""
    try:
        doc = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return EnvText(raw)
    value = doc.get("v")
    if len(doc) == 1 and isinstance(value, list | dict | str):
        return value
    return EnvText(raw)  # numbers, booleans, dates: the field decides how to read it


def _split(name: str) -> tuple[str, str] | None:
    """``TRELLIS_SERVER_HTTP1`` -> ``("server", "http1")``; None when it is not an override."""
    if not name.startswith(_PREFIX):
        return None
    rest = name[len(_PREFIX) :]
    for section in OVERRIDE_SECTIONS:
        head = section.upper() + "_"
        # Needs the "_": TRELLIS_UPSTREAM and TRELLIS_UPSTREAMS are other tools' variables.
        if rest.startswith(head):
            return section, rest[len(head) :].lower()
    return None


def apply_overrides(
    data: dict[str, Any],
    environ: Mapping[str, str],
    origins: dict[ConfigPath, str | None],
) -> list[str]:
    """Apply ``TRELLIS_<SECTION>_<KEY>`` variables to ``data`` in place.

    Records each override in ``origins`` as ``"from TRELLIS_..."``; returns the
    problems (unknown keys), each starting with the variable's name.
    """
    problems: list[str] = []
    for name in sorted(environ):
        split = _split(name)
        if split is None:
            continue
        section, key = split
        known = [a.name for a in attrs.fields(OVERRIDE_SECTIONS[section]) if a.init]
        if key not in known:
            problems.append(f"{name}: no key {key!r} in [{section}] (known: {', '.join(known)})")
            continue
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            continue  # `server = 5`: structuring reports the section itself
        table[key] = parse_override(environ[name])
        where = (section, key)
        for stale in [p for p in origins if p[: len(where)] == where]:
            del origins[stale]
        origins[where] = f"from {name}"
    return problems
