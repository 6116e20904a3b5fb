"""A plugin that does nothing, for the "10 no-op plugins" benchmark variant.

bench/configs/noop10.toml puts ten instances of it in the global chain; the
benchmark compares that variant's throughput with the same configuration
without them (target: at most 10% lower). bench/run.py starts the kernel with
bench/ on PYTHONPATH, so this module imports as ``noop``.

Its hooks are plain ``def``: an ``async def`` hook is awaited under a
deadline (a cancel scope per call), which is the price of being allowed to
wait, and is measured separately if needed.
"""

from __future__ import annotations

import attrs

from sdk import hookimpl


@attrs.frozen
class NoopConfig:
    """No settings: the instance tables stay empty."""


class Noop:
    """Implements two request-path hooks and does nothing in them."""

    config_class = NoopConfig

    def __init__(self, config: NoopConfig) -> None:
        self.config = config

    @hookimpl
    def trellis_request(self, flow: object) -> None:
        return None

    @hookimpl
    def trellis_response(self, flow: object) -> None:
        return None
