"""A generation's run: its plugins started, their background tasks, their shutdown.

:func:`run_generation` runs one generation's plugins for as long as it
lives: ``trellis_startup`` one implementation at a time
(kernel/lifecycle.py), the tasks they start with
``StartupContext.start_soon`` (each failure logged, none ending the
others), and, once the generation retired and its last flow ended
(``Generation.idle``), the tasks cancelled and ``trellis_shutdown``
called. A ``trellis_startup`` that raises is a :class:`PluginStartupError`:
the start ends, or the reload is refused and the live generation keeps
serving (kernel/app.py).

Records go to the ``kernel.app`` logger, as they did before this module
was split out of kernel/app.py.

May import: stdlib, trio, sdk, kernel.generation, kernel.lifecycle.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from kernel import lifecycle
from kernel.generation import Generation
from sdk import Group, ServerInfo, StartupContext

__all__ = ["PluginStartupError", "run_generation"]

log = logging.getLogger("kernel.app")


class PluginStartupError(Exception):
    """A plugin's ``trellis_startup`` raised.

    ``storage`` when what failed was I/O (an :class:`OSError`: a log
    directory that cannot be made, a file that cannot be written): the
    process then exits 3 rather than 1.
    """

    def __init__(self, message: str, *, storage: bool) -> None:
        super().__init__(message)
        self.storage = storage


async def run_generation(
    gen: Generation,
    server: ServerInfo,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start a generation's plugins, keep its background tasks, shut it down.

    Started once every ``trellis_startup`` ran; returns once the generation
    is idle and shut down. ``server`` is what the plugins read
    (``StartupContext.server``).
    """
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
                    server=server,
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


async def _guarded(number: int, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except Exception:
        log.exception("background task %r of generation %d failed", fn, number)
