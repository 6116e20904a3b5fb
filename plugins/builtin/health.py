"""Liveness and readiness endpoints: ``/health`` and ``/ready`` on a kernel listener.

Configuration (``[plugins.health]``; put ``"health"`` in ``[kernel]
plugins``, early, and give it a listener)::

    [kernel]
    plugins = ["metrics", "health"]

    [[listeners]]
    name = "health"
    bind = "${TRELLIS_HEALTH_LISTEN:-127.0.0.1:8081}"

    [plugins.health]
    listener = "health"       # the [[listeners]] name (checked)
    health_path = "/health"
    ready_path = "/ready"
    require_groups = true     # ready only with an available target in each group
    groups = []               # the groups that count; empty: every group

On its listener, for ``GET`` and ``HEAD`` (other methods: ``405``):

``/health`` (liveness)
    ``200 {"status": "ok", "generation": N, "worker": W}`` while the process
    serves requests at all.
``/ready`` (readiness)
    ``200`` or ``503`` with ``{"ready": bool, "generation", "worker",
    "checks": {...}, "groups": {...}}``. Each check is ``{"ok": bool,
    "detail": str}``:

    - ``config``: a configuration generation is live;
    - ``listeners``: every configured listener is bound;
    - ``draining``: the process is not shutting down (SIGTERM; with
      ``[kernel] shutdown_delay_s`` the listeners serve on meanwhile, so a
      load balancer sees 503 here before the port closes);
    - ``groups``: every counted group has at least one *available* target
      (healthy by the active checks, not ejected by the passive ones, weight
      above 0); always ok with ``require_groups = false``.

    ``groups`` describes every group: ``{"available": k, "total": n,
    "targets": [{"name", "url", "available", "healthy", "ejected", "active",
    "requests"}]}``, ``url`` being the target's origin and base path.

Any other path on the listener is ``404`` (in ``trellis_request``, so a
``metrics`` plugin on the same listener can still answer ``/metrics``).
Responses are JSON with ``Cache-Control: no-store``.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

import attrs

import sdk

__all__ = ["HealthConfig", "HealthPlugin"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_JSON = "application/json"
_NO_STORE = ("cache-control", "no-store")


# Also one item of ``groups`` (a deep_iterable): each bad name is listed at
# its own index, even beside one that is no string.
def _name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a name (letters, digits, '_', '-', '.')")


def _path(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.startswith("/") or any(c in value for c in " ?#\r\n\0"):
        raise ValueError(f"{value!r} is not a request path such as '/health'")


@attrs.frozen(kw_only=True)
class HealthConfig:
    """The ``[plugins.health]`` table."""

    #: The kernel listener (``[[listeners]] name``) this plugin answers on.
    listener: str = attrs.field(default="health", validator=_name)
    #: Liveness.
    health_path: str = attrs.field(default="/health", validator=_path)
    #: Readiness.
    ready_path: str = attrs.field(default="/ready", validator=_path)
    #: Not ready while a counted group has no available target.
    require_groups: bool = True
    #: The groups that count for readiness (``[[groups]]`` names); empty: all.
    groups: list[str] = attrs.field(factory=list, validator=attrs.validators.deep_iterable(_name))

    def __attrs_post_init__(self) -> None:
        if self.health_path == self.ready_path:
            raise ValueError("health_path and ready_path must differ")


def _json(status: int, doc: Mapping[str, Any]) -> sdk.Response:
    body = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    return sdk.Response.make(status, body, [_NO_STORE], content_type=_JSON)


def _check(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": ok, "detail": detail}


def target_state(target: sdk.Target, now: float) -> dict[str, Any]:
    """One target as ``/ready`` shows it."""
    return {
        "name": target.name,
        "url": f"{target.origin}{target.base_path}",
        "available": target.available,
        "healthy": target.healthy,
        "ejected": target.ejected_until > now,
        "active": target.active,
        "requests": target.requests,
    }


class HealthPlugin:
    """``/health`` and ``/ready`` (listeners, config, draining, group targets) as JSON."""

    config_class = HealthConfig

    def __init__(self, config: HealthConfig | None = None) -> None:
        self.config = config if config is not None else HealthConfig()
        #: The configured listener names (from ``trellis_config_check``).
        self.listeners: tuple[str, ...] = ()
        self.generation = 0
        self.server: sdk.ServerInfo | None = None
        self.groups: Mapping[str, sdk.Group] = {}

    # -- lifecycle ----------------------------------------------------------
    @sdk.hookimpl
    def trellis_config_check(
        self, groups: tuple[str, ...], listeners: tuple[str, ...]
    ) -> list[str] | None:
        self.listeners = listeners
        problems = []
        if self.config.listener not in listeners:
            problems.append(
                f"listener: no listener named {self.config.listener!r}"
                f" (listeners: {', '.join(listeners) or 'none'})"
            )
        for i, name in enumerate(self.config.groups):
            if name not in groups:
                problems.append(
                    f"groups[{i}]: no group named {name!r} (groups: {', '.join(groups) or 'none'})"
                )
        return problems

    @sdk.hookimpl
    def trellis_startup(self, context: sdk.StartupContext) -> None:
        self.generation = context.generation
        self.server = context.server
        self.groups = context.groups

    # -- answers --------------------------------------------------------------
    @sdk.hookimpl
    def trellis_request_access(self, flow: sdk.Flow) -> sdk.Response | None:
        if flow.client.listener != self.config.listener:
            return None
        path = flow.request.path_only
        if path not in (self.config.health_path, self.config.ready_path):
            return None  # another plugin on this listener may know it; else 404 below
        if flow.request.method not in ("GET", "HEAD"):
            return sdk.Response.make(
                405, "method not allowed\n", [_NO_STORE, ("allow", "GET, HEAD")]
            )
        if path == self.config.health_path:
            return _json(200, self.liveness())
        ready = self.readiness()
        return _json(200 if ready["ready"] else 503, ready)

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> sdk.Response | None:
        if flow.client.listener != self.config.listener:
            return None
        return sdk.Response.make(404, "not found\n", [_NO_STORE])

    def liveness(self) -> dict[str, Any]:
        """The ``/health`` document."""
        worker = self.server.worker if self.server is not None else 0
        return {"status": "ok", "generation": self.generation, "worker": worker}

    def readiness(self) -> dict[str, Any]:
        """The ``/ready`` document; ``"ready"`` says whether every check passed."""
        server = self.server
        now = time.monotonic()
        checks: dict[str, dict[str, Any]] = {}
        if server is None:
            checks["config"] = _check(False, "no configuration is live yet")
        else:
            checks["config"] = _check(True, f"generation {self.generation} is live")
        bound = server.listeners() if server is not None else {}
        expected = self.listeners or tuple(bound) or (self.config.listener,)
        missing = [name for name in expected if name not in bound]
        checks["listeners"] = _check(
            not missing,
            f"not bound: {', '.join(missing)}"
            if missing
            else ", ".join(f"{name} on {bound[name]}" for name in expected),
        )
        draining = server.draining() if server is not None else False
        checks["draining"] = _check(not draining, "draining" if draining else "not draining")

        counted = self.config.groups or list(self.groups)
        groups: dict[str, Any] = {}
        empty: list[str] = []
        for name, group in self.groups.items():
            targets = [target_state(t, now) for t in group.targets]
            available = sum(1 for t in targets if t["available"])
            groups[name] = {"available": available, "total": len(targets), "targets": targets}
            if name in counted and available == 0:
                empty.append(name)
        if not self.config.require_groups:
            checks["groups"] = _check(True, "not required")
        elif empty:
            checks["groups"] = _check(False, f"no available target in: {', '.join(empty)}")
        else:
            checks["groups"] = _check(True, f"{len(counted)} group(s) with an available target")
        return {
            "ready": all(c["ok"] for c in checks.values()),
            "generation": self.generation,
            "worker": server.worker if server is not None else 0,
            "checks": checks,
            "groups": groups,
        }
