"""Watching the configuration files for changes (watchfiles), to reload.

:func:`watch_config` runs for the life of the app: it asks for a reload when
a file of the live generation changes, waits for that reload to be done,
then watches the files of whichever generation is live. watchfiles waits in
a thread of its own, which looks at its changes and its stop event every
:data:`WATCH_STEP_MS`; the stop event is set when the app stops and when
this task is cancelled, so shutdown never waits for the thread's timeout. A
failing watcher (the system's limit of inotify watches, say) is logged and
ends the watching, not the process: SIGHUP still reloads.

A config is often swapped rather than written: a Kubernetes ConfigMap or a
release-directory deploy points a symlink (``run.toml -> ..data/run.toml``,
``..data -> ..v1``) at a new directory and leaves the old file as it was. So
each file is watched as named: the directory of the path as given, of every
symlink its resolution goes through, and of the file it ends at (not
recursively), with only those names let through. Whether something changed
is then decided by what the path resolves to and that file's identity and
content (:func:`_fingerprint`), not by which directory had events, and the
symlinks are followed anew after each change, so the next swap is seen too.

May import: stdlib, trio, watchfiles.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import trio

__all__ = ["WATCH_STEP_MS", "WATCH_TIMEOUT_MS", "watch_config"]

log = logging.getLogger("kernel.app")

#: How often watchfiles' thread wakes up to look at its changes and its stop
#: event (ms): a change reloads 0.5-1 s after the write, and shutdown waits
#: at most this long for the thread. An idle proxy wakes twice a second for it.
WATCH_STEP_MS = 500
#: After this long without a change the thread returns to trio and is started
#: anew (ms); a bound in case its stop event were never set.
WATCH_TIMEOUT_MS = 60_000


async def watch_config(
    files: Callable[[], Iterable[Path]],
    changed: Callable[[], None],
    reloaded: Callable[[], Awaitable[None]],
    stop: trio.Event,
) -> None:
    """Call ``changed()`` when one of ``files()`` changes, then wait for
    ``reloaded()`` before watching again; return once ``stop`` is set."""
    # watchfiles' thread polls its stop event every step: set it on stop, and
    # also when this task is cancelled (anyio's thread call cannot be
    # cancelled, so the cancellation waits for the thread).
    quit_ = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_files, files, changed, reloaded, quit_)
        try:
            await stop.wait()
        finally:
            quit_.set()


async def _watch_files(
    files: Callable[[], Iterable[Path]],
    changed: Callable[[], None],
    reloaded: Callable[[], Awaitable[None]],
    quit_: trio.Event,
) -> None:
    try:
        await _watch_loop(files, changed, reloaded, quit_)
    except Exception:
        log.exception("watching the config files failed; SIGHUP still reloads")


#: What a config file is at one moment: the file its path resolves to, that
#: file's device, inode, size and mtime, and a hash of its content; ``None``
#: when it cannot be read.
Fingerprint = tuple[str, int, int, int, int, bytes] | None

#: More symlinks than this on one path is a loop (Linux's own limit).
_MAX_LINKS = 40


def _fingerprint(path: Path) -> Fingerprint:
    """What ``path`` is now; any difference from before is a change."""
    try:
        real = os.path.realpath(path)
        with open(real, "rb") as f:
            st = os.fstat(f.fileno())
            digest = hashlib.sha256(f.read()).digest()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, digest)


def _fingerprints(paths: Iterable[Path]) -> dict[Path, Fingerprint]:
    return {path: _fingerprint(path) for path in paths}


def _chain(path: Path) -> list[str]:
    """Every path the resolution of ``path`` goes through, each in a directory
    with no symlink on its way: the symlinks met, then the file it ends at."""
    met: list[str] = []
    current = Path(path.anchor)
    todo = list(path.parts[1:])
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        step = current / name
        if len(met) < _MAX_LINKS and os.path.islink(step):
            met.append(str(step))
            try:
                target = Path(os.readlink(step))
            except OSError:  # swapped under us: the next change says more
                break
            if target.is_absolute():
                current = Path(target.anchor)
                todo[:0] = target.parts[1:]
            else:
                todo[:0] = target.parts
            continue
        current = step
    met.append(str(current))
    return met


def _watch_set(paths: Iterable[Path]) -> tuple[list[str], frozenset[str]]:
    """The directories to watch for ``paths``, and the names to let through."""
    names = {name for path in paths for name in _chain(path.absolute())}
    dirs = sorted({os.path.dirname(name) for name in names if os.path.isdir(os.path.dirname(name))})
    return dirs, frozenset(names | set(dirs))


async def _watch_loop(
    files: Callable[[], Iterable[Path]],
    changed: Callable[[], None],
    reloaded: Callable[[], Awaitable[None]],
    quit_: trio.Event,
) -> None:
    import watchfiles

    # Its "1 change detected" at INFO for every save: the reload says more.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)

    # What each file was when last looked at (at the start, or when a change
    # asked for a reload): a change made while a reload ran is still seen.
    seen: dict[Path, Fingerprint] = {}
    while not quit_.is_set():
        ours = list(files())
        now = await trio.to_thread.run_sync(_fingerprints, ours)
        if any(path in seen and seen[path] != now[path] for path in now):
            seen = now
            changed()
            await reloaded()
            continue
        seen = now
        dirs, names = await trio.to_thread.run_sync(_watch_set, ours)

        def only_ours(_change: watchfiles.Change, path: str, names: frozenset[str] = names) -> bool:
            return path in names

        watcher = watchfiles.awatch(
            *dirs,
            watch_filter=only_ours,
            debounce=WATCH_STEP_MS,
            step=WATCH_STEP_MS,
            stop_event=quit_,
            rust_timeout=WATCH_TIMEOUT_MS,
            yield_on_timeout=False,
            recursive=False,
        )
        asked = False
        async with contextlib.aclosing(watcher) as changes:
            async for _changes in changes:
                now = await trio.to_thread.run_sync(_fingerprints, ours)
                if now != seen:
                    seen = now
                    changed()
                    asked = True
                    break
                # Nothing we read changed, but a symlink on the way may have:
                # then the directories to watch are others.
                if await trio.to_thread.run_sync(_watch_set, ours) != (dirs, names):
                    break
            else:
                return  # told to quit
        if asked:
            # Wait for that reload to be done (or rejected) before watching
            # again, with the file list of whichever generation is then live.
            await reloaded()
