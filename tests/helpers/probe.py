"""A plugin that implements every flow hook and records each call.

For tests of what a flow's hooks were (a refused request sees only
``trellis_flow_done``): put it in the global chain, send requests, read
:attr:`Probe.calls` or :attr:`Probe.done`.
"""

from __future__ import annotations

import sdk


class Probe:
    """Records ``(hook, flow)`` for every flow-hook call; changes nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, sdk.Flow]] = []

    @property
    def done(self) -> list[sdk.Flow]:
        """The flows ``trellis_flow_done`` saw, in order."""
        return [flow for hook, flow in self.calls if hook == "trellis_flow_done"]

    def hooks(self, flow: sdk.Flow) -> list[str]:
        """The hooks that ran for ``flow``, in order."""
        return [hook for hook, f in self.calls if f is flow]

    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> None:
        self.calls.append(("trellis_route_select", flow))

    @sdk.hookimpl
    def trellis_request_access(self, flow: sdk.Flow) -> None:
        self.calls.append(("trellis_request_access", flow))

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        self.calls.append(("trellis_request", flow))

    @sdk.hookimpl
    def trellis_upstream_select(self, flow: sdk.Flow) -> None:
        self.calls.append(("trellis_upstream_select", flow))

    @sdk.hookimpl
    def trellis_request_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> None:
        self.calls.append(("trellis_request_body", flow))

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        self.calls.append(("trellis_response", flow))

    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> None:
        self.calls.append(("trellis_response_body", flow))

    @sdk.hookimpl
    def trellis_error(self, flow: sdk.Flow, error: sdk.ProxyError) -> None:
        self.calls.append(("trellis_error", flow))

    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        self.calls.append(("trellis_flow_done", flow))
