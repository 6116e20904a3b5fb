"""docs/hooks.md is generated from sdk/hookspecs.py and must not drift from it."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

import sdk.hookspecs

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "gen_hooks.py"
HOOKS_MD = ROOT / "docs" / "hooks.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_trellis_gen_hooks", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_committed_hooks_md_is_current() -> None:
    expected = _generator().render()
    current = HOOKS_MD.read_text(encoding="utf-8")
    assert current == expected, (
        "docs/hooks.md is out of date with sdk/hookspecs.py: "
        "run `.venv/bin/python docs/gen_hooks.py` and commit the result"
    )


def test_every_hook_is_documented_with_its_parameters() -> None:
    text = _generator().render()
    hooks = [
        (name, fn)
        for name, fn in vars(sdk.hookspecs).items()
        if inspect.isfunction(fn) and name.startswith(sdk.HOOK_PREFIX)
    ]
    assert len(hooks) == 19
    for name, fn in hooks:
        assert f"\n### {name}\n" in text, name
        assert f"[`{name}`](#{name})" in text, name
        for param in inspect.signature(fn).parameters:
            assert f"- `{param}`: " in text, (name, param)


def test_rendering_turns_rest_into_markdown() -> None:
    text = _generator().render()
    assert "``" not in text.replace("```", "")  # code fences aside, no reST literals
    assert ":param" not in text
    assert ":return:" not in text
    assert ":class:" not in text
    assert "May import:" not in text
    assert "def trellis_request(flow: sdk.Flow) -> " in text
    assert "*`def` or `async def`; first result" in text
    assert "historic (also called for plugins registered later)" in text


def test_check_mode_passes_on_the_committed_file() -> None:
    assert _generator().main(["--check"]) == 0
