"""A response prepared once and stamped out per request: :class:`ResponseTemplate`.

May import: stdlib, sdk, .config.
"""

from __future__ import annotations

from typing import final

import sdk

from .config import NO_BODY, RespondConfig

__all__ = ["ResponseTemplate"]


@final
class ResponseTemplate:
    """The wire pieces of a fixed response; :meth:`make` builds a fresh :class:`sdk.Response`."""

    __slots__ = ("body", "fields", "status")

    def __init__(self, status: int, fields: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        #: Validated, lower-cased field pairs (the sdk's own normalisation).
        self.fields: tuple[tuple[bytes, bytes], ...] = tuple(fields)
        self.body = body

    @classmethod
    def from_config(cls, config: RespondConfig) -> ResponseTemplate:
        headers = sdk.Headers(config.headers.items())
        if config.content_type and config.status not in NO_BODY:
            headers["content-type"] = config.content_type
        return cls(config.status, headers.fields, config.body.encode("utf-8"))

    def make(self) -> sdk.Response:
        """A new response: its own :class:`sdk.Headers` list, since later plugins may edit it."""
        return sdk.Response(
            status_code=self.status,
            headers=sdk.Headers.from_wire(list(self.fields)),
            body=self.body,
        )
