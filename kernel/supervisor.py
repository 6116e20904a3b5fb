"""The worker supervisor: ``[server] workers = N`` runs N ``kernel run`` processes.

The supervisor binds nothing and serves nothing itself. It starts N worker
processes (the same ``kernel run`` command line, with ``TRELLIS_WORKER`` set
to the worker's number and ``TRELLIS_WORKERS`` to N); each worker binds
every listener with ``SO_REUSEPORT``, so the kernel spreads new
connections over them. It forwards SIGHUP (reload) and SIGTERM/SIGINT
(graceful drain) to every worker, restarts a worker that dies with a
backoff (1 s doubling to 30 s, reset after a minute of life), and exits
when they have all stopped. A worker whose supervisor dies (SIGKILL,
OOM) notices within a second and drains (``App`` watches its parent).

The set shares its config: the supervisor makes a private directory for it
(``TRELLIS_SNAPSHOTS``), each worker writes there what its live generation
was loaded from, and a restarted worker starts from the newest of those
snapshots, with its generation number, not from the config file
(kernel/snapshot.py). So it serves what its siblings serve even when the
file was edited, or broken, since their last reload; only the set's first
start loads the file. The directory is removed when the set has stopped
(by the workers, when they find the supervisor gone).

Exit codes: a worker that fails while the set first starts with the
config, bind or storage code (1, 2, 3) stops the whole set with that code,
since every other worker would fail alike. (A worker's process has started
once it wrote its snapshot, however long that took on a busy machine; one
that ends with those codes later, as an uncaught exception ends with 1, is
restarted.) Once the set has started, a
restarted worker that fails so (a plugin module broken on disk since, say)
is logged as an error and restarted with the usual backoff, which a SIGHUP
cuts short: the other workers keep serving. Otherwise 0 after a drain, or 4
when the drain of a worker was cut: it exited 4 itself (what it had
cancelled did not end within ``shutdown_abort_s``), or outstayed
``shutdown_delay_s`` + ``shutdown_grace_s`` + ``shutdown_abort_s`` + 5 s and
was killed, or a second signal killed it (a third, with a
``shutdown_delay_s``: the second ends the workers' delay, as in one process).

Those three limits are read from the config file at start; when the drain
starts, the largest of each found in the workers' snapshots counts instead
(what the workers run: a reload they refused changes nothing), the ones
read at start only while there is none.

Metrics across workers: unless ``PROMETHEUS_MULTIPROC_DIR`` is set already,
the supervisor creates a fresh directory for prometheus-client's
multiprocess mode, hands it to the workers, tells the library when a worker
died (its live gauges go away) and removes the directory at exit (killed,
it leaves that to its workers: kernel/metricsdir.py).

May import: stdlib, trio, kernel.metricsdir, kernel.snapshot (prometheus_client lazily).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import trio

from kernel import metricsdir, snapshot

__all__ = [
    "SUPERVISOR_ENV",
    "WORKERS_ENV",
    "WORKER_ENV",
    "Supervisor",
    "supervisor_pid",
    "worker_argv",
    "worker_identity",
]

log = logging.getLogger("kernel.supervisor")

WORKER_ENV = "TRELLIS_WORKER"
WORKERS_ENV = "TRELLIS_WORKERS"
#: The supervisor's pid, so a worker notices it is gone even if that happened
#: before the worker got to look (its parent is then already pid 1).
SUPERVISOR_ENV = "TRELLIS_SUPERVISOR_PID"
_MULTIPROC_ENV = metricsdir.MULTIPROC_ENV
#: A worker that ends with one of these while the set first starts stops the set.
_FATAL = {1, 2, 3}
#: What a worker's exit code means (kernel.app's EXIT_*).
_MEANING = {
    1: "config error",
    2: "bind failure",
    3: "storage error",
    4: "drain cut",
    70: "crashed: see its traceback",
}
#: The drain of a worker (or of the set) was cut (kernel.app.EXIT_ABORTED).
_ABORTED = 4
#: Seconds a worker must live to count as started, without a snapshot
#: directory to tell (and to reset its backoff).
_STARTED_AFTER = 3.0
_STABLE_AFTER = 60.0


def worker_identity(environ: os._Environ[str] | dict[str, str] | None = None) -> tuple[int, int]:
    """(worker number, number of workers) of this process; (0, 1) outside a supervisor."""
    env = os.environ if environ is None else environ
    try:
        return int(env.get(WORKER_ENV, "0")), max(1, int(env.get(WORKERS_ENV, "1")))
    except ValueError:
        return 0, 1


def supervisor_pid() -> int:
    """The pid of this worker's supervisor (its parent's, outside the variable)."""
    try:
        return int(os.environ[SUPERVISOR_ENV])
    except (KeyError, ValueError):
        return os.getppid()


class Supervisor:
    """Start, watch and stop the worker processes of one ``kernel run``."""

    def __init__(
        self,
        argv: Sequence[str],
        workers: int,
        grace_s: float,
        abort_s: float = 5.0,
        *,
        delay_s: float = 0.0,
        config: str | os.PathLike[str] | None = None,
    ) -> None:
        #: The worker command line (``python -m kernel run ...``).
        self.argv = list(argv)
        self.workers = workers
        #: The workers' ``shutdown_grace_s``: read from the config at start,
        #: from their snapshots at the drain (:meth:`follow_workers`).
        self.grace_s = grace_s
        #: A worker's ``shutdown_abort_s``: it exits on its own that long after its grace.
        self.abort_s = abort_s
        #: A worker's ``shutdown_delay_s``: it serves on that long before draining.
        self.delay_s = delay_s
        #: The config file the workers load (for messages).
        self.config = config
        #: The set's snapshot directory (kernel/snapshot.py), made by :meth:`run`.
        self.snapshots: Path | None = None
        self.processes: dict[int, trio.Process] = {}
        self.restarts = 0
        self._stopping = False
        self._exit_code = 0
        self._own_dir: Path | None = None
        #: Set (and replaced) on each SIGHUP: a worker waiting to be restarted goes now.
        self._hup = trio.Event()

    def _environment(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env[WORKER_ENV] = str(index)
        env[WORKERS_ENV] = str(self.workers)
        env[SUPERVISOR_ENV] = str(os.getpid())
        if self.snapshots is not None:
            env[snapshot.SNAPSHOTS_ENV] = str(self.snapshots)
        if self._own_dir is not None:  # the workers remove it if this process is killed
            env[metricsdir.OWNED_ENV] = str(self._own_dir)
        return env

    async def run(self) -> int:
        if not os.environ.get(_MULTIPROC_ENV):
            self._own_dir = Path(tempfile.mkdtemp(prefix="trellis-metrics-"))
            os.environ[_MULTIPROC_ENV] = str(self._own_dir)
        self.snapshots = Path(tempfile.mkdtemp(prefix="trellis-workers-"))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, nursery.cancel_scope)
                async with trio.open_nursery() as workers:
                    for index in range(self.workers):
                        workers.start_soon(self._keep, index)
                nursery.cancel_scope.cancel()  # every worker is gone: stop listening
        finally:
            for proc in self.processes.values():
                if proc.returncode is None:
                    proc.kill()
            if self._own_dir is not None:
                shutil.rmtree(self._own_dir, ignore_errors=True)
                os.environ.pop(_MULTIPROC_ENV, None)
            shutil.rmtree(self.snapshots, ignore_errors=True)
        log.info("all workers stopped (exit %d)", self._exit_code)
        return self._exit_code

    async def _keep(self, index: int) -> None:
        """Run worker ``index`` until the set stops; restart it when it dies."""
        backoff = 1.0
        first = True  # this worker's first process: the set is starting
        while not self._stopping:
            started = time.monotonic()
            proc = await trio.lowlevel.open_process(
                self.argv, env=self._environment(index), stdin=None
            )
            self.processes[index] = proc
            log.info("worker %d started (pid %d)", index, proc.pid)
            code = await proc.wait()
            _mark_dead(proc.pid)
            lived = time.monotonic() - started
            failed_start = code in _FATAL and not await self._served(index, proc.pid, lived)
            if self.stopping():
                if code != 0:
                    what = _describe(code)
                    if first and failed_start:  # a sibling's failure stopped the set
                        log.error("worker %d (pid %d) failed to start: %s", index, proc.pid, what)
                    else:
                        log.error(
                            "worker %d (pid %d) did not drain cleanly: %s", index, proc.pid, what
                        )
                    if self._exit_code == 0:
                        self._exit_code = _ABORTED
                return
            if first and failed_start:
                log.error(
                    "worker %d failed to start (exit %d): %s; stopping the set",
                    index,
                    code,
                    _MEANING[code],
                )
                self._exit_code = code
                self._stop_all()
                return
            first = False
            if lived > _STABLE_AFTER:
                backoff = 1.0
            self.restarts += 1
            if code in _FATAL:
                # The set has started: a broken file on disk (or a port or a
                # store gone bad) must not take down the workers still serving.
                log.error(
                    "worker %d (pid %d) failed to start again: %s%s; restarting in %gs"
                    " (the other workers keep serving)",
                    index,
                    proc.pid,
                    _describe(code),
                    self._cause(code),
                    backoff,
                )
            else:
                log.warning(
                    "worker %d (pid %d) died with %s after %.1fs; restarting in %gs",
                    index,
                    proc.pid,
                    _describe(code),
                    lived,
                    backoff,
                )
            with trio.move_on_after(backoff):
                await self._hup.wait()  # an operator's SIGHUP (a fixed file): try now
            backoff = min(backoff * 2, 30.0)

    async def _served(self, index: int, pid: int, lived: float) -> bool:
        """Whether worker ``index``'s process ``pid`` got as far as serving: it
        wrote its snapshot (a start slowed by a busy machine is no start)."""
        directory = self.snapshots
        if directory is None:
            return lived >= _STARTED_AFTER
        return await trio.to_thread.run_sync(snapshot.written_by, directory, index, pid)

    def _cause(self, code: int) -> str:
        """What an operator should look at when a restarted worker exits ``code``."""
        if code == 1:
            where = f" ({os.fspath(self.config)})" if self.config is not None else ""
            return (
                ": the set's config does not load in a new process (a plugin module or"
                " a file it names changed on disk?), nor does the config file on"
                f" disk{where}, or a plugin failed to start: see the worker's lines above"
            )
        return ""

    def _snapshot_limits(self) -> tuple[float, float, float] | None:
        """The largest ``shutdown_delay_s``, ``shutdown_grace_s`` and
        ``shutdown_abort_s`` in the workers' snapshots (None: no snapshot)."""
        if self.snapshots is None:
            return None
        found, unreadable = snapshot.scan(self.snapshots)
        for problem in unreadable:
            log.warning("a worker's snapshot is not readable: %s", problem)
        if not found:
            return None
        return (
            max(s.shutdown_delay_s for s in found),
            max(s.shutdown_grace_s for s in found),
            max(s.shutdown_abort_s for s in found),
        )

    async def follow_workers(self) -> None:
        """Take the drain limits the workers run from their snapshots (at the drain).

        Each worker writes its own after every generation that goes live, so
        a reload they refused changes nothing. Per limit, the largest counts:
        waiting longer for a worker that is stuck costs less than killing one
        that drains. Without a snapshot, the limits read at start stay.
        """
        if self.snapshots is None:
            return
        found = await trio.to_thread.run_sync(self._snapshot_limits)
        if found is not None:
            self.delay_s, self.grace_s, self.abort_s = found

    def kill_after(self) -> float:
        """Seconds after SIGTERM past which a worker still running is killed."""
        return self.delay_s + self.grace_s + self.abort_s + 5.0

    def stopping(self) -> bool:
        """Whether the set is shutting down (no more restarts)."""
        return self._stopping

    def _stop_all(self, signum: int = signal.SIGTERM) -> None:
        self._stopping = True
        for proc in self.processes.values():
            if proc.returncode is None:
                proc.send_signal(signum)

    async def _signals(self, scope: trio.CancelScope) -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                await self._receive(signals, nursery)

    async def _receive(self, signals: AsyncIterator[int], nursery: trio.Nursery) -> None:
        """Act on the signals, one by one (the drain's deadline runs in ``nursery``)."""
        stops = 0  # SIGTERM/SIGINT received
        async for signum in signals:
            if signum == signal.SIGHUP:
                for proc in self.processes.values():
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGHUP)
                self._hup.set()
                self._hup = trio.Event()
                continue
            stops += 1
            if stops == 2 and self.delay_s > 0:
                # As in one process: the second signal ends the workers'
                # shutdown_delay_s (they drain now); a third kills them.
                log.warning("second signal: the workers end their delay and drain now")
                self._stop_all(signal.SIGTERM)
                continue
            if stops > 1:
                log.warning("another signal: killing the workers")
                self._stop_all(signal.SIGKILL)
                continue
            self._stop_all(signal.SIGTERM)
            await self.follow_workers()
            log.info(
                "%s: draining the workers (shutdown_delay_s = %g, shutdown_grace_s = %g,"
                " shutdown_abort_s = %g: killed after %gs)",
                signal.Signals(signum).name,
                self.delay_s,
                self.grace_s,
                self.abort_s,
                self.kill_after(),
            )
            # Workers drain within their grace, and what they cancelled
            # then ends within abort_s or they exit anyway; none may
            # outstay that. Timed in a task of its own, so that a second
            # signal is heard meanwhile. (The whole task is cancelled as
            # soon as every worker is gone.)
            nursery.start_soon(self._kill_at_the_deadline)

    async def _kill_at_the_deadline(self) -> None:
        await trio.sleep(self.kill_after())
        log.warning("workers outstayed their grace: killing them")
        self._stop_all(signal.SIGKILL)


def _describe(code: int) -> str:
    """A worker's end for a log line: its signal, or its exit code and what that means."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    meaning = _MEANING.get(code)
    return f"exit code {code} ({meaning})" if meaning else f"exit code {code}"


def _mark_dead(pid: int) -> None:
    """Let prometheus-client drop a dead worker's live gauges."""
    if not os.environ.get(_MULTIPROC_ENV):
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:  # pragma: no cover - a runtime dependency
        return
    try:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    except OSError:
        pass


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line that starts one worker: this same ``kernel`` invocation."""
    return [sys.executable, "-m", "kernel", *argv]
