"""tools/build_accel.py: compiles the protocol modules that changed, and records what it built."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from kernel import accel

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_accel", ROOT / "tools" / "build_accel.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _current_manifest(out: Path, script: ModuleType) -> dict[str, dict[str, str]]:
    """A manifest calling every module current, with placeholder files."""
    modules = {}
    for path in script.sources():
        name = script.module_name(path)
        file = name.replace(".", "/") + accel.suffix()
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        (out / file).write_bytes(b"placeholder")
        modules[name] = {"sha256": accel.source_digest(path), "file": file}
    return modules


def _write(out: Path, modules: dict[str, dict[str, str]]) -> None:
    (out / accel.MANIFEST).write_text(json.dumps({"suffix": accel.suffix(), "modules": modules}))


def test_the_sources_are_every_protocol_module() -> None:
    names = [p.name for p in _script().sources()]
    expected = sorted(p.name for p in (ROOT / "kernel" / "protocol").glob("*.py"))
    assert names == [n for n in expected if n != "__init__.py"]


def test_nothing_is_compiled_when_every_build_is_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    modules = _current_manifest(tmp_path, script)
    _write(tmp_path, modules)
    assert script.main(["--out", str(tmp_path)]) == 0
    assert f"all {len(modules)} modules are current" in capsys.readouterr().out
    assert json.loads((tmp_path / accel.MANIFEST).read_text())["modules"] == modules


def test_a_changed_module_alone_is_compiled_and_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    modules = _current_manifest(tmp_path, script)
    name = "kernel.protocol.errorpage"
    modules[name]["sha256"] = "0" * 64  # as if errorpage.py had changed since
    _write(tmp_path, modules)
    assert script.main(["--out", str(tmp_path), "--jobs", "1"]) == 0
    assert f"compiling 1 of {len(modules)} modules" in capsys.readouterr().out
    after = json.loads((tmp_path / accel.MANIFEST).read_text())["modules"]
    source = ROOT / "kernel" / "protocol" / "errorpage.py"
    assert after[name]["sha256"] == accel.source_digest(source)
    built = tmp_path / after[name]["file"]
    assert built.read_bytes()[:4] == b"\x7fELF"
    assert {k: v for k, v in after.items() if k != name} == {
        k: v for k, v in modules.items() if k != name
    }
    # The compiled module loads and answers like the source.
    code = (
        "import importlib.util, sys\n"
        "from kernel.protocol import errorpage\n"
        f"spec = importlib.util.spec_from_file_location({name!r}, {str(built)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert m.__file__ != errorpage.__file__\n"
        "assert m.render_error_response(502, 'x') == errorpage.render_error_response(502, 'x')\n"
        "print(m.reason_phrase(404))\n"
    )
    env = {**os.environ, "TRELLIS_ACCEL": "off"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "Not Found"
