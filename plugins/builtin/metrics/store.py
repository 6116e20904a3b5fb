"""Process-wide metric objects, and the facade other plugins register theirs through.

Plugin instances are rebuilt on every configuration reload, but a counter
must not go back to zero then. So the prometheus-client objects live here,
in one :class:`Store` per process, and an instance asks for them by full
name: the same name with the same kind, labels, buckets and multiprocess
mode gives back the same object. A different signature for a name (the
buckets changed) replaces the object; a new prefix simply makes new names,
and the old series stay, frozen, until the process restarts.

**Multiprocess mode**: when ``PROMETHEUS_MULTIPROC_DIR`` is set (the
``[server] workers`` supervisor sets it for its workers), prometheus-client
writes every value to per-process files in that directory and a scrape
reads them all with :class:`prometheus_client.multiprocess.MultiProcessCollector`
over a fresh :class:`~prometheus_client.CollectorRegistry`: counters and
histograms add up over the workers, gauges are combined by their
``multiprocess_mode``. Otherwise the store keeps its own registry (not the
library's global default one, so independent stores, tests for example,
never see each other's series).

May import: stdlib, prometheus_client, .config.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Literal, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from .config import MetricsConfig

__all__ = [
    "MULTIPROC_ENV",
    "GaugeMode",
    "Metrics",
    "Store",
    "reset_store",
    "store",
]

log = logging.getLogger("trellis.plugins.metrics")

#: The environment variable that turns prometheus-client's multiprocess mode on.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

GaugeMode = Literal[
    "all",
    "liveall",
    "min",
    "livemin",
    "max",
    "livemax",
    "sum",
    "livesum",
    "mostrecent",
    "livemostrecent",
]

M = TypeVar("M", Counter, Gauge, Histogram)


class Store:
    """The metric objects of this process, and how a scrape renders them."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        multiprocess = bool(multiprocess_dir)
        if multiprocess and not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus-client chose its value class when it was imported,
            # before the variable was set: the values are not in the files.
            log.warning(
                "%s is set but prometheus_client was imported before it was:"
                " serving this process's metrics only",
                MULTIPROC_ENV,
            )
            multiprocess = False
        #: Whether scrapes aggregate every process's files.
        self.multiprocess = multiprocess
        self.multiprocess_dir = multiprocess_dir if multiprocess else None
        #: Where metric objects are registered; ``None`` in multiprocess mode
        #: (the values live in files, read by a fresh collector per scrape).
        self.registry: CollectorRegistry | None = None if multiprocess else CollectorRegistry()
        self._objects: dict[str, tuple[tuple[Any, ...], Any]] = {}
        #: Label sets of ``target_healthy`` set in this process (to drop gone targets).
        self.targets: set[tuple[str, str]] = set()
        #: Batches of per-flow numbers (``.batch``) flushed before every render.
        self.batches: list[Flushable] = []

    def get(
        self,
        kind: type[M],
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        **options: Any,
    ) -> M:
        """The ``kind`` object called ``name`` (full name), made on first use.

        Raises :class:`ValueError` when ``name`` is taken by another kind or
        other labels (two plugins chose the same name), or by a name
        prometheus-client reserves for another metric's samples.
        """
        labels = tuple(labelnames)
        signature = (kind, labels, tuple(sorted(options.items())))
        known = self._objects.get(name)
        if known is not None:
            if known[0] == signature:
                return cast(M, known[1])
            if known[0][:2] != signature[:2]:
                was, had = known[0][0].__name__.lower(), ", ".join(known[0][1]) or "no labels"
                raise ValueError(f"metric {name!r} exists already as a {was} with {had}")
            # Same kind and labels, new options (buckets): the old object goes.
            if self.registry is not None:
                self.registry.unregister(known[1])
            del self._objects[name]
        obj = kind(name, documentation, labels, registry=self.registry, **options)
        self._objects[name] = (signature, obj)
        return obj

    def names(self) -> list[str]:
        """Full names of the objects made so far."""
        return list(self._objects)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for a scrape, in the format ``accept`` asks for, and its type."""
        for batch in self.batches:
            batch.flush()
        encoder, content_type = choose_encoder(accept)
        if self.registry is not None:
            return encoder(self.registry), content_type
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return encoder(registry), content_type


class Flushable(Protocol):
    def flush(self) -> None: ...


_store: Store | None = None


def store() -> Store:
    """This process's store, made on first use from the environment."""
    global _store
    if _store is None:
        _store = Store(os.environ.get(MULTIPROC_ENV) or None)
    return _store


def reset_store() -> Store:
    """Forget every metric object and start a fresh store (for tests)."""
    global _store
    _store = None
    return store()


class Metrics:
    """What ``trellis_metrics_register(metrics)`` hands to other plugins.

    Each method returns a prometheus-client object, with the configured
    prefix put in front of ``name`` (give it without: ``"cache_hits_total"``
    becomes ``trellis_cache_hits_total``). Asking again for the same name
    and shape - in the next configuration generation, say - returns the same
    object, so its values carry on. Label values must come from
    configuration names, never from requests (paths, hosts, addresses):
    every distinct value is a series kept forever.
    """

    def __init__(self, config: MetricsConfig, where: Store | None = None) -> None:
        self._config = config
        self._store = where if where is not None else store()
        #: Histogram names (without prefix) made through this facade.
        self.histograms: set[str] = set()

    @property
    def prefix(self) -> str:
        """What is put in front of every name."""
        return self._config.prefix

    @property
    def multiprocess(self) -> bool:
        """Whether values are aggregated over worker processes."""
        return self._store.multiprocess

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """A counter (by convention ``name`` ends in ``_total``)."""
        return self._store.get(Counter, self.prefix + name, documentation, labelnames)

    def gauge(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        multiprocess_mode: GaugeMode = "livesum",
    ) -> Gauge:
        """A gauge; ``multiprocess_mode`` says how workers' values combine.

        ``livesum`` (the default) adds the values of the live workers; see
        prometheus-client for ``livemax``, ``livemin``, ``livemostrecent``,
        ``all`` (a ``pid`` label per worker) and the non-live variants.
        """
        return self._store.get(
            Gauge,
            self.prefix + name,
            documentation,
            labelnames,
            multiprocess_mode=multiprocess_mode,
        )

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets_ms: Sequence[float] | None = None,
    ) -> Histogram:
        """A histogram; bounds in milliseconds, divided by 1000 for ``_seconds`` names.

        ``[plugins.metrics.histogram_buckets]`` wins over ``buckets_ms``
        when it names this histogram; without either, the builtin defaults
        for the histograms Trellis knows, else prometheus-client's.
        """
        self.histograms.add(name)
        asked = tuple(buckets_ms) if buckets_ms is not None else None
        buckets = self._config.buckets_for(name, asked)
        options: dict[str, Any] = {"buckets": buckets} if buckets else {}
        return self._store.get(Histogram, self.prefix + name, documentation, labelnames, **options)
