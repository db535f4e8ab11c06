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
earlier heal, a heal's recurrence within a day) are computed as a row is written; a new row can only
turn such a flag on in older rows, and only those rows that can change are looked at; a run whose
row changed or went has every flag of its fingerprint computed again.
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
# Ids or fingerprints named in one statement (a bound on its parameters).
_CHUNK = 500
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
    """Runs first, then gap reports, each row written with its flags computed against everything
    already here; then the flags of older rows a new row turns on (an earlier heal for the reports
    after it, a report within a day for the heals before it); a run whose row changed or went
    (re-opened, another status) has its fingerprint's flags computed again."""
    gaps_from = conn.execute(
        sa.select(sa.func.min(GAPS.c.recorded_at)).where(GAPS.c.id > marks["gap_id"])
    ).scalar()
    unsettled: set[str] | None = set()  # fingerprints whose flags are all recomputed (None: all)
    if marks["run_end"] is None:
        healed = _fold_runs(conn, dialect, None)
    else:
        ids = _changed_runs(conn, marks["run_end"])
        unsettled = _fingerprints(conn, SUMMARY_RUNS, SUMMARY_RUNS.c.run_id, ids)
        healed = _fold_runs(conn, dialect, ids)
    if _count(conn, SUMMARY_RUNS) != _ended_runs(conn):  # written out of order, or re-opened
        unsettled = None
        gone = SUMMARY_RUNS.c.run_id.not_in(sa.select(RUNS.c.run_id).where(_ENDED))
        conn.execute(SUMMARY_RUNS.delete().where(gone))
        have = sa.select(SUMMARY_RUNS.c.run_id)
        missing = conn.execute(sa.select(RUNS.c.run_id).where(_ENDED, RUNS.c.run_id.not_in(have)))
        healed |= _fold_runs(conn, dialect, [r[0] for r in missing])
    reported = _fold_gaps(conn, dialect, GAPS.c.id > marks["gap_id"])
    if _count(conn, SUMMARY_GAPS) != _count(conn, GAPS):  # committed below the mark
        gaps_from = None
        reported |= _fold_gaps(conn, dialect, GAPS.c.id.not_in(sa.select(SUMMARY_GAPS.c.id)))
    _turn_on(conn, dialect, healed, reported, gaps_from)
    _recompute(conn, dialect, unsettled)
    audit_id = _approvals_since(conn, marks["audit_id"])
    approvals = _count(conn, AUDIT, _APPROVED)
    if approvals != marks["approvals"] + _count(conn, AUDIT, _APPROVED, AUDIT.c.id > marks["audit_id"]):
        # an approval committed below the mark: judge every run again
        auto = sa.and_(SUMMARY_RUNS.c.status == _HEALED, SUMMARY_RUNS.c.run_id.not_in(_approvals()))
        conn.execute(SUMMARY_RUNS.update().values(auto=auto))
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
    for i in range(0, len(targets), _CHUNK):
        stmt = SUMMARY_RUNS.update().where(SUMMARY_RUNS.c.run_id.in_(targets[i : i + _CHUNK]))
        conn.execute(stmt.values(auto=False))
    return max([mark, *(int(r[0]) for r in rows)])


def _count(conn: sa.Connection, table: sa.Table, *where: Any) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def _fingerprints(conn: sa.Connection, table: sa.Table, key: Any, ids: list[Any]) -> set[str]:
    """The fingerprints of the rows of `table` whose `key` is in `ids`."""
    found: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        rows = conn.execute(sa.select(table.c.fingerprint).where(key.in_(ids[i : i + _CHUNK])).distinct())
        found |= {r[0] for r in rows}
    return found


def _healed_before() -> Any:
    """A report's flag `back`: a run here healed its fingerprint before it was reported."""
    g, r = SUMMARY_GAPS, SUMMARY_RUNS
    return sa.exists().where(
        r.c.fingerprint == g.c.fingerprint, r.c.status == _HEALED, r.c.finished_at < g.c.recorded_at
    )


def _reported_again(dialect: str) -> Any:
    """A healed run's flag `recurred`: a report here of its fingerprint within a day after it."""
    r, later = SUMMARY_RUNS.c, SUMMARY_GAPS.alias("later").c
    within = (
        seconds(later.recorded_at, dialect) - seconds(r.finished_at, dialect)
        <= QUALITY_WINDOW.total_seconds()
    )
    return sa.and_(
        r.status == _HEALED,
        sa.exists().where(later.fingerprint == r.fingerprint, later.recorded_at > r.finished_at, within),
    )


def _fold_gaps(conn: sa.Connection, dialect: str, which: Any) -> set[str]:
    """Write the rows of these gap reports (`back` computed against the runs here); their fingerprints."""
    fps = {r[0] for r in conn.execute(sa.select(GAPS.c.fingerprint).where(which).distinct())}
    if not fps:
        return fps
    predicted = GAPS.c.kind == GapKind.predicted.value
    detector = sa.and_(sa.not_(predicted), GAPS.c.gap["source"].as_string().not_in(PERSON_SOURCES))
    r = SUMMARY_RUNS.c
    back = sa.exists().where(
        r.fingerprint == GAPS.c.fingerprint, r.status == _HEALED, r.finished_at < GAPS.c.recorded_at
    )
    select = sa.select(
        GAPS.c.id,
        GAPS.c.fingerprint,
        GAPS.c.recorded_at,
        seconds(GAPS.c.recorded_at, dialect) - seconds(GAPS.c.created_at, dialect),
        sa.case((detector, sa.true()), else_=sa.false()),  # a source read as NULL is no detector's
        sa.not_(predicted),
        back,
    ).where(which)
    cols = ["id", "fingerprint", "recorded_at", "lag_s", "timed", "counted", "back"]
    conn.execute(SUMMARY_GAPS.insert().from_select(cols, select))
    return fps


def _changed_runs(conn: sa.Connection, run_end: datetime) -> list[str]:
    """Runs that ended since `run_end` (less the margin) whose row here is missing or differs."""
    recent = sa.and_(_ENDED, RUNS.c.finished_at >= run_end - LATE_COMMIT)
    ended = {
        r[0]: (r[1], r[2])
        for r in conn.execute(sa.select(RUNS.c.run_id, RUNS.c.status, RUNS.c.finished_at).where(recent))
    }
    ids = sorted(ended)
    here: dict[str, tuple[str, datetime]] = {}
    s = SUMMARY_RUNS.c
    for i in range(0, len(ids), _CHUNK):
        rows = conn.execute(
            sa.select(s.run_id, s.status, s.finished_at).where(s.run_id.in_(ids[i : i + _CHUNK]))
        )
        here |= {r[0]: (r[1], r[2]) for r in rows}
    return [run_id for run_id in ids if here.get(run_id) != ended[run_id]]


def _fold_runs(conn: sa.Connection, dialect: str, ids: list[str] | None) -> set[str]:
    """(Re)write the rows of these ended runs (None: every ended run), `recurred` computed against
    the store's gap reports; the fingerprints of those that healed."""
    healed = RUNS.c.status == _HEALED
    within = (
        seconds(GAPS.c.recorded_at, dialect) - seconds(RUNS.c.finished_at, dialect)
        <= QUALITY_WINDOW.total_seconds()
    )
    again = sa.exists().where(
        GAPS.c.fingerprint == RUNS.c.fingerprint, GAPS.c.recorded_at > RUNS.c.finished_at, within
    )
    select = sa.select(
        RUNS.c.run_id,
        RUNS.c.fingerprint,
        RUNS.c.persona,
        RUNS.c.status,
        RUNS.c.finished_at,
        seconds(RUNS.c.finished_at, dialect) - seconds(RUNS.c.started_at, dialect),
        sa.and_(healed, RUNS.c.run_id.not_in(_approvals())),
        sa.and_(healed, again),
    )
    cols = ["run_id", "fingerprint", "persona", "status", "finished_at", "took_s", "auto", "recurred"]
    if ids is None:
        conn.execute(SUMMARY_RUNS.delete())
        conn.execute(SUMMARY_RUNS.insert().from_select(cols, select.where(_ENDED)))
        rows = conn.execute(
            sa.select(SUMMARY_RUNS.c.fingerprint).where(SUMMARY_RUNS.c.status == _HEALED).distinct()
        )
        return {r[0] for r in rows}
    fps: set[str] = set()
    for i in range(0, len(ids), _CHUNK):  # bound the number of parameters in one statement
        chunk = SUMMARY_RUNS.c.run_id.in_(ids[i : i + _CHUNK])
        conn.execute(SUMMARY_RUNS.delete().where(chunk))
        conn.execute(
            SUMMARY_RUNS.insert().from_select(cols, select.where(RUNS.c.run_id.in_(ids[i : i + _CHUNK])))
        )
        rows = conn.execute(
            sa.select(SUMMARY_RUNS.c.fingerprint).where(chunk, SUMMARY_RUNS.c.status == _HEALED)
        )
        fps |= {r[0] for r in rows}
    return fps


def _turn_on(
    conn: sa.Connection, dialect: str, healed: set[str], reported: set[str], gaps_from: datetime | None
) -> None:
    """Flags that new rows turn on in older ones (a new row never turns one off): reports not yet
    `back` of the fingerprints just healed; heals not yet `recurred` of the fingerprints just
    reported, that ended within a day before the earliest new report."""
    g, r = SUMMARY_GAPS, SUMMARY_RUNS
    fps = sorted(healed)
    for i in range(0, len(fps), _CHUNK):
        chunk = g.c.fingerprint.in_(fps[i : i + _CHUNK])
        conn.execute(g.update().where(chunk, g.c.back == sa.false(), _healed_before()).values(back=True))
    fps = sorted(reported)
    for i in range(0, len(fps), _CHUNK):
        where = [r.c.fingerprint.in_(fps[i : i + _CHUNK]), r.c.status == _HEALED, r.c.recurred == sa.false()]
        if gaps_from is not None:
            where.append(r.c.finished_at >= gaps_from - QUALITY_WINDOW)
        conn.execute(r.update().where(*where, _reported_again(dialect)).values(recurred=True))


def _recompute(conn: sa.Connection, dialect: str, fps: set[str] | None) -> None:
    """Every report's `back` and every heal's `recurred`, for these fingerprints (None: all)."""
    if fps is not None and not fps:
        return
    g, r = SUMMARY_GAPS, SUMMARY_RUNS
    back = g.update().values(back=_healed_before())
    recurred = r.update().values(recurred=_reported_again(dialect))
    if fps is None:
        conn.execute(back)
        conn.execute(recurred)
        return
    ordered = sorted(fps)
    for i in range(0, len(ordered), _CHUNK):
        conn.execute(back.where(g.c.fingerprint.in_(ordered[i : i + _CHUNK])))
        conn.execute(recurred.where(r.c.fingerprint.in_(ordered[i : i + _CHUNK])))
