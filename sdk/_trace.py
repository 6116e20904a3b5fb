"""W3C Trace Context (``traceparent``/``tracestate``) as plain data: :class:`TraceContext`.

The ``tracing`` plugin puts the flow's context in ``flow.stash[TRACE]``;
the traffic log, exporters and any other plugin read it from there.
Parsing follows the Trace Context Level 1 recommendation: version ``00``
has exactly four fields; a higher version may carry more, which are
ignored; an all-zero trace id or span id, upper-case hex or a bad length
makes the header invalid (and a new trace is started).

May import: stdlib, attrs, sdk._stash.
"""

from __future__ import annotations

import random
import re
from typing import final

import attrs

from sdk._stash import StashKey

__all__ = ["TRACE", "TraceContext"]

#: version-trace_id-parent_id-flags, then more fields for versions above 00.
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.ASCII | re.DOTALL
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
#: Longest ``tracestate`` we forward (the spec allows 32 members of ~512 bytes).
_MAX_TRACESTATE = 512 * 32


@final
@attrs.frozen(slots=True)
class TraceContext:
    """One hop of a distributed trace.

    ``span_id`` is *our* span (the one we send upstream as the parent);
    ``parent_id`` is the caller's span, empty when we started the trace.
    """

    trace_id: str
    span_id: str
    parent_id: str = ""
    sampled: bool = True
    tracestate: str = ""

    @classmethod
    def parse(cls, traceparent: str | None, tracestate: str | None = None) -> TraceContext | None:
        """The caller's context from its headers, as a parent; ``None`` when absent or invalid.

        The result's ``span_id`` is the caller's span; use :meth:`child` for ours.
        """
        if not traceparent:
            return None
        m = _TRACEPARENT.fullmatch(traceparent.strip())
        if m is None:
            return None
        version, trace_id, span_id, flags, rest = m.groups()
        if version == "ff" or (version == "00" and rest is not None):
            return None
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
            return None
        state = (tracestate or "").strip()
        if len(state) > _MAX_TRACESTATE or any(c in state for c in "\r\n\0"):
            state = ""
        return cls(trace_id, span_id, "", bool(int(flags, 16) & 1), state)

    @classmethod
    def new(cls, *, sampled: bool = True) -> TraceContext:
        """A new trace whose first span is ours."""
        return cls(f"{_bits(128) or 1:032x}", _new_span(), "", sampled, "")

    def child(self) -> TraceContext:
        """Our span under this one (same trace, this span as the parent)."""
        return TraceContext(self.trace_id, _new_span(), self.span_id, self.sampled, self.tracestate)

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` value that names this span as the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


#: Ids need to be unique, not secret: Python's generator (seeded from the OS,
#: as OpenTelemetry's own id generator) is 2-3 times cheaper than os.urandom.
_bits = random.getrandbits


def _new_span() -> str:
    return f"{_bits(64) or 1:016x}"


#: The flow's trace context, set by the ``tracing`` plugin (our span in it).
TRACE: StashKey[TraceContext] = StashKey("trace")
