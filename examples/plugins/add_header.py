"""The smallest useful plugin: tag each request and its response with ``x-request-id``.

Load it with ``[kernel.modules] request_id = "examples.plugins.add_header:RequestIdPlugin"``.

May import: sdk.
"""

from __future__ import annotations

import sdk


class RequestIdPlugin:
    """Add x-request-id (the flow's id) to the upstream request and the response unless present."""

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        # Keep an id the client (or an earlier proxy) sent.
        flow.request.headers.setdefault("x-request-id", flow.id)

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        request_id = flow.request.headers.get("x-request-id") or flow.id
        if flow.response is not None:
            flow.response.headers.setdefault("x-request-id", request_id)
