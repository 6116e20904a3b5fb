"""The composition root: config -> generation -> listeners -> serve, reload, drain.

:class:`App` owns the process-level life cycle:

- **start**: load the config and build generation 1 (a problem: exit 1),
  bind every listener (a failure: exit 2), run ``trellis_startup`` (a
  failure: exit 1, or 3 for I/O; each generation's plugins run as
  kernel/genrun.py says), serve;
- **reload** on SIGHUP or when a config file changes: build the new
  generation completely first - any problem and the old one keeps running,
  with every problem logged; new listeners are bound before removed ones are
  closed; flows in progress finish on the generation they started with
  (the requests, queued one at a time, and the parts that are not the
  app's state: kernel/reload.py);
- **drain** on SIGTERM/SIGINT (kernel/shutdown.py): a ``shutdown_delay_s``
  not ready but serving, then stop accepting, let flows finish up to
  ``shutdown_grace_s``, cancel the rest; what ignores its cancellation is
  cut ``shutdown_abort_s`` later, ``kernel run`` then exiting with
  :data:`EXIT_ABORTED`.

Under ``[server] workers`` (kernel/supervisor.py) a worker starts from its
set's newest snapshot, shares each generation that goes live, and drains
when its supervisor is gone (kernel/setmember.py).

While the timeout sweeper runs, a watchdog thread (kernel/stuck.py) warns
when the event loop stalls for ``stall_warning_s``, naming what runs.

This module and the parts named above are where ``kernel.io`` meets the
plugin host. What lives here is :class:`App`'s state and the order of things; the parts named
above (shutdown, reload, genrun, setmember, and groupchecks for the
upstream groups' health checks) never import it.

May import: everything in kernel, trio, sdk.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Mapping
from pathlib import Path

import trio

from kernel import dispatch, early, heap, snapshot, stuck
from kernel.config import Document, Settings
from kernel.generation import Generation, load_generation
from kernel.genrun import PluginStartupError, run_generation
from kernel.groupchecks import GroupChecks
from kernel.io.listeners import BindError, BoundListener, bind
from kernel.io.state import ServerState
from kernel.reload import ReloadRequests, bind_listeners, config_is_empty, warn_start_only
from kernel.setmember import SetMember
from kernel.shutdown import EXIT_ABORTED, Shutdown
from kernel.supervisor import supervisor_pid
from sdk import ConfigError, ServerInfo

__all__ = [
    "EXIT_ABORTED",
    "EXIT_BIND",
    "EXIT_CONFIG",
    "EXIT_CRASH",
    "EXIT_OK",
    "EXIT_STORAGE",
    "App",
    "PluginStartupError",
]

log = logging.getLogger("kernel.app")

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_BIND = 2
EXIT_STORAGE = 3
# EXIT_ABORTED (4): the drain was cut (kernel/shutdown.py).
#: The kernel itself failed: an exception no part of it handled, a bug
#: (``EX_SOFTWARE`` of sysexits.h). Not 1, which would send whoever reads the
#: code looking for a config problem (kernel/cli.py).
EXIT_CRASH = 70


class App:
    """One proxy process."""

    def __init__(
        self,
        config_path: str | Path,
        *,
        plugins: list[str] | None = None,
        blocked: list[str] | None = None,
        extra_plugins: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
        handle_signals: bool = True,
        settle_heap: bool = False,
        exit_on_abort: bool = False,
        worker: int = 0,
        workers: int = 1,
        snapshots: Path | None = None,
        start_from: snapshot.Snapshot | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.plugins_override = plugins
        self.blocked = list(blocked or [])
        self.extra_plugins = dict(extra_plugins or {})
        self.environ = environ
        self.handle_signals = handle_signals
        #: Freeze the long-lived heap once serving, and again after each
        #: retired generation (kernel/heap.py): for the process's owner only.
        self.settle_heap = settle_heap
        #: The drain, from the stop on; ``exit_on_abort``: leave the process
        #: when it must be cut (for the process's owner only).
        self._shutdown = Shutdown(exit_on_abort=exit_on_abort)
        self.state: ServerState | None = None
        self.listeners: dict[str, BoundListener] = {}
        #: Reloads asked for (SIGHUP, the API, the config watcher).
        self._reloads = ReloadRequests(
            lambda reason: self.reload(reason), lambda: self.generation, self._shutdown.requested
        )
        self._conn_nursery: trio.Nursery | None = None
        self._gen_nursery: trio.Nursery | None = None
        self._root: trio.Nursery | None = None
        #: The upstream groups' health checkers, under the live generation.
        self._groups = GroupChecks(lambda: self.generation)
        #: The event-loop watchdog while ``[kernel] stall_warning_s`` is not 0.
        self._watchdog: stuck.Watchdog | None = None
        #: The settings the process started with (generation 1's).
        self._started_with: Settings | None = None
        #: This process's worker number and the number of workers (kernel.workers).
        self.worker = worker
        self.workers = workers
        #: This worker in its set: the snapshots it starts from and writes.
        self._member = SetMember(worker, snapshots, start_from)

    # -- building -------------------------------------------------------------
    def load(self) -> Generation:
        """Read the config and build the next generation (raises ConfigError).

        Its number is the live generation's plus one: a generation that never
        goes live (a reload refused by a bind or a plugin's startup) uses no
        number, so the next one that does gets it.
        """
        live = self.state.generation.number if self.state is not None else 0
        return self._load(live + 1)

    def _load(self, number: int, document: Document | None = None) -> Generation:
        return load_generation(
            self.config_path,
            number=number,
            environ=self.environ,
            plugins=self.plugins_override,
            blocked=self.blocked,
            extra_plugins=self.extra_plugins,
            previous_groups=self.state.generation.groups if self.state is not None else None,
            document=document,
        )

    @property
    def generation(self) -> Generation:
        assert self.state is not None
        return self.state.generation

    def port(self, listener: str = "main") -> int:
        """The bound port of a listener (useful with ``:0`` binds in tests)."""
        return self.listeners[listener].port

    # -- running --------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[App] = trio.TASK_STATUS_IGNORED) -> int:
        """Serve until stopped; returns the process exit code."""
        try:
            gen = self._member.load_first(self._load, self.config_path)
        except ConfigError as exc:
            log.error("%s", exc)
            return EXIT_CONFIG
        self._started_with = gen.settings
        bound: dict[str, BoundListener] = {}
        try:
            for lst in gen.listeners.values():
                bound[lst.name] = await bind(lst.name, lst.bind, reuse_port=self.workers > 1)
        except BindError as exc:
            for b in bound.values():
                await b.listener.aclose()
            log.error("%s", exc)
            return EXIT_BIND
        self.listeners = bound
        self.state = state = ServerState(gen)
        # From here on the live generation is state.generation's: a local
        # kept in this frame (or _serve's) would keep generation 1 alive
        # after it retired, for as long as the process runs.
        del gen
        try:
            return await self._serve(bound, state, task_status)
        finally:
            if self._watchdog is not None:
                self._watchdog.stop()
                self._watchdog = None
            state.pool.close_all()
            for b in self.listeners.values():
                b.listener.socket.close()
            self._member.leave()

    async def _serve(
        self,
        bound: dict[str, BoundListener],
        state: ServerState,
        task_status: trio.TaskStatus[App],
    ) -> int:
        self._reloads.open()
        async with trio.open_nursery() as root:
            async with trio.open_nursery() as gens:
                self._gen_nursery = gens
                try:
                    await gens.start(self._run_generation, state.generation)
                except PluginStartupError as exc:
                    log.error("%s", exc)
                    for b in bound.values():
                        await b.listener.aclose()
                    gens.cancel_scope.cancel()
                    return EXIT_STORAGE if exc.storage else EXIT_CONFIG
                async with trio.open_nursery() as conns:
                    self._conn_nursery = conns
                    # HTTP/2 upstream connections outlive flows: their readers run here.
                    state.pool.nursery = root
                    self._root = root
                    self._shutdown.attach(
                        state,
                        lambda: self.listeners.values(),
                        root=root,
                        generations=gens,
                        connections=conns,
                    )
                    self._groups.sync(root, state.generation, None)
                    for b in bound.values():
                        root.start_soon(b.serve, state, conns)
                    if self.handle_signals:
                        await root.start(self._signals)
                    root.start_soon(self._reloads.run)
                    self._reloads.sync_watch(state.generation, root)
                    root.start_soon(self._reap_pool)
                    if self.workers > 1:
                        root.start_soon(self._member.watch_supervisor, supervisor_pid(), self.stop)
                    self._sync_watchdog(state.generation)
                    root.start_soon(state.timers.run)
                    await self._member.share(state.generation)
                    if self.settle_heap:
                        heap.settle()
                        log.debug("heap frozen: %d objects", gc.get_freeze_count())
                    log.info(
                        "serving generation %d on %s",
                        state.generation.number,
                        ", ".join(f"{b.name}={b.bind}" for b in bound.values()),
                    )
                    task_status.started(self)
                    await self._shutdown.run()
                # every connection is gone: retire the last generation
                state.generation.retire()
            root.cancel_scope.cancel()
        log.info("stopped")
        return EXIT_OK

    def stop(self) -> None:
        """Begin a graceful shutdown (as SIGTERM does)."""
        self._shutdown.request()

    def request_reload(self, reason: str = "api") -> None:
        """Ask for a reload (as SIGHUP does); it runs in the background."""
        self._reloads.request(reason)

    def _sync_watchdog(self, gen: Generation) -> None:
        """Run the event-loop watchdog or not, as the live generation says."""
        assert self.state is not None
        threshold = gen.settings.kernel.stall_warning_s
        timers = self.state.timers
        dog = self._watchdog
        if threshold and dog is None:
            self._watchdog = dog = stuck.Watchdog(threshold)
            dog.start()
            timers.pulse = dog
        elif threshold and dog is not None:
            dog.threshold = threshold
        elif dog is not None:
            timers.pulse = None
            dog.stop()
            self._watchdog = None

    async def _signals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            # Started (handlers installed) before "serving" is logged: a
            # SIGHUP right after that line must reload, not kill, the process.
            task_status.started()
            if early.take_sighup():
                self.request_reload("SIGHUP during start-up")
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.request_reload("SIGHUP")
                else:
                    self._shutdown.signalled(signum)

    async def _reap_pool(self) -> None:
        assert self.state is not None
        pool = self.state.pool
        while True:
            await pool.wait_for_connections()  # an empty pool: nothing to wake for
            await trio.sleep(1.0)
            pool.reap(self.state.generation.settings.upstream.idle_timeout_s)

    def server_info(self) -> ServerInfo:
        """The live numbers plugins read (``StartupContext.server``)."""
        return ServerInfo(
            active_connections=lambda: self.state.connections if self.state else 0,
            active_flows=lambda: self.state.active_flows if self.state else 0,
            listeners=lambda: {
                name: f"{b.listener.socket.getsockname()[0]}:{b.port}"
                for name, b in self.listeners.items()
            },
            plugin_errors=lambda: dict(dispatch.plugin_error_counts),
            draining=lambda: bool(self.state and self.state.draining),
            worker=self.worker,
            workers=self.workers,
        )

    # -- generations ------------------------------------------------------------
    async def _run_generation(
        self, gen: Generation, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run a generation (kernel/genrun.py); once it is gone, refreeze the heap."""
        await run_generation(gen, self.server_info(), task_status=task_status)
        if self.settle_heap and not self._shutdown.requested.is_set() and self._root is not None:
            # As a task of its own: it runs once this frame, which still
            # holds the generation, is gone.
            self._root.start_soon(_resettle_heap, gen.number)

    async def reload(self, reason: str) -> bool:
        """Switch to a freshly loaded generation; False (old one kept) on any problem."""
        assert self.state is not None
        assert self._gen_nursery is not None
        state = self.state
        old = state.generation
        if config_is_empty(self.config_path):
            log.error(
                "reload (%s) rejected, generation %d keeps serving: %s is empty",
                reason,
                old.number,
                self.config_path,
            )
            return False
        try:
            new = self.load()
        except ConfigError as exc:
            log.error(
                "reload (%s) rejected, generation %d keeps serving:\n%s", reason, old.number, exc
            )
            return False
        # Bind what is new before anything else changes.
        try:
            swap = await bind_listeners(new, self.listeners, reuse_port=self.workers > 1)
        except BindError as exc:
            log.error(
                "reload (%s) rejected, generation %d keeps serving: %s", reason, old.number, exc
            )
            return False
        try:
            await self._gen_nursery.start(self._run_generation, new)
        except PluginStartupError as exc:
            await swap.undo()
            log.error(
                "reload (%s) rejected, generation %d keeps serving: %s", reason, old.number, exc
            )
            return False
        state.generation = new
        assert self._root is not None
        self._groups.sync(self._root, new, old)
        old.retire()
        assert self._conn_nursery is not None
        # The accept loops look their listener up by name in the live
        # generation: renamed here, with no checkpoint since the switch.
        self.listeners = swap.apply(self.listeners)
        for b in swap.added.values():
            self._gen_nursery.start_soon(b.serve, state, self._conn_nursery)
        await self._member.share(new)  # before the line: who reads it finds the snapshot
        log.info("reloaded (%s): generation %d is live", reason, new.number)
        warn_start_only(reason, self._started_with, new.settings)
        self._reloads.sync_watch(new, self._root)
        self._sync_watchdog(new)
        return True


async def _resettle_heap(number: int) -> None:
    found = heap.resettle()
    log.debug("generation %d gone: %d objects in cycles collected, heap refrozen", number, found)
