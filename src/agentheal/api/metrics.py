"""`GET /metrics`: Prometheus series computed from the event store at each scrape, nothing kept aside.

A custom collector reads the store when Prometheus scrapes, so every figure is what the recorded
events say (a heal run by the CLI or another process counts too, and a restart loses nothing):

- `agentheal_gaps_total{kind}`: gap reports recorded;
- `agentheal_runs{status}`: heal runs by their status now (`running`, `healed`, ...);
- `agentheal_approvals_waiting`: runs stopped for a person's approval;
- `agentheal_time_to_heal_seconds`: histogram of start-to-finish times of healed runs;
- `agentheal_actions_total{outcome}`: actions run on the estate (dry runs apart);
- `agentheal_llm_calls_total{ok}`, `agentheal_llm_tokens_total{type}`,
  `agentheal_llm_calls_unknown_usage_total`;
- `agentheal_heal_pool_jobs{state}`: the server's own heal pool now (running, queued);
- `agentheal_metrics_scrape_seconds`: how long reading the store took.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agentheal.event_schema import ACTIONS, GAPS, LLM_CALLS, RUNS
from agentheal.metrics import from_summary, summary
from agentheal.models import RunStatus

if TYPE_CHECKING:
    from agentheal.events import EventStore

# Seconds: a restart takes under one, a drill's heals up to a few minutes, a person's approval longer.
HEAL_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)

_GAPS_BY_KIND = sa.select(GAPS.c.kind, sa.func.count().label("n")).group_by(GAPS.c.kind)
_RUNS_BY_STATUS = sa.select(RUNS.c.status, sa.func.count().label("n")).group_by(RUNS.c.status)
_ACTIONS_BY_OUTCOME = (
    sa.select(ACTIONS.c.outcome, sa.func.count().label("n"))
    .where(ACTIONS.c.dry_run.is_(False))
    .group_by(ACTIONS.c.outcome)
)
_LLM = sa.select(
    LLM_CALLS.c.ok,
    sa.func.count().label("calls"),
    sa.func.coalesce(sa.func.sum(LLM_CALLS.c.prompt_tokens), 0).label("prompt"),
    sa.func.coalesce(sa.func.sum(LLM_CALLS.c.completion_tokens), 0).label("completion"),
    sa.func.coalesce(sa.func.sum(sa.case((LLM_CALLS.c.usage_known.is_(False), 1), else_=0)), 0).label(
        "unknown"
    ),
).group_by(LLM_CALLS.c.ok)


class StoreCollector(Collector):
    """Reads the event store at each scrape; `pool_busy` gives the server's heal pool figures."""

    def __init__(self, events: EventStore, pool_busy: Callable[[], dict[str, int]] | None = None) -> None:
        self.events = events
        self.pool_busy = pool_busy

    def describe(self) -> list[Metric]:
        return []  # computed at each scrape: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        began = time.perf_counter()
        q = self.events.query

        gaps = CounterMetricFamily("agentheal_gaps", "Gap reports recorded, by kind.", labels=["kind"])
        for row in q(_GAPS_BY_KIND):
            kind, n = row.values()
            gaps.add_metric([str(kind)], float(n))
        yield gaps

        counts = {str(s): 0.0 for s in RunStatus}
        for row in q(_RUNS_BY_STATUS):
            status, n = row.values()
            counts[str(status)] = float(n)
        runs = GaugeMetricFamily("agentheal_runs", "Heal runs by their status now.", labels=["status"])
        for status, n in counts.items():
            runs.add_metric([status], n)
        yield runs
        yield GaugeMetricFamily(
            "agentheal_approvals_waiting",
            "Heal runs stopped until a person approves or rejects their plan.",
            value=counts[RunStatus.awaiting_approval.value],
        )
        yield GaugeMetricFamily(
            "agentheal_remote_waiting",
            "Heal runs stopped until a remote persona's agent (A2A) answers with a plan, holding no worker.",
            value=counts[RunStatus.awaiting_remote.value],
        )

        # From the figures' summary, brought up to date first (a few index seeks when nothing is new):
        # counted over the runs table itself, a scrape took ~0.25 s at a million events.
        summary.refresh(self.events)
        under, healed, total = from_summary.heal_times(self.events, HEAL_BUCKETS)
        buckets = [(repr(b), float(n)) for b, n in zip(HEAL_BUCKETS, under, strict=True)]
        buckets.append(("+Inf", float(healed)))
        heal = HistogramMetricFamily(
            "agentheal_time_to_heal_seconds", "Start-to-finish time of healed runs, in seconds."
        )
        heal.add_metric([], buckets, float(total))
        yield heal

        actions = CounterMetricFamily(
            "agentheal_actions", "Actions run on the estate (not dry runs), by outcome.", labels=["outcome"]
        )
        for row in q(_ACTIONS_BY_OUTCOME):
            outcome, n = row.values()
            actions.add_metric([str(outcome)], float(n))
        yield actions

        yield from self._llm(q(_LLM))
        if self.pool_busy is not None:
            pool = GaugeMetricFamily(
                "agentheal_heal_pool_jobs", "The server's heals running and queued now.", labels=["state"]
            )
            for state, n in sorted(self.pool_busy().items()):
                pool.add_metric([state], float(n))
            yield pool
        yield GaugeMetricFamily(
            "agentheal_metrics_scrape_seconds",
            "Seconds this scrape spent reading the event store.",
            value=time.perf_counter() - began,
        )

    @staticmethod
    def _llm(rows: list[dict[str, Any]]) -> Iterator[Metric]:
        calls = CounterMetricFamily("agentheal_llm_calls", "Calls to the LLM, by success.", labels=["ok"])
        tokens = CounterMetricFamily(
            "agentheal_llm_tokens", "Tokens the LLM reported, by prompt and completion.", labels=["type"]
        )
        unknown = CounterMetricFamily(
            "agentheal_llm_calls_unknown_usage", "LLM calls whose answer reported no token usage."
        )
        prompt = completion = missing = 0.0
        by_ok = {"true": 0.0, "false": 0.0}
        for row in rows:
            ok, n, p, c, u = row.values()
            by_ok["true" if ok else "false"] += float(n)
            prompt, completion, missing = prompt + float(p), completion + float(c), missing + float(u)
        for label, n in by_ok.items():
            calls.add_metric([label], n)
        tokens.add_metric(["prompt"], prompt)
        tokens.add_metric(["completion"], completion)
        unknown.add_metric([], missing)
        yield from (calls, tokens, unknown)


def registry_for(
    events: EventStore, pool_busy: Callable[[], dict[str, int]] | None = None
) -> CollectorRegistry:
    """A registry of its own for one server (the global one would mix servers in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(events, pool_busy))
    from agentheal.metrics.prometheus import FiguresCollector  # agentheal_effectiveness{figure}, _n

    registry.register(FiguresCollector(events))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
