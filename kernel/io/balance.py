"""Sending an exchange to a group target: choose, fail over, account, pin.

The exchange calls these around each try when its flow goes to an upstream
group (``flow.group``):

- :func:`choose` asks the group for a target (avoiding the ones this flow
  already tried), counts it in flight, points ``flow.upstream`` at it with
  its base path, and switches the exchange to the route's transport for
  that target; no target at all is :class:`~sdk.UpstreamUnavailable` (503
  with ``Retry-After``);
- :func:`outcome` feeds each try's result to the group (latency EWMA,
  passive health);
- :func:`may_fail_over` says whether a try that never reached the target
  (the connection failed) may go to another one, not tried yet: that is
  safe for any method, since nothing was sent;
- :func:`release` ends the in-flight count when the flow ends;
- :func:`sticky_cookie` adds the group's ``Set-Cookie`` to the response.

May import: stdlib, sdk, kernel.groups, kernel.generation; kernel.io.relay
for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdk import Flow, ProxyError, Response, UpstreamUnavailable

if TYPE_CHECKING:
    from kernel.io.relay import ExchangeBase

__all__ = ["choose", "may_fail_over", "outcome", "release", "sticky_cookie"]


def choose(ex: ExchangeBase) -> None:
    """Pick this try's target from ``flow.group`` and aim the exchange at it."""
    flow = ex.flow
    group = ex.gen.groups.get(flow.group)
    if group is None:
        raise ProxyError(f"plugin chose unknown group {flow.group!r}", status_hint=500)
    target = group.pick(flow, ex.tried)
    if target is None:
        raise UpstreamUnavailable(
            f"no target of group {group.name!r} is available",
            retry_after_s=group.config.retry_after_s,
        )
    release(flow)
    target.active += 1
    target.requests += 1
    flow.target = target
    ex.tried += (target,)
    flow.upstream = target.origin
    if ex.orig_path is None:
        ex.orig_path = flow.request.path
    flow.request.path = target.base_path + ex.orig_path
    base = ex.gen.routes.get(flow.route)
    if base is not None:
        per_target = base.per_target.get(group.name)
        if per_target:
            ex.route = per_target[target.index]
    if group.config.sticky is not None:
        ex.set_cookie = group.sticky_cookie(flow, target, flow.client.tls)


def outcome(ex: ExchangeBase, status: int | None, latency: float | None, why: str = "") -> None:
    """Report one try to the target's group: a status, or a failure (``status=None``)."""
    target = ex.flow.target
    if target is None:
        return
    group = ex.gen.groups.get(target.group)
    if group is None:
        return
    if status is None:
        group.observe(target, False, None, why)
    elif status in group.config.passive.statuses:
        group.observe(target, False, latency, f"status {status}")
    else:
        group.observe(target, True, latency, "")


def may_fail_over(ex: ExchangeBase) -> bool:
    """Whether another target is worth trying after a connection failure."""
    target = ex.flow.target
    if target is None:
        return False
    group = ex.gen.groups.get(target.group)
    if group is None:
        return False
    tried = ex.tried
    pool = group.targets if group.config.when_none_available == "panic" else group.candidates
    return any(t not in tried and t.weight > 0 for t in pool)


def release(flow: Flow) -> None:
    """The flow no longer uses its target (``flow.target`` stays, for the logs)."""
    if flow.target is not None:
        flow.target.active -= 1


def sticky_cookie(ex: ExchangeBase, response: Response) -> None:
    """Add the sticky ``Set-Cookie`` chosen with the target, if any."""
    if ex.set_cookie:
        response.headers.add("set-cookie", ex.set_cookie)
