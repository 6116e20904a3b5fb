"""kernel.accel: the compiled protocol modules load only while they match their source."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernel import accel

PROTOCOL = Path(accel.__file__).resolve().parent / "protocol"
MODULE = "kernel.protocol.validate"


def _built_file(name: str) -> str:
    return name.replace(".", "/") + accel.suffix()


def _tree(tmp_path: Path, *, suffix: str | None = None) -> tuple[Path, Path]:
    """A source folder with validate.py and a build root whose manifest matches it.

    The "extension" is a placeholder: these tests look at what the finder
    decides, not at loading (the subprocess test below loads real builds).
    """
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(PROTOCOL / "validate.py", src / "validate.py")
    root = tmp_path / "build"
    built = root / _built_file(MODULE)
    built.parent.mkdir(parents=True)
    built.write_bytes(b"placeholder")
    manifest = {
        "suffix": suffix or accel.suffix(),
        "modules": {
            MODULE: {
                "sha256": accel.source_digest(src / "validate.py"),
                "file": _built_file(MODULE),
            }
        },
    }
    (root / accel.MANIFEST).write_text(json.dumps(manifest))
    return src, root


def test_a_current_build_is_found(tmp_path: Path) -> None:
    src, root = _tree(tmp_path)
    spec = accel.AccelFinder(root, "auto").find_spec(MODULE, [str(src)])
    assert spec is not None
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    assert spec.origin == str(root / _built_file(MODULE))


@pytest.mark.parametrize("mode", ["auto", "require"])
def test_an_edited_source_is_never_shadowed_by_its_old_build(tmp_path: Path, mode: str) -> None:
    src, root = _tree(tmp_path)
    with (src / "validate.py").open("a") as f:
        f.write("\n# edited after the build\n")
    finder = accel.AccelFinder(root, mode)  # type: ignore[arg-type]
    if mode == "auto":
        assert finder.find_spec(MODULE, [str(src)]) is None  # the source loads instead
    else:
        with pytest.raises(ImportError, match="changed since it was compiled"):
            finder.find_spec(MODULE, [str(src)])


def test_a_build_for_another_interpreter_does_not_count(tmp_path: Path) -> None:
    src, root = _tree(tmp_path, suffix=".cpython-399-other.so")
    assert accel.AccelFinder(root, "auto").find_spec(MODULE, [str(src)]) is None
    with pytest.raises(ImportError, match="no compiled build"):
        accel.AccelFinder(root, "require").find_spec(MODULE, [str(src)])


def test_a_missing_extension_file_does_not_count(tmp_path: Path) -> None:
    src, root = _tree(tmp_path)
    (root / _built_file(MODULE)).unlink()
    assert accel.AccelFinder(root, "auto").find_spec(MODULE, [str(src)]) is None
    with pytest.raises(ImportError, match="which is missing"):
        accel.AccelFinder(root, "require").find_spec(MODULE, [str(src)])


def test_no_manifest_means_pure_python(tmp_path: Path) -> None:
    src, _ = _tree(tmp_path)
    assert accel.AccelFinder(tmp_path / "nowhere", "auto").find_spec(MODULE, [str(src)]) is None


def test_off_and_other_packages_are_left_alone(tmp_path: Path) -> None:
    src, root = _tree(tmp_path)
    assert accel.AccelFinder(root, "off").find_spec(MODULE, [str(src)]) is None
    finder = accel.AccelFinder(root, "require")
    assert finder.find_spec("kernel.io.relay", [str(src)]) is None
    assert finder.find_spec("kernel.protocol.nosuchmodule", [str(src)]) is None
    assert finder.find_spec("kernel.protocol", None) is None


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, "auto"),
        ("", "auto"),
        ("auto", "auto"),
        ("off", "off"),
        ("0", "off"),
        ("require", "require"),
        ("1", "require"),
        (" Require ", "require"),
    ],
)
def test_mode_from_env(value: str | None, mode: str) -> None:
    assert accel.mode_from_env(value) == mode


def test_a_bad_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="expected auto, off or require"):
        accel.mode_from_env("fast")


def _probe(mode: str) -> dict[str, object]:
    code = (
        "import importlib, json, pkgutil, kernel.accel as a, kernel.protocol as p\n"
        "for m in pkgutil.iter_modules(p.__path__):\n"
        "    importlib.import_module('kernel.protocol.' + m.name)\n"
        "from kernel.protocol import http1, validate\n"
        "codec = http1.make_server_codec('httptools', http1.Limits())\n"
        "codec.receive_data(b'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')\n"
        "head = codec.next_event()\n"
        "print(json.dumps({'compiled': a.compiled_modules(), 'target': head.target.decode(),"
        " 'validate': validate.__file__}))\n"
    )
    env = {**os.environ, "TRELLIS_ACCEL": mode}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_pure_python_when_off() -> None:
    result = _probe("off")
    assert result["compiled"] == []
    assert result["validate"] == str(PROTOCOL / "validate.py")
    assert result["target"] == "/"


@pytest.mark.skipif(
    accel.mode_from_env(os.environ.get("TRELLIS_ACCEL")) != "require",
    reason="the compiled build is required only under TRELLIS_ACCEL=require (make test)",
)
def test_every_protocol_module_runs_compiled_under_require() -> None:
    result = _probe("require")
    every = sorted(
        f"kernel.protocol.{p.stem}" for p in PROTOCOL.glob("*.py") if p.stem != "__init__"
    )
    assert len(every) > 15
    assert result["compiled"] == every
    assert str(result["validate"]).endswith(accel.suffix())
    assert result["target"] == "/"
