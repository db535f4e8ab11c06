"""`GET /metrics`' series about the worker that answers: which worker it is and, on a shared
database, the shared queue and the claims this worker holds (read at each scrape).

- `agentheal_worker_info{worker, backend}`: 1, naming the worker (`AGENTHEAL_WORKER_NAME`);
- `agentheal_work_items{state}`: the shared work table's items, queued, claimed and done;
- `agentheal_worker_claims`: the claims this worker holds now.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agentheal.work.shared import SharedHeals


class WorkerCollector(Collector):
    """The answering worker's name, and its share of the work when several workers share it."""

    def __init__(self, name: str, shared: SharedHeals | None) -> None:
        self.name = name
        self.shared = shared

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "agentheal_worker_info", "The worker answering: its name and where its events are.",
            labels=["worker", "backend"],
        )  # fmt: skip
        info.add_metric([self.name, "sqlite" if self.shared is None else "postgresql"], 1.0)
        yield info
        if self.shared is None:
            return
        items = GaugeMetricFamily(
            "agentheal_work_items", "Items of the shared work table by state.", labels=["state"]
        )
        for state, n in sorted(self.shared.queue.counts().items()):
            items.add_metric([state], float(n))
        yield items
        yield GaugeMetricFamily(
            "agentheal_worker_claims",
            "Claims this worker holds now.",
            value=float(len(self.shared.worker.held)),
        )
