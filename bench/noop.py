"""A plugin that does nothing, for the "10 no-op plugins" benchmark variant.

bench/configs/noop10.toml puts ten instances of it in the global chain; the
benchmark compares that variant's throughput with the same configuration
without them (target: at most 10% lower). bench/run.py starts the kernel with
bench/ on PYTHONPATH, so this module imports as ``noop``.

TODO(lead): written against the plugin API as drafted (sdk.hookimpl, a class
with an attrs ``config_class`` so that named instances ``noop.n1`` ...
``noop.n10`` can be made, ``[kernel.modules] noop = "noop:Noop"``); `kernel
check` accepted it when written. If the API changes, keep the intent: one no-op
implementation of each hook a typical request-path plugin implements
(``trellis_request`` and ``trellis_response``), returning nothing.
bench/run.py skips the variant (and says why) while ``kernel check -c
bench/configs/noop10.toml`` fails.
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
    async def trellis_request(self, flow: object) -> None:
        return None

    @hookimpl
    async def trellis_response(self, flow: object) -> None:
        return None
