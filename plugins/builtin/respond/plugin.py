"""The respond plugin's hook implementation: answer with a fixed response.

May import: stdlib, sdk, .config, .template.
"""

from __future__ import annotations

import sdk

from .config import RespondConfig
from .template import ResponseTemplate

__all__ = ["RespondPlugin"]


class RespondPlugin:
    """Answer every request that reaches it with a fixed status, headers and body."""

    config_class = RespondConfig

    def __init__(self, config: RespondConfig | None = None) -> None:
        self.config = config if config is not None else RespondConfig()
        self._template = ResponseTemplate.from_config(self.config)

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> sdk.Response:
        return self._template.make()
