"""Watching the configuration files for changes (watchfiles), to reload.

:func:`watch_config` runs for the life of the app: it asks for a reload when
a file of the live generation changes, waits for that reload to be done,
then watches the files of whichever generation is live. watchfiles waits in
a thread of its own, which looks at its changes and its stop event every
:data:`WATCH_STEP_MS`; the stop event is set when the app stops and when
this task is cancelled, so shutdown never waits for the thread's timeout. A
failing watcher (the system's limit of inotify watches, say) is logged and
ends the watching, not the process: SIGHUP still reloads.

May import: stdlib, trio, watchfiles.
"""

from __future__ import annotations

import contextlib
import logging
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


async def _watch_loop(
    files: Callable[[], Iterable[Path]],
    changed: Callable[[], None],
    reloaded: Callable[[], Awaitable[None]],
    quit_: trio.Event,
) -> None:
    import watchfiles

    # Its "1 change detected" at INFO for every save: the reload says more.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)

    while not quit_.is_set():
        ours = {p.resolve() for p in files()}
        dirs = sorted({str(p.parent) for p in ours})

        def only_ours(_change: watchfiles.Change, path: str, ours: set[Path] = ours) -> bool:
            return Path(path).resolve() in ours

        watcher = watchfiles.awatch(
            *dirs,
            watch_filter=only_ours,
            debounce=WATCH_STEP_MS,
            step=WATCH_STEP_MS,
            stop_event=quit_,
            rust_timeout=WATCH_TIMEOUT_MS,
            yield_on_timeout=False,
        )
        async with contextlib.aclosing(watcher) as changes:
            async for _changes in changes:
                changed()
                break
            else:
                return  # told to quit
        # Wait for that reload to be done (or rejected) before watching again,
        # with the file list of whichever generation is then live.
        await reloaded()
