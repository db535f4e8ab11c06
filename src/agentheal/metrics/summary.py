"""The figures' summary: one narrow row per ended heal run and per gap report, kept current from the
event store by folding in only what is new since the last fold.

What makes the figures slow to compute from scratch is not counting but deriving: each run's time
to heal, each report's time to detect and its source read out of JSON, each heal's next report of
its fingerprint, each report's earlier heal. A row here carries those derived values, computed by
the same SQL expressions the from-scratch figures use, so a figure read here equals the figure
computed from scratch (a test checks it after new events arrive).

A fold reads what is new: gap reports above the highest id folded, runs that ended since the
newest end folded (less a margin, for transactions that commit late), approvals above the
highest audit id folded. Counts guard the marks: when the store holds more (or fewer) ended runs,
reports or approvals than the summary, what differs is found by comparing the two, so rows written
out of order, back-dated or re-opened are never missed. Flags that depend on other rows (a report's
earlier heal, a heal's recurrence within a day) are recomputed for each fingerprint a fold touched.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from agentheal.event_schema import AUDIT, GAPS, RUNS, _UTCDateTime
from agentheal.events import EventStore
from agentheal.metrics.records import METADATA, engine_for
from agentheal.metrics.sql import backend, seconds
from agentheal.models import GapKind, RunStatus

# Statuses of a run that ended (a dry run changed nothing: not a heal).
FINISHED = tuple(
    s.value for s in (RunStatus.healed, RunStatus.escalated, RunStatus.failed, RunStatus.rejected)
)
# Gap sources that are a person's words, not a detector's: time to detect is not theirs to measure.
PERSON_SOURCES = ("user", "feedback")
# A healed gap whose fingerprint is not reported again within this long was resolved well.
QUALITY_WINDOW = timedelta(days=1)
# Runs that ended this long before the newest end folded are folded again: a transaction that
# stamped its end earlier may commit later.
LATE_COMMIT = timedelta(minutes=10)
# Above this many fingerprints touched, the flags are recomputed for all rows in one statement.
_MANY = 500
_HEALED = RunStatus.healed.value


def _req(name: str, type_: Any) -> sa.Column[Any]:
    return sa.Column(name, type_, nullable=False)


# One row per run that ended: its end, how long it took, whether it healed with no person's
# approval (auto) and whether its fingerprint was reported again within QUALITY_WINDOW (recurred).
SUMMARY_RUNS = sa.Table(
    "figure_runs",
    METADATA,
    sa.Column("run_id", sa.String(64), primary_key=True),
    _req("fingerprint", sa.String(64)),
    sa.Column("persona", sa.String(200)),
    _req("status", sa.String(32)),
    _req("finished_at", _UTCDateTime),
    _req("took_s", sa.Float),
    _req("auto", sa.Boolean),
    _req("recurred", sa.Boolean),
    sa.Index("ix_figure_runs_finished", "finished_at", "persona", "status", "auto"),
    sa.Index("ix_figure_runs_took", "status", "took_s", "finished_at"),
    sa.Index("ix_figure_runs_quality", "status", "recurred", "finished_at"),
    sa.Index("ix_figure_runs_groups", "persona", "status", "auto", "finished_at"),
    sa.Index("ix_figure_runs_fingerprint", "fingerprint", "status", "finished_at"),
)
# One row per gap report (its id in gaps): timed (a detector's, not a prediction: it has a time to
# detect, lag_s), counted (not a prediction: a recurrence candidate), back (a run had healed its
# fingerprint before it was reported).
SUMMARY_GAPS = sa.Table(
    "figure_gaps",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    _req("fingerprint", sa.String(64)),
    _req("recorded_at", _UTCDateTime),
    _req("lag_s", sa.Float),
    _req("timed", sa.Boolean),
    _req("counted", sa.Boolean),
    _req("back", sa.Boolean),
    sa.Index("ix_figure_gaps_counted", "counted", "back", "recorded_at"),
    sa.Index("ix_figure_gaps_timed", "timed", "lag_s", "recorded_at"),
    sa.Index("ix_figure_gaps_fingerprint", "fingerprint", "recorded_at"),
)
# How far the summary has read: one row.
SUMMARY_MARKS = sa.Table(
    "figure_marks",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    _req("gap_id", sa.Integer),
    _req("gaps", sa.Integer),
    sa.Column("run_end", _UTCDateTime),
    _req("runs", sa.Integer),
    _req("audit_id", sa.Integer),  # the highest id of an approval folded
    _req("approvals", sa.Integer),
)
# The same key the other upgraders of this database do not use: folds take turns on PostgreSQL.
_FOLD_LOCK = 0x666967757265  # "figure"


_APPROVED = sa.and_(AUDIT.c.action == "approve", AUDIT.c.outcome == "ok")
_ENDED = sa.and_(RUNS.c.status.in_(FINISHED), RUNS.c.finished_at.is_not(None))


def _approvals() -> sa.Select[Any]:
    return sa.select(AUDIT.c.target).where(_APPROVED)


def _state(conn: sa.Connection) -> dict[str, Any]:
    """What the store holds now, in the terms of the marks (each an index seek or an index count)."""

    def one(stmt: Any) -> Any:
        return conn.execute(stmt).scalar_one()

    return {
        "gap_id": one(sa.select(sa.func.coalesce(sa.func.max(GAPS.c.id), 0))),
        "gaps": one(sa.select(sa.func.count()).select_from(GAPS)),
        "runs": _ended_runs(conn),
        "audit_id": one(sa.select(sa.func.coalesce(sa.func.max(AUDIT.c.id), 0)).where(_APPROVED)),
        "approvals": one(sa.select(sa.func.count()).select_from(AUDIT).where(_APPROVED)),
    }


def _ended_runs(conn: sa.Connection) -> int:
    """How many runs ended: all of them less those open or dry, less any final one with no end (each
    term an index count over the few rows it names, not a pass over every run that ended)."""
    others = [s.value for s in RunStatus if s.value not in FINISHED]
    count = sa.select(sa.func.count()).select_from(RUNS)
    total = conn.execute(count).scalar_one()
    not_ended = conn.execute(count.where(RUNS.c.status.in_(others))).scalar_one()
    no_end = conn.execute(count.where(RUNS.c.status.in_(FINISHED), RUNS.c.finished_at.is_(None))).scalar_one()
    return int(total - not_ended - no_end)


def _marks(conn: sa.Connection) -> dict[str, Any]:
    row = conn.execute(sa.select(SUMMARY_MARKS).where(SUMMARY_MARKS.c.id == 1)).mappings().first()
    if row is None:
        return {"gap_id": 0, "gaps": 0, "run_end": None, "runs": 0, "audit_id": 0, "approvals": 0}
    return dict(row)


def _ended_since(conn: sa.Connection, when: datetime | None) -> bool:
    """Whether a run ended after `when` (one seek per final status in the runs' figures index)."""
    if when is None:
        return True
    stmt = sa.select(sa.literal(1)).where(RUNS.c.status.in_(FINISHED), RUNS.c.finished_at > when).limit(1)
    return conn.execute(stmt).first() is not None


def _current(conn: sa.Connection, marks: dict[str, Any], now: dict[str, Any]) -> bool:
    same = all(marks[k] == now[k] for k in ("gap_id", "gaps", "runs", "audit_id", "approvals"))
    return same and not (now["runs"] and _ended_since(conn, marks["run_end"]))


def refresh(store: EventStore) -> bool:
    """Fold what the event store gained since the last fold into the summary.

    Reads a handful of index seeks and counts when nothing is new, and writes nothing then.

    Returns:
        Whether anything was folded.
    """
    engine = engine_for(store)
    with engine.connect() as conn:
        if _current(conn, _marks(conn), _state(conn)):
            return False
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FOLD_LOCK})
        else:  # take the write lock before reading the marks: two folds at once take turns
            conn.execute(SUMMARY_MARKS.update().where(SUMMARY_MARKS.c.id == 0).values(gaps=0))
        marks = _marks(conn)
        if _current(conn, marks, _state(conn)):
            return False
        _fold(conn, backend(store), marks)
    return True


def _fold(conn: sa.Connection, dialect: str, marks: dict[str, Any]) -> None:
    touched: set[str] | None = set()  # None: every fingerprint
    # gap reports: those above the last id, then (if the counts still differ) any not yet here
    touched = _merge(touched, _fold_gaps(conn, dialect, GAPS.c.id > marks["gap_id"]))
    if _count(conn, SUMMARY_GAPS) != _count(conn, GAPS):
        touched = None
        _fold_gaps(conn, dialect, GAPS.c.id.not_in(sa.select(SUMMARY_GAPS.c.id)))
    # ended runs: those that ended since the last fold (less the margin), then any that differ
    if marks["run_end"] is None:
        touched = _merge(touched, _fold_runs(conn, dialect, None))
    else:
        recent = sa.and_(_ENDED, RUNS.c.finished_at >= marks["run_end"] - LATE_COMMIT)
        ids = [r[0] for r in conn.execute(sa.select(RUNS.c.run_id).where(recent))]
        touched = _merge(touched, _fold_runs(conn, dialect, ids))
    if _count(conn, SUMMARY_RUNS) != _ended_runs(conn):
        touched = None
        gone = SUMMARY_RUNS.c.run_id.not_in(sa.select(RUNS.c.run_id).where(_ENDED))
        conn.execute(SUMMARY_RUNS.delete().where(gone))
        have = sa.select(SUMMARY_RUNS.c.run_id)
        missing = conn.execute(sa.select(RUNS.c.run_id).where(_ENDED, RUNS.c.run_id.not_in(have)))
        _fold_runs(conn, dialect, [r[0] for r in missing])
    audit_id = _approvals_since(conn, marks["audit_id"])
    approvals = _count(conn, AUDIT, _APPROVED)
    if approvals != marks["approvals"] + _count(conn, AUDIT, _APPROVED, AUDIT.c.id > marks["audit_id"]):
        # an approval committed below the mark: judge every run again
        auto = sa.and_(SUMMARY_RUNS.c.status == _HEALED, SUMMARY_RUNS.c.run_id.not_in(_approvals()))
        conn.execute(SUMMARY_RUNS.update().values(auto=auto))
    _flags(conn, dialect, touched)
    values = {
        "gap_id": conn.execute(sa.select(sa.func.coalesce(sa.func.max(SUMMARY_GAPS.c.id), 0))).scalar_one(),
        "gaps": _count(conn, SUMMARY_GAPS),
        "run_end": conn.execute(sa.select(sa.func.max(SUMMARY_RUNS.c.finished_at))).scalar(),
        "runs": _count(conn, SUMMARY_RUNS),
        "audit_id": audit_id,
        "approvals": approvals,
    }
    if conn.execute(SUMMARY_MARKS.update().where(SUMMARY_MARKS.c.id == 1).values(values)).rowcount == 0:
        conn.execute(SUMMARY_MARKS.insert().values(id=1, **values))


def _approvals_since(conn: sa.Connection, mark: int) -> int:
    """Runs approved after the mark healed with a person's help: not by themselves. The new mark."""
    rows = conn.execute(sa.select(AUDIT.c.id, AUDIT.c.target).where(_APPROVED, AUDIT.c.id > mark)).all()
    targets = sorted({r[1] for r in rows if r[1] is not None})
    for i in range(0, len(targets), 500):
        stmt = SUMMARY_RUNS.update().where(SUMMARY_RUNS.c.run_id.in_(targets[i : i + 500]))
        conn.execute(stmt.values(auto=False))
    return max([mark, *(int(r[0]) for r in rows)])


def _merge(touched: set[str] | None, more: set[str] | None) -> set[str] | None:
    if touched is None or more is None:
        return None
    touched |= more
    return None if len(touched) > _MANY else touched


def _count(conn: sa.Connection, table: sa.Table, *where: Any) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def _fold_gaps(conn: sa.Connection, dialect: str, which: Any) -> set[str] | None:
    """Write the rows of these gap reports; the fingerprints they touched (None: too many)."""
    found = conn.execute(sa.select(GAPS.c.fingerprint).where(which).distinct().limit(_MANY + 1))
    fps: set[str] | None = {r[0] for r in found}
    if fps is not None and len(fps) > _MANY:
        fps = None
    predicted = GAPS.c.kind == GapKind.predicted.value
    detector = sa.and_(sa.not_(predicted), GAPS.c.gap["source"].as_string().not_in(PERSON_SOURCES))
    select = sa.select(
        GAPS.c.id,
        GAPS.c.fingerprint,
        GAPS.c.recorded_at,
        seconds(GAPS.c.recorded_at, dialect) - seconds(GAPS.c.created_at, dialect),
        sa.case((detector, sa.true()), else_=sa.false()),  # a source read as NULL is no detector's
        sa.not_(predicted),
        sa.false(),
    ).where(which)
    cols = ["id", "fingerprint", "recorded_at", "lag_s", "timed", "counted", "back"]
    conn.execute(SUMMARY_GAPS.insert().from_select(cols, select))
    return fps


def _fold_runs(conn: sa.Connection, dialect: str, ids: list[str] | None) -> set[str] | None:
    """(Re)write the rows of these ended runs (None: every ended run); the fingerprints they
    touched (None: too many to name)."""
    healed = RUNS.c.status == _HEALED
    select = sa.select(
        RUNS.c.run_id,
        RUNS.c.fingerprint,
        RUNS.c.persona,
        RUNS.c.status,
        RUNS.c.finished_at,
        seconds(RUNS.c.finished_at, dialect) - seconds(RUNS.c.started_at, dialect),
        sa.and_(healed, RUNS.c.run_id.not_in(_approvals())),
        sa.false(),
    )
    cols = ["run_id", "fingerprint", "persona", "status", "finished_at", "took_s", "auto", "recurred"]
    if ids is None:
        conn.execute(SUMMARY_RUNS.delete())
        conn.execute(SUMMARY_RUNS.insert().from_select(cols, select.where(_ENDED)))
        return None
    fps: set[str] = set()
    for i in range(0, len(ids), 500):  # bound the number of parameters in one statement
        chunk = ids[i : i + 500]
        here = SUMMARY_RUNS.c.run_id.in_(chunk)
        fps |= {r[0] for r in conn.execute(sa.select(SUMMARY_RUNS.c.fingerprint).where(here))}
        conn.execute(SUMMARY_RUNS.delete().where(here))
        conn.execute(SUMMARY_RUNS.insert().from_select(cols, select.where(RUNS.c.run_id.in_(chunk))))
        fps |= {r[0] for r in conn.execute(sa.select(RUNS.c.fingerprint).where(RUNS.c.run_id.in_(chunk)))}
    return None if len(fps) > _MANY else fps


def _flags(conn: sa.Connection, dialect: str, touched: set[str] | None) -> None:
    """Recompute, for the fingerprints touched, each report's `back` and each heal's `recurred`."""
    if touched is not None and not touched:
        return
    g, r = SUMMARY_GAPS, SUMMARY_RUNS
    healed_before = sa.exists().where(
        r.c.fingerprint == g.c.fingerprint, r.c.status == _HEALED, r.c.finished_at < g.c.recorded_at
    )
    after = QUALITY_WINDOW.total_seconds()
    later = g.alias("later")
    within = seconds(later.c.recorded_at, dialect) - seconds(r.c.finished_at, dialect) <= after
    reported_again = sa.exists().where(
        later.c.fingerprint == r.c.fingerprint, later.c.recorded_at > r.c.finished_at, within
    )
    back = g.update().values(back=healed_before)
    recurred = r.update().values(recurred=sa.and_(r.c.status == _HEALED, reported_again))
    if touched is None:
        conn.execute(back)
        conn.execute(recurred)
        return
    fps = sorted(touched)
    conn.execute(back.where(g.c.fingerprint.in_(fps)))
    conn.execute(recurred.where(r.c.fingerprint.in_(fps)))
