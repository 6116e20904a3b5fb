"""Active health checks: each target of a group is probed on its own schedule.

:func:`run_health_checks` runs for as long as its group object lives (the
app cancels it when a reload replaces or drops the group). Every target
gets its own task: a probe is one HTTP/1.1 request on a fresh connection
(``Connection: close``), with the target's transport (TLS included) from
the live generation; only the response head is read. The verdict changes
after ``unhealthy_threshold`` failures or ``healthy_threshold`` successes
in a row, and goes to :meth:`kernel.groups.GroupRuntime.set_health`.

With no ``path`` set, a probe tries Dispa's ``/health``, ``/healthz``,
``/ping`` and ``/`` in that order on the target's base path: a ``404``
moves on to the next one; any other answer decides.

May import: stdlib, trio, sdk, kernel.config, kernel.groups, kernel.protocol,
kernel.routes, kernel.io.upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from kernel.config.groups import HealthCheckConfig
from kernel.groups import GroupRuntime
from kernel.io.upstream import TlsTarget, connect
from kernel.protocol.events import NEED_DATA, InformationalResponse, RequestHead, ResponseHead
from sdk import RemoteProtocolError, Target, UpstreamError

__all__ = ["FALLBACK_PATHS", "probe", "run_health_checks"]

log = logging.getLogger("kernel.health")

#: Tried in turn when ``[groups.health] path`` is empty (Dispa's order).
FALLBACK_PATHS = ("/health", "/healthz", "/ping", "/")

#: ``tls_for(target)``: how to reach an https target now (``None``: cleartext).
TlsLookup = Callable[[Target], "TlsTarget | None"]
#: ``on_probe(target, healthy, seconds, detail)`` after every probe.
ProbeListener = Callable[[Target, bool, float, str], None]


async def run_health_checks(
    group: GroupRuntime, tls_for: TlsLookup, kind: str, on_probe: ProbeListener | None = None
) -> None:
    """Probe every target of ``group`` forever (until cancelled)."""
    cfg = group.config.health
    if cfg is None:
        return
    async with trio.open_nursery() as nursery:
        for target in group.targets:
            nursery.start_soon(_watch, group, target, cfg, tls_for, kind, on_probe)


async def _watch(
    group: GroupRuntime,
    target: Target,
    cfg: HealthCheckConfig,
    tls_for: TlsLookup,
    kind: str,
    on_probe: ProbeListener | None,
) -> None:
    good = bad = 0
    while True:
        started = trio.current_time()
        ok, why = await check_target(target, cfg, tls_for(target), kind)
        if on_probe is not None:
            on_probe(target, ok, trio.current_time() - started, why)
        if ok:
            good, bad = good + 1, 0
            group.probe_passed(target)
            if not target.healthy and good >= cfg.healthy_threshold:
                group.set_health(target, True, f"health check: {good} passed in a row")
        else:
            good, bad = 0, bad + 1
            log.debug("health check of %s/%s failed: %s", group.name, target.name, why)
            if target.healthy and bad >= cfg.unhealthy_threshold:
                group.set_health(target, False, f"health check: {bad} failed in a row ({why})")
        await trio.sleep(cfg.interval_s)


async def check_target(
    target: Target, cfg: HealthCheckConfig, tls: TlsTarget | None, kind: str
) -> tuple[bool, str]:
    """One round of probing: (healthy, what was seen)."""
    paths = (cfg.path,) if cfg.path else FALLBACK_PATHS
    status = 0
    for path in paths:
        try:
            status = await probe(target, target.base_path + path, cfg, tls, kind)
        except UpstreamError as exc:
            return False, str(exc)
        if status == 404 and not cfg.path:
            continue
        break
    ok = status in cfg.expect if cfg.expect else 200 <= status < 400
    return ok, f"status {status}"


async def probe(
    target: Target, path: str, cfg: HealthCheckConfig, tls: TlsTarget | None, kind: str
) -> int:
    """Send one probe request; the response status (raises :class:`~sdk.UpstreamError`)."""
    origin = target.origin
    host = cfg.host or origin.authority
    try:
        with trio.fail_after(cfg.timeout_s):
            conn = await connect(origin, kind, cfg.timeout_s, tls)
            try:
                codec = conn.codec
                head = RequestHead(
                    method=cfg.method.encode("ascii"),
                    target=path.encode("ascii"),
                    headers=[
                        (b"host", host.encode("idna")),
                        (b"user-agent", b"trellis-health-check"),
                        (b"connection", b"close"),
                    ],
                )
                await conn.send(codec.send_request_head(head) + codec.send_end())
                while True:
                    event = codec.next_event()
                    if event is NEED_DATA:
                        codec.receive_data(await conn.receive())
                    elif isinstance(event, ResponseHead):
                        return event.status_code
                    elif not isinstance(event, InformationalResponse):
                        raise UpstreamError(f"unexpected {event!r}")
            finally:
                conn.close_nowait()
    except trio.TooSlowError:
        raise UpstreamError(f"no answer within {cfg.timeout_s:g}s") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError) as exc:
        raise UpstreamError(f"bad answer: {exc!r}") from exc
