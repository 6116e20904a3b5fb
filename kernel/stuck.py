"""What the process is stuck in: the loop watchdog and the drain's last report.

Plugin code can hold the whole process in two ways no deadline stops:

- a plain ``def`` hook that blocks (``time.sleep``, a blocking socket, long
  CPU work) holds the event loop, so every connection waits.
  :class:`Watchdog`, a daemon thread, notices that the loop has not turned
  for ``[kernel] stall_warning_s`` and logs, once per stall, what the trio
  thread is running;
- a task that swallows its cancellation (``except trio.Cancelled: pass`` in
  a loop) never ends, so neither does a drain. :func:`stuck_tasks` lists the
  tasks that are left, for the log line before the process exits anyway
  (kernel/shutdown.py, ``shutdown_abort_s``).

Both name code by its frames (:func:`describe_frames`): the innermost one
outside trio (file, line, function) and, when a dispatcher frame is on the
stack, the plugin instance, hook and flow it is calling. Nothing here runs
per request: the watchdog's heartbeat is the timeout sweeper
(:class:`kernel.io.timers.Timers`, which calls :meth:`Watchdog.beat` once a
sweep), and it sleeps, as the sweeper does, while nothing is armed.

May import: stdlib, trio, sdk, kernel.dispatch, kernel.log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from types import FrameType

import trio

from kernel import dispatch
from kernel.log import FLOW_ID
from sdk import Flow

__all__ = ["Watchdog", "describe_frames", "stuck_tasks"]

log = logging.getLogger("kernel.stuck")

_TRIO_DIR = os.path.dirname(trio.__file__) + os.sep
_DISPATCH = vars(dispatch)
#: Dispatcher functions whose flow is the terminal hook's (they have no ``hook``).
_DONE = frozenset({"call_done", "call_done_sync"})
#: At most this many stuck tasks are listed one by one.
_LISTED = 20


def describe_frames(frames: Sequence[FrameType], flow_id: str = "", name: str = "") -> str:
    """``plugin 'x' in trellis_request (flow F), at FILE:LINE in FUNCTION``.

    ``frames`` run from the outermost to the innermost. The plugin part is
    there when a dispatcher frame is calling an implementation; the flow id
    is that call's, else ``flow_id`` (the task's). With neither, ``name``
    (the task's) says what runs.
    """
    impl: dispatch.Impl | None = None
    hook = ""
    flow: Flow | None = None
    for frame in reversed(frames):
        if frame.f_globals is not _DISPATCH:
            continue
        names = frame.f_locals
        if impl is None:
            found = names.get("impl")
            if not isinstance(found, dispatch.Impl):
                continue
            impl = found
        if not hook:
            named = names.get("hook")
            if isinstance(named, str):
                hook = named
            elif frame.f_code.co_name in _DONE:
                hook = "trellis_flow_done"
        if flow is None and isinstance(names.get("flow"), Flow):
            flow = names["flow"]
        if hook and flow is not None:
            break
    parts = []
    if impl is not None:
        parts.append(f"plugin {impl.instance!r}" + (f" in {hook}" if hook else ""))
    fid = flow.id if flow is not None else flow_id
    if fid:
        parts.append(f"(flow {fid})" if parts else f"flow {fid}")
    elif not parts and name:
        parts.append(name)
    where = next((f for f in reversed(frames) if not _in_trio(f)), None)
    if where is not None:
        code = where.f_code
        place = f"at {code.co_filename}:{where.f_lineno} in {code.co_name}"
        return f"{' '.join(parts)}, {place}" if parts else place
    return " ".join(parts) or "somewhere in trio"


def _in_trio(frame: FrameType) -> bool:
    return frame.f_code.co_filename.startswith(_TRIO_DIR)


# ------------------------------------------------------------- stuck tasks
def stuck_tasks(nurseries: Iterable[trio.Nursery | None]) -> list[str]:
    """One line per task, under the first of ``nurseries`` that has any,
    that waits on nothing of its own.

    A task whose child tasks are all gone is a leaf: what holds its nursery
    (and so the process) is in it. The later nurseries are those that wait
    for the earlier ones (generations wait for their flows' connections):
    their leaves would only be waiting. Listed as :func:`describe_frames`
    says, the first :data:`_LISTED` of them; then how many more.
    """
    for nursery in nurseries:
        leaves = list(_leaves(nursery)) if nursery is not None else []
        if not leaves:
            continue
        lines = []
        for task in leaves[:_LISTED]:
            frames = [frame for frame, _ in task.iter_await_frames()]
            flow_id = task.context.get(FLOW_ID, "")
            lines.append(describe_frames(frames, flow_id, task.name))
        if len(leaves) > _LISTED:
            lines.append(f"... and {len(leaves) - _LISTED} more")
        return lines
    return []


def _leaves(nursery: trio.Nursery) -> Iterator[trio.lowlevel.Task]:
    for task in nursery.child_tasks:
        children = [n for n in task.child_nurseries if n.child_tasks]
        if not children:
            yield task
        for child in children:
            yield from _leaves(child)


# ---------------------------------------------------------------- watchdog
class Watchdog:
    """Warns when the trio thread has not swept the timers for ``threshold`` s.

    The sweeper tells it (from the trio thread): :meth:`beat` after each
    sweep, :meth:`parked` before it waits for an ``arm`` (nothing armed:
    there is nothing to watch, and the thread sleeps with no timeout, so an
    idle process is not woken), :meth:`awake` once it goes on. While the
    sweeper runs the thread looks every ``threshold / 2`` seconds; a loop
    stalled for ``threshold`` is logged once, naming what the trio thread
    runs, and its end too (with how long it lasted).

    What it cannot see: a stall that begins after the sweeper parked (no
    timeout at all armed for a whole tick: no connection idle between
    requests, reading a head or waiting for an upstream's answer).
    """

    def __init__(self, threshold: float) -> None:
        #: Seconds without a sweep that make a stall (> 0; read on every look).
        self.threshold = threshold
        self._beat = time.monotonic()
        #: Set while the sweeper runs (not parked).
        self._running = threading.Event()
        #: Set by :meth:`stop`; also what the thread waits on between looks.
        self._stopping = threading.Event()
        self._trio_thread = 0
        self._thread: threading.Thread | None = None

    # -- called by the sweeper, on the trio thread -----------------------------
    def beat(self) -> None:
        self._beat = time.monotonic()

    def parked(self) -> None:
        self._running.clear()

    def awake(self) -> None:
        self._beat = time.monotonic()
        self._running.set()

    # -- life ----------------------------------------------------------------
    def start(self) -> None:
        """Start watching the calling thread (the one that runs trio)."""
        self._trio_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name="trellis-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._running.set()  # let a thread that waits for the sweeper see it

    def _watch(self) -> None:
        warned = 0.0  # the beat of the stall already logged
        while not self._stopping.is_set():
            if not self._running.is_set():
                self._running.wait()
                continue
            threshold = self.threshold
            self._stopping.wait(max(threshold / 2, 0.05))
            beat = self._beat
            if warned and beat != warned:
                log.warning("the event loop turned again after %.1fs", beat - warned)
                warned = 0.0
            if not self._running.is_set() or warned:
                continue
            late = time.monotonic() - beat
            if late >= threshold:
                warned = beat
                self._warn(late)

    def _warn(self, late: float) -> None:
        frame = sys._current_frames().get(self._trio_thread)
        frames: list[FrameType] = []
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        frames.reverse()
        log.warning(
            "the event loop has not turned for %.1fs (every connection waits): it runs %s",
            late,
            describe_frames(frames) if frames else "nothing Python can see",
        )
