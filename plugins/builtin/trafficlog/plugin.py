"""The traffic log's hooks: :class:`TrafficLogPlugin`, glue between the kernel and the writer.

``trellis_flow_done`` builds the record (:mod:`.record`) and offers it to
each sink's pipeline (:mod:`.writer`) without waiting. ``trellis_startup``
checks that the log directory (or the SQLite file's directory) can be
written, failing the start or the reload otherwise, then takes the
process-wide pipelines and starts one writer task per pipeline. Each
acquisition is given back exactly once: when its writer task ends (the
generation is retired, or never went live because another plugin failed to
start), or in ``trellis_shutdown`` if that task never ran.

May import: stdlib, attrs, sdk, .config, .record, .writer, .filesink, .sqlite, .postgres.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs

import sdk

from . import writer
from .config import SinkKey, TrafficLogConfig, check_environment, sink_keys
from .filesink import Clock, FileSink, utc_now
from .postgres import PostgresSink
from .record import RecordOptions, build_record
from .sqlite import SqliteSink
from .writer import Pipeline, Sink, SinkMetrics

__all__ = ["TrafficLogPlugin"]

#: Buckets of ``traffic_log_write_duration_seconds``, in ms (Dispa's log-write buckets).
WRITE_BUCKETS_MS = (0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


def _check_writable(directory: str, kind: str) -> None:
    """Create ``directory`` if needed; raise :class:`OSError` unless we may write there."""
    os.makedirs(directory, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"traffic log ({kind}): cannot write in {directory!r}")


@attrs.define(eq=False)
class _Hold:
    """One acquisition of a pipeline by this instance (one per generation it started in)."""

    pipeline: Pipeline
    started: bool = False
    released: bool = False


class MetricsRegistry(Protocol):
    """What the ``metrics`` plugin hands to ``trellis_metrics_register`` (the part we use)."""

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Any: ...

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets_ms: Sequence[float] | None = None,
    ) -> Any: ...


class TrafficLogPlugin:
    """One record per flow to JSON-lines files, SQLite or PostgreSQL, never blocking a flow."""

    config_class = TrafficLogConfig

    def __init__(self, config: TrafficLogConfig | None = None, *, clock: Clock = utc_now) -> None:
        self.config = config if config is not None else TrafficLogConfig()
        self._clock = clock
        self._keys = sink_keys(self.config)
        self._options = RecordOptions(
            query=self.config.query,
            decisions=self.config.include_decisions,
            headers=self.config.headers,
            redact=frozenset(self.config.redact),
        )
        #: The pipelines this instance feeds, by sink kind (``file``, ``sqlite``, ``postgresql``).
        self.pipelines: dict[str, Pipeline] = {}
        #: Pipelines acquired and not yet given back; ``_feeds`` lists them (read per flow).
        self._holds: list[_Hold] = []
        self._feeds: tuple[Pipeline, ...] = ()
        self._excluded = frozenset(self.config.exclude_listeners)
        self._metrics: SinkMetrics | None = None
        self._stopping: Callable[[], bool] = bool
        #: This process's worker number when it is one of several (its files'
        #: names carry it), else None.
        self._worker: int | None = None

    # -------------------------------------------------------------- counters
    @property
    def written(self) -> dict[str, int]:
        """Records written so far, per sink kind (process-wide for that sink)."""
        return {kind: p.written for kind, p in self.pipelines.items()}

    @property
    def dropped(self) -> dict[str, int]:
        """Records lost so far (queue full, failed writes), per sink kind."""
        return {kind: p.dropped for kind, p in self.pipelines.items()}

    # ------------------------------------------------------------ lifecycle
    @sdk.hookimpl
    def trellis_config_check(self, listeners: tuple[str, ...]) -> list[str] | None:
        problems = check_environment(self.config)
        for i, name in enumerate(self.config.exclude_listeners):
            if name not in listeners:
                problems.append(
                    f"exclude_listeners[{i}]: no listener named {name!r}"
                    f" (listeners: {', '.join(listeners)})"
                )
        return problems or None

    @sdk.hookimpl
    def trellis_startup(self, context: sdk.StartupContext) -> None:
        c = self.config
        for kind, address in self._keys:
            # Fail the start (or the reload) now rather than drop every record
            # later. (A PostgreSQL address is a URL, not a place on disk.)
            if kind == "file":
                _check_writable(address, kind)
            elif kind == "sqlite":
                _check_writable(os.path.dirname(address), kind)
        # Several workers: each writes files of its own (one writer per file).
        server = context.server
        self._worker = server.worker if server.workers > 1 else None
        for key in self._keys:
            pipeline = writer.acquire(
                key,
                functools.partial(self._make_sink, key),
                capacity=c.queue,
                batch=c.batch,
                flush_interval_s=c.flush_interval_s,
            )
            if isinstance(pipeline.sink, FileSink):
                pipeline.sink.configure(max_bytes=c.max_file_bytes, retention_days=c.retention_days)
            if self._metrics is not None:
                pipeline.attach_metrics(self._metrics)
            self.pipelines[key[0]] = pipeline
            hold = _Hold(pipeline)
            self._holds.append(hold)
            context.start_soon(self._write, hold)
        self._refresh()
        self._stopping = context.server.draining

    async def _write(self, hold: _Hold) -> None:
        """This instance's writer task for one pipeline (one holder's task writes at a time)."""
        if hold.released:
            return
        hold.started = True
        try:
            await hold.pipeline.run()
        finally:
            # Cancelled: the generation is retired (its flows are over), or it
            # never went live because another plugin failed to start. When
            # the process stops, the last writes are awaited here, in a
            # thread: never on the event loop.
            if self._take_back(hold):
                if self._stopping():
                    await writer.release_async(hold.pipeline)
                else:
                    writer.release(hold.pipeline, wait=False)

    @sdk.hookimpl
    def trellis_shutdown(self) -> None:
        # The kernel cancelled our writer tasks already, which gave their
        # pipelines back; what is left are holds whose task never ran.
        for hold in list(self._holds):
            if not hold.started:
                self._release(hold)

    def _release(self, hold: _Hold) -> None:
        """Give a pipeline back, once; the last holder writes what is queued and closes it."""
        if self._take_back(hold):
            writer.release(hold.pipeline, wait=self._stopping())

    def _take_back(self, hold: _Hold) -> bool:
        """Forget ``hold``; False if it was given back already."""
        if hold.released:
            return False
        hold.released = True
        self._holds.remove(hold)
        self._refresh()
        return True

    def _refresh(self) -> None:
        # An instance reused by several generations (a test's ready-made
        # object) holds a pipeline once per generation but feeds it once.
        self._feeds = tuple(dict.fromkeys(h.pipeline for h in self._holds))

    def _make_sink(self, key: SinkKey) -> Sink:
        kind, address = key
        if kind == "file":
            c = self.config
            return FileSink(
                address,
                max_bytes=c.max_file_bytes,
                retention_days=c.retention_days,
                clock=self._clock,
                worker=self._worker,
            )
        if kind == "sqlite":
            return SqliteSink(address)
        return PostgresSink(address)

    # ------------------------------------------------------------- metrics
    @sdk.hookimpl(optionalhook=True)
    def trellis_metrics_register(self, metrics: MetricsRegistry) -> None:
        """Register our series with the ``metrics`` plugin's extension hook (when loaded)."""
        labels = ("sink",)
        m = SinkMetrics(
            write_seconds=metrics.histogram(
                "traffic_log_write_duration_seconds",
                "Seconds one batch of traffic-log records took to write.",
                labelnames=labels,
                buckets_ms=WRITE_BUCKETS_MS,
            ),
            records=metrics.counter(
                "traffic_log_records_total",
                "Traffic-log records written.",
                labelnames=labels,
            ),
            dropped=metrics.counter(
                "traffic_log_dropped_records_total",
                "Traffic-log records lost: queue full or a failed write.",
                labelnames=labels,
            ),
        )
        self._metrics = m
        for pipeline in self._feeds:
            pipeline.attach_metrics(m)

    # ---------------------------------------------------------------- flow
    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        feeds = self._feeds
        if not feeds or flow.client.listener in self._excluded:
            return
        record = build_record(flow, self._options)
        for pipeline in feeds:
            pipeline.put(record)
