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
from agentheal.metrics.figures import Figure, Window, _ms, _ratio, figure
from agentheal.metrics.summary import FINISHED, QUALITY_WINDOW, SUMMARY_GAPS, SUMMARY_RUNS

_HEALED = "healed"


def _counts(store: EventStore, table: sa.Table, *wheres: list[Any]) -> list[int]:
    """One count per condition, in one statement: each a range of one of the table's indexes."""
    counts = [sa.select(sa.func.count()).select_from(table).where(*w).scalar_subquery() for w in wheres]
    if not counts:
        return []
    row = store.query(sa.select(*(c.label(f"c{i}") for i, c in enumerate(counts))))[0]
    return [int(row[f"c{i}"]) for i in range(len(counts))]


def _personas(store: EventStore) -> list[str | None]:
    """The personas with a row in the summary, each found by one seek past the one before (a skip
    scan: their number, not the rows', sets the cost); None when some runs ended with no persona."""
    r = SUMMARY_RUNS.c
    found: list[str | None] = []
    after: str | None = None
    while True:
        stmt = sa.select(sa.func.min(r.persona).label("p"))
        if after is not None:
            stmt = stmt.where(r.persona > after)
        after = store.query(stmt)[0]["p"]
        if after is None:
            break
        found.append(after)
    if store.query(sa.select(r.run_id).where(r.persona.is_(None)).limit(1)):
        found.append(None)
    return found


# A run that ended: its status and whether it healed with no person's approval.
_OUTCOMES = [(_HEALED, True), (_HEALED, False), *((s, False) for s in FINISHED if s != _HEALED)]


def runs_by_persona(store: EventStore, w: Window) -> list[Figure]:
    """Gap resolution rate and each persona's record (see figures.runs_by_persona): per persona and
    outcome, one count of a range of the summary's (persona, status, auto, finished_at) index."""
    r = SUMMARY_RUNS.c
    personas = _personas(store)
    wheres = []
    for persona in personas:
        who = r.persona.is_(None) if persona is None else r.persona == persona
        for status, by_itself in _OUTCOMES:
            wheres.append([who, r.status == status, r.auto == by_itself, *w.within(r.finished_at)])
    counts = _counts(store, SUMMARY_RUNS, *wheres)
    per = len(_OUTCOMES)
    n = sum(counts)
    auto = sum(counts[i * per] for i in range(len(personas)))  # (healed, by itself) comes first
    out = [figure("gap_resolution_rate", _ratio(auto, n), "fraction", n, w)]
    for i, persona in enumerate(personas):
        mine = counts[i * per : (i + 1) * per]
        ended, healed = sum(mine), mine[0] + mine[1]
        if persona is not None and ended:
            out.append(
                figure(f"agent_resolution_rate:{persona}", _ratio(healed, ended), "fraction", ended, w)
            )
    return out


def _percentiles(
    store: EventStore, value: Any, where: list[Any], ps: tuple[float, ...]
) -> tuple[int, list[float | None]]:
    """How many rows `where` selects and the nearest-rank percentiles of `value` over them: a count,
    then each one row found by its rank along an index already in `value`'s order (no sort), walked
    from whichever end is nearer (a p95 reads the top twentieth only)."""
    n = _counts(store, value.table, where)[0]
    if n == 0:
        return 0, [None for _ in ps]
    out: list[float | None] = []
    for p in ps:
        rank = max(1, math.ceil(p * n))
        from_top = n - rank < rank - 1
        order = value.desc() if from_top else value
        skip = n - rank if from_top else rank - 1
        stmt = sa.select(value.label("v")).where(*where).order_by(order).offset(skip).limit(1)
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
    judged = Window(w.since, w.until - QUALITY_WINDOW).within(r.finished_at)
    healed = [r.status == _HEALED, *judged]
    held, recurred = _counts(
        store, SUMMARY_RUNS, [*healed, r.recurred == sa.false()], [*healed, r.recurred == sa.true()]
    )
    n = held + recurred
    return [figure("resolution_quality", _ratio(held, n), "fraction", n, w)]


def recurrence(store: EventStore, w: Window) -> list[Figure]:
    """Recurrence rate now and its fall from the previous window (see figures.recurrence)."""
    g = SUMMARY_GAPS.c
    prev = w.previous()
    stay, back, prev_stay, prev_back = _counts(
        store,
        SUMMARY_GAPS,
        *(
            [g.counted == sa.true(), g.back == flag, *span.within(g.recorded_at)]
            for span in (w, prev)
            for flag in (sa.false(), sa.true())
        ),
    )
    n, came_back, prev_n = stay + back, back, prev_stay + prev_back
    now_rate, prev_rate = _ratio(came_back, n), _ratio(prev_back, prev_n)
    reduction = prev_rate - now_rate if now_rate is not None and prev_rate is not None else None
    counted = n + prev_n if reduction is not None else 0
    return [
        figure("recurrence_rate", now_rate, "fraction", n, w),
        figure("recurrence_reduction", reduction, "fraction", counted, Window(prev.since, w.until)),
    ]


def heal_times(store: EventStore, bounds: tuple[float, ...]) -> tuple[list[int], int, float]:
    """Every healed run's time to heal as a Prometheus histogram's parts, read from the summary
    (fold first: `summary.refresh`): how many took at most each bound, how many in all, and their
    summed seconds. Each count is one range of the (status, took_s) index."""
    r = SUMMARY_RUNS.c
    healed = r.status == _HEALED
    *under, n = _counts(store, SUMMARY_RUNS, *([healed, r.took_s <= b] for b in bounds), [healed])
    total = store.query(sa.select(sa.func.coalesce(sa.func.sum(r.took_s), 0.0).label("s")).where(healed))[0][
        "s"
    ]
    return under, n, float(total)
