"""The composition root: config -> generation -> listeners -> serve, reload, drain.

:class:`App` owns the process-level life cycle:

- **start**: load the config and build generation 1 (a problem: exit 1),
  bind every listener (a failure: exit 2), run ``trellis_startup``, serve;
- **reload** on SIGHUP or when a config file changes: build the new
  generation completely first - any problem and the old one keeps running,
  with every problem logged; new listeners are bound before removed ones are
  closed; flows in progress finish on the generation they started with;
- **drain** on SIGTERM/SIGINT: first, for ``shutdown_delay_s`` (0 by
  default), report not ready (``ServerInfo.draining``) while every listener
  keeps serving, each response ending its connection, so that a load
  balancer can take the instance out; a second signal ends that delay. Then
  stop accepting, close idle keep-alive connections, let in-flight flows
  finish up to ``shutdown_grace_s``, then cancel what is left. A second
  signal (after the delay) cancels at once. What was cancelled
  gets ``shutdown_abort_s`` to end: code that swallows its cancellation
  (a plugin's ``except trio.Cancelled: pass`` in a loop) would otherwise keep
  the process alive until SIGKILL. Then the tasks left are logged and
  ``kernel run`` exits with :data:`EXIT_ABORTED` at once (``os._exit``: the
  live generation's ``trellis_shutdown`` does not run); so does a signal
  after the cancel.

Under ``[server] workers`` (kernel/supervisor.py) a worker shares each
generation that goes live with its set (kernel/snapshot.py), and a worker
that starts while its set has a snapshot starts from the newest, with its
generation number, rather than from the config file: a restarted worker
serves what its siblings serve, whatever the file says now. A snapshot that
does not load (said with a warning) leaves the worker to the file, as at the
set's first start, numbered 1.

While the timeout sweeper runs, a watchdog thread (kernel/stuck.py) warns
when the event loop stalls for ``stall_warning_s``, naming what runs.

This is the only module that ties ``kernel.io`` to the plugin host.

May import: everything in kernel, trio, watchfiles, sdk.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import trio

from kernel import dispatch, early, heap, lifecycle, snapshot, stuck
from kernel.config import Document, Settings
from kernel.generation import Generation, load_generation
from kernel.groupchecks import GroupChecks
from kernel.io.listeners import BindError, BoundListener, bind, sockets_to_keep
from kernel.io.state import ServerState
from kernel.supervisor import supervisor_pid
from kernel.watch import watch_config
from sdk import ConfigError, Group, ServerInfo, StartupContext

__all__ = [
    "EXIT_ABORTED",
    "EXIT_BIND",
    "EXIT_CONFIG",
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
#: The drain was cut: tasks cancelled at its end had not ended ``shutdown_abort_s``
#: later (not 0: work was abandoned; not 1-3, which mean "could not start").
EXIT_ABORTED = 4

#: Settings read once, when the process starts (kernel/cli.py): a reload
#: that changes one says it takes effect only after a restart.
#: (The supervisor of ``[server] workers`` drains by the limits its workers
#: run, from their snapshots: kernel/supervisor.py. A worker restarted by it
#: reads these from the set's snapshot, when there is one.)
START_ONLY = (("kernel", "log_level"), ("kernel", "log_format"), ("server", "workers"))


class PluginStartupError(Exception):
    """A plugin's ``trellis_startup`` raised.

    ``storage`` when what failed was I/O (an :class:`OSError`: a log
    directory that cannot be made, a file that cannot be written): the
    process then exits 3 rather than 1.
    """

    def __init__(self, message: str, *, storage: bool) -> None:
        super().__init__(message)
        self.storage = storage


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
        #: Leave the process (``os._exit``) when a drain must be cut; otherwise
        #: that is only logged. For the process's owner only.
        self.exit_on_abort = exit_on_abort
        self.state: ServerState | None = None
        self.listeners: dict[str, BoundListener] = {}
        self._stop = trio.Event()
        self._reloaded = trio.Event()
        self._reloads: trio.MemorySendChannel[str] | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._gen_nursery: trio.Nursery | None = None
        self._root: trio.Nursery | None = None
        #: The upstream groups' health checkers, under the live generation.
        self._groups = GroupChecks(lambda: self.generation)
        #: The config watcher's scope while ``[kernel] watch_config`` is on.
        self._watch_scope: trio.CancelScope | None = None
        #: The event-loop watchdog while ``[kernel] stall_warning_s`` is not 0.
        self._watchdog: stuck.Watchdog | None = None
        #: Set once the connections were cancelled (a drain's end, a second signal).
        self._cancelled_at: float | None = None
        #: Set while the ``shutdown_delay_s`` before the drain runs; setting it ends the delay.
        self._delay: trio.Event | None = None
        #: The settings the process started with (generation 1's).
        self._started_with: Settings | None = None
        #: This process's worker number and the number of workers (kernel.workers).
        self.worker = worker
        self.workers = workers
        #: The set's snapshot directory: each generation that goes live is
        #: written there (None: not in a set of workers).
        self.snapshots = snapshots
        #: The set's snapshot this worker starts from (None: the config file).
        self.start_from = start_from

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

    def _load_first(self) -> Generation:
        """The first generation: the set's newest snapshot's, else the config file's."""
        start, self.start_from = self.start_from, None
        if start is None:
            return self.load()
        try:
            gen = self._load(start.generation, start.document)
        except ConfigError as exc:
            log.warning(
                "the set's generation %d (worker %d's snapshot) does not load here;"
                " loading %s instead:\n%s",
                start.generation,
                start.worker,
                self.config_path,
                exc,
            )
            return self.load()
        log.info(
            "starting from the set's generation %d (worker %d's snapshot), not from %s",
            start.generation,
            start.worker,
            self.config_path,
        )
        return gen

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
            gen = self._load_first()
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

    async def _serve(
        self,
        bound: dict[str, BoundListener],
        state: ServerState,
        task_status: trio.TaskStatus[App],
    ) -> int:
        send, receive = trio.open_memory_channel[str](8)
        self._reloads = send
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
                    self._groups.sync(root, state.generation, None)
                    for b in bound.values():
                        root.start_soon(b.serve, state, conns)
                    if self.handle_signals:
                        await root.start(self._signals)
                    root.start_soon(self._reload_loop, receive)
                    self._sync_watch(state.generation)
                    root.start_soon(self._reap_pool)
                    if self.workers > 1:
                        root.start_soon(self._watch_supervisor, supervisor_pid())
                    self._sync_watchdog(state.generation)
                    root.start_soon(state.timers.run)
                    await self._share(state.generation)
                    if self.settle_heap:
                        heap.settle()
                        log.debug("heap frozen: %d objects", gc.get_freeze_count())
                    log.info(
                        "serving generation %d on %s",
                        state.generation.number,
                        ", ".join(f"{b.name}={b.bind}" for b in bound.values()),
                    )
                    task_status.started(self)
                    await self._stop.wait()
                    await self._delay_drain()
                    await self._drain(conns)
                # every connection is gone: retire the last generation
                state.generation.retire()
            root.cancel_scope.cancel()
        log.info("stopped")
        return EXIT_OK

    def stop(self) -> None:
        """Begin a graceful shutdown (as SIGTERM does)."""
        self._stop.set()

    def request_reload(self, reason: str = "api") -> None:
        """Ask for a reload (as SIGHUP does); it runs in the background."""
        if self._reloads is not None:
            try:
                self._reloads.send_nowait(reason)
            except trio.WouldBlock:
                pass  # a reload is already queued; it will read the latest file

    async def _delay_drain(self) -> None:
        """The ``shutdown_delay_s`` before the drain: not ready, still serving."""
        assert self.state is not None
        delay = self.state.generation.settings.kernel.shutdown_delay_s
        if not delay:
            return
        log.info(
            "draining: not ready, still serving for %gs (shutdown_delay_s), %d flows in flight",
            delay,
            self.state.active_flows,
        )
        self.state.begin_delay()
        self._delay = ended = trio.Event()
        with trio.move_on_after(delay):
            await ended.wait()
        self._delay = None

    async def _drain(self, conns: trio.Nursery) -> None:
        assert self.state is not None
        state = self.state
        grace = state.generation.settings.kernel.shutdown_grace_s
        log.info("draining: %d flows in flight, grace %gs", state.active_flows, grace)
        for b in self.listeners.values():
            b.scope.cancel()
        state.begin_drain()
        with trio.move_on_after(grace) as scope:
            await state.no_active_flows.wait()
        if scope.cancelled_caught:
            log.warning("grace period over: cancelling %d flows", state.active_flows)
        self._cancel_connections()

    def _cancel_connections(self) -> None:
        """Cancel every connection, and give what was cancelled
        ``shutdown_abort_s`` to end (see :meth:`_abort_after`)."""
        assert self._conn_nursery is not None
        assert self._root is not None
        assert self.state is not None
        self._conn_nursery.cancel_scope.cancel()
        if self._cancelled_at is None:
            self._cancelled_at = trio.current_time()
            seconds = self.state.generation.settings.kernel.shutdown_abort_s
            self._root.start_soon(self._abort_after, seconds)

    async def _abort_after(self, seconds: float) -> None:
        """Cut the shutdown short ``seconds`` after the cancel, if it still runs.

        Cancelled with the root nursery once everything has ended.
        """
        await trio.sleep(seconds)
        self._abort(f"{seconds:g}s (shutdown_abort_s)")

    def _abort(self, after: str) -> None:
        """Say which tasks did not end after the cancel; leave (``exit_on_abort``)."""
        # Connections first: while one is left, the generations wait for it.
        left = stuck.stuck_tasks([self._conn_nursery, self._gen_nursery])
        flows = self.state.active_flows if self.state is not None else 0
        log.error(
            "shutdown cut %s after cancelling, with %d flow(s) left"
            " (a plugin swallowing trio.Cancelled?): %s; still running:%s",
            after,
            flows,
            f"exiting with code {EXIT_ABORTED}" if self.exit_on_abort else "not exiting",
            "".join(f"\n  {line}" for line in left) or " nothing the kernel can name",
        )
        if self.exit_on_abort:
            _exit_now(EXIT_ABORTED)

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
                elif self._delay is not None and not self._delay.is_set():
                    log.warning(
                        "second %s: ending shutdown_delay_s, draining now",
                        signal.Signals(signum).name,
                    )
                    self._delay.set()
                elif self._cancelled_at is not None:
                    # Whatever is left ignored the cancel: the operator asks again.
                    elapsed = trio.current_time() - self._cancelled_at
                    self._abort(f"by {signal.Signals(signum).name} {elapsed:.1f}s")
                elif self._stop.is_set():
                    log.warning("second %s: stopping now", signal.Signals(signum).name)
                    if self._conn_nursery is not None:
                        self._cancel_connections()
                else:
                    log.info("%s received: shutting down", signal.Signals(signum).name)
                    self._stop.set()

    async def _watch_supervisor(self, parent: int) -> None:
        """A worker drains when its supervisor is gone (it was re-parented)."""
        # Polling: no event tells a process its parent died.
        gone = os.getppid() != parent
        while not gone:
            await trio.sleep(1.0)
            gone = os.getppid() != parent
        log.warning("the supervisor (pid %d) is gone: shutting down", parent)
        self._stop.set()
        directory, self.snapshots = self.snapshots, None
        if directory is not None:  # the supervisor would have removed it
            await trio.to_thread.run_sync(shutil.rmtree, directory, True)

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
        """Start a generation's plugins, keep its background tasks, shut it down."""
        failed: lifecycle.StartupFailed | None = None
        async with trio.open_nursery() as tasks:

            def start_soon(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
                # Named for the report of a shutdown that must be cut (kernel/stuck.py).
                what = getattr(fn, "__qualname__", None) or type(fn).__name__
                name = f"background task {what} of generation {gen.number}"
                tasks.start_soon(_guarded, gen.number, fn, args, name=name)

            try:
                groups = {name: Group(name, group.targets) for name, group in gen.groups.items()}
                lifecycle.start(
                    gen.host.pm,
                    context=StartupContext(
                        gen.number,
                        start_soon_impl=start_soon,
                        groups=groups,
                        server=self.server_info(),
                    ),
                )
            except lifecycle.StartupFailed as exc:
                # Raised once the nursery is closed: from inside it, it would
                # reach the caller wrapped in an ExceptionGroup. (Those that
                # had started were shut down.)
                failed = exc
            else:
                task_status.started()
                await gen.idle.wait()
            tasks.cancel_scope.cancel()
        if failed is not None:
            raise PluginStartupError(
                str(failed), storage=isinstance(failed.error, OSError)
            ) from failed.error
        lifecycle.shut_down(gen.host.pm)
        log.debug("generation %d retired", gen.number)
        if self.settle_heap and not self._stop.is_set() and self._root is not None:
            # As a task of its own: it runs once this frame, which still
            # holds the generation, is gone.
            self._root.start_soon(_resettle_heap, gen.number)

    async def _reload_loop(self, receive: trio.MemoryReceiveChannel[str]) -> None:
        async for reason in receive:
            await self.reload(reason)
            # Wake whoever waits for "a reload was processed", then re-arm.
            self._reloaded.set()
            self._reloaded = trio.Event()

    async def reload(self, reason: str) -> bool:
        """Switch to a freshly loaded generation; False (old one kept) on any problem."""
        assert self.state is not None
        assert self._gen_nursery is not None
        state = self.state
        old = state.generation
        try:
            empty = not self.config_path.read_bytes().strip()
        except OSError:
            empty = False  # load() says what is wrong with it
        if empty:
            # Valid (every default), but on a reload almost always an editor
            # caught between truncating the file and writing it.
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
        # Bind what is new before anything else changes; a listener whose
        # address we hold keeps its socket (new name -> the old one's).
        added: dict[str, BoundListener] = {}
        keep = sockets_to_keep(
            {name: lst.bind for name, lst in new.listeners.items()}, self.listeners
        )
        try:
            for name, lst in new.listeners.items():
                if name not in keep:
                    added[name] = await bind(name, lst.bind, reuse_port=self.workers > 1)
        except BindError as exc:
            for b in added.values():
                await b.listener.aclose()
            log.error(
                "reload (%s) rejected, generation %d keeps serving: %s", reason, old.number, exc
            )
            return False
        try:
            await self._gen_nursery.start(self._run_generation, new)
        except PluginStartupError as exc:
            for b in added.values():
                await b.listener.aclose()
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
        kept = {name: self.listeners.pop(old_name) for name, old_name in keep.items()}
        for b in self.listeners.values():
            b.scope.cancel()  # removed
        for name, b in kept.items():
            b.name = name
        self.listeners = {**kept, **added}
        for b in added.values():
            self._gen_nursery.start_soon(b.serve, state, self._conn_nursery)
        await self._share(new)  # before the line: who reads it finds the snapshot
        log.info("reloaded (%s): generation %d is live", reason, new.number)
        self._warn_start_only(reason, new.settings)
        self._sync_watch(new)
        self._sync_watchdog(new)
        return True

    async def _share(self, gen: Generation) -> None:
        """Write the live generation's snapshot for the set (kernel/snapshot.py)."""
        directory, document = self.snapshots, gen.document
        if directory is None or document is None:
            return
        number, kernel = gen.number, gen.settings.kernel
        try:
            await trio.to_thread.run_sync(
                lambda: snapshot.write(
                    directory,
                    worker=self.worker,
                    generation=number,
                    document=document,
                    kernel=kernel,
                )
            )
        except (OSError, ValueError, TypeError) as exc:
            log.warning(
                "generation %d is not shared with the other workers (%s): a worker"
                " restarted later starts from another's snapshot, or the config file",
                number,
                exc,
            )

    def _warn_start_only(self, reason: str, settings: Settings) -> None:
        """Name the settings read only at start whose value the reload changed."""
        started = self._started_with
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
                "reload (%s): read only at start, these changes take effect only after a"
                " restart: %s",
                reason,
                ", ".join(changed),
            )

    def _sync_watch(self, gen: Generation) -> None:
        """Watch the config files or not, as the live generation says."""
        assert self._root is not None
        if gen.settings.kernel.watch_config and self._watch_scope is None:
            if gen.number > 1:
                log.info("watching the config files for changes")
            self._watch_scope = trio.CancelScope()
            self._root.start_soon(self._watch_config, self._watch_scope)
        elif not gen.settings.kernel.watch_config and self._watch_scope is not None:
            log.info("no longer watching the config files (watch_config = false)")
            self._watch_scope.cancel()
            self._watch_scope = None

    async def _watch_config(self, scope: trio.CancelScope) -> None:
        assert self.state is not None
        state = self.state

        async def reloaded() -> None:
            await self._reloaded.wait()  # a new event after each reload

        with scope:
            await watch_config(
                lambda: state.generation.files,
                lambda: self.request_reload("config file changed"),
                reloaded,
                self._stop,
            )


def _exit_now(code: int) -> NoReturn:
    """Leave the process now, whatever tasks are left (the logs flushed first)."""
    try:
        logging.shutdown()
        sys.stdout.flush()
    finally:
        os._exit(code)


async def _resettle_heap(number: int) -> None:
    found = heap.resettle()
    log.debug("generation %d gone: %d objects in cycles collected, heap refrozen", number, found)


async def _guarded(number: int, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except Exception:
        log.exception("background task %r of generation %d failed", fn, number)
