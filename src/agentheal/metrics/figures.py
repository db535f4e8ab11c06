"""The effectiveness figures, each computed by the database from recorded events.

One query or two per figure: counts and sums are SQL aggregates and percentiles are one row found
by rank, so the cost does not grow with what Python would have to read. Every figure carries the
count it rests on (`n`) and its window; with nothing to count it says `no_data` and its value is
None, never a 0 % or a 100 % made of nothing. Definitions: README, "Effectiveness figures".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from agentheal.event_schema import AUDIT, GAPS, RUNS
from agentheal.events import EventStore
from agentheal.metrics.records import EVOLUTIONS, PREDICTIONS, PROBES
from agentheal.metrics.sql import backend, percentiles, rate, seconds
from agentheal.metrics.summary import FINISHED as FINISHED
from agentheal.metrics.summary import PERSON_SOURCES as PERSON_SOURCES
from agentheal.metrics.summary import QUALITY_WINDOW, refresh
from agentheal.models import GapKind, RunStatus, utcnow

DEFAULT_WINDOW = timedelta(days=30)


class Figure(BaseModel):
    """One figure: value (None with no data), unit, how many it rests on, and the window it covers."""

    name: str
    value: float | None
    unit: str
    n: int
    window: str
    no_data: bool


@dataclass(frozen=True)
class Window:
    """The half-open time span [since, until) a figure covers."""

    since: datetime
    until: datetime

    @classmethod
    def last(cls, span: timedelta = DEFAULT_WINDOW, now: datetime | None = None) -> Window:
        until = now or utcnow()
        return cls(until - span, until)

    @property
    def span(self) -> timedelta:
        return self.until - self.since

    def previous(self) -> Window:
        return Window(self.since - self.span, self.since)

    def text(self) -> str:
        return f"{self.since.isoformat(timespec='seconds')}/{self.until.isoformat(timespec='seconds')}"

    def within(self, col: Any) -> list[Any]:
        return [col >= self.since, col < self.until]


def figure(name: str, value: float | None, unit: str, n: int, window: Window) -> Figure:
    """A figure; no count (or no value) means no data."""
    no_data = n == 0 or value is None
    return Figure(
        name=name, value=None if no_data else value, unit=unit, n=n, window=window.text(), no_data=no_data
    )


def _one(store: EventStore, stmt: sa.Select[Any] | Any) -> list[Any]:
    """The one row of an aggregate query, in column order (columns relabelled: unnamed aggregates of
    the same function would share a key)."""
    labelled = stmt.with_only_columns(*(c.label(f"c{i}") for i, c in enumerate(stmt.selected_columns)))
    return list(store.query(labelled)[0].values())


def _ratio(hits: int, n: int) -> float | None:
    return hits / n if n else None


def runs_by_persona(store: EventStore, w: Window) -> list[Figure]:
    """Gap resolution rate (runs healed with no person's approval over runs that ended) and each
    persona's record (its runs healed over its runs that ended), from one pass grouped by persona."""
    approved = sa.select(AUDIT.c.target).where(AUDIT.c.action == "approve", AUDIT.c.outcome == "ok")
    healed = RUNS.c.status == RunStatus.healed.value
    stmt = (
        sa.select(
            RUNS.c.persona.label("persona"),
            sa.func.count().label("n"),
            rate(healed).label("healed"),
            rate(sa.and_(healed, RUNS.c.run_id.not_in(approved))).label("auto"),
        )
        .where(RUNS.c.status.in_(FINISHED), *w.within(RUNS.c.finished_at))
        .group_by(RUNS.c.persona)
        .order_by(RUNS.c.persona)
    )
    rows = store.query(stmt)
    n, auto = sum(int(r["n"]) for r in rows), sum(int(r["auto"]) for r in rows)
    out = [figure("gap_resolution_rate", _ratio(auto, n), "fraction", n, w)]
    for r in rows:
        if r["persona"] is not None:
            name = f"agent_resolution_rate:{r['persona']}"
            out.append(figure(name, _ratio(int(r["healed"]), int(r["n"])), "fraction", int(r["n"]), w))
    return out


def _ms(value: float | None) -> float | None:
    """Seconds to the millisecond: SQLite's julian days carry about 50 µs of rounding."""
    return None if value is None else round(value, 3)


def timings(store: EventStore, w: Window) -> list[Figure]:
    """Time to detect (detector's gaps: first observed to recorded) and time to heal (healed runs)."""
    dialect = backend(store)
    detected = [
        GAPS.c.gap["source"].as_string().not_in(PERSON_SOURCES),
        GAPS.c.kind != GapKind.predicted.value,  # made before the breach: no lag to measure
        *w.within(GAPS.c.recorded_at),
    ]
    lag = seconds(GAPS.c.recorded_at, dialect) - seconds(GAPS.c.created_at, dialect)
    healed = [RUNS.c.status == RunStatus.healed.value, *w.within(RUNS.c.finished_at)]
    took = seconds(RUNS.c.finished_at, dialect) - seconds(RUNS.c.started_at, dialect)
    out: list[Figure] = []
    for what, value, where in (("detect", lag, detected), ("heal", took, healed)):
        n, (median, p95) = percentiles(store, value, where, (0.5, 0.95))
        out.append(figure(f"time_to_{what}_median_s", _ms(median), "s", n, w))
        out.append(figure(f"time_to_{what}_p95_s", _ms(p95), "s", n, w))
    return out


def quality(store: EventStore, w: Window, after: timedelta = QUALITY_WINDOW) -> list[Figure]:
    """Resolution quality: healed runs whose fingerprint was not reported again within `after`.

    Only heals at least `after` before the window's end count (a younger one cannot be judged yet).
    Each heal's next report is one seek in the gaps' (fingerprint, recorded_at) index.
    """
    dialect = backend(store)
    judged = Window(w.since, w.until - after)
    nxt = (
        sa.select(sa.func.min(GAPS.c.recorded_at))
        .where(GAPS.c.fingerprint == RUNS.c.fingerprint, GAPS.c.recorded_at > RUNS.c.finished_at)
        .scalar_subquery()
    )
    heals = (
        sa.select(RUNS.c.finished_at.label("t"), nxt.label("next_report"))
        .where(RUNS.c.status == RunStatus.healed.value, *judged.within(RUNS.c.finished_at))
        .subquery()
    )
    gap_s = seconds(heals.c.next_report, dialect) - seconds(heals.c.t, dialect)
    held = sa.or_(heals.c.next_report.is_(None), gap_s > after.total_seconds())
    n, ok = _one(store, sa.select(sa.func.count(), rate(held)))
    return [figure("resolution_quality", _ratio(int(ok), int(n)), "fraction", int(n), w)]


def recurrence(store: EventStore, w: Window) -> list[Figure]:
    """Recurrence rate now, and its fall from the previous window of the same length.

    A gap report recurs when a run had healed its fingerprint before it was reported; both windows
    are counted in one pass over the reports, joined to each fingerprint's first heal."""
    prev = w.previous()
    first = (
        sa.select(RUNS.c.fingerprint.label("fp"), sa.func.min(RUNS.c.finished_at).label("healed_at"))
        .where(RUNS.c.status == RunStatus.healed.value, RUNS.c.finished_at < w.until)
        .group_by(RUNS.c.fingerprint)
        .subquery()
    )
    back = sa.and_(first.c.healed_at.is_not(None), first.c.healed_at < GAPS.c.recorded_at)
    now = GAPS.c.recorded_at >= w.since
    stmt = (
        sa.select(rate(now), rate(sa.and_(now, back)), rate(sa.not_(now)), rate(sa.and_(sa.not_(now), back)))
        .select_from(GAPS.outerjoin(first, first.c.fp == GAPS.c.fingerprint))
        .where(
            GAPS.c.kind != GapKind.predicted.value,
            GAPS.c.recorded_at >= prev.since,
            GAPS.c.recorded_at < w.until,
        )
    )
    n, came_back, prev_n, prev_back = (int(x) for x in _one(store, stmt))
    now_rate, prev_rate = _ratio(came_back, n), _ratio(prev_back, prev_n)
    reduction = prev_rate - now_rate if now_rate is not None and prev_rate is not None else None
    counted = n + prev_n if reduction is not None else 0
    return [
        figure("recurrence_rate", now_rate, "fraction", n, w),
        figure("recurrence_reduction", reduction, "fraction", counted, Window(prev.since, w.until)),
    ]


def predictions(store: EventStore, w: Window) -> list[Figure]:
    """Prevention effectiveness, the breach rate of predictions not acted on, precision and recall."""
    o, acted = PREDICTIONS.c.outcome, PREDICTIONS.c.acted
    stmt = sa.select(
        rate(sa.and_(acted, o.in_(("avoided", "breached")))),
        rate(sa.and_(acted, o == "avoided")),
        rate(sa.and_(sa.not_(acted), o.in_(("breached", "false")))),
        rate(sa.and_(sa.not_(acted), o == "breached")),
        rate(o.in_(("breached", "avoided"))),
        rate(o == "false"),
        rate(o == "missed"),
    ).where(*w.within(PREDICTIONS.c.checked_at))
    n_acted, avoided, n_idle, idle_breached, true, false, missed = (int(x) for x in _one(store, stmt))
    return [
        figure("prevention_effectiveness", _ratio(avoided, n_acted), "fraction", n_acted, w),
        figure("breach_rate_not_acted_on", _ratio(idle_breached, n_idle), "fraction", n_idle, w),
        figure("prediction_precision", _ratio(true, true + false), "fraction", true + false, w),
        figure("prediction_recall", _ratio(true, true + missed), "fraction", true + missed, w),
    ]


def evolution(store: EventStore, w: Window) -> list[Figure]:
    """Evolutions kept over those tried (kept or reverted)."""
    s = EVOLUTIONS.c.status
    stmt = sa.select(rate(s.in_(("kept", "reverted"))), rate(s == "kept")).where(
        *w.within(EVOLUTIONS.c.decided_at)
    )
    n, kept = (int(x) for x in _one(store, stmt))
    return [figure("evolution_success_rate", _ratio(kept, n), "fraction", n, w)]


def availability(store: EventStore, w: Window) -> list[Figure]:
    """Per component: probe answers that passed over all its probe answers."""
    stmt = (
        sa.select(
            PROBES.c.component,
            sa.func.coalesce(sa.func.sum(PROBES.c.answers), 0).label("n"),
            sa.func.coalesce(sa.func.sum(PROBES.c.passed), 0).label("ok"),
        )
        .where(*w.within(PROBES.c.at))
        .group_by(PROBES.c.component)
        .order_by(PROBES.c.component)
    )
    return [
        figure(
            f"availability:{r['component']}", _ratio(int(r["ok"]), int(r["n"])), "fraction", int(r["n"]), w
        )
        for r in store.query(stmt)
    ]


def compute(store: EventStore, window: Window | None = None, *, scratch: bool = False) -> list[Figure]:
    """Every figure over `window` (default: the last 30 days), in a fixed order; per-component and
    per-agent figures follow, one for each that has data.

    The heavy figures are read from the summary, first brought up to date with what the store
    gained since (metrics.summary); `scratch` derives them all from the events instead.
    """
    w = window or Window.last()
    if scratch:
        agents = runs_by_persona(store, w)
        heavy = [*timings(store, w), *quality(store, w), *recurrence(store, w)]
    else:
        from agentheal.metrics import from_summary as summed

        refresh(store)
        agents = summed.runs_by_persona(store, w)
        heavy = [*summed.timings(store, w), *summed.quality(store, w), *summed.recurrence(store, w)]
    return [
        agents[0],
        *heavy,
        *predictions(store, w),
        *evolution(store, w),
        *availability(store, w),
        *agents[1:],
    ]
