"""A repeat limiter for per-request log lines (sans-IO: no task, no thread).

A dead upstream under load fails every request the same way, and one
warning per request buries everything else in the log (and costs CPU).
:func:`log` lets the first :data:`BURST` lines per key through in a window
of :data:`WINDOW_S` seconds, then drops the rest; the next line with that
key after the window ends first logs one summary,
``... and M more like it in the last 10s (KEY)``, at the same level and on
the same logger. Nothing runs between calls, so the summary comes with the
next occurrence, not when the window closes: a key that goes quiet keeps
its count until it happens again (or is evicted, see below). "The last 10s"
is the window the lines were dropped in, which may have ended earlier.

A key is stable and short: what fails and how (the route and the error's
class, an upstream and ``strerror``), never the flow id or a client port.
The record still carries the flow id (``kernel.log`` stamps the current
flow's, the summary's being the flow that emitted it).

Every call is O(1) and memory is bounded: at most :data:`MAX_KEYS` keys are
tracked; a new key beyond that evicts the one whose window started first,
and its pending count is reported (by the call that evicted it) rather than
lost. Under ``[server] workers`` each worker limits its own lines.

Only for per-request lines (kernel/io/, and the plugin fault boundary in
kernel/dispatch.py: a plugin failing on every request): config errors and
lifecycle lines log every time.

May import: stdlib.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

__all__ = ["BURST", "MAX_KEYS", "WINDOW_S", "RepeatLimiter", "log"]

#: Lines let through per key in one window.
BURST = 10
#: The window, in seconds.
WINDOW_S = 10.0
#: Keys tracked at once (per limiter).
MAX_KEYS = 1024


class RepeatLimiter:
    """First ``burst`` hits per key in ``window_s``, then a count of the rest.

    :meth:`hit` says whether this occurrence may be logged and which
    summaries are due first. ``clock`` is :func:`time.monotonic` unless a
    test passes its own.
    """

    def __init__(
        self,
        burst: int = BURST,
        window_s: float = WINDOW_S,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("burst and max_keys must be >= 1, window_s > 0")
        self.burst = burst
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        # key -> [window start, hits in the window]; insertion order is
        # window-start order (a new window re-inserts), so the first key is
        # the one to evict.
        self._keys: dict[Hashable, list[float]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def hit(self, key: Hashable) -> tuple[bool, list[tuple[Hashable, int]]]:
        """(log this occurrence?, [(key, lines suppressed)] to report first)."""
        now = self.clock()
        due: list[tuple[Hashable, int]] = []
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            return entry[1] <= self.burst, due
        if entry is not None:
            del self._keys[key]  # a new window: to the end of the order
            if (dropped := int(entry[1]) - self.burst) > 0:
                due.append((key, dropped))
        elif len(self._keys) >= self.max_keys:
            oldest = next(iter(self._keys))
            old = self._keys.pop(oldest)
            if (dropped := int(old[1]) - self.burst) > 0:
                due.append((oldest, dropped))
        self._keys[key] = [now, 1]
        return True, due


#: The process's limiter, shared by every caller of :func:`log`.
LIMITER = RepeatLimiter()


def log(
    logger: logging.Logger,
    level: int,
    key: Hashable,
    msg: str,
    *args: object,
    limiter: RepeatLimiter | None = None,
) -> None:
    """``logger.log(level, msg, *args)``, at most ``burst`` times per key and window.

    The key is scoped to ``logger``. A summary of what an earlier window
    dropped goes first. Cheap when the level is off: nothing is counted.
    """
    if not logger.isEnabledFor(level):
        return
    lim = LIMITER if limiter is None else limiter
    emit, due = lim.hit((logger.name, key))
    for scoped, dropped in due:
        name, dropped_key = scoped if isinstance(scoped, tuple) else (logger.name, scoped)
        # An evicted key may be another logger's: its summary goes there.
        owner = logger if name == logger.name else logging.getLogger(str(name))
        owner.log(
            level,
            "... and %d more like it in the last %gs (%s)",
            dropped,
            lim.window_s,
            _show(dropped_key),
        )
    if emit:
        logger.log(level, msg, *args)


def _show(key: object) -> str:
    if isinstance(key, tuple):
        return " ".join(str(part) for part in key)
    return str(key)
