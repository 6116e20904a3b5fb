"""The headers plugin's hook implementations: glue around :class:`.edit.HeaderEdit`.

May import: stdlib, sdk, .config, .edit.
"""

from __future__ import annotations

import sdk

from .config import HeadersConfig
from .edit import HeaderEdit

__all__ = ["HeadersPlugin"]


class HeadersPlugin:
    """Remove, set and add request and response header fields."""

    config_class = HeadersConfig

    def __init__(self, config: HeadersConfig | None = None) -> None:
        self.config = config if config is not None else HeadersConfig()
        c = self.config
        self._request = HeaderEdit.build(c.request_remove, c.request_set, c.request_add)
        self._response = HeaderEdit.build(c.response_remove, c.response_set, c.response_add)

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        # Never answers: returns None so the rest of the chain runs.
        self._request.apply(flow.request.headers)

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        if flow.response is not None:
            self._response.apply(flow.response.headers)
