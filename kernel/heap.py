"""The cyclic garbage collector, told which objects are long-lived.

A running proxy holds tens of thousands of objects that live as long as the
process or its generation: imported modules, the config, compiled chains,
plugin instances. CPython's collector does not know that. Every object that
survives two young collections - any flow's objects caught in flight - is
promoted to the oldest generation, and once enough have been promoted a
*full* collection walks every long-lived object again. Under load that was
a full collection every second or two, each stopping every connection of
the process for 25-33 ms (measured under wrk, 50 connections, on the
benchmark VM), which is most of the gap between the median latency and the
99th percentile.

:func:`settle` moves every object alive once the process serves into the
permanent generation (:func:`gc.freeze`): the collector no longer walks
them, and a full collection looks only at what was promoted since. Frozen
objects are still freed when their reference count drops; only a cycle
among them is never collected, which is what :func:`resettle` is for: a
retired generation leaves its cycles behind (plugin objects, pluggy's
registrations), so once it is gone everything is thawed, collected once and
frozen again - one full collection per reload.

Only the process's owner calls these (``kernel run``): an :class:`~kernel.app.App`
embedded in another program, such as a test run, leaves its collector alone.

May import: the standard library only.
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect what is garbage now, then freeze everything that is left;
    returns the number of objects collected."""
    found = gc.collect()
    gc.freeze()
    return found


def resettle() -> int:
    """Thaw, collect (a retired generation's cycles) and freeze again;
    returns the number of objects collected."""
    gc.unfreeze()
    return settle()
