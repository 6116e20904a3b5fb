"""The metrics plugin's hooks: count finished flows, serve ``/metrics`` on its listener.

May import: stdlib, trio, pluggy, sdk, .batch, .config, .store, .hookspecs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Mapping
from typing import Any

import pluggy
import trio

import sdk

from . import hookspecs
from .batch import Batch
from .config import MetricsConfig
from .store import Metrics, Store, store

__all__ = ["MetricsPlugin", "Series", "method_label", "status_class"]

log = logging.getLogger("trellis.plugins.metrics")

#: Methods kept as label values; any other is ``OTHER`` (a client chooses the method).
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_CLASSES = ("error", "1xx", "2xx", "3xx", "4xx", "5xx")
_NO_STORE = ("cache-control", "no-store")
_HOOK_NAME = "trellis_metrics_register"


def method_label(method: str) -> str:
    """``method`` when it is a standard method, else ``"OTHER"``."""
    return method if method in STANDARD_METHODS else "OTHER"


def status_class(flow: sdk.Flow) -> str:
    """``"1xx"`` .. ``"5xx"``: of the error's ``status_hint`` when the flow failed
    (``flow.error``), else of the response sent; ``"error"`` when there was neither.

    A failed flow counts by its error even when a response head had gone out
    before it (an upstream that broke off mid-body is ``5xx``, a client that
    went away mid-download ``4xx``: 499): the status sent then says nothing
    of how the flow ended. An error page's status is its error's hint.
    """
    error = flow.error
    if error is not None:
        index = error.status_hint // 100
    elif flow.response is not None:
        index = flow.response.status_code // 100
    else:
        return "error"
    return _CLASSES[index] if 1 <= index <= 5 else "error"


class Series:
    """Our own metric objects (made through the facade, so prefixed and shared)."""

    def __init__(self, metrics: Metrics) -> None:
        m = metrics
        self.requests = m.counter(
            "requests_total",
            "Requests finished, by route, method and status class (of the error's"
            " status hint when the flow failed; 'error': ended without either).",
            ("route", "method", "status_class"),
        )
        self.request_duration = m.histogram(
            "request_duration_seconds",
            "Seconds from the request head to the last response byte (or the error), by route.",
            ("route",),
        )
        self.upstream_duration = m.histogram(
            "upstream_duration_seconds",
            "Seconds from the upstream connection being ready to the response head,"
            " for requests an upstream answered; group and target empty outside groups.",
            ("route", "group", "target"),
        )
        self.bytes = m.counter(
            "bytes_total",
            "Body bytes: 'in' received from clients, 'out' sent to them, by route.",
            ("route", "direction"),
        )
        self.active_connections = m.gauge(
            "active_connections",
            "Client connections open now, the scrape's own aside (summed over live workers).",
            multiprocess_mode="livesum",
        )
        self.active_requests = m.gauge(
            "active_requests",
            "Requests in progress now, the scrape aside (summed over live workers).",
            multiprocess_mode="livesum",
        )
        self.target_healthy = m.gauge(
            "target_healthy",
            "1 when the group target may get requests (healthy, not ejected, weight > 0),"
            " else 0; with several workers, the lowest of the live workers' views.",
            ("group", "target"),
            multiprocess_mode="livemin",
        )
        self.plugin_errors = m.counter(
            "plugin_errors_total",
            "Plugin failures caught by the fault boundary, by plugin instance and hook.",
            ("plugin", "hook"),
        )
        self.health_check_duration = m.histogram(
            "health_check_duration_seconds",
            "Seconds an active health probe took, connect included.",
            ("group", "target"),
        )
        self.health_check_failures = m.counter(
            "health_check_failures_total",
            "Active health probes that found the target unhealthy.",
            ("group", "target"),
        )
        self.config_generation = m.gauge(
            "config_generation",
            "Number of the configuration generation serving now (highest over live workers).",
            multiprocess_mode="livemax",
        )


def _answer(status: int, body: str, headers: tuple[tuple[str, str], ...] = ()) -> sdk.Response:
    return sdk.Response.make(status, body, (_NO_STORE, *headers))


class MetricsPlugin:
    """Prometheus metrics of every flow, served on a listener of their own."""

    config_class = MetricsConfig

    def __init__(self, config: MetricsConfig | None = None, where: Store | None = None) -> None:
        self.config = config if config is not None else MetricsConfig()
        self.store = where if where is not None else store()
        self.metrics = Metrics(self.config, self.store)
        listeners = self.config.exclude_listeners
        self._excluded = frozenset(
            [self.config.listener, *(["health"] if listeners is None else listeners)]
        )
        self._pm: pluggy.PluginManager | None = None
        self._server: sdk.ServerInfo | None = None
        #: Made at startup, not here: ``__init__`` must not touch the
        #: multiprocess files (``kernel check`` builds instances too).
        self.series: Series | None = None
        self._children: dict[tuple[str, ...], tuple[Any, ...]] = {}
        #: Per-flow numbers not yet handed to prometheus-client (see .batch).
        self._batch = Batch()
        self._upstream_children: dict[tuple[str, str, str], Any] = {}

    # -- lifecycle ----------------------------------------------------------
    @sdk.hookimpl
    def trellis_addhooks(self, pluginmanager: pluggy.PluginManager) -> None:
        self._pm = pluginmanager
        caller = getattr(pluginmanager.hook, _HOOK_NAME, None)
        if caller is None or caller.spec is None:  # a second instance adds nothing
            pluginmanager.add_hookspecs(hookspecs)

    @sdk.hookimpl
    def trellis_config_check(self, listeners: tuple[str, ...]) -> list[str] | None:
        known = ", ".join(listeners) or "none"
        problems = []
        if self.config.listener not in listeners:
            problems.append(
                f"listener: no listener named {self.config.listener!r} (listeners: {known})"
            )
        for i, name in enumerate(self.config.exclude_listeners or ()):
            if name not in listeners:
                problems.append(
                    f"exclude_listeners[{i}]: no listener named {name!r} (listeners: {known})"
                )
        return problems

    @sdk.hookimpl
    def trellis_startup(self, context: sdk.StartupContext) -> None:
        self._server = context.server
        self._batch = Batch(immediate=self.store.multiprocess)
        self.store.batches.append(self._batch)
        self.series = series = Series(self.metrics)
        series.config_generation.set(context.generation)
        self._set_targets(context.groups)
        self._register_others()
        unused = sorted(set(self.config.histogram_buckets) - self.metrics.histograms)
        if unused:
            log.warning(
                "[plugins.metrics] histogram_buckets names histograms nobody made: %s",
                ", ".join(unused),
            )
        self.sample()
        context.start_soon(self._sample_forever)

    def _set_targets(self, groups: Mapping[str, sdk.Group]) -> None:
        assert self.series is not None
        gauge = self.series.target_healthy
        now = {(g.name, t.name): t.available for g in groups.values() for t in g.targets}
        for (group, target), available in now.items():
            gauge.labels(group, target).set(1 if available else 0)
        if not self.store.multiprocess:  # prometheus-client cannot remove them there
            for gone in self.store.targets - set(now):
                gauge.remove(*gone)
        self.store.targets = set(now)

    def _register_others(self) -> None:
        """Hand the facade to every ``trellis_metrics_register`` implementation."""
        if self._pm is None:
            return
        caller = getattr(self._pm.hook, _HOOK_NAME, None)
        if caller is None:
            return
        given = {"metrics": self.metrics}
        for impl in caller.get_hookimpls():
            try:
                impl.function(*(given[a] for a in impl.argnames))
            except Exception:
                log.exception("plugin %r failed in %s", impl.plugin_name, _HOOK_NAME)

    @sdk.hookimpl
    def trellis_shutdown(self) -> None:
        # The generation's last flows are counted, then the store forgets the batch.
        self._batch.flush()
        if self._batch in self.store.batches:
            self.store.batches.remove(self._batch)

    async def _sample_forever(self) -> None:
        while True:
            await trio.sleep(self.config.sample_interval_s)
            self.sample()

    def sample(self, scraping: bool = False) -> None:
        """Hand the batched flow numbers over and read the live gauges now.

        ``scraping``: called for a scrape, whose own connection and request
        are open now and are not counted.
        """
        self._batch.flush()
        if self.series is None or self._server is None:
            return
        own = 1 if scraping else 0
        self.series.active_connections.set(max(0, self._server.active_connections() - own))
        self.series.active_requests.set(max(0, self._server.active_flows() - own))

    # -- serving /metrics ---------------------------------------------------
    @sdk.hookimpl
    def trellis_request_access(
        self, flow: sdk.Flow
    ) -> sdk.Response | Awaitable[sdk.Response] | None:
        # Plain def on every flow (no coroutine unless this is a scrape).
        if flow.client.listener != self.config.listener:
            return None
        request = flow.request
        if request.path_only != self.config.path:
            return None  # another plugin on this listener may know it; else 404 below
        if request.method not in ("GET", "HEAD"):
            return _answer(405, "method not allowed\n", (("allow", "GET, HEAD"),))
        return self.scrape(request.headers.get("accept") or "")

    @sdk.hookimpl
    def trellis_request(self, flow: sdk.Flow) -> sdk.Response | None:
        if flow.client.listener != self.config.listener:
            return None
        return _answer(404, "not found\n")

    async def scrape(self, accept: str = "") -> sdk.Response:
        """The metrics, as the response to a scrape (the live gauges are read
        first, without the scrape's own connection and request)."""
        self.sample(scraping=True)
        if self.store.multiprocess:  # reads every worker's files: off the event loop
            body, content_type = await trio.to_thread.run_sync(self.store.render, accept)
        else:
            body, content_type = self.store.render(accept)
        return sdk.Response.make(200, body, [_NO_STORE, ("content-type", content_type)])

    # -- counting -----------------------------------------------------------
    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        series = self.series
        if series is None or flow.client.listener in self._excluded:
            return
        route = flow.route
        key = (route, method_label(flow.request.method), status_class(flow))
        children = self._children.get(key)
        batch = self._batch
        if children is None:
            children = self._children[key] = (
                series.requests.labels(*key),
                batch.histogram(series.request_duration.labels(route)),
                series.bytes.labels(route, "in"),
                series.bytes.labels(route, "out"),
            )
        requests, duration, bytes_in, bytes_out = children
        counters = batch.counters
        counters[requests] = counters.get(requests, 0) + 1
        counters[bytes_in] = counters.get(bytes_in, 0) + flow.bytes_in
        counters[bytes_out] = counters.get(bytes_out, 0) + flow.bytes_out
        timings = flow.timings
        if timings.done is not None:
            duration.observe(max(0.0, timings.done - timings.request_head))
        connected, head = timings.upstream_connected, timings.response_head
        # Not when the upstream failed; a client that left after the head did not.
        error = flow.error
        if (
            connected is not None
            and head is not None
            and (error is None or isinstance(error, sdk.ClientDisconnected))
        ):
            target = flow.target
            where = (route, target.group, target.name) if target else (route, "", "")
            upstream = self._upstream_children.get(where)
            if upstream is None:
                upstream = self._upstream_children[where] = batch.histogram(
                    series.upstream_duration.labels(*where)
                )
            upstream.observe(max(0.0, head - connected))
        if batch.immediate:
            batch.flush()

    @sdk.hookimpl
    def trellis_target_health(self, target: sdk.Target, available: bool) -> None:
        if self.series is not None:
            self.series.target_healthy.labels(target.group, target.name).set(1 if available else 0)
            self.store.targets.add((target.group, target.name))

    @sdk.hookimpl
    def trellis_health_probe(self, target: sdk.Target, healthy: bool, duration_s: float) -> None:
        if self.series is None or not math.isfinite(duration_s):
            return
        labels = (target.group, target.name)
        self.series.health_check_duration.labels(*labels).observe(max(0.0, duration_s))
        if not healthy:
            self.series.health_check_failures.labels(*labels).inc()

    @sdk.hookimpl
    def trellis_plugin_error(self, plugin: str, hook: str) -> None:
        if self.series is not None:
            self.series.plugin_errors.labels(plugin, hook).inc()
