"""The app's side of upstream groups: their health checks and announcements.

Health checks run per group *object*: a reload that keeps a group unchanged
keeps its object (kernel/generation.py), and so its checker and the health
it learnt. :class:`GroupChecks` starts the checker of each new group with
active checks, stops those of groups a reload dropped, and passes the
checks' news to the plugins of the live generation
(``trellis_health_probe``, ``trellis_target_health``).

May import: stdlib, trio, sdk, kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from kernel import lifecycle
from kernel.generation import Generation
from kernel.groups import GroupRuntime
from kernel.io.healthcheck import run_health_checks
from kernel.io.upstream import TlsTarget
from kernel.tls import default_client_context
from sdk import Target

__all__ = ["GroupChecks"]


class GroupChecks:
    """Health checkers of the live groups; ``generation`` gives the live one."""

    def __init__(self, generation: Callable[[], Generation]) -> None:
        self._generation = generation

    def sync(self, nursery: trio.Nursery, new: Generation, old: Generation | None) -> None:
        """Start the new groups' checkers (in ``nursery``), stop the dropped ones'."""
        kept = {id(g) for g in new.groups.values()}
        if old is not None:
            for group in old.groups.values():
                if id(group) not in kept:
                    group.on_change = None
                    if group.checker is not None:
                        group.checker.cancel()
        for group in new.groups.values():
            group.on_change = self._target_health_changed
            if group.config.health is not None and group.checker is None:
                group.checker = scope = trio.CancelScope()
                nursery.start_soon(self._check_group, group, scope)

    async def _check_group(self, group: GroupRuntime, scope: trio.CancelScope) -> None:
        with scope:
            await run_health_checks(
                group, self._probe_tls, self._generation().upstream_http1, self._probed
            )

    def _probed(self, target: Target, healthy: bool, seconds: float, detail: str) -> None:
        lifecycle.notify(
            self._generation().host.pm,
            "trellis_health_probe",
            target=target,
            healthy=healthy,
            duration_s=seconds,
            detail=detail,
        )

    def _probe_tls(self, target: Target) -> TlsTarget | None:
        """How a health probe reaches ``target`` under the live generation."""
        if target.origin.scheme != "https":
            return None
        probes = self._generation().probes.get(target.group, ())
        route = probes[target.index] if target.index < len(probes) else None
        ctx = route.client_tls if route is not None else None
        return (ctx or default_client_context(), route.tls_server_name if route else "")

    def _target_health_changed(self, target: Target, available: bool, reason: str) -> None:
        lifecycle.notify(
            self._generation().host.pm,
            "trellis_target_health",
            target=target,
            available=available,
            reason=reason,
        )
