"""The heavy figures read from the summary (metrics.summary) instead of derived from the events at
each call: resolution rate and each agent's record, time to detect and to heal, resolution quality
and recurrence. Each reads one narrow index of a summary table; the definitions are those of
metrics.figures, which computes the same figures from scratch.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from agentheal.events import EventStore
from agentheal.metrics.figures import Figure, Window, _ms, _one, _ratio, figure
from agentheal.metrics.sql import rate
from agentheal.metrics.summary import QUALITY_WINDOW, SUMMARY_GAPS, SUMMARY_RUNS

_HEALED = "healed"


def runs_by_persona(store: EventStore, w: Window) -> list[Figure]:
    """Gap resolution rate and each persona's record (see figures.runs_by_persona)."""
    r = SUMMARY_RUNS.c
    stmt = (
        sa.select(
            r.persona.label("persona"),
            sa.func.count().label("n"),
            rate(r.status == _HEALED).label("healed"),
            rate(r.auto).label("auto"),
        )
        .where(*w.within(r.finished_at))
        .group_by(r.persona)
        .order_by(r.persona)
    )
    rows = store.query(stmt)
    n, auto = sum(int(x["n"]) for x in rows), sum(int(x["auto"]) for x in rows)
    out = [figure("gap_resolution_rate", _ratio(auto, n), "fraction", n, w)]
    for x in rows:
        if x["persona"] is not None:
            name = f"agent_resolution_rate:{x['persona']}"
            out.append(figure(name, _ratio(int(x["healed"]), int(x["n"])), "fraction", int(x["n"]), w))
    return out


def _percentiles(
    store: EventStore, value: Any, where: list[Any], ps: tuple[float, ...]
) -> tuple[int, list[float | None]]:
    """How many rows `where` selects and the nearest-rank percentiles of `value` over them: a count,
    then one row found by its rank in an index already in `value`'s order (no sort)."""
    n = int(store.query(sa.select(sa.func.count().label("n")).where(*where))[0]["n"])
    if n == 0:
        return 0, [None for _ in ps]
    out: list[float | None] = []
    for p in ps:
        rank = max(1, math.ceil(p * n))
        stmt = sa.select(value.label("v")).where(*where).order_by(value).offset(rank - 1).limit(1)
        out.append(float(store.query(stmt)[0]["v"]))
    return n, out


def timings(store: EventStore, w: Window) -> list[Figure]:
    """Time to detect (detectors' reports) and time to heal (healed runs): median and p95."""
    g, r = SUMMARY_GAPS.c, SUMMARY_RUNS.c
    detected = [g.timed == sa.true(), *w.within(g.recorded_at)]
    healed = [r.status == _HEALED, *w.within(r.finished_at)]
    out: list[Figure] = []
    for what, value, where in (("detect", g.lag_s, detected), ("heal", r.took_s, healed)):
        n, (median, p95) = _percentiles(store, value, where, (0.5, 0.95))
        out.append(figure(f"time_to_{what}_median_s", _ms(median), "s", n, w))
        out.append(figure(f"time_to_{what}_p95_s", _ms(p95), "s", n, w))
    return out


def quality(store: EventStore, w: Window) -> list[Figure]:
    """Healed runs not reported again within a day, of those a day old by the window's end."""
    r = SUMMARY_RUNS.c
    judged = Window(w.since, w.until - QUALITY_WINDOW)
    stmt = sa.select(sa.func.count(), rate(r.recurred)).where(
        r.status == _HEALED, *judged.within(r.finished_at)
    )
    n, recurred = (int(x) for x in _one(store, stmt))
    return [figure("resolution_quality", _ratio(n - recurred, n), "fraction", n, w)]


def recurrence(store: EventStore, w: Window) -> list[Figure]:
    """Recurrence rate now and its fall from the previous window (see figures.recurrence)."""
    g = SUMMARY_GAPS.c
    prev = w.previous()
    now = g.recorded_at >= w.since
    stmt = sa.select(
        rate(now), rate(sa.and_(now, g.back)), rate(sa.not_(now)), rate(sa.and_(sa.not_(now), g.back))
    ).where(g.counted == sa.true(), g.recorded_at >= prev.since, g.recorded_at < w.until)
    n, came_back, prev_n, prev_back = (int(x) for x in _one(store, stmt))
    now_rate, prev_rate = _ratio(came_back, n), _ratio(prev_back, prev_n)
    reduction = prev_rate - now_rate if now_rate is not None and prev_rate is not None else None
    counted = n + prev_n if reduction is not None else 0
    return [
        figure("recurrence_rate", now_rate, "fraction", n, w),
        figure("recurrence_reduction", reduction, "fraction", counted, Window(prev.since, w.until)),
    ]
