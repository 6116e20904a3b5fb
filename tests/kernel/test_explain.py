"""kernel explain's text (kernel/explain.py)."""

from __future__ import annotations

import sdk
from kernel.config.model import KernelSection, RouteConfig, Settings
from kernel.explain import explain
from kernel.generation import build_generation


class EveryHook:
    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> None:
        pass

    @sdk.hookimpl
    def trellis_upstream_select(self, flow: sdk.Flow) -> None:
        pass

    @sdk.hookimpl
    def trellis_request_body(self, flow: sdk.Flow, chunk: bytes, end: bool) -> None:
        pass

    @sdk.hookimpl
    def trellis_error(self, flow: sdk.Flow, error: sdk.ProxyError) -> None:
        pass


def test_explain_lists_every_hook_a_chain_calls() -> None:
    """Before, only access, request, response and flow_done were listed."""
    settings = Settings(kernel=KernelSection(plugins=["e"]), routes=[RouteConfig(name="a")])
    text = explain(build_generation(settings, extra_plugins={"e": EveryHook()}))
    for line in ("route_select: e", "upstream_select: e", "request_body: e", "error: e"):
        assert f"    {line}\n" in text + "\n", line
