"""OTLP trace export: :class:`OtlpPlugin` sends one span per traced flow to a collector.

Off by default: it runs only when a configuration names it in a chain, next
to ``tracing`` (which gives each flow its trace context; ``otlp`` only
exports what it finds in ``flow.stash[sdk.TRACE]``, so without ``tracing``
in the chain nothing is sent). It needs the ``otlp`` extra::

    pip install 'trellis-proxy[otlp]'   # opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http

and a configuration such as::

    [kernel]
    plugins = ["tracing", "otlp"]

    [plugins.otlp]
    endpoint = "http://127.0.0.1:4318/v1/traces"   # OTLP/HTTP (protobuf), the full signal URL
    service_name = "trellis"                       # resource attribute service.name
    resource = { "deployment.environment" = "prod" }  # more resource attributes
    headers = { authorization = "Bearer ${OTLP_TOKEN}" }  # sent with every export
    timeout_s = 10.0                               # per export request, retries included
    max_queue = 2048                               # spans waiting for export; beyond, dropped
    flush_interval_s = 5.0                         # how often a batch is sent
    sample_ratio = 1.0                             # share of traces exported, by trace id

**The span.** In ``trellis_flow_done``, each flow that carries a trace
context with the sampled flag becomes one ``SERVER`` span named
``"{method} {route}"`` (``"GET default"``): its trace id, span id and parent
span id are the context's (the span id is the one ``tracing`` sent upstream
in ``traceparent``, so the upstream's spans hang under it; the parent is
the caller's span, none for a trace we started); it starts at the request
head (``flow.timings.started_at``, wall clock) and lasts the flow's
monotonic duration, with events ``upstream.connected`` and
``response.head`` at those milestones. Its attributes follow the
OpenTelemetry HTTP server conventions: ``http.request.method`` (``_OTHER``
plus ``http.request.method_original`` for an unknown method),
``http.response.status_code``, ``url.scheme``, ``url.path`` (as it went
upstream, after rewrites; never the query, which may carry secrets),
``server.address``, ``server.port``, ``client.address``, ``client.port``,
``network.protocol.version``, ``user_agent.original``, ``http.request.body.size``,
``http.response.body.size``, ``error.type``; and Trellis' own
``trellis.route``, ``trellis.target`` (the group target's name, or the
upstream origin), ``trellis.group``, ``trellis.listener``,
``trellis.flow_id`` and ``trellis.decisions``. The status is ``ERROR``
when the flow failed (``flow.error``, whose text is the description) or
answered 5xx, else unset (4xx is the client's fault, as the conventions say).

**Sampling.** A context whose sampled flag is off is not exported (the
caller asked not to record). ``sample_ratio`` keeps that share of the
remaining traces, decided on the trace id's low 64 bits exactly as
OpenTelemetry's ``TraceIdRatioBased`` sampler does, so every hop of one trace
with the same ratio makes the same choice. The ``traceparent`` sent
upstream is not changed by this ratio.

**How it is built, and why it never blocks a request.** The ids are given,
not generated: the OpenTelemetry ``Tracer`` API always makes its own span
id, so instead of starting and ending live spans this plugin builds the
finished span directly as an ``opentelemetry.sdk.trace.ReadableSpan`` (the
type ``SpanExporter.export`` consumes: plain data, no context or global
provider involved) and hands it to a ``BatchSpanProcessor.on_end``, which
only appends to a bounded deque. The processor's own thread sends batches
with the ``OTLPSpanExporter`` (HTTP/protobuf), so the event loop never waits
on the collector: when it is slow or down, exports time out on that thread
and spans beyond ``max_queue`` are dropped (OpenTelemetry logs it, at most
once per 20 seconds). The processor is started in ``trellis_startup`` (per
generation, in each worker) and shut down in ``trellis_shutdown``, which
flushes what is queued: on a thread of its own, so a reload does not wait
for the collector; the process waits for that flush before it exits, at
most ``timeout_s`` + 1 seconds, after which what is left is dropped.
Building a span and queueing it costs about 10 µs of the event loop per
flow (measured with timeit).

Counters on the instance: ``queued`` (spans handed to the processor) and
``not_sampled`` (traced flows left out by the flag or the ratio).

May import: stdlib, attrs, sdk; opentelemetry (the ``otlp`` extra), only
when an instance is built, so that listing the installed plugins does not
need it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs

import sdk

if TYPE_CHECKING:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import TraceState
    from opentelemetry.util.types import AttributeValue

__all__ = ["OtlpConfig", "OtlpPlugin", "sampled_by_ratio"]

log = logging.getLogger("trellis.plugins.otlp")

#: OpenTelemetry's ``TraceIdRatioBased`` compares the trace id's low 64 bits.
_ID_SPACE = 1 << 64
#: Methods kept as they are in ``http.request.method`` (the conventions' list).
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
#: Parsed ``tracestate`` values kept for reuse (callers tend to send the same one).
_STATE_CACHE_SIZE = 256


# -------------------------------------------------------------- validators
def _endpoint(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        sdk.Origin.parse(value)
    except ValueError as exc:
        raise ValueError(
            f"must be an http(s) URL such as 'http://127.0.0.1:4318/v1/traces': {exc}"
        ) from None


def _not_empty(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError("must not be empty")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:  # also refuses nan
        raise ValueError(f"must be > 0, got {value!r}")


def _at_least_one(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"must be >= 1, got {value!r}")


def _ratio(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise ValueError(f"must be between 0 and 1, got {value!r}")


@attrs.frozen(kw_only=True)
class OtlpConfig:
    """The ``[plugins.otlp]`` table: where spans go and how many may wait."""

    #: The collector's OTLP/HTTP traces URL, path included.
    endpoint: str = attrs.field(default="http://127.0.0.1:4318/v1/traces", validator=_endpoint)
    #: The ``service.name`` resource attribute.
    service_name: str = attrs.field(default="trellis", validator=_not_empty)
    #: More resource attributes (``deployment.environment``, ``service.namespace``...);
    #: ``service.name`` is ``service_name``'s.
    resource: dict[str, str] = attrs.field(factory=dict)
    #: Headers sent with every export request (authentication).
    #: Checked one entry at a time (a deep_mapping): each bad one is listed at
    #: its own key (``headers.x-a``), even beside an entry of the wrong type; a
    #: bad value is not shown (these headers carry credentials).
    headers: dict[str, str] = attrs.field(
        factory=dict,
        validator=attrs.validators.deep_mapping(
            sdk.header_name_validator(), sdk.header_value_validator(secret=True)
        ),
    )
    #: Seconds one export may take, retries included.
    timeout_s: float = attrs.field(default=10.0, validator=_positive)
    #: Spans waiting for export at most; more are dropped.
    max_queue: int = attrs.field(default=2048, validator=_at_least_one)
    #: Seconds between two exports (sooner when a batch of 512 is full).
    flush_interval_s: float = attrs.field(default=5.0, validator=_positive)
    #: Share of the sampled traces that are exported, 0..1.
    sample_ratio: float = attrs.field(default=1.0, validator=_ratio)


def sampled_by_ratio(trace_id: str, bound: int) -> bool:
    """Whether a trace id falls under ``bound`` (``round(ratio * 2**64)``).

    The rule of OpenTelemetry's ``TraceIdRatioBased``: the low 64 bits of
    the trace id, compared with the bound.
    """
    return int(trace_id[16:], 16) < bound


def _version() -> str:
    try:
        return importlib.metadata.version("trellis-proxy")
    except importlib.metadata.PackageNotFoundError:
        return ""


class _Otel:
    """The opentelemetry side, imported when an instance is built.

    Importing the exporter costs ~0.2 s and the extra may be absent: the
    kernel imports every installed plugin to list them, so nothing here may
    happen at module import.
    """

    def __init__(self) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import Event, ReadableSpan
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
            from opentelemetry.trace import (
                SpanContext,
                SpanKind,
                Status,
                StatusCode,
                TraceFlags,
                TraceState,
            )
        except ImportError as exc:
            raise sdk.ConfigError(
                [
                    "$.plugins.otlp: the otlp plugin needs opentelemetry-sdk and"
                    " opentelemetry-exporter-otlp-proto-http:"
                    f" pip install 'trellis-proxy[otlp]' ({exc})"
                ]
            ) from None
        self.OTLPSpanExporter = OTLPSpanExporter
        self.Resource = Resource
        self.Event = Event
        self.ReadableSpan = ReadableSpan
        self.BatchSpanProcessor = BatchSpanProcessor
        self.SpanContext = SpanContext
        self.TraceState = TraceState
        self.InstrumentationScope = InstrumentationScope
        self.server = SpanKind.SERVER
        self.sampled = TraceFlags(TraceFlags.SAMPLED)
        self.ok = Status(StatusCode.UNSET)
        self.error = StatusCode.ERROR
        self.Status = Status


class OtlpPlugin:
    """Export one OpenTelemetry span per traced flow to an OTLP/HTTP collector."""

    config_class = OtlpConfig

    def __init__(self, config: OtlpConfig | None = None) -> None:
        self.config = config if config is not None else OtlpConfig()
        self._otel = _Otel()
        self._bound = round(self.config.sample_ratio * _ID_SPACE)
        self._processor: BatchSpanProcessor | None = None
        self._exporter: OTLPSpanExporter | None = None
        self._resource: Resource | None = None
        self._scope: InstrumentationScope | None = None
        self._states: dict[str, TraceState] = {}
        #: The thread flushing the queue after ``trellis_shutdown`` (tests join it).
        self.flusher: threading.Thread | None = None
        #: Spans handed to the processor.
        self.queued = 0
        #: Traced flows not exported: sampled flag off, or outside ``sample_ratio``.
        self.not_sampled = 0

    # -- lifecycle -------------------------------------------------------------
    @sdk.hookimpl
    def trellis_startup(self) -> None:
        c, otel = self.config, self._otel
        # Resource detectors (OTEL_* variables) may read files: not in __init__.
        self._resource = otel.Resource.create({**c.resource, "service.name": c.service_name})
        self._scope = otel.InstrumentationScope("trellis", _version())
        self._exporter = exporter = otel.OTLPSpanExporter(
            endpoint=c.endpoint, headers=dict(c.headers), timeout=c.timeout_s
        )
        self._processor = otel.BatchSpanProcessor(
            exporter,
            max_queue_size=c.max_queue,
            schedule_delay_millis=c.flush_interval_s * 1000,
            max_export_batch_size=min(512, c.max_queue),
            export_timeout_millis=c.timeout_s * 1000,
        )

    @sdk.hookimpl
    def trellis_shutdown(self) -> None:
        processor, exporter = self._processor, self._exporter
        self._processor = self._exporter = None
        if processor is not None and exporter is not None:
            # Flushing waits for the collector: not on the event loop. Not a
            # daemon thread, so the process exits only after the flush.
            self.flusher = threading.Thread(
                target=_close,
                args=(processor, exporter, self.config.timeout_s + 1.0),
                name="trellis-otlp-flush",
                daemon=False,
            )
            self.flusher.start()

    # -- flows -----------------------------------------------------------------
    @sdk.hookimpl
    def trellis_flow_done(self, flow: sdk.Flow) -> None:
        ctx = flow.stash.get(sdk.TRACE, None)
        if ctx is None or self._processor is None:
            return
        if not ctx.sampled or not sampled_by_ratio(ctx.trace_id, self._bound):
            self.not_sampled += 1
            return
        self._processor.on_end(self.span(flow, ctx))
        self.queued += 1

    def span(self, flow: sdk.Flow, ctx: sdk.TraceContext) -> ReadableSpan:
        """The finished ``SERVER`` span of ``flow``, with ``ctx``'s ids."""
        otel = self._otel
        request, response, timings = flow.request, flow.response, flow.timings
        method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.scheme": request.scheme,
            "url.path": request.path_only,
            "client.address": flow.client.address,
            "client.port": flow.client.port,
            "network.protocol.version": request.http_version,
            "http.request.body.size": flow.bytes_in,
            "trellis.route": flow.route,
            "trellis.listener": flow.client.listener,
            "trellis.flow_id": flow.id,
        }
        if method == "_OTHER":
            attributes["http.request.method_original"] = request.method
        if request.authority:
            try:
                attributes["server.address"] = request.host
                attributes["server.port"] = request.port
            except ValueError:  # an authority the kernel let through but we cannot split
                pass
        agent = request.headers.get("user-agent")
        if agent is not None:
            attributes["user_agent.original"] = agent
        status = 0
        if response is not None:
            status = response.status_code
            attributes["http.response.status_code"] = status
            attributes["http.response.body.size"] = flow.bytes_out
        if flow.target is not None:
            attributes["trellis.target"] = flow.target.name
            attributes["trellis.group"] = flow.target.group
        elif flow.upstream is not None:
            attributes["trellis.target"] = str(flow.upstream)
        if flow.decisions:
            attributes["trellis.decisions"] = tuple(flow.decisions)
        if flow.error is not None:
            attributes["error.type"] = type(flow.error).__name__
            span_status = otel.Status(otel.error, str(flow.error))
        elif status >= 500:
            attributes["error.type"] = str(status)
            span_status = otel.Status(otel.error)
        else:
            span_status = otel.ok

        # started_at is wall clock at the request head; the rest is monotonic.
        start = timings.started_at
        head = timings.request_head
        done = timings.done if timings.done is not None else time.monotonic()
        events = [
            otel.Event(name, timestamp=_ns(start + at - head))
            for name, at in (
                ("upstream.connected", timings.upstream_connected),
                ("response.head", timings.response_head),
            )
            if at is not None
        ]
        parent = None
        if ctx.parent_id:
            parent = otel.SpanContext(
                int(ctx.trace_id, 16), int(ctx.parent_id, 16), True, otel.sampled
            )
        return otel.ReadableSpan(
            name=f"{'HTTP' if method == '_OTHER' else method} {flow.route}",
            context=otel.SpanContext(
                int(ctx.trace_id, 16),
                int(ctx.span_id, 16),
                False,
                otel.sampled,
                self._trace_state(ctx.tracestate),
            ),
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            events=events,
            kind=otel.server,
            status=span_status,
            start_time=_ns(start),
            end_time=_ns(start + max(done - head, 0.0)),
            instrumentation_scope=self._scope,
        )

    def _trace_state(self, text: str) -> TraceState | None:
        if not text:
            return None
        state = self._states.get(text)
        if state is None:
            if len(self._states) >= _STATE_CACHE_SIZE:
                self._states.clear()
            state = self._states[text] = self._otel.TraceState.from_header([text])
        return state


def _close(processor: BatchSpanProcessor, exporter: OTLPSpanExporter, grace: float) -> None:
    """Flush and stop ``processor``; after ``grace`` seconds, drop what is left.

    ``BatchSpanProcessor.shutdown`` takes no deadline and may wait up to 30 s
    (one retried export per batch); stopping the exporter ends its retries.
    """
    closing = threading.Thread(target=processor.shutdown, name="trellis-otlp-close", daemon=True)
    closing.start()
    closing.join(grace)
    if closing.is_alive():
        log.warning("otlp: the collector did not take the last spans within %gs: dropped", grace)
        exporter.shutdown()  # type: ignore[no-untyped-call]


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)
