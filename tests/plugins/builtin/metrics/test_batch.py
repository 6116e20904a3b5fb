"""Batch: per-flow numbers flushed in bulk give exactly what one-by-one updates give."""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from plugins.builtin.metrics.batch import Batch, HistogramBatch


def exposition(registry: CollectorRegistry) -> str:
    return "\n".join(
        line
        for line in generate_latest(registry).decode().splitlines()
        if "_created" not in line  # creation times differ between the two registries
    )


def test_a_flushed_batch_equals_direct_updates() -> None:
    direct, batched = CollectorRegistry(), CollectorRegistry()
    buckets = (0.005, 0.01, 0.1, 1.0)
    h1 = Histogram("d", "d", ["route"], buckets=buckets, registry=direct)
    h2 = Histogram("d", "d", ["route"], buckets=buckets, registry=batched)
    c1 = Counter("c", "c", ["route"], registry=direct)
    c2 = Counter("c", "c", ["route"], registry=batched)
    batch = Batch()
    rng = random.Random(7)
    values = [rng.choice([0.0, 0.005, 0.0051, 0.01, 0.5, 1.0, 3.0]) for _ in range(500)]
    for v in values:
        h1.labels("r").observe(v)
        c1.labels("r").inc(2)
        batch.histogram(h2.labels("r")).observe(v)
        batch.counters[c2.labels("r")] = batch.counters.get(c2.labels("r"), 0) + 2
    assert exposition(direct) != exposition(batched)  # nothing handed over yet
    batch.flush()
    assert exposition(direct) == exposition(batched)
    batch.flush()  # a second flush adds nothing
    assert exposition(direct) == exposition(batched)


class Plain:
    """A histogram child without prometheus-client's storage."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, value: float) -> None:
        self.seen.append(value)


def test_a_child_without_bulk_storage_gets_each_observation() -> None:
    child: Any = Plain()
    batch = HistogramBatch(child)
    assert batch.bounds is None
    for v in (0.1, 0.2):
        batch.observe(v)
    batch.flush()
    assert child.seen == [0.1, 0.2]
    batch.flush()
    assert child.seen == [0.1, 0.2]


def test_immediate_is_a_flag_the_plugin_reads() -> None:
    assert Batch(immediate=True).immediate
    assert not Batch().immediate
