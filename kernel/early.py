"""The ``kernel`` command's first moments: SIGHUP is held before anything heavy loads.

SIGHUP's default action ends a process, and importing the kernel, loading
the config and binding the listeners take a few hundred milliseconds before
the app listens for signals. A reload asked for then - by an operator, or
by a supervisor passing one on to a worker it has just restarted - would
kill the process. :func:`main`, the console script, installs a handler that
only remembers the signal, before it imports the rest of the kernel;
:class:`kernel.app.App` reloads once it serves if one came
(:func:`take_sighup`).

May import: the standard library only (it runs before the kernel is imported).
"""

from __future__ import annotations

import signal

__all__ = ["hold_sighup", "main", "take_sighup"]

_pending = False


def _remember(signum: int, frame: object) -> None:
    global _pending
    _pending = True


def hold_sighup() -> None:
    """Remember a SIGHUP instead of dying of it (until the app listens)."""
    signal.signal(signal.SIGHUP, _remember)


def take_sighup() -> bool:
    """Did a SIGHUP come while the process was starting? (Once: it is forgotten.)"""
    global _pending
    taken, _pending = _pending, False
    return taken


def main() -> int:
    """The ``kernel`` command."""
    hold_sighup()
    from kernel.cli import main as cli_main

    return cli_main()
