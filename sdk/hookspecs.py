"""Every hook Trellis calls, grouped by phase: the plugin author's reference.

There are two kinds of hooks, and the difference matters:

**Lifecycle hooks** (:data:`LIFECYCLE_HOOKS`: ``trellis_addhooks``,
``trellis_config_check``, ``trellis_startup``, ``trellis_shutdown`` and the
announcements such as ``trellis_target_health``) are plain ``def``: pluggy
calls them on every plugin instance of a configuration generation, and never
awaits. An ``async def`` one is a configuration problem.

**Flow hooks** (everything else) may be ``def`` or ``async def``. The kernel's
own dispatcher calls them, because pluggy cannot await. For each route the
kernel compiles, once per configuration generation, the list of
implementations in *chain order*: the global chain (``[kernel] plugins`` or
``kernel run --plugins``), then the listener's chain, then the route's chain.
Registration order and ``tryfirst``/``trylast`` do not matter for flow hooks:
order is configuration. Hooks marked *first result* stop at the first
implementation that returns something other than ``None``.

**Answering in the request phase.** A hook of the request phase
(``trellis_route_select``, ``trellis_request_access``, ``trellis_request``,
``trellis_upstream_select``) answers the request locally by returning a
:class:`~sdk.Response` (access and request hooks) or by setting
``flow.response`` and returning ``None`` (any of the four): the two are the
same answer. No later implementation of the phase runs, the request never
reaches an upstream, and the response goes through ``trellis_response``,
``trellis_response_body`` and ``trellis_flow_done`` like any local answer. A
set response is checked as a returned one is (a final status 200-599, a
``bytes`` body, ...); one that fails is that plugin's failure. A
``Response`` returned by the hook that also set one wins; a route name or
an origin returned along with a set response does not stop it answering
(the route is still taken). An implementation that fails (raises, misses
its deadline) answers nothing, even under ``fail_open``: what it set is
dropped.

Every awaited flow-hook call runs under a deadline (``[kernel]
plugin_deadline_s``, or ``[kernel.policy.<instance>] deadline_s``). An
exception or a missed deadline is caught by the kernel's fault boundary: the
error is logged with the plugin's name and the flow ends with ``502`` (policy
``fail_closed``, the default), or the call is treated as if it returned
``None`` (``fail_open``). Other flows and the process are not affected.
An implementation that returns after its deadline (it caught the
``trio.Cancelled``, shielded itself or blocked) missed it all the same: its
late result is dropped.

Synchronous implementations must not block: they run on the event loop. The
flow hooks in :data:`SYNC_ONLY_HOOKS` must be plain ``def`` too.

May import: sdk._markers, sdk._hooks_lifecycle, sdk._hooks_flow.
"""

from __future__ import annotations

from sdk import _hooks_flow as _flow
from sdk import _hooks_lifecycle as _lifecycle
from sdk._markers import HOOK_PREFIX

#: Hooks pluggy calls itself, never awaiting: plain ``def`` only.
LIFECYCLE_HOOKS = _lifecycle.LIFECYCLE_HOOKS
#: Flow hooks that must be plain ``def``: body transforms run per chunk on
#: the hot path, and a certificate is chosen inside the TLS handshake.
SYNC_ONLY_HOOKS = _flow.SYNC_ONLY_HOOKS

# Every hook, in the order a plugin meets them. They live in two private
# modules: the lifecycle hooks in sdk._hooks_lifecycle, the flow hooks (by
# phase) in sdk._hooks_flow. pluggy finds them here by name;
# tests/sdk/test_hookspecs.py pins this order and docs/gen_hooks.py follows
# it (the docstring above is docs/hooks.md's introduction).
trellis_addhooks = _lifecycle.trellis_addhooks
trellis_config_check = _lifecycle.trellis_config_check
trellis_startup = _lifecycle.trellis_startup
trellis_shutdown = _lifecycle.trellis_shutdown
trellis_balancer = _lifecycle.trellis_balancer
trellis_target_health = _lifecycle.trellis_target_health
trellis_health_probe = _lifecycle.trellis_health_probe
trellis_plugin_error = _lifecycle.trellis_plugin_error
trellis_tls_passthrough = _flow.trellis_tls_passthrough
trellis_tls_certificate = _flow.trellis_tls_certificate
trellis_route_select = _flow.trellis_route_select
trellis_request_access = _flow.trellis_request_access
trellis_request = _flow.trellis_request
trellis_upstream_select = _flow.trellis_upstream_select
trellis_request_body = _flow.trellis_request_body
trellis_response = _flow.trellis_response
trellis_response_body = _flow.trellis_response_body
trellis_error = _flow.trellis_error
trellis_flow_done = _flow.trellis_flow_done


def _fixup_module_metadata() -> None:
    # As sdk/__init__.py does: a hook says it is ``sdk.hookspecs.trellis_x``,
    # the name a plugin author knows, not the private module's.
    for name, value in globals().items():
        if name.startswith(HOOK_PREFIX):
            value.__module__ = __name__


_fixup_module_metadata()
del _fixup_module_metadata
