"""Per-flow numbers added up in plain Python, handed to prometheus-client in bulk.

prometheus-client takes a lock for every ``inc`` and ``observe`` and walks
a histogram's buckets in Python: four or five of those per flow cost more
than everything else the plugin does. :class:`Batch` keeps the deltas in
dicts and lists instead (a dict update per counter, a ``bisect`` per
observation) and :meth:`Batch.flush` adds them to the real series before every render
of the exposition (the store flushes the batches it knows) and at shutdown,
so a scrape never misses a finished flow. In multiprocess mode (``[server]
workers``) a scrape is served by one worker and cannot flush the others':
batches there flush after every flow.

Histograms are flushed through their children's ``_sum`` and ``_buckets``
values (prometheus-client's own storage, per bucket, not cumulative), the
one way to add many observations at once; a child without them (another
implementation) gets its observations one by one.

May import: stdlib.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

__all__ = ["Batch", "HistogramBatch"]


class HistogramBatch:
    """Observations of one histogram child since the last flush."""

    __slots__ = ("bounds", "child", "counts", "raw", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        bounds = getattr(child, "_upper_bounds", None)
        bulk = bounds is not None and hasattr(child, "_buckets") and hasattr(child, "_sum")
        #: Upper bounds (the last is +Inf), or ``None`` when the child has no bulk path.
        self.bounds: list[float] | None = [float(b) for b in bounds] if bulk and bounds else None
        self.counts = [0] * len(self.bounds) if self.bounds is not None else []
        self.total = 0.0
        self.raw: list[float] = []

    def observe(self, value: float) -> None:
        bounds = self.bounds
        if bounds is None:
            self.raw.append(value)
            return
        # prometheus-client counts ``value`` in the first bucket whose bound is >= it.
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        child = self.child
        if self.bounds is None:
            raw, self.raw = self.raw, []
            for value in raw:
                child.observe(value)
            return
        if not any(self.counts):
            return
        counts, self.counts = self.counts, [0] * len(self.counts)
        total, self.total = self.total, 0.0
        child._sum.inc(total)
        buckets = child._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)


class Batch:
    """Counter deltas and histogram observations of every series, until flushed.

    ``immediate`` (multiprocess mode) flushes after every flow: a scrape
    served by another worker cannot flush this one's batch.
    """

    __slots__ = ("counters", "histograms", "immediate")

    def __init__(self, *, immediate: bool = False) -> None:
        self.immediate = immediate
        #: counter child -> amount to add.
        self.counters: dict[Any, float] = {}
        #: histogram child -> its batch.
        self.histograms: dict[Any, HistogramBatch] = {}

    def histogram(self, child: Any) -> HistogramBatch:
        """The batch of a histogram child (made on first use)."""
        batch = self.histograms.get(child)
        if batch is None:
            batch = self.histograms[child] = HistogramBatch(child)
        return batch

    def flush(self) -> None:
        counters, self.counters = self.counters, {}
        for child, amount in counters.items():
            if amount:
                child.inc(amount)
        for batch in self.histograms.values():
            batch.flush()
