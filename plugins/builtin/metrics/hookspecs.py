"""The metrics plugin's extension hook: other plugins register their own series.

The metrics plugin adds this specification to the generation's plugin
manager (``trellis_addhooks``). A plugin that wants series of its own
implements the hook as *optional*, so it still loads when the metrics
plugin is not configured::

    class TrafficLogPlugin:
        write_seconds = None

        @sdk.hookimpl(optionalhook=True)
        def trellis_metrics_register(self, metrics):
            self.write_seconds = metrics.histogram(
                "traffic_log_write_duration_seconds", "Time to write a batch.", ["sink"]
            )

and checks for ``None`` before using what it got: without the metrics
plugin, or before its ``trellis_startup``, nothing is handed over.

May import: pluggy, sdk; types only under TYPE_CHECKING.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

import sdk

if TYPE_CHECKING:
    from .store import Metrics

__all__ = ["trellis_metrics_register"]

hookspec = pluggy.HookspecMarker(sdk.PROJECT)


@hookspec
def trellis_metrics_register(metrics: Metrics) -> None:
    """Make the prometheus-client objects this plugin will update.

    Called by the metrics plugin in its ``trellis_startup``, once per
    configuration generation, on every plugin instance of that generation
    that implements it. Plain ``def``. An implementation that raises is
    logged; the others still run.

    :param metrics: the factory: ``metrics.counter(name, documentation,
        labelnames=())``, ``metrics.gauge(name, documentation, labelnames=(),
        multiprocess_mode="livesum")`` and ``metrics.histogram(name,
        documentation, labelnames=(), buckets_ms=None)``. Names are given
        without the prefix (``trellis_`` by default), which is put in front;
        asking again for the same name and shape returns the same object, so
        counters carry on across reloads. ``[plugins.metrics.histogram_buckets]``
        sets a histogram's bounds by its name (milliseconds; divided by 1000
        for ``_seconds`` names). Label values must come from configuration
        names, never from requests.
    """
