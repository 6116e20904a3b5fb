"""What ``kernel explain`` prints: a generation's listeners, routes and chains.

For each listener its protocol settings and routing chain; for each route
its upstream or group, effective transport, chain, and which instance
implements each hook the chain calls.

May import: stdlib, kernel.dispatch, kernel.generation, kernel.routes.
"""

from __future__ import annotations

from kernel.dispatch import Chain
from kernel.generation import Generation
from kernel.routes import RouteRuntime

__all__ = ["explain"]


def explain(gen: Generation) -> str:
    """Every route's effective chain, per listener, for ``kernel explain``."""
    lines = [f"generation {gen.number}"]
    for lname, lst in gen.listeners.items():
        lines.append(
            f"listener {lname} on {lst.bind} (http1={lst.http1},"
            f" http2={'on' if lst.http2 else 'off'},"
            f" head timeout {lst.request_head_timeout_s:g}s,"
            f" keep-alive {lst.keepalive_timeout_s:g}s)"
        )
        if lst.tls is not None:
            names = ", ".join(lst.tls.names) or "(the default certificate only)"
            extra = "; passthrough" if lst.tls.passthrough else ""
            lines.append(f"  tls: {names}; alpn {','.join(lst.tls.alpn)}{extra}")
        pre = gen.pre_route[lname]
        lines.append(f"  routing chain: {' -> '.join(pre.names) or '(none)'}")
        lines.extend(_hook_lines(pre, _ROUTING_HOOKS, "    "))
        for rname, route in gen.routes.items():
            chain = gen.chains[(lname, rname)]
            default = " (default)" if rname == lst.default_route else ""
            up = f"{route.upstream}{route.base_path}" if route.upstream else "(none)"
            group = gen.groups.get(route.group)
            if group is not None:
                lines.append(f"  route {rname}{default}: group {group.name}")
            else:
                lines.append(f"  route {rname}{default}: upstream {up}")
            lines.append(f"    chain: {' -> '.join(chain.names) or '(none)'}")
            lines.append(f"    transport: {_transport(route)}")
            if group is not None:
                lines.extend(f"    {line}" for line in group.describe())
            lines.extend(_hook_lines(chain, _ROUTE_HOOKS, "    "))
    return "\n".join(lines)


#: What ``kernel explain`` lists per chain: each hook and who implements it.
_ROUTING_HOOKS = ("tls_passthrough", "tls_certificate", "route_select")
_ROUTE_HOOKS = (
    "request_access", "request", "upstream_select", "request_body", "response",
    "response_body", "error", "flow_done",
)  # fmt: skip


def _hook_lines(chain: Chain, hooks: tuple[str, ...], indent: str) -> list[str]:
    return [
        f"{indent}{hook}: {', '.join(i.instance for i in impls)}"
        for hook in hooks
        if (impls := getattr(chain, hook))
    ]


def _transport(route: RouteRuntime) -> str:
    """One line of a route's effective upstream settings, for ``kernel explain``."""
    http2 = "forced" if route.force_http2 else "by ALPN" if route.http2 else "off"
    parts = [
        f"connect {route.connect_timeout_s:g}s",
        f"response {route.response_timeout_s:g}s",
        f"read {route.read_timeout_s:g}s",
        f"send {route.send_timeout_s:g}s",
        f"pool {route.max_idle_per_host} idle for {route.idle_timeout_s:g}s",
        f"http2 {http2}",
    ]
    if route.client_tls is not None:
        parts.append(f"tls{' as ' + route.tls_server_name if route.tls_server_name else ''}")
    retry = route.retry
    if retry.attempts > 1:
        detail = [
            f"methods {','.join(retry.methods)}",
            f"backoff {retry.backoff_s * 1000:g}ms",
            f"budget {retry.budget_ratio:.0%}",
        ]
        if retry.deadline_s:
            detail.append(f"deadline {retry.deadline_s:g}s")
        parts.append(
            f"retry {retry.attempts - 1}x on {','.join(map(str, retry.statuses))}"
            f" ({'; '.join(detail)})"
        )
    else:
        parts.append("no retry")
    idle = route.websocket_idle_timeout_s
    parts.append(f"websocket (idle {idle:g}s)" if route.websocket else "no websocket")
    return ", ".join(parts)
