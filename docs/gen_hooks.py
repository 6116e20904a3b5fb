"""Generate docs/hooks.md, the hook reference, from sdk/hookspecs.py.

The hookspec docstrings are the single source (L4); this script only lays
them out: the hooks in sdk.hookspecs's order, one section per banner comment
of the modules that define them (sdk/_hooks_lifecycle.py, sdk/_hooks_flow.py),
one entry per hook with its signature, its calling convention and its docstring, with the
reST roles turned into Markdown. ``tests/docs/test_hooks_doc.py`` fails when
the committed file differs from what this script produces.

Usage::

    .venv/bin/python docs/gen_hooks.py           # rewrite docs/hooks.md
    .venv/bin/python docs/gen_hooks.py --check   # exit 1 if it is stale

May import: stdlib, sdk.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "hooks.md"

if str(ROOT) not in sys.path:  # run as a script: docs/ is sys.path[0], not the root
    sys.path.insert(0, str(ROOT))

import sdk  # noqa: E402
import sdk.hookspecs  # noqa: E402

COMMAND = ".venv/bin/python docs/gen_hooks.py"

_BANNER = re.compile(r"^# -{10,}$")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_FIELD = re.compile(r"^:(param (\w+)|return):\s*(.*)$")
_SDK_NAME = re.compile(
    r"(?<![.\w])("
    + "|".join(n for n in sdk.__all__ if n[:1].isupper() and not n.isupper())
    + r")\b"
)


def _markdown(text: str) -> str:
    """reST inline markup to Markdown: roles and double-backquote literals."""
    return _LITERAL.sub(r"`\1`", _ROLE.sub(r"`\1`", text))


def _sections() -> list[tuple[str, list[tuple[str, Callable[..., Any]]]]]:
    """(banner title, hooks under it), the hooks in sdk.hookspecs's order.

    The hooks are defined in sdk.hookspecs's private parts; each one's section
    is the banner above it in its own file.
    """
    out: list[tuple[str, list[tuple[str, Callable[..., Any]]]]] = []
    for name, fn in vars(sdk.hookspecs).items():
        if not (inspect.isfunction(fn) and name.startswith(sdk.HOOK_PREFIX)):
            continue
        title = _banner_above(fn)
        if not out or out[-1][0] != title:
            out.append((title, []))
        out[-1][1].append((name, fn))
    return out


def _banner_above(fn: Callable[..., Any]) -> str:
    """The title of the last banner comment above ``fn`` in its source file."""
    path = inspect.getsourcefile(fn)
    assert path is not None
    source = Path(path).read_text(encoding="utf-8").splitlines()
    title = ""
    for i in range(fn.__code__.co_firstlineno - 3):
        if _BANNER.match(source[i]) and _BANNER.match(source[i + 2]):
            title = source[i + 1].removeprefix("#").strip()
    return title


def _qualify(annotation: object) -> str:
    """``Flow | None`` -> ``sdk.Flow | None``: name the public door."""
    return _SDK_NAME.sub(r"sdk.\1", str(annotation))


def _signature(name: str, fn: Callable[..., Any]) -> str:
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {_qualify(p.annotation)}" for p in sig.parameters.values())
    return f"def {name}({params}) -> {_qualify(sig.return_annotation)}"


def _convention(fn: Callable[..., Any]) -> str:
    opts: dict[str, Any] = getattr(fn, f"{sdk.PROJECT}_spec")
    ret = str(inspect.signature(fn).return_annotation)
    parts = ["`def` or `async def`" if "Awaitable" in ret else "`def` only"]
    if opts.get("firstresult"):
        parts.append("first result (stops at the first non-`None` return)")
    if opts.get("historic"):
        parts.append("historic (also called for plugins registered later)")
    return "; ".join(parts)


def _body(doc: str) -> Iterator[str]:
    """The docstring after its summary line, fields as Markdown lists."""
    lines = _markdown(doc).splitlines()[1:]
    fields: list[list[str]] = []  # [label, text]
    for line in lines:
        m = _FIELD.match(line)
        if m:
            label = f"`{m.group(2)}`" if m.group(2) else "returns"
            fields.append([label, m.group(3)])
            continue
        if fields and line.startswith(" ") and line.strip():
            fields[-1][1] += " " + line.strip()
            continue
        if fields:
            yield from _fields(fields)
            fields = []
        yield line
    yield from _fields(fields)


def _fields(fields: list[list[str]]) -> Iterator[str]:
    params = [f for f in fields if f[0] != "returns"]
    returns = [f for f in fields if f[0] == "returns"]
    if params:
        yield "**Parameters**"
        yield ""
        yield from (f"- {label}: {text}" for label, text in params)
    if returns:
        if params:
            yield ""
        yield from (f"**Returns:** {text}" for _, text in returns)


def _intro() -> Iterator[str]:
    doc = _markdown(inspect.getdoc(sdk.hookspecs) or "")
    for line in doc.splitlines()[1:]:
        if not line.startswith("May import:"):
            yield line


def render() -> str:
    """The whole of docs/hooks.md."""
    sections = _sections()
    out: list[str] = [
        "# Hook reference",
        "",
        f"<!-- Generated from sdk/hookspecs.py by docs/gen_hooks.py: do not edit by hand,"
        f" run `{COMMAND}`. -->",
        "",
        _markdown((inspect.getdoc(sdk.hookspecs) or "").splitlines()[0]),
        *_intro(),
        "",
        "See [PLUGINS.md](PLUGINS.md) for how to write, configure and test a plugin.",
        "",
        "## Overview",
        "",
        "| Hook | Phase | Convention | What it is for |",
        "| --- | --- | --- | --- |",
    ]
    for title, hooks in sections:
        phase = title.partition(" (")[0]
        for name, fn in hooks:
            summary = _markdown((inspect.getdoc(fn) or "").splitlines()[0])
            conv = _convention(fn).replace(" (stops at the first non-`None` return)", "")
            conv = conv.replace(" (also called for plugins registered later)", "")
            out.append(f"| [`{name}`](#{name}) | {phase} | {conv} | {summary} |")
    for title, hooks in sections:
        out += ["", f"## {title}"]
        for name, fn in hooks:
            doc = inspect.getdoc(fn) or ""
            out += [
                "",
                f"### {name}",
                "",
                "```python",
                _signature(name, fn),
                "```",
                "",
                f"*{_convention(fn)}*",
                "",
                _markdown(doc.splitlines()[0]),
                *_body(doc),
            ]
    text = "\n".join(line.rstrip() for line in out)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/hooks.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
