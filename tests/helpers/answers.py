"""Plugins for tests of answering by setting ``flow.response`` in the request phase.

:class:`SetsResponse` answers in one hook of the request phase by setting
``flow.response``; :class:`Watches` records the hooks that ran after it.
Used over real sockets (tests/kernel/io/test_exchange.py) and with the
harness (tests/sdk/test_testing.py), which must agree.
"""

from __future__ import annotations

from typing import Any

import trio

import sdk

#: The request phase's hooks, in the order a flow meets them.
REQUEST_PHASE = (
    "trellis_route_select",
    "trellis_request_access",
    "trellis_request",
    "trellis_upstream_select",
)


class SetsResponse:
    """In ``hook``, sets ``flow.response`` (``made()``, by default a fresh
    201 ``set in HOOK``) and returns ``returns`` (``None``: it only set it)."""

    def __init__(self, hook: str, made: Any = None, returns: Any = None) -> None:
        self.hook = hook
        self.made = made or (lambda: sdk.Response.make(201, b"set in " + hook.encode()))
        self.returns = returns

    def _act(self, flow: sdk.Flow, hook: str) -> Any:
        if hook != self.hook:
            return None
        flow.response = self.made()
        return self.returns() if callable(self.returns) else self.returns

    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> Any:
        return self._act(flow, "trellis_route_select")

    @sdk.hookimpl
    def trellis_request_access(self, flow: sdk.Flow) -> Any:
        return self._act(flow, "trellis_request_access")

    @sdk.hookimpl
    async def trellis_request(self, flow: sdk.Flow) -> Any:  # async ones answer too
        await trio.lowlevel.checkpoint()
        return self._act(flow, "trellis_request")

    @sdk.hookimpl
    def trellis_upstream_select(self, flow: sdk.Flow) -> Any:
        return self._act(flow, "trellis_upstream_select")


class Watches:
    """Records the hooks it saw; tags and upper-cases responses; keeps finished flows."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.done: list[sdk.Flow] = []

    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> None:
        self.ran.append("trellis_route_select")

    @sdk.hookimpl
    def trellis_request_access(self, flow: sdk.Flow) -> None:
        self.ran.append("trellis_request_access")

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> None:
        self.ran.append("trellis_request")

    @sdk.hookimpl
    def trellis_upstream_select(self, flow: sdk.Flow) -> None:
        self.ran.append("trellis_upstream_select")

    @sdk.hookimpl
    def trellis_response(self, flow: sdk.Flow) -> None:
        self.ran.append("trellis_response")
        assert flow.response is not None
        flow.response.headers["x-seen"] = "yes"

    @sdk.hookimpl
    def trellis_response_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> bytes:
        return chunk.upper()

    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        self.ran.append("trellis_flow_done")
        self.done.append(flow)
