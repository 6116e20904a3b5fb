"""A repeat limiter for per-request log lines.

A dead upstream under load fails every request the same way, and one
warning per request buries everything else in the log (and costs CPU).
:func:`log` lets the first :data:`BURST` lines per key through in a window
of :data:`WINDOW_S` seconds, then drops the rest and counts them. Their
summary, ``... and M more like it in the last 10s (KEY)``, at the same level
and on the same logger, comes out when the window ends, or before the next
line with that key if that comes first. "The last 10s" is the window the
lines were dropped in.

:class:`RepeatLimiter` is sans-IO: a clock, a dict, and an ``on_pending``
callback told when a summary will be due. In the process's limiter
(:data:`LIMITER`, :func:`process_limiter`) that callback is a
:class:`SummaryTimer`: while a summary is pending, and only then, one trio
system task sleeps until it is due and logs it (:func:`flush`). An idle
process with nothing pending has no such task and never wakes for it; a
dead upstream under load has one, woken once per window. Outside a trio
run (a thread, a unit test) nothing is armed, and the summary waits for the
key's next line.

A key is stable and short: what fails and how (the route and the error's
class, an upstream and ``strerror``), never the flow id or a client port.
The record still carries the flow id (``kernel.log`` stamps the current
flow's): a summary's is the flow that emitted it, or none for a summary
that came out when its window ended.

Every call is O(1) and memory is bounded: at most :data:`MAX_KEYS` keys are
tracked; a new key beyond that evicts the one whose window started first,
and its pending count is reported (by the call that evicted it) rather than
lost. Under ``[server] workers`` each worker limits its own lines.

Only for per-request lines (kernel/io/, and the plugin fault boundary in
kernel/dispatch.py: a plugin failing on every request): config errors and
lifecycle lines log every time.

May import: stdlib, trio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

import trio

__all__ = [
    "BURST",
    "MAX_KEYS",
    "WINDOW_S",
    "RepeatLimiter",
    "SummaryTimer",
    "flush",
    "log",
    "process_limiter",
]

#: Lines let through per key in one window.
BURST = 10
#: The window, in seconds.
WINDOW_S = 10.0
#: Keys tracked at once (per limiter).
MAX_KEYS = 1024

#: ``on_pending(seconds)``: a summary will be due in ``seconds``.
OnPending = Callable[[float], None]


class RepeatLimiter:
    """First ``burst`` hits per key in ``window_s``, then a count of the rest.

    :meth:`hit` says whether this occurrence may be logged and which
    summaries are due first; :meth:`flush` hands out the summaries of the
    windows that have ended. ``clock`` is :func:`time.monotonic` unless a
    test passes its own. ``on_pending``, when set, is called with the
    seconds until a summary is due each time one becomes pending (a key's
    first dropped line in a window, at most once per key and window) and
    after a :meth:`flush` that leaves some pending (with the earliest).
    """

    def __init__(
        self,
        burst: int = BURST,
        window_s: float = WINDOW_S,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        on_pending: OnPending | None = None,
    ) -> None:
        if burst < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("burst and max_keys must be >= 1, window_s > 0")
        self.burst = burst
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self.on_pending = on_pending
        # key -> [window start, hits in the window]; insertion order is
        # window-start order (a new window re-inserts), so the first key is
        # the one to evict.
        self._keys: dict[Hashable, list[float]] = {}
        # key -> end of its window, for the keys whose window dropped lines.
        self._pending: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def pending(self) -> int:
        """How many keys have a summary to report."""
        return len(self._pending)

    def hit(self, key: Hashable) -> tuple[bool, list[tuple[Hashable, int]]]:
        """(log this occurrence?, [(key, lines suppressed)] to report first)."""
        now = self.clock()
        due: list[tuple[Hashable, int]] = []
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            if entry[1] <= self.burst:
                return True, due
            if entry[1] == self.burst + 1:  # the first line dropped
                end = entry[0] + self.window_s
                self._pending[key] = end
                if self.on_pending is not None:
                    self.on_pending(end - now)
            return False, due
        if entry is not None:
            del self._keys[key]  # a new window: to the end of the order
            self._report(key, entry, due)
        elif len(self._keys) >= self.max_keys:
            oldest = next(iter(self._keys))
            self._report(oldest, self._keys.pop(oldest), due)
        self._keys[key] = [now, 1]
        return True, due

    def _report(self, key: Hashable, entry: list[float], due: list[tuple[Hashable, int]]) -> None:
        if (dropped := int(entry[1]) - self.burst) > 0:
            due.append((key, dropped))
            del self._pending[key]

    def flush(self) -> list[tuple[Hashable, int]]:
        """[(key, lines suppressed)] of the windows that have ended.

        Their keys are forgotten: the next hit starts a new window. The
        summaries of windows still open stay pending (``on_pending`` is
        told when the first of them is due). O(keys pending).
        """
        now = self.clock()
        due: list[tuple[Hashable, int]] = []
        later: float | None = None
        for key, end in list(self._pending.items()):
            if end <= now:
                del self._pending[key]
                due.append((key, int(self._keys.pop(key)[1]) - self.burst))
            elif later is None or end < later:
                later = end
        if later is not None and self.on_pending is not None:
            self.on_pending(later - now)
        return due


class SummaryTimer:
    """``on_pending`` for a limiter used in a trio run: logs its summaries
    when they are due, with one system task that exists only while one is
    pending.

    The task sleeps in a cancel scope whose deadline is the earliest due
    summary (a later pending one moves it earlier, never later); when it
    wakes it calls :func:`flush`, which arms the next task if summaries are
    left. Called outside a trio run, it arms nothing.
    """

    def __init__(self, limiter: RepeatLimiter) -> None:
        self.limiter = limiter
        self._scope: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def armed(self) -> bool:
        """Whether a task waits to log summaries (in some trio run)."""
        return self._scope is not None

    def __call__(self, seconds: float) -> None:
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return  # not in a trio run: the key's next line reports
        when = trio.current_time() + max(seconds, 0.0)
        scope = self._scope
        if scope is not None and self._token is token:
            if when < scope.deadline:
                scope.deadline = when
            return
        # None armed, or armed in a run that has ended (its task is gone).
        self._token = token
        self._scope = scope = trio.CancelScope(deadline=when)
        try:
            trio.lowlevel.spawn_system_task(self._wait, scope, name="kernel.lograte summaries")
        except RuntimeError:  # the run is ending
            self._scope = None

    async def _wait(self, scope: trio.CancelScope) -> None:
        try:
            with scope:
                await trio.sleep_forever()
        finally:
            if self._scope is scope:
                self._scope = None
        try:
            flush(self.limiter)
        except Exception:  # a system task must not raise: that ends the run
            logging.getLogger(__name__).exception("log summaries failed")


def process_limiter(
    burst: int = BURST,
    window_s: float = WINDOW_S,
    max_keys: int = MAX_KEYS,
    clock: Callable[[], float] = time.monotonic,
) -> RepeatLimiter:
    """A :class:`RepeatLimiter` whose summaries come out when their window
    ends, through a :class:`SummaryTimer` (what :data:`LIMITER` is)."""
    limiter = RepeatLimiter(burst, window_s, max_keys, clock)
    limiter.on_pending = SummaryTimer(limiter)
    return limiter


#: The process's limiter, shared by every caller of :func:`log`.
LIMITER = process_limiter()


def log(
    logger: logging.Logger,
    level: int,
    key: Hashable,
    msg: str,
    *args: object,
    limiter: RepeatLimiter | None = None,
) -> None:
    """``logger.log(level, msg, *args)``, at most ``burst`` times per key and window.

    The key is scoped to ``logger`` and ``level``. A summary of what an
    earlier window dropped goes first. Cheap when the level is off: nothing
    is counted.
    """
    if not logger.isEnabledFor(level):
        return
    lim = LIMITER if limiter is None else limiter
    emit, due = lim.hit((logger.name, level, key))
    _summarize(lim, due)
    if emit:
        logger.log(level, msg, *args)


def flush(limiter: RepeatLimiter | None = None) -> int:
    """Log the summaries of the windows that have ended (``limiter``:
    :data:`LIMITER`); returns how many."""
    lim = LIMITER if limiter is None else limiter
    due = lim.flush()
    _summarize(lim, due)
    return len(due)


def _summarize(lim: RepeatLimiter, due: list[tuple[Hashable, int]]) -> None:
    """Log each summary on the logger and at the level of its key."""
    for scoped, dropped in due:
        match scoped:
            case (str() as name, int() as level, key):
                pass
            case _:  # a key :func:`log` did not scope
                name, level, key = __name__, logging.WARNING, scoped
        # An evicted key may be another logger's: its summary goes there.
        logging.getLogger(name).log(
            level,
            "... and %d more like it in the last %gs (%s)",
            dropped,
            lim.window_s,
            _show(key),
        )


def _show(key: object) -> str:
    if isinstance(key, tuple):
        return " ".join(str(part) for part in key)
    return str(key)
