"""The router's hook implementations: glue between the kernel and :mod:`.matching`.

May import: stdlib, sdk, .config, .matching.
"""

from __future__ import annotations

import sdk

from .config import RouterConfig
from .matching import compile_rules

__all__ = ["RouterPlugin"]


class RouterPlugin:
    """Pick a route by host, path, method and headers; the first matching rule wins.

    A rule may also send the request to its own upstream and rewrite the path.
    """

    config_class = RouterConfig

    def __init__(self, config: RouterConfig | None = None) -> None:
        self.config = config if config is not None else RouterConfig()
        # Compiled once per configuration generation; select() only reads it.
        self._table = compile_rules(self.config.rules)

    @sdk.hookimpl
    def trellis_config_check(self, routes: tuple[str, ...]) -> list[str] | None:
        known = set(routes)
        listed = ", ".join(routes) if routes else "none configured"
        return [
            f"rules[{i}].route: no route named {rule.route!r} (routes: {listed})"
            for i, rule in enumerate(self.config.rules)
            if rule.route not in known
        ]

    @sdk.hookimpl
    def trellis_route_select(self, flow: sdk.Flow) -> str | None:
        rule = self._table.select(flow.request)
        if rule is None:
            return None
        if rule.upstream is not None:
            flow.upstream = rule.upstream
        if rule.rewrite is not None:
            flow.request.path = rule.rewrite.apply(flow.request.path)
        flow.record(rule.decision)
        return rule.route
