"""What lifecycle hooks receive: :class:`StartupContext`.

May import: stdlib, attrs, sdk._balance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

import attrs

from sdk._balance import Group

__all__ = ["StartupContext"]


@final
@attrs.frozen(slots=True)
class StartupContext:
    """Handed to ``trellis_startup``: the generation going live.

    ``start_soon(async_fn, *args)`` starts a background task that runs until
    the generation is retired (then it is cancelled). An exception escaping
    such a task is logged and does not stop the proxy.
    """

    #: Generation number (1 for the first configuration, +1 per reload).
    generation: int
    _start_soon: Callable[[Callable[..., Awaitable[Any]], tuple[Any, ...]], None] = attrs.field(
        alias="start_soon_impl", repr=False
    )
    #: The upstream groups of this generation by name, with their targets'
    #: live state (read-only for plugins: metrics, health pages, mirroring).
    groups: Mapping[str, Group] = attrs.field(factory=dict, repr=False)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``await fn(*args)`` in the background for the generation's lifetime."""
        self._start_soon(fn, args)
