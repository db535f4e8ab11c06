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
from agentheal.metrics.records import EVOLUTIONS, PREDICTIONS, PROBES, ensure_tables
from agentheal.metrics.sql import backend, percentile, rate, seconds
from agentheal.models import GapKind, RunStatus, utcnow

DEFAULT_WINDOW = timedelta(days=30)
# A healed gap whose fingerprint is not reported again within this long was resolved well.
QUALITY_WINDOW = timedelta(days=1)
FINISHED = tuple(
    s.value for s in (RunStatus.healed, RunStatus.escalated, RunStatus.failed, RunStatus.rejected)
)
# Gap sources that are a person's words, not a detector's: time to detect is not theirs to measure.
PERSON_SOURCES = ("user", "feedback")


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


def resolution(store: EventStore, w: Window) -> list[Figure]:
    """Gap resolution rate: runs healed with no person's approval over runs that ended."""
    approved = sa.select(AUDIT.c.target).where(AUDIT.c.action == "approve", AUDIT.c.outcome == "ok")
    auto = sa.and_(RUNS.c.status == RunStatus.healed.value, RUNS.c.run_id.not_in(approved))
    stmt = sa.select(sa.func.count(), rate(auto)).where(
        RUNS.c.status.in_(FINISHED), *w.within(RUNS.c.finished_at)
    )
    n, healed = _one(store, stmt)
    return [figure("gap_resolution_rate", _ratio(int(healed), int(n)), "fraction", int(n), w)]


def _ms(value: float | None) -> float | None:
    """Seconds to the millisecond: SQLite's julian days carry about 50 µs of rounding."""
    return None if value is None else round(value, 3)


def timings(store: EventStore, w: Window) -> list[Figure]:
    """Time to detect (detector's gaps: first observed to recorded) and time to heal (healed runs)."""
    dialect = backend(store)
    out: list[Figure] = []
    detected = [
        GAPS.c.gap["source"].as_string().not_in(PERSON_SOURCES),
        GAPS.c.kind != GapKind.predicted.value,  # made before the breach: no lag to measure
        *w.within(GAPS.c.recorded_at),
    ]
    lag = seconds(GAPS.c.recorded_at, dialect) - seconds(GAPS.c.created_at, dialect)
    (n,) = _one(store, sa.select(sa.func.count()).where(*detected))
    for name, p in (("time_to_detect_median_s", 0.5), ("time_to_detect_p95_s", 0.95)):
        out.append(figure(name, _ms(percentile(store, lag, detected, int(n), p)), "s", int(n), w))
    healed = [
        RUNS.c.status == RunStatus.healed.value,
        RUNS.c.finished_at.is_not(None),
        *w.within(RUNS.c.finished_at),
    ]
    took = seconds(RUNS.c.finished_at, dialect) - seconds(RUNS.c.started_at, dialect)
    (n,) = _one(store, sa.select(sa.func.count()).where(*healed))
    for name, p in (("time_to_heal_median_s", 0.5), ("time_to_heal_p95_s", 0.95)):
        out.append(figure(name, _ms(percentile(store, took, healed, int(n), p)), "s", int(n), w))
    return out


def quality(store: EventStore, w: Window, after: timedelta = QUALITY_WINDOW) -> list[Figure]:
    """Resolution quality: healed runs whose fingerprint was not reported again within `after`.

    Only heals at least `after` before the window's end count (a younger one cannot be judged yet)."""
    dialect = backend(store)
    judged = Window(w.since, w.until - after)
    back = sa.exists().where(
        GAPS.c.fingerprint == RUNS.c.fingerprint,
        seconds(GAPS.c.recorded_at, dialect) > seconds(RUNS.c.finished_at, dialect),
        seconds(GAPS.c.recorded_at, dialect) <= seconds(RUNS.c.finished_at, dialect) + after.total_seconds(),
    )
    stmt = sa.select(sa.func.count(), rate(sa.not_(back))).where(
        RUNS.c.status == RunStatus.healed.value, *judged.within(RUNS.c.finished_at)
    )
    n, held = _one(store, stmt)
    return [figure("resolution_quality", _ratio(int(held), int(n)), "fraction", int(n), w)]


def _recurrence(store: EventStore, w: Window) -> tuple[int, int]:
    """Gap reports in the window, and those whose fingerprint a run had already healed before."""
    earlier = sa.exists().where(
        RUNS.c.fingerprint == GAPS.c.fingerprint,
        RUNS.c.status == RunStatus.healed.value,
        RUNS.c.finished_at < GAPS.c.recorded_at,
    )
    stmt = sa.select(sa.func.count(), rate(earlier)).where(
        GAPS.c.kind != GapKind.predicted.value, *w.within(GAPS.c.recorded_at)
    )
    n, back = _one(store, stmt)
    return int(n), int(back)


def recurrence(store: EventStore, w: Window) -> list[Figure]:
    """Recurrence rate now, and its fall from the previous window of the same length."""
    n, back = _recurrence(store, w)
    prev_n, prev_back = _recurrence(store, w.previous())
    now_rate, prev_rate = _ratio(back, n), _ratio(prev_back, prev_n)
    both = Window(w.previous().since, w.until)
    reduction = prev_rate - now_rate if now_rate is not None and prev_rate is not None else None
    return [
        figure("recurrence_rate", now_rate, "fraction", n, w),
        figure(
            "recurrence_reduction", reduction, "fraction", n + prev_n if reduction is not None else 0, both
        ),
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
        sa.select(PROBES.c.component, sa.func.count().label("n"), rate(PROBES.c.ok).label("ok"))
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


def agents(store: EventStore, w: Window) -> list[Figure]:
    """Per persona in charge at the end: its runs healed over its runs that ended."""
    stmt = (
        sa.select(
            RUNS.c.persona,
            sa.func.count().label("n"),
            rate(RUNS.c.status == RunStatus.healed.value).label("healed"),
        )
        .where(RUNS.c.persona.is_not(None), RUNS.c.status.in_(FINISHED), *w.within(RUNS.c.finished_at))
        .group_by(RUNS.c.persona)
        .order_by(RUNS.c.persona)
    )
    out = []
    for r in store.query(stmt):
        persona, n, healed = r["persona"], r["n"], r["healed"]
        out.append(
            figure(f"agent_resolution_rate:{persona}", _ratio(int(healed), int(n)), "fraction", int(n), w)
        )
    return out


def compute(store: EventStore, window: Window | None = None) -> list[Figure]:
    """Every figure over `window` (default: the last 30 days), in a fixed order; per-component and
    per-agent figures follow, one for each that has data."""
    ensure_tables(store)
    w = window or Window.last()
    return [
        *resolution(store, w),
        *timings(store, w),
        *quality(store, w),
        *recurrence(store, w),
        *predictions(store, w),
        *evolution(store, w),
        *availability(store, w),
        *agents(store, w),
    ]
