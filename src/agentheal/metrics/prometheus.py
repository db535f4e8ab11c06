"""The effectiveness figures as Prometheus gauges, read at each scrape: each scrape folds into the
figures' summary only what the event store gained since the last fold, then counts ranges of its
indexes (agentheal.metrics.summary): no scrape derives the figures from every event again.

- `agentheal_effectiveness{figure}`: each figure's value (a figure with no data is left out:
  Prometheus has no "no data", and a 0 would be a lie);
- `agentheal_effectiveness_n{figure}`: how many events each figure rests on (0 with no data).

Per-component and per-agent figures keep their full name (`availability:web`) in the label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agentheal.events import EventStore


class FiguresCollector(Collector):
    """Reads the figures at each scrape (over the default window, the one `agentheal status` shows)."""

    def __init__(self, events: EventStore) -> None:
        self.events = events

    def describe(self) -> list[Metric]:
        return []  # computed at each scrape

    def collect(self) -> Iterator[Metric]:
        from agentheal.metrics import compute

        figures = compute(self.events)
        values = GaugeMetricFamily(
            "agentheal_effectiveness",
            "Effectiveness figures from recorded events (rates are fractions, times seconds).",
            labels=["figure"],
        )
        counts = GaugeMetricFamily(
            "agentheal_effectiveness_n", "How many recorded events each figure rests on.", labels=["figure"]
        )
        for f in figures:
            if f.value is not None:
                values.add_metric([f.name], f.value)
            counts.add_metric([f.name], float(f.n))
        yield values
        yield counts
