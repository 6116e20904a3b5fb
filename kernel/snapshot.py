"""The config a set of workers shares (``[server] workers = N``): one snapshot per worker.

The supervisor makes a private directory for the set and names it to the
workers in ``TRELLIS_SNAPSHOTS``. Each time a generation of a worker goes
live (its start, each reload it accepted: SIGHUP or ``watch_config``), the
worker writes ``worker-W.toml`` there: the generation's number, what its
config files said (a :class:`~kernel.config.Document`: the main file merged
with its includes, before ``${VAR}`` substitution and ``TRELLIS_*``
overrides) and the drain limits it now runs by. Written to a temporary file
and renamed over the old one, so a reader sees the whole old snapshot or the
whole new one; and each worker writes only its own file, so two workers
writing at once never meet.

A worker that starts while the directory holds snapshots (a restarted one)
starts from the newest: the highest generation number, the one written
last among equal numbers. It loads that document as its sibling did -
substituting and overriding from its environment, which every worker
inherits from the supervisor - runs it with the same number, and watches
the same files. Files the config only names (certificates, plugin modules)
are read from disk, as on any load. When the directory is empty (the set's
first start) or the snapshot does not load, the worker loads the config
file, as before (kernel/setmember.py). The supervisor drains by the largest limits
found in the snapshots, the ones the workers run, counts a worker's process
as started once it wrote its snapshot (kernel/supervisor.py), and removes the
directory when the set has stopped; workers that find their supervisor gone
remove it themselves.

May import: stdlib, attrs, tomlkit, kernel.config.
"""

from __future__ import annotations

import contextlib
import os
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import tomlkit

from kernel.config import Document, KernelSection

__all__ = [
    "SNAPSHOTS_ENV",
    "Snapshot",
    "newest",
    "scan",
    "snapshot_dir",
    "write",
    "written_by",
]

#: The set's snapshot directory, as the supervisor tells its workers.
SNAPSHOTS_ENV = "TRELLIS_SNAPSHOTS"
_PREFIX = "worker-"
_SUFFIX = ".toml"


@attrs.frozen
class Snapshot:
    """What one worker runs: its generation's number, document and drain limits."""

    generation: int
    worker: int
    #: The process that wrote it.
    pid: int
    #: ``time.monotonic_ns()`` (one clock for the whole machine on Linux) when written.
    written: int
    document: Document
    shutdown_delay_s: float
    shutdown_grace_s: float
    shutdown_abort_s: float


def snapshot_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The set's snapshot directory (None outside a set of workers)."""
    value = (os.environ if environ is None else environ).get(SNAPSHOTS_ENV)
    return Path(value) if value else None


def write(
    directory: Path, *, worker: int, generation: int, document: Document, kernel: KernelSection
) -> Snapshot:
    """Replace worker ``worker``'s snapshot (raises OSError, or ValueError when
    the document does not come back from TOML as it was)."""
    snap = Snapshot(
        generation=generation,
        worker=worker,
        pid=os.getpid(),
        written=time.monotonic_ns(),
        document=document,
        shutdown_delay_s=kernel.shutdown_delay_s,
        shutdown_grace_s=kernel.shutdown_grace_s,
        shutdown_abort_s=kernel.shutdown_abort_s,
    )
    text = _dumps(snap)
    if _loads(text).document.data != document.data:
        raise ValueError("the document does not survive being written as TOML")
    final = directory / f"{_PREFIX}{worker}{_SUFFIX}"
    temporary = directory / f".{final.name}.{os.getpid()}.tmp"
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, final)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return snap


def scan(directory: Path) -> tuple[list[Snapshot], list[str]]:
    """Every worker's snapshot in ``directory``, and what could not be read (one line each)."""
    found: list[Snapshot] = []
    problems: list[str] = []
    try:
        names = sorted(
            p for p in directory.iterdir() if p.name.startswith(_PREFIX) and p.suffix == _SUFFIX
        )
    except OSError as exc:
        return [], [f"{directory}: {exc.strerror or exc}"]
    for path in names:
        try:
            found.append(_loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{path}: {exc}")
    return found, problems


def written_by(directory: Path, worker: int, pid: int) -> bool:
    """Whether worker ``worker``'s snapshot is process ``pid``'s: it served."""
    try:
        text = (directory / f"{_PREFIX}{worker}{_SUFFIX}").read_text(encoding="utf-8")
        return _loads(text).pid == pid
    except (OSError, ValueError, KeyError, TypeError):
        return False


def newest(snapshots: list[Snapshot]) -> Snapshot | None:
    """The snapshot a starting worker starts from: the highest generation,
    the latest written of equals."""
    return max(snapshots, key=lambda s: (s.generation, s.written), default=None)


def _dumps(snap: Snapshot) -> str:
    meta: dict[str, Any] = {
        "generation": snap.generation,
        "worker": snap.worker,
        "pid": snap.pid,
        "written": snap.written,
        "source": snap.document.source,
        "files": [os.fspath(f) for f in snap.document.files],
        "shutdown_delay_s": snap.shutdown_delay_s,
        "shutdown_grace_s": snap.shutdown_grace_s,
        "shutdown_abort_s": snap.shutdown_abort_s,
    }
    return tomlkit.dumps({"snapshot": meta, "document": dict(snap.document.data)})


def _loads(text: str) -> Snapshot:
    doc = tomllib.loads(text)  # a ValueError when it is not TOML
    meta = doc["snapshot"]
    data = doc.get("document", {})
    if not isinstance(meta, dict) or not isinstance(data, dict):
        raise ValueError("not a snapshot")
    document = Document(data, tuple(Path(f) for f in meta["files"]), str(meta["source"]))
    return Snapshot(
        generation=int(meta["generation"]),
        worker=int(meta["worker"]),
        pid=int(meta["pid"]),
        written=int(meta["written"]),
        document=document,
        shutdown_delay_s=float(meta["shutdown_delay_s"]),
        shutdown_grace_s=float(meta["shutdown_grace_s"]),
        shutdown_abort_s=float(meta["shutdown_abort_s"]),
    )
