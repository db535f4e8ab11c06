"""The series the report plots, each read from the event store by an aggregate query.

Only time to heal reads one row per healed run (a daily median needs them); everything else is
counted by the database.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from agentheal.event_schema import AUDIT, GAPS, RUNS
from agentheal.events import EventStore
from agentheal.metrics import Window
from agentheal.metrics.figures import FINISHED
from agentheal.metrics.records import EVOLUTIONS, PREDICTIONS
from agentheal.metrics.sql import backend, day, rate, seconds, week
from agentheal.models import GapKind, RunStatus

TOP_FINGERPRINTS = 12


@dataclass
class Series:
    """What the report's plots show, over one window."""

    heal_by_day: list[tuple[str, float, float, int]] = field(default_factory=list)  # day, median, max, n
    rate_by_week: list[tuple[str, float, int]] = field(default_factory=list)  # week, rate, n
    recurrences: list[tuple[str, int]] = field(default_factory=list)  # label, reports that came back
    agents: dict[str, dict[str, int]] = field(default_factory=dict)  # persona -> status -> runs
    predictions: dict[str, dict[str, int]] = field(default_factory=dict)  # acted/not -> outcome -> n
    evolutions: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> kept/reverted -> n


def _heal_by_day(store: EventStore, w: Window, dialect: str) -> list[tuple[str, float, float, int]]:
    took = (seconds(RUNS.c.finished_at, dialect) - seconds(RUNS.c.started_at, dialect)).label("took")
    stmt: Any = (
        sa.select(day(RUNS.c.finished_at, dialect).label("day"), took)
        .where(RUNS.c.status == RunStatus.healed.value, *w.within(RUNS.c.finished_at))
        .order_by("day")
    )
    days: dict[str, list[float]] = defaultdict(list)
    for row in store.query(stmt):
        days[row["day"]].append(float(row["took"]))
    return [(d, statistics.median(v), max(v), len(v)) for d, v in days.items()]


def _rate_by_week(store: EventStore, w: Window, dialect: str) -> list[tuple[str, float, int]]:
    approved = sa.select(AUDIT.c.target).where(AUDIT.c.action == "approve", AUDIT.c.outcome == "ok")
    auto = sa.and_(RUNS.c.status == RunStatus.healed.value, RUNS.c.run_id.not_in(approved))
    wk = week(RUNS.c.finished_at, dialect).label("week")
    stmt: Any = (
        sa.select(wk, sa.func.count().label("n"), rate(auto).label("healed"))
        .where(RUNS.c.status.in_(FINISHED), *w.within(RUNS.c.finished_at))
        .group_by(wk)
        .order_by(wk)
    )
    return [(r["week"], int(r["healed"]) / int(r["n"]), int(r["n"])) for r in store.query(stmt)]


def _recurrences(store: EventStore, w: Window) -> list[tuple[str, int]]:
    first = (
        sa.select(RUNS.c.fingerprint.label("fp"), sa.func.min(RUNS.c.finished_at).label("healed_at"))
        .where(RUNS.c.status == RunStatus.healed.value, RUNS.c.finished_at < w.until)
        .group_by(RUNS.c.fingerprint)
        .subquery()
    )
    n = sa.func.count().label("n")
    stmt = (
        sa.select(
            GAPS.c.fingerprint,
            sa.func.max(GAPS.c.component).label("component"),
            sa.func.max(GAPS.c.text).label("text"),
            n,
        )
        .select_from(GAPS.join(first, first.c.fp == GAPS.c.fingerprint))
        .where(
            GAPS.c.kind != GapKind.predicted.value,
            first.c.healed_at < GAPS.c.recorded_at,
            *w.within(GAPS.c.recorded_at),
        )
        .group_by(GAPS.c.fingerprint)
        .order_by(n.desc(), GAPS.c.fingerprint)
        .limit(TOP_FINGERPRINTS)
    )
    out = []
    for r in store.query(stmt):
        text = str(r["text"])
        label = f"{r['component'] or '-'}: {text[:40]}{'…' if len(text) > 40 else ''}"
        out.append((label, int(r["n"])))
    return out


def _counts(store: EventStore, a: Any, b: Any, where: list[Any]) -> dict[str, dict[str, int]]:
    stmt = sa.select(a.label("a"), b.label("b"), sa.func.count().label("n")).where(*where).group_by(a, b)
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for r in store.query(stmt):
        out[str(r["a"])][str(r["b"])] = int(r["n"])
    return dict(sorted(out.items()))


def series(store: EventStore, w: Window) -> Series:
    """Every series the report plots, over `w`."""
    dialect = backend(store)
    acted = sa.case((PREDICTIONS.c.acted, "acted on"), else_="not acted on")
    ended = [RUNS.c.persona.is_not(None), RUNS.c.status.in_(FINISHED), *w.within(RUNS.c.finished_at)]
    followed = [PREDICTIONS.c.outcome != "pending", *w.within(PREDICTIONS.c.checked_at)]
    decided = [EVOLUTIONS.c.status.in_(("kept", "reverted")), *w.within(EVOLUTIONS.c.decided_at)]
    return Series(
        heal_by_day=_heal_by_day(store, w, dialect),
        rate_by_week=_rate_by_week(store, w, dialect),
        recurrences=_recurrences(store, w),
        agents=_counts(store, RUNS.c.persona, RUNS.c.status, ended),
        predictions=_counts(store, acted, PREDICTIONS.c.outcome, followed),
        evolutions=_counts(store, EVOLUTIONS.c.kind, EVOLUTIONS.c.status, decided),
    )
