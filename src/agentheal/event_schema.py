"""The event store's tables, the statements a heal runs on them again and again, and SQLite's
fast inserts: the schema half of `agentheal.events`.

The tables are SQLAlchemy Core, portable across databases; times are stored as naive UTC and
read back aware; JSON columns use one serializer that knows agentheal's models. A change to a
table here needs an Alembic revision in agentheal/migrations too (a test compares the two).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from agentheal.models import RunStatus

OPEN_STATUSES = (RunStatus.running.value, RunStatus.awaiting_approval.value, RunStatus.awaiting_remote.value)


def _json_default(value: Any) -> Any:
    """JSON for the types a result dict carries besides plain JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True)


class _UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Stored as naive UTC (portable across databases), read back timezone-aware in UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # a time with no zone (e.g. from a gap file) is taken as UTC
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _req(name: str, type_: Any, *args: Any, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, type_, *args, nullable=False, **kw)


def _run_ref() -> sa.Column[Any]:
    return _req("run_id", sa.String(64), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)


METADATA = sa.MetaData()
GAPS = sa.Table(
    "gaps",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    _req("fingerprint", sa.String(64), index=True),
    _req("kind", sa.String(32)),
    sa.Column("component", sa.String(200)),
    _req("severity", sa.String(16)),
    _req("text", sa.Text),
    _req("gap", sa.JSON),
    _req("created_at", _UTCDateTime),
    _req("recorded_at", _UTCDateTime, index=True),
    # a heal's next report of its fingerprint: one seek (the figures' recurrence)
    sa.Index("ix_gaps_fingerprint_recorded_at", "fingerprint", "recorded_at"),
)
RUNS = sa.Table(
    "runs",
    METADATA,
    sa.Column("run_id", sa.String(64), primary_key=True),
    _req("fingerprint", sa.String(64), index=True),
    sa.Column("component", sa.String(200)),
    _req("gap_text", sa.Text),
    _req("gap", sa.JSON),
    _req("status", sa.String(32), index=True),
    sa.Column("persona", sa.String(200)),
    sa.Column("source", sa.String(32)),
    sa.Column("reason", sa.Text),
    sa.Column("result", sa.JSON),
    _req("started_at", _UTCDateTime, index=True),
    sa.Column("finished_at", _UTCDateTime),
    # the runs' figures and engines' last activity read this narrow index, not rows holding a result
    sa.Index("ix_runs_figures", "status", "finished_at", "started_at", "fingerprint", "persona", "run_id"),
)
NODE_EVENTS = sa.Table(
    "node_events",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    _run_ref(),
    _req("node", sa.String(100)),
    _req("detail", sa.Text),
    _req("data", sa.JSON),
    _req("at", _UTCDateTime),
    sa.Index("ix_node_events_node_at", "node", "at"),  # an engine's last step: one seek
)
ACTIONS = sa.Table(
    "actions",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    _run_ref(),
    # what count_actions filters on as columns; the step and its result whole, as JSON
    _req("action", sa.String(100)),
    _req("component", sa.String(200)),
    _req("dry_run", sa.Boolean),
    _req("outcome", sa.String(16)),
    _req("step", sa.JSON),
    _req("result", sa.JSON),
    _req("at", _UTCDateTime),
    sa.Index("ix_actions_component_action_at", "component", "action", "at"),
)
LLM_CALLS = sa.Table(
    "llm_calls",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    _run_ref(),
    _req("model", sa.String(200)),
    _req("purpose", sa.String(100)),
    _req("prompt_tokens", sa.Integer),
    _req("completion_tokens", sa.Integer),
    _req("duration_s", sa.Float),
    _req("ok", sa.Boolean),
    _req("at", _UTCDateTime),
    # added after the first release (migration 0002)
    _req("usage_known", sa.Boolean, server_default=sa.true()),
    _req("error", sa.Text, server_default=""),
)
# Who changed what, through which door: gaps submitted, approvals, rejections, imports, agent
# changes, tokens, and changes refused for want of a token or a role. Only ever appended to.
AUDIT = sa.Table(
    "audit",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    _req("at", _UTCDateTime, index=True),
    _req("actor", sa.String(200), index=True),
    sa.Column("role", sa.String(16)),
    _req("door", sa.String(16)),
    _req("action", sa.String(64), index=True),
    sa.Column("target", sa.String(200)),
    _req("outcome", sa.String(16)),
    _req("detail", sa.Text),
    _req("data", sa.JSON),
)
TABLES = {t.name: t for t in (GAPS, RUNS, NODE_EVENTS, ACTIONS, LLM_CALLS, AUDIT)}
# Statements built once, values bound at execution: a heal writes a dozen rows, and building and
# caching a new statement for each costs more than SQLite's commit.
INSERTS = {name: t.insert() for name, t in TABLES.items()}
LLM_USAGE = sa.select(
    sa.func.count(),
    sa.func.coalesce(sa.func.sum(LLM_CALLS.c.prompt_tokens), 0),
    sa.func.coalesce(sa.func.sum(LLM_CALLS.c.completion_tokens), 0),
    sa.func.coalesce(sa.func.sum(sa.case((LLM_CALLS.c.usage_known.is_(False), 1), else_=0)), 0),
).where(LLM_CALLS.c.run_id == sa.bindparam("run_id"))
# The SET clause comes from the keys passed with it.
UPDATE_RUN = RUNS.update().where(RUNS.c.run_id == sa.bindparam("which_run"))
# PostgreSQL: a fingerprint's turn, a lock until the transaction ends. Starting its run
# (EventStore.begin_heal), queuing its gap (work.queue) and queuing its run's resume (work.resumes)
# take it, so they never interleave. (psycopg's parameter style: run it as driver SQL.)
FINGERPRINT_TURN = "SELECT pg_advisory_xact_lock(hashtextextended(%(turn_fingerprint)s, 0))"

OPEN_RUN = (
    sa.select(RUNS.c.run_id)
    .where(RUNS.c.fingerprint == sa.bindparam("fingerprint"), RUNS.c.status.in_(OPEN_STATUSES))
    .order_by(RUNS.c.started_at.desc())
    .limit(1)
)
COUNT_ACTIONS = (
    sa.select(sa.func.count())
    .select_from(ACTIONS)
    .where(
        ACTIONS.c.component == sa.bindparam("component"),
        ACTIONS.c.action == sa.bindparam("action"),
        ACTIONS.c.dry_run.is_(False),
        ACTIONS.c.outcome.in_(("ok", "failed")),
        ACTIONS.c.at >= sa.bindparam("since"),
    )
)


FastInsert = tuple[str, list[tuple[str, Any]]]  # SQL, and per parameter: (value key, bind conversion)

# The rows a heal writes most (node transitions, LLM calls, actions): on SQLite they skip
# SQLAlchemy's per-statement execution machinery, which costs twice the insert itself.
FAST_TABLES = ("node_events", "llm_calls", "actions")


def fast_inserts(dialect: sa.Dialect, tables: tuple[str, ...] = FAST_TABLES) -> dict[str, FastInsert]:
    """Per table, its INSERT as the dialect compiles it, with each parameter's bind conversion.

    SQLite (qmark): positional, in the compiled order. PostgreSQL (pyformat): named, with no
    RETURNING, each column's conversion that of its type's implementation for the dialect.
    """
    made: dict[str, FastInsert] = {}
    for name in tables:
        table = TABLES[name]
        columns = [c for c in table.columns if not c.primary_key]
        values = {c.name: sa.bindparam(c.name, type_=c.type) for c in columns}
        if dialect.paramstyle == "qmark":
            compiled = table.insert().values(values).compile(dialect=dialect)
            types = {c.name: c.type for c in columns}
            order = compiled.positiontup or []
            made[name] = (compiled.string, [(key, types[key].bind_processor(dialect)) for key in order])
        elif dialect.paramstyle == "pyformat":
            compiled = table.insert().inline().values(values).compile(dialect=dialect)
            made[name] = (
                compiled.string,
                [(c.name, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in columns],
            )
    return made
