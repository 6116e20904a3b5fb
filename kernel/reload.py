"""Reloads: how they are asked for, and the parts that are not the app's state.

:class:`ReloadRequests` takes the requests (SIGHUP, ``App.request_reload``,
the config watcher while ``[kernel] watch_config`` is on: kernel/watch.py)
and runs them one at a time; one asked for while 8 wait is dropped (those
queued read the latest file).

:meth:`kernel.app.App.reload` builds the new generation completely before
anything changes, and any problem leaves the old one serving. It uses:

- :func:`config_is_empty`: an empty config file is valid (every default),
  but on a reload almost always an editor caught between truncating the
  file and writing it; such a reload is refused;
- :func:`bind_listeners`: the new generation's listeners are bound next to
  the live ones before the switch (a listener whose address is held keeps
  its socket, renamed if need be); :class:`ListenerSwap` undoes that when
  the reload is refused later, or applies it at the switch;
- :func:`warn_start_only`: names the settings read only at start
  (:data:`START_ONLY`) that the reload changed.

Records go to the ``kernel.app`` logger, as they did before this module
was split out of kernel/app.py.

May import: stdlib, trio, kernel.config, kernel.generation, kernel.io, kernel.watch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from kernel.config import Settings
from kernel.generation import Generation
from kernel.io.listeners import BindError, BoundListener, bind, sockets_to_keep
from kernel.watch import watch_config

__all__ = [
    "START_ONLY",
    "ListenerSwap",
    "ReloadRequests",
    "bind_listeners",
    "config_is_empty",
    "warn_start_only",
]

log = logging.getLogger("kernel.app")

#: Settings read once, when the process starts (kernel/cli.py): a reload
#: that changes one says it takes effect only after a restart.
#: (The supervisor of ``[server] workers`` drains by the limits its workers
#: run, from their snapshots: kernel/supervisor.py. A worker restarted by it
#: reads these from the set's snapshot, when there is one.)
START_ONLY = (("kernel", "log_level"), ("kernel", "log_format"), ("server", "workers"))


class ReloadRequests:
    """Reloads asked for, run one at a time by ``reload(reason)``.

    ``live`` gives the live generation (whose files the watcher watches);
    the watcher ends once ``stop`` is set.
    """

    def __init__(
        self,
        reload: Callable[[str], Awaitable[object]],
        live: Callable[[], Generation],
        stop: trio.Event,
    ) -> None:
        self._reload = reload
        self._live = live
        self._stop = stop
        self._send: trio.MemorySendChannel[str] | None = None
        self._receive: trio.MemoryReceiveChannel[str] | None = None
        #: Set once a reload was processed, then replaced by a new event.
        self._reloaded = trio.Event()
        #: The config watcher's scope while ``[kernel] watch_config`` is on.
        self._watch_scope: trio.CancelScope | None = None

    def open(self) -> None:
        """Take requests from now on (those before are dropped); :meth:`run` runs them."""
        self._send, self._receive = trio.open_memory_channel[str](8)

    def request(self, reason: str) -> None:
        """Ask for a reload; it runs in the background."""
        if self._send is not None:
            try:
                self._send.send_nowait(reason)
            except trio.WouldBlock:
                pass  # a reload is already queued; it will read the latest file

    async def run(self) -> None:
        """Run the reloads asked for, one at a time (after :meth:`open`)."""
        assert self._receive is not None
        async for reason in self._receive:
            await self._reload(reason)
            # Wake whoever waits for "a reload was processed", then re-arm.
            self._reloaded.set()
            self._reloaded = trio.Event()

    def sync_watch(self, gen: Generation, nursery: trio.Nursery) -> None:
        """Watch the config files or not, as the live generation ``gen`` says;
        the watcher runs in ``nursery``."""
        if gen.settings.kernel.watch_config and self._watch_scope is None:
            if gen.number > 1:
                log.info("watching the config files for changes")
            self._watch_scope = trio.CancelScope()
            nursery.start_soon(self._watch_config, self._watch_scope)
        elif not gen.settings.kernel.watch_config and self._watch_scope is not None:
            log.info("no longer watching the config files (watch_config = false)")
            self._watch_scope.cancel()
            self._watch_scope = None

    async def _watch_config(self, scope: trio.CancelScope) -> None:
        async def reloaded() -> None:
            await self._reloaded.wait()  # a new event after each reload

        with scope:
            await watch_config(
                lambda: self._live().files,
                lambda: self.request("config file changed"),
                reloaded,
                self._stop,
            )


def config_is_empty(path: Path) -> bool:
    """Whether the config file holds only white space (unreadable: False,
    the load says what is wrong with it)."""
    try:
        return not path.read_bytes().strip()
    except OSError:
        return False


class ListenerSwap:
    """A new generation's listeners, bound next to the live ones."""

    def __init__(self, keep: dict[str, str], added: dict[str, BoundListener]) -> None:
        #: New listener name -> the live listener whose socket it keeps.
        self.keep = keep
        #: The new listeners bound for this generation, by name.
        self.added = added

    async def undo(self) -> None:
        """The reload was refused: close what was bound for it."""
        for b in self.added.values():
            await b.listener.aclose()

    def apply(self, live: dict[str, BoundListener]) -> dict[str, BoundListener]:
        """The listeners after the switch: those kept, renamed, and those
        added (who serves the added ones is the caller's business). The
        removed ones stop accepting."""
        kept = {name: live.pop(old_name) for name, old_name in self.keep.items()}
        for b in live.values():
            b.scope.cancel()  # removed
        for name, b in kept.items():
            b.name = name
        return {**kept, **self.added}


async def bind_listeners(
    new: Generation, live: dict[str, BoundListener], *, reuse_port: bool
) -> ListenerSwap:
    """Bind what ``new`` listens on that ``live`` does not hold; a
    :class:`BindError` closes what was bound first."""
    added: dict[str, BoundListener] = {}
    keep = sockets_to_keep({name: lst.bind for name, lst in new.listeners.items()}, live)
    try:
        for name, lst in new.listeners.items():
            if name not in keep:
                added[name] = await bind(name, lst.bind, reuse_port=reuse_port)
    except BindError:
        await ListenerSwap(keep, added).undo()
        raise
    return ListenerSwap(keep, added)


def warn_start_only(reason: str, started: Settings | None, settings: Settings) -> None:
    """Name the settings read only at start whose value the reload changed."""
    if started is None:
        return
    changed = []
    for section, key in START_ONLY:
        before = getattr(getattr(started, section), key)
        after = getattr(getattr(settings, section), key)
        if before != after:
            changed.append(f"[{section}] {key} ({before!r} -> {after!r})")
    if changed:
        log.warning(
            "reload (%s): read only at start, these changes take effect only after a restart: %s",
            reason,
            ", ".join(changed),
        )
