"""Upstream groups at run time: targets with live state, the balancer, passive health, stickiness.

:func:`build_groups` turns ``[[groups]]`` into :class:`GroupRuntime`
objects while a generation is built. A group whose configuration (and whose
strategy plugin's table) did not change is *kept*: the new generation gets
the very same object, so its balancer state, its targets' health and their
in-flight counts carry across a reload. A changed group is rebuilt, and
its targets inherit the health of same-named targets with the same URL.

Per request, :meth:`GroupRuntime.pick` asks the balancer for one of the
available targets (``candidates``); :meth:`GroupRuntime.observe` feeds the
outcome of each try back (latency EWMA, passive ejection). Active health
checks (:mod:`kernel.io.healthcheck`) report through
:meth:`GroupRuntime.set_health`. Every change of a target's availability is
logged and handed to ``on_change`` (the app calls ``trellis_target_health``).

May import: stdlib, attrs, pluggy, sdk, kernel.config, kernel.pluginhost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from kernel.config.groups import GroupConfig, TargetConfig, split_urls
from kernel.config.model import Settings
from kernel.pluginhost import PluginHost, instance_plugin
from sdk import Balancer, ConfigError, Flow, Group, Origin, PluginError, Target

__all__ = ["EWMA_ALPHA", "GroupRuntime", "build_groups"]

log = logging.getLogger("kernel.groups")

#: Weight of the newest sample in a target's latency EWMA.
EWMA_ALPHA = 0.3

_now = time.monotonic


class GroupRuntime:
    """One upstream group: its targets, their state, and its balancer."""

    __slots__ = (
        "_wake_at",
        "balancer",
        "candidates",
        "checker",
        "config",
        "configs",
        "key",
        "name",
        "on_change",
        "sticky_values",
        "targets",
        "urls",
    )

    def __init__(
        self,
        config: GroupConfig,
        key: object,
        targets: tuple[Target, ...],
        balancer: Balancer,
        configs: tuple[TargetConfig, ...],
    ) -> None:
        self.name = config.name
        self.config = config
        #: What must be equal for a reload to keep this object.
        self.key = key
        self.targets = targets
        self.balancer = balancer
        #: Each target's configuration, by index (names filled in).
        self.configs = configs
        #: Each target's URL, by index (for health probes and explain).
        self.urls = tuple(tc.url for tc in configs)
        #: Called as ``on_change(target, available, reason)`` after every change.
        self.on_change: Callable[[Target, bool, str], None] | None = None
        #: The running health checker's cancel scope (kept by the app).
        self.checker: Any = None
        #: Sticky cookie value -> target.
        self.sticky_values = {_sticky_value(self.name, t, self.urls[t.index]): t for t in targets}
        self.candidates: tuple[Target, ...] = ()
        self._wake_at = math.inf
        for t in targets:
            t.available = _usable(t, _now())
        self._refresh(_now(), "")

    def __repr__(self) -> str:
        up = len(self.candidates)
        return f"<GroupRuntime {self.name} {up}/{len(self.targets)} up via {self.config.strategy}>"

    def describe(self) -> list[str]:
        """The group's settings, one line each, for ``kernel explain``."""
        cfg = self.config
        targets = ", ".join(
            (
                self.urls[t.index]
                if t.name == f"{t.origin.host}:{t.origin.port}"
                else f"{t.name}={self.urls[t.index]}"
            )
            + (f" (weight {t.weight:g})" if t.weight != 1 else "")
            for t in self.targets
        )
        lines = [f"lb: {cfg.strategy} over {len(self.targets)} targets: {targets}"]
        health = cfg.health
        if health is None:
            lines.append("health: no active checks")
        else:
            path = health.path or "/health,/healthz,/ping,/"
            expect = ",".join(map(str, health.expect)) or "2xx/3xx"
            lines.append(
                f"health: {health.method} {path} every {health.interval_s:g}s"
                f" (timeout {health.timeout_s:g}s, expect {expect},"
                f" down after {health.unhealthy_threshold}, up after {health.healthy_threshold})"
            )
        passive = cfg.passive
        if passive.failures:
            lines.append(
                f"passive: eject after {passive.failures} failures in a row"
                f" (errors or {','.join(map(str, passive.statuses))})"
                f" for {self._ejection(passive.cooldown_s)}"
            )
        else:
            lines.append("passive: off")
        if cfg.sticky is not None:
            lines.append(f"sticky: cookie {cfg.sticky.cookie}")
        if cfg.when_none_available == "panic":
            lines.append("none available: panic (try every target)")
        else:
            lines.append(f"none available: 503, Retry-After {cfg.retry_after_s}")
        return lines

    # -- choosing ---------------------------------------------------------------
    def pick(self, flow: Flow, tried: tuple[Target, ...] = ()) -> Target | None:
        """The target for this try of ``flow``; ``None`` when none may be used.

        The strategy picks first tries only. A retry or a failover (``tried``
        not empty) goes to the least busy target this flow has not tried
        (fewest requests in flight per unit of weight; on a tie, the next one
        in group order after the last one tried), without asking the strategy:
        a retry must neither move a round-robin cursor (with two targets, one
        failing, every first try would land on the failing one) nor follow a
        hash to the target that just failed. When every available target was
        tried, the least busy of them. With ``when_none_available = "panic"``
        every target with a weight is a candidate when none is available.
        """
        now = _now()
        if now >= self._wake_at:
            self._refresh(now, "")
        candidates = self.candidates
        if tried:
            rest = tuple(t for t in candidates if t not in tried)
            if rest:
                candidates = rest
        if not candidates:
            if self.config.when_none_available != "panic":
                return None
            weighted = tuple(t for t in self.targets if t.weight > 0)
            candidates = tuple(t for t in weighted if t not in tried) or weighted
            if not candidates:
                return None
        if tried:
            return _least_busy(candidates, self.targets, tried[-1].index)
        if self.config.sticky is not None:
            chosen = self._sticky_target(flow)
            if chosen is not None and chosen in candidates:
                return chosen
        try:
            target = self.balancer.pick(flow, candidates)
        except Exception as exc:
            raise PluginError(self.config.strategy, "Balancer.pick", repr(exc)) from exc
        if target is None or target not in candidates:
            return candidates[0]
        return target

    def _sticky_target(self, flow: Flow) -> Target | None:
        sticky = self.config.sticky
        assert sticky is not None
        value = flow.request.headers.cookies().get(sticky.cookie)
        return None if value is None else self.sticky_values.get(value)

    def sticky_cookie(self, flow: Flow, target: Target, secure: bool) -> str | None:
        """The ``Set-Cookie`` value that pins the client to ``target``, when it is not yet."""
        sticky = self.config.sticky
        if sticky is None:
            return None
        value = _sticky_value(self.name, target, self.urls[target.index])
        if flow.request.headers.cookies().get(sticky.cookie) == value:
            return None
        parts = [f"{sticky.cookie}={value}", f"Path={sticky.path}"]
        if sticky.max_age_s:
            parts.append(f"Max-Age={sticky.max_age_s}")
        if sticky.http_only:
            parts.append("HttpOnly")
        if sticky.same_site:
            parts.append(f"SameSite={sticky.same_site}")
        if secure or sticky.same_site == "None":
            parts.append("Secure")
        return "; ".join(parts)

    # -- outcomes -------------------------------------------------------------------
    def observe(self, target: Target, ok: bool, latency: float | None, why: str) -> None:
        """The outcome of one try: updates the latency EWMA and passive health."""
        if latency is not None:
            if target.ewma_s == 0.0:
                target.ewma_s = latency
            else:
                target.ewma_s += EWMA_ALPHA * (latency - target.ewma_s)
        if ok:
            target.failures = 0
            return
        passive = self.config.passive
        target.failures += 1
        if not passive.failures or target.failures < passive.failures:
            return
        now = _now()
        if target.ejected_until > now:
            return
        target.ejected_until = now + passive.cooldown_s
        # One more failure after the cooldown ejects it again; a success forgives.
        target.failures = passive.failures - 1
        self._refresh(
            now,
            f"passive: {passive.failures} failures in a row ({why});"
            f" ejected for {self._ejection(passive.cooldown_s)}",
        )

    def _ejection(self, cooldown_s: float) -> str:
        """How long a passive ejection lasts: the cooldown, cut short by a
        passing active probe when the group has checks (:meth:`probe_passed`)."""
        if self.config.health is None:
            return f"{cooldown_s:g}s"
        return f"{cooldown_s:g}s or until a health check passes"

    def probe_passed(self, target: Target) -> None:
        """An active probe of ``target`` passed: a passive ejection ends (as Envoy does).

        The checks just saw the target answer, so there is no reason to wait
        out the cooldown: a target restarted quickly (before the checks ever
        marked it down) is back in rotation at its first good probe.
        """
        if target.ejected_until > _now():
            target.ejected_until = 0.0
            target.failures = 0
            self._refresh(_now(), "health check passed: passive ejection lifted")

    def set_health(self, target: Target, healthy: bool, reason: str) -> None:
        """The active health checks' verdict on ``target`` changed.

        A target the checks find healthy again is also let back from a
        passive ejection: the checks saw it answer (as Envoy does).
        """
        if target.healthy == healthy:
            return
        target.healthy = healthy
        if healthy:
            target.ejected_until = 0.0
            target.failures = 0
        self._refresh(_now(), reason)

    def _refresh(self, now: float, reason: str) -> None:
        """Recompute availability and the candidates; report every change."""
        wake = math.inf
        changed: list[Target] = []
        for t in self.targets:
            usable = _usable(t, now)
            if usable != t.available:
                t.available = usable
                changed.append(t)
            if t.ejected_until > now:
                wake = min(wake, t.ejected_until)
        self._wake_at = wake
        self.candidates = tuple(t for t in self.targets if t.available)
        for t in changed:
            why = reason or ("passive: cooldown over" if t.available else "unavailable")
            self._report(t, why)

    def _report(self, target: Target, reason: str) -> None:
        state = "available" if target.available else "unavailable"
        level = logging.INFO if target.available else logging.WARNING
        log.log(
            level,
            "group %s: target %s (%s) is %s: %s (%d of %d available)",
            self.name,
            target.name,
            target.origin,
            state,
            reason,
            len(self.candidates),
            len(self.targets),
        )
        if self.on_change is not None:
            try:
                self.on_change(target, target.available, reason)
            except Exception:
                log.exception("reporting a health change of %s/%s failed", self.name, target.name)


def _least_busy(candidates: tuple[Target, ...], targets: tuple[Target, ...], after: int) -> Target:
    """The candidate with the fewest requests in flight per weight; ties go in group order
    starting after position ``after``."""
    n = len(targets)
    return min(
        candidates,
        key=lambda t: (
            t.active / t.weight if t.weight > 0 else t.active,
            (t.index - after - 1) % n,
        ),
    )


def _usable(t: Target, now: float) -> bool:
    return t.healthy and t.ejected_until <= now and t.weight > 0


def _sticky_value(group: str, target: Target, url: str) -> str:
    text = f"{group}\0{target.name}\0{url}".encode()
    return hashlib.blake2b(text, digest_size=8).hexdigest()


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------


def build_groups(
    settings: Settings,
    host: PluginHost,
    previous: Mapping[str, GroupRuntime],
    problems: list[str],
) -> dict[str, GroupRuntime]:
    """``[[groups]]`` as runtime objects, keeping unchanged ones from ``previous``."""
    groups: dict[str, GroupRuntime] = {}
    seen: set[str] = set()
    for i, gc in enumerate(settings.groups):
        path = f"$.groups[{i}]"
        if gc.name in seen:
            problems.append(f"{path}.name: a group named {gc.name!r} is defined twice")
            continue
        seen.add(gc.name)
        entries = _target_entries(gc, path, problems)
        if not entries:
            problems.append(f"{path}.targets: a group needs at least one target (targets or urls)")
            continue
        if gc.strategy not in host.instances:
            continue  # the plugin host already reported why
        table = settings.plugins.get(instance_plugin(gc.strategy))
        key = (gc, json.dumps(table, sort_keys=True, default=str))
        old = previous.get(gc.name)
        if old is not None and old.key == key:
            groups[gc.name] = old
            continue
        targets = tuple(
            _target(gc.name, j, tc, origin, base, old)
            for j, (tc, origin, base, _) in enumerate(entries)
        )
        balancer = _make_balancer(host, gc.strategy, Group(gc.name, targets), path, problems)
        if balancer is not None:
            configs = tuple(tc for tc, _, _, _ in entries)
            groups[gc.name] = GroupRuntime(gc, key, targets, balancer, configs)
    return groups


def _target_entries(
    gc: GroupConfig, path: str, problems: list[str]
) -> list[tuple[TargetConfig, Origin, str, str]]:
    """(config, origin, base path, config path) of every target, names checked."""
    listed = [(tc, f"{path}.targets[{j}]") for j, tc in enumerate(gc.targets)]
    listed += [(TargetConfig(url=url), f"{path}.urls") for url in split_urls(gc.urls)]
    out: list[tuple[TargetConfig, Origin, str, str]] = []
    seen: set[str] = set()
    for tc, tpath in listed:
        try:
            origin, base = Origin.parse(tc.url)
        except ValueError as exc:
            problems.append(f"{tpath}.url: {exc}")
            continue
        name = tc.name or f"{origin.host}:{origin.port}"
        if name in seen:
            problems.append(
                f"{tpath}: target name {name!r} is used twice in group {gc.name!r}"
                " (give the targets distinct names)"
            )
            continue
        seen.add(name)
        if not tc.name:
            tc = TargetConfig(url=tc.url, name=name, weight=tc.weight, transport=tc.transport)
        out.append((tc, origin, base, tpath))
    return out


def _target(
    group: str, index: int, tc: TargetConfig, origin: Origin, base: str, old: GroupRuntime | None
) -> Target:
    target = Target(
        group=group,
        name=tc.name,
        origin=origin,
        base_path=base,
        weight=tc.weight,
        index=index,
    )
    if old is not None:
        for prev in old.targets:
            if prev.name == tc.name and old.urls[prev.index] == tc.url:
                target.healthy = prev.healthy
                target.ejected_until = prev.ejected_until
                target.failures = prev.failures
                target.ewma_s = prev.ewma_s
                break
    return target


def _make_balancer(
    host: PluginHost, instance: str, group: Group, path: str, problems: list[str]
) -> Balancer | None:
    impl = next(
        (h for h in host.pm.hook.trellis_balancer.get_hookimpls() if h.plugin_name == instance),
        None,
    )
    where = f"{path}.strategy"
    if impl is None:
        problems.append(
            f"{where}: plugin instance {instance!r} does not implement trellis_balancer"
            " (it is not a load-balancing strategy)"
        )
        return None
    try:
        balancer = impl.function(**{"group": group} if impl.argnames else {})
    except ConfigError as exc:
        problems.extend(f"{where}: {p}" for p in exc.problems)
        return None
    except Exception as exc:
        problems.append(f"{where}: {instance!r} could not balance group {group.name!r}: {exc!r}")
        return None
    if not callable(getattr(balancer, "pick", None)):
        problems.append(f"{where}: {instance!r} returned {balancer!r}, which has no pick()")
        return None
    return cast(Balancer, balancer)
