"""Prometheus metrics: every finished flow counted, ``/metrics`` served on a kernel listener.

Configuration (``[plugins.metrics]``; put ``"metrics"`` first in ``[kernel]
plugins`` so it sees every flow, and give it a listener of its own)::

    [kernel]
    plugins = ["metrics", "health"]

    [[listeners]]
    name = "metrics"
    bind = "${TRELLIS_METRICS_LISTEN:-127.0.0.1:9090}"

    [plugins.metrics]
    listener = "metrics"           # the [[listeners]] name (checked)
    path = "/metrics"
    prefix = "trellis_"
    exclude_listeners = ["health"] # not counted besides `listener` (default:
                                   # "health" when it exists)
    sample_interval_s = 1.0        # live gauges; also sampled before each scrape

    [plugins.metrics.histogram_buckets]   # milliseconds; /1000 for *_seconds
    request_duration_seconds = [5, 10, 25, 50, 100, 250, 500, 1000]

On its listener the plugin answers, in ``trellis_request_access``, ``GET`` and
``HEAD`` on ``path`` with the exposition (Prometheus text, or OpenMetrics when
the scraper asks for it), ``405`` for other methods on ``path``, and, in
``trellis_request``, ``404`` for any other path (unless another plugin on the
listener, such as ``health``, answered it first). Flows on that listener,
and on ``exclude_listeners``, are not counted.

Series (the prefix, ``trellis_`` by default, in front of each; label values
are configuration names - route, group, target, plugin instance - or a small
fixed set, never paths, hosts or addresses):

``requests_total{route, method, status_class}`` (counter)
    Finished flows. ``method`` is the request method when it is one of the
    nine standard ones, else ``OTHER``; ``status_class`` is ``1xx`` ..
    ``5xx`` from the response sent, or, for a flow that failed
    (``flow.error``), from its error's ``status_hint``: a 502 for a refused
    upstream is ``5xx``, so is a response whose upstream broke off after its
    head had gone out (short body, read timeout) or that the drain cut (503);
    a client that went away is ``4xx`` (499). ``error`` when the flow ended
    with neither a response nor an error.
``request_duration_seconds{route}`` (histogram)
    From the request head to the last response byte or the error
    (``flow.timings.done - flow.timings.request_head``).
``upstream_duration_seconds{route, group, target}`` (histogram)
    From the upstream connection being ready (new or pooled) to the response
    head, for flows an upstream answered without failing; ``group`` and
    ``target`` are empty when the flow did not go to a group target.
``bytes_total{route, direction}`` (counter)
    Body bytes, ``direction="in"`` from the client (``flow.bytes_in``) and
    ``"out"`` to it (``flow.bytes_out``).
``active_connections``, ``active_requests`` (gauges, multiprocess ``livesum``)
    Client connections and flows open now, read from the kernel's
    ``ServerInfo`` every ``sample_interval_s`` and before each scrape (the
    scrape's own connection and request not counted: an idle proxy shows 0).
``target_healthy{group, target}`` (gauge, multiprocess ``livemin``)
    1 when the target may get requests (healthy, not ejected, weight > 0),
    else 0: set for every target at startup and on each
    ``trellis_target_health``. With several workers, each probing on its own,
    the lowest of the live workers' values: 1 means every worker can use it.
``health_check_duration_seconds{group, target}`` (histogram)
    Each active probe (``trellis_health_probe``), whatever its verdict.
``health_check_failures_total{group, target}`` (counter)
    Probes that found the target unhealthy.
``plugin_errors_total{plugin, hook}`` (counter)
    Failures caught by the fault boundary (``trellis_plugin_error``), by
    plugin instance and hook, ``fail_open`` or not.
``config_generation`` (gauge, multiprocess ``livemax``)
    The configuration generation that went live last.

Default buckets (Dispa's, in ms): request and upstream durations 1 .. 10000,
health checks 1 .. 5000, traffic-log writes 0.25 .. 5000
(:data:`~plugins.builtin.metrics.config.DEFAULT_BUCKETS_MS`).

Other plugins add series through the hook ``trellis_metrics_register(metrics)``
(:mod:`plugins.builtin.metrics.hookspecs`), implemented with
``@sdk.hookimpl(optionalhook=True)``; the traffic log registers
``traffic_log_write_duration_seconds{sink}``, ``traffic_log_dropped_records_total{sink}``
and ``traffic_log_records_total{sink}`` that way.

Reloads: plugin instances are rebuilt per configuration generation, the
metric objects are not (:mod:`~plugins.builtin.metrics.store` keeps them per
process), so counters carry on. A new ``prefix`` makes new series; new
buckets replace the histogram (in multiprocess mode, restart the workers for
that). Targets that disappear with a reload lose their ``target_healthy``
series, except in multiprocess mode (prometheus-client cannot remove series
there).

Several processes: with ``PROMETHEUS_MULTIPROC_DIR`` set (the ``[server]
workers`` supervisor sets it for its workers, and tells prometheus-client
when one dies), any worker's ``/metrics`` shows every worker's counts
added up, and gauges combined as listed above.

May import: .config, .plugin, .store (re-exports).
"""

from __future__ import annotations

from .config import DEFAULT_BUCKETS_MS, MetricsConfig
from .plugin import MetricsPlugin
from .store import Metrics, Store, reset_store, store

__all__ = [
    "DEFAULT_BUCKETS_MS",
    "Metrics",
    "MetricsConfig",
    "MetricsPlugin",
    "Store",
    "reset_store",
    "store",
]
