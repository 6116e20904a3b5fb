"""The ``[plugins.metrics]`` table: :class:`MetricsConfig`, and the default buckets.

Histogram buckets are written in **milliseconds**, as Dispa's
``monitoring.histogram_buckets``; a histogram whose name ends in ``_seconds``
gets them divided by 1000, any other histogram gets them as written. Every
bound is checked where it stands
(``$.plugins.metrics.histogram_buckets.request_duration_seconds[2]: must be a
positive number of milliseconds, got -1``), every histogram name at its own
key; the order of a list is checked as a whole, once each of its bounds is
a number.

May import: stdlib, attrs, sdk.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = [
    "DEFAULT_BUCKETS_MS",
    "BoundMs",
    "MetricsConfig",
    "buckets_in_unit",
]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_METRIC = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PREFIX = re.compile(r"(?:[a-zA-Z_:][a-zA-Z0-9_:]*)?")

#: Request and upstream durations (Dispa's request buckets, 1 ms to 10 s).
_DURATION_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
#: Health probes (1 ms to 5 s); traffic-log writes add 0.25 and 0.5 ms below.
_HEALTH_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

#: Bucket bounds in milliseconds of the histograms we know, by name without
#: the prefix (Dispa's defaults). A histogram named nowhere here and in no
#: ``histogram_buckets`` gets the buckets its registrant asked for, or
#: prometheus-client's defaults.
DEFAULT_BUCKETS_MS: dict[str, tuple[float, ...]] = {
    "request_duration_seconds": _DURATION_MS,
    "upstream_duration_seconds": _DURATION_MS,
    "health_check_duration_seconds": _HEALTH_MS,
    "traffic_log_write_duration_seconds": (0.25, 0.5, *_HEALTH_MS),
}


def buckets_in_unit(name: str, bounds_ms: Sequence[float]) -> tuple[float, ...]:
    """The bounds of histogram ``name`` (without prefix) in its own unit.

    ``_seconds`` histograms get milliseconds / 1000; others get them as is.
    """
    if name.endswith("_seconds"):
        return tuple(float(b) / 1000.0 for b in bounds_ms)
    return tuple(float(b) for b in bounds_ms)


class BoundMs(float):
    """One bucket bound in milliseconds: a positive, finite number.

    A ``float`` subclass, so the strict converter checks each bound on its
    own and reports it with its index.
    """

    __slots__ = ()

    def __new__(cls, value: float = 1.0) -> BoundMs:
        bound = float.__new__(cls, value)
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"must be a positive number of milliseconds, got {value!r}")
        return bound


# Also one item of ``exclude_listeners`` (a deep_iterable): each bad name is
# listed at its own index, even beside one that is no string.
def _name(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a listener name (letters, digits, '_', '-', '.')")


def _prefix(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _PREFIX.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a metric name prefix (letters, digits, '_' and ':',"
            " not starting with a digit)"
        )


def _path(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.startswith("/") or any(c in value for c in " ?#\r\n\0"):
        raise ValueError(f"{value!r} is not a request path such as '/metrics'")


def _metric(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _METRIC.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a metric name without the prefix"
            " (such as 'request_duration_seconds')"
        )


def _bounds(_: object, attribute: attrs.Attribute[Any], value: list[BoundMs]) -> None:
    # A check of one histogram's whole list: it runs once every bound is a number.
    if not value:
        raise ValueError("needs at least one bound")
    for i in range(1, len(value)):
        if value[i] <= value[i - 1]:
            raise ValueError(
                f"[{i}]: {value[i]:g} must be greater than the bound before it"
                f" ({value[i - 1]:g}): bounds are sorted and distinct"
            )


#: ``exclude_listeners``: unset, or listener names checked one by one.
_LISTENERS: Any = attrs.validators.optional(attrs.validators.deep_iterable(_name))


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """The ``[plugins.metrics]`` table."""

    #: The kernel listener (``[[listeners]] name``) whose requests this plugin
    #: answers: ``GET``/``HEAD`` on :attr:`path` gets the metrics.
    listener: str = attrs.field(default="metrics", validator=_name)
    #: Where the metrics are served on that listener.
    path: str = attrs.field(default="/metrics", validator=_path)
    #: Put in front of every metric name (ours and those registered by other
    #: plugins). Changing it starts new series; the old ones stay, frozen,
    #: until the process restarts.
    prefix: str = attrs.field(default="trellis_", validator=_prefix)
    #: Bucket bounds in milliseconds, by histogram name without the prefix
    #: (``request_duration_seconds = [5, 10, 50, 100, 500]``). ``_seconds``
    #: histograms get them divided by 1000. Changing buckets starts a new
    #: histogram in this process (in multiprocess mode: restart the workers).
    histogram_buckets: dict[str, list[BoundMs]] = attrs.field(
        factory=dict, validator=attrs.validators.deep_mapping(_metric, _bounds)
    )
    #: Listeners whose flows are not counted (besides :attr:`listener`).
    #: Unset: ``["health"]`` when such a listener exists; a set list must
    #: name configured listeners.
    exclude_listeners: list[str] | None = attrs.field(default=None, validator=_LISTENERS)
    #: Seconds between two samples of the live gauges (active connections
    #: and requests); they are also sampled just before every scrape.
    sample_interval_s: float = attrs.field(default=1.0)

    @sample_interval_s.validator
    def _check_interval(self, attribute: attrs.Attribute[Any], value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"must be > 0, got {value!r}")

    def buckets_for(
        self, name: str, asked_ms: tuple[float, ...] | None = None
    ) -> tuple[float, ...]:
        """Bounds (in the histogram's unit) for histogram ``name`` without prefix.

        The table wins, then what the registrant asked for, then
        :data:`DEFAULT_BUCKETS_MS`; ``()`` means prometheus-client's defaults.
        """
        configured = self.histogram_buckets.get(name)
        if configured is not None:
            return buckets_in_unit(name, configured)
        chosen = asked_ms if asked_ms is not None else DEFAULT_BUCKETS_MS.get(name, ())
        return buckets_in_unit(name, chosen)
