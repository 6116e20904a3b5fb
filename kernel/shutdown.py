"""The app's shutdown: lame duck, drain, cancel, and the cut when that is not enough.

:class:`Shutdown` runs the end of one :class:`~kernel.app.App`, once it is
asked to stop (SIGTERM/SIGINT, ``App.stop()``, a worker's supervisor gone):

- for ``shutdown_delay_s`` (0 by default), report not ready
  (``ServerInfo.draining``) while every listener keeps serving, each
  response ending its connection, so that a load balancer can take the
  instance out; a second signal ends that delay;
- then stop accepting, close idle keep-alive connections, let in-flight
  flows finish up to ``shutdown_grace_s``, then cancel what is left. A
  second signal (after the delay) cancels at once;
- what was cancelled gets ``shutdown_abort_s`` to end: code that swallows
  its cancellation (a plugin's ``except trio.Cancelled: pass`` in a loop)
  would otherwise keep the process alive until SIGKILL. Then the tasks left
  are logged (kernel/stuck.py) and, with ``exit_on_abort`` (``kernel run``),
  the process exits with :data:`EXIT_ABORTED` at once (``os._exit``: the
  live generation's ``trellis_shutdown`` does not run); so does a signal
  after the cancel.

Records go to the ``kernel.app`` logger, as they did before this module
was split out of kernel/app.py.

May import: stdlib, attrs, trio, kernel.io, kernel.stuck.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn

import attrs
import trio

from kernel import stuck
from kernel.io.listeners import BoundListener
from kernel.io.state import ServerState

__all__ = ["EXIT_ABORTED", "Shutdown", "exit_now"]

log = logging.getLogger("kernel.app")

#: The drain was cut: tasks cancelled at its end had not ended ``shutdown_abort_s``
#: later (not 0: work was abandoned; not 1-3, which mean "could not start").
EXIT_ABORTED = 4


@attrs.frozen
class _Serving:
    """What a drain acts on: the server's state, listeners and nurseries."""

    state: ServerState
    listeners: Callable[[], Iterable[BoundListener]]
    root: trio.Nursery
    generations: trio.Nursery
    connections: trio.Nursery


class Shutdown:
    """The end of one app; :meth:`attach` it to what serves, then :meth:`run` it."""

    def __init__(self, *, exit_on_abort: bool = False) -> None:
        #: Leave the process (``os._exit``) when a drain must be cut; otherwise
        #: that is only logged. For the process's owner only.
        self.exit_on_abort = exit_on_abort
        #: Set once a stop was asked for (:meth:`request`, a first signal).
        self.requested = trio.Event()
        #: Set once the connections were cancelled (a drain's end, a second signal).
        self._cancelled_at: float | None = None
        #: Set while the ``shutdown_delay_s`` before the drain runs; setting it ends the delay.
        self._delay: trio.Event | None = None
        self._serving: _Serving | None = None

    def attach(
        self,
        state: ServerState,
        listeners: Callable[[], Iterable[BoundListener]],
        *,
        root: trio.Nursery,
        generations: trio.Nursery,
        connections: trio.Nursery,
    ) -> None:
        """What the drain stops: ``listeners`` gives the live listeners,
        ``connections`` runs the connections, ``generations`` waits for them
        (the generations' tasks), ``root`` outlives both (the abort's timer)."""
        self._serving = _Serving(state, listeners, root, generations, connections)

    def request(self) -> None:
        """Begin a graceful shutdown (as SIGTERM does)."""
        self.requested.set()

    def signalled(self, signum: int) -> None:
        """SIGTERM or SIGINT: the first asks for a stop; the next ones hurry it."""
        if self._delay is not None and not self._delay.is_set():
            log.warning(
                "second %s: ending shutdown_delay_s, draining now", signal.Signals(signum).name
            )
            self._delay.set()
        elif self._cancelled_at is not None:
            # Whatever is left ignored the cancel: the operator asks again.
            elapsed = trio.current_time() - self._cancelled_at
            self._abort(f"by {signal.Signals(signum).name} {elapsed:.1f}s")
        elif self.requested.is_set():
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            if self._serving is not None:
                self._cancel_connections()
        else:
            log.info("%s received: shutting down", signal.Signals(signum).name)
            self.requested.set()

    async def run(self) -> None:
        """Wait for the stop, then delay and drain; returns once the
        connections were cancelled (their nursery then waits for them)."""
        await self.requested.wait()
        await self._delay_drain()
        await self._drain()

    async def _delay_drain(self) -> None:
        """The ``shutdown_delay_s`` before the drain: not ready, still serving."""
        assert self._serving is not None
        state = self._serving.state
        delay = state.generation.settings.kernel.shutdown_delay_s
        if not delay:
            return
        log.info(
            "draining: not ready, still serving for %gs (shutdown_delay_s), %d flows in flight",
            delay,
            state.active_flows,
        )
        state.begin_delay()
        self._delay = ended = trio.Event()
        with trio.move_on_after(delay):
            await ended.wait()
        self._delay = None

    async def _drain(self) -> None:
        assert self._serving is not None
        state = self._serving.state
        grace = state.generation.settings.kernel.shutdown_grace_s
        log.info("draining: %d flows in flight, grace %gs", state.active_flows, grace)
        for b in self._serving.listeners():
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
        serving = self._serving
        assert serving is not None
        serving.connections.cancel_scope.cancel()
        if self._cancelled_at is None:
            self._cancelled_at = trio.current_time()
            seconds = serving.state.generation.settings.kernel.shutdown_abort_s
            serving.root.start_soon(self._abort_after, seconds)

    async def _abort_after(self, seconds: float) -> None:
        """Cut the shutdown short ``seconds`` after the cancel, if it still runs.

        Cancelled with the root nursery once everything has ended.
        """
        await trio.sleep(seconds)
        self._abort(f"{seconds:g}s (shutdown_abort_s)")

    def _abort(self, after: str) -> None:
        """Say which tasks did not end after the cancel; leave (``exit_on_abort``)."""
        serving = self._serving
        assert serving is not None  # (the connections were cancelled)
        # Connections first: while one is left, the generations wait for it.
        left = stuck.stuck_tasks([serving.connections, serving.generations])
        log.error(
            "shutdown cut %s after cancelling, with %d flow(s) left"
            " (a plugin swallowing trio.Cancelled?): %s; still running:%s",
            after,
            serving.state.active_flows,
            f"exiting with code {EXIT_ABORTED}" if self.exit_on_abort else "not exiting",
            "".join(f"\n  {line}" for line in left) or " nothing the kernel can name",
        )
        if self.exit_on_abort:
            exit_now(EXIT_ABORTED)


def exit_now(code: int) -> NoReturn:
    """Leave the process now, whatever tasks are left (the logs flushed first)."""
    try:
        logging.shutdown()
        sys.stdout.flush()
    finally:
        os._exit(code)
