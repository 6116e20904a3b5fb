"""Compile the sans-IO protocol modules with Cython into ``.accel/`` (``make accel``).

Each ``kernel/protocol/*.py`` (not the package's ``__init__``) is compiled
as it stands, with Python semantics kept (Cython reads no type from the
annotations), into an extension module under ``.accel/``, and the SHA-256
of its source goes into ``.accel/manifest.json``. :mod:`kernel.accel` loads a
compiled module only while its source still has that digest.

A module is compiled again only when its source changed or its build is
missing, so a second ``make accel`` with nothing edited takes a second.
The C files and objects go to ``.accel/tmp/`` and stay there for the next
incremental build.

    python tools/build_accel.py [--force] [--jobs N]

May import: stdlib, Cython, setuptools, kernel.accel.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernel import accel  # noqa: E402

#: Cython's settings: Python 3 semantics, and annotations are only annotations.
DIRECTIVES = {
    "language_level": 3,
    "annotation_typing": False,
    "binding": True,
    "emit_code_comments": False,
}


def sources() -> list[Path]:
    """The modules compiled: every module of the protocol package."""
    package = ROOT.joinpath(*accel.PACKAGE.split("."))
    return sorted(p for p in package.glob("*.py") if p.name != "__init__.py")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def load_manifest(out: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads((out / accel.MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if data.get("suffix") != accel.suffix():
        return {}
    modules = data.get("modules", {})
    return modules if isinstance(modules, dict) else {}


def build(paths: list[Path], out: Path, jobs: int) -> dict[str, str]:
    """Compile ``paths``; returns each module's extension file, relative to ``out``."""
    from Cython.Build import cythonize
    from setuptools import Distribution

    exts = cythonize(
        [str(p.relative_to(ROOT)) for p in paths],
        build_dir=str(out / "tmp" / "c"),
        compiler_directives=DIRECTIVES,
        nthreads=jobs,
        quiet=True,
        force=True,
    )
    dist = Distribution({"ext_modules": exts, "script_name": "build_accel"})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(out)
    cmd.build_temp = str(out / "tmp" / "obj")
    cmd.parallel = jobs
    cmd.inplace = False
    cmd.ensure_finalized()
    cmd.run()
    return {ext.name: str(Path(cmd.get_ext_fullpath(ext.name)).relative_to(out)) for ext in exts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="compile every module again")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=accel.default_root())
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    old = {} if args.force else load_manifest(out)
    digests = {module_name(p): accel.source_digest(p) for p in sources()}
    stale = [
        p
        for p in sources()
        if old.get(module_name(p), {}).get("sha256") != digests[module_name(p)]
        or not (out / old[module_name(p)]["file"]).is_file()
    ]
    files = {name: entry["file"] for name, entry in old.items() if name in digests}
    if stale:
        started = time.monotonic()
        print(f"accel: compiling {len(stale)} of {len(digests)} modules with Cython", flush=True)
        files.update(build(stale, out, args.jobs))
        print(f"accel: done in {time.monotonic() - started:.0f} s", flush=True)
    else:
        print(f"accel: all {len(digests)} modules are current")
    manifest = {
        "suffix": accel.suffix(),
        "modules": {
            name: {"sha256": digests[name], "file": files[name]} for name in sorted(digests)
        },
    }
    tmp = out / (accel.MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
    tmp.replace(out / accel.MANIFEST)
    return 0


if __name__ == "__main__":
    sys.exit(main())
