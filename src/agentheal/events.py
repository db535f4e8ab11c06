"""The event store: gaps, heal runs, node transitions, actions and LLM calls, as they happen.

Every figure agentheal reports is computed from these rows, so a write commits at once: a
process killed in the middle of a run loses nothing it already recorded. SQLAlchemy Core keeps
the SQL portable; SQLite (the default) gets WAL and a busy timeout on connect so a heal and a
`runs` listing can share the file; PostgreSQL (`AGENTHEAL_DATABASE_URL`, psycopg 3) has the same
tables. Alembic's migrations (agentheal/migrations) make them: see `agentheal.storage.schema`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

from agentheal.event_schema import (
    AUDIT,
    COUNT_ACTIONS,
    FINGERPRINT_TURN,
    GAPS,
    INSERTS,
    LLM_USAGE,
    NODE_EVENTS,
    OPEN_RUN,
    OPEN_STATUSES,
    RUNS,
    TABLES,
    UPDATE_RUN,
    FastInsert,
    dumps_json,
    fast_inserts,
)
from agentheal.models import ActionResult, Gap, LLMUsage, RunStatus, Step, utcnow
from agentheal.redaction import redact_data
from agentheal.storage.engines import BUSY_TIMEOUT_S as BUSY_TIMEOUT_S  # SQLite's; others import it here
from agentheal.storage.engines import IdlePing, KeptConnection, event_store_engine, underneath
from agentheal.storage.errors import StorageError
from agentheal.storage.urls import shown, sqlalchemy_url

# Run ids are uuid4 hex; shorter prefixes than this match too many runs to be meant.
MIN_PREFIX = 4
# PostgreSQL: a thread's writer connection idle this long is pinged before its next write.
IDLE_PING_S = 5.0


# The columns that hold observed or free text: redacted before they are written, so the store
# (and `runs show`, which reads it) never keeps a secret an observation or a gap carried.
_FREE_TEXT = frozenset({"text", "gap", "gap_text", "detail", "data", "step", "result", "reason", "error"})


# PostgreSQL: inserts written underneath SQLAlchemy; not actions, which are fenced (agentheal.work.fencing)
_PG_FAST = ("node_events", "llm_calls", "audit")
# A run's held node events (hold_nodes) are written at the latest with the first event said this
# long after the oldest of them: a watcher's story lags a slow step by no more than that.
HOLD_S = 0.25


def _pg_many(dialect: sa.Dialect, table: sa.Table) -> str:
    """PostgreSQL: one INSERT of many rows of `table`, a parameter per column holding an array of
    its values (the same bind conversions as `fast_inserts`), inserted in the arrays' order."""
    columns = [c for c in table.columns if not c.primary_key]
    names = ", ".join(c.name for c in columns)
    arrays = ", ".join(f"%({c.name})s::{dialect.type_compiler_instance.process(c.type)}[]" for c in columns)
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {names}"
        f" FROM unnest({arrays}) WITH ORDINALITY AS r({names}, n) ORDER BY n"
    )


# begin_heal's values: the gap's row and its run's
_GAP_KEYS = ("fingerprint", "kind", "component", "severity", "text", "gap", "created_at", "recorded_at")
_RUN_KEYS = ("run_id", "fingerprint", "component", "gap_text", "gap", "status", "started_at")
# (the open statuses are constants with no quote in them: written into the statement)
_OPEN_LITERALS: list[Any] = [sa.literal_column(f"'{status}'") for status in OPEN_STATUSES]


def _pg_begin_heal(dialect: sa.Dialect) -> FastInsert:
    """PostgreSQL: begin_heal's writes after its turn in one statement: the gap's row, the open run of
    its fingerprint, and the new run's row unless there is one (one snapshot: the gap's row is no
    run). Returns the open run's id, if any. The parameters are `g_`/`r_` and the column's name."""
    binds: list[tuple[str, Any]] = []

    def bind(table: sa.Table, prefix: str, key: str) -> Any:
        column = table.c[key]
        binds.append((prefix + key, column.type.dialect_impl(dialect).bind_processor(dialect)))
        return sa.bindparam(prefix + key, type_=column.type)

    gap = GAPS.insert().inline().values({k: bind(GAPS, "g_", k) for k in _GAP_KEYS})
    run_id = RUNS.c.run_id
    open_run = (
        sa.select(run_id)
        .where(RUNS.c.fingerprint == sa.bindparam("g_fingerprint"), RUNS.c.status.in_(_OPEN_LITERALS))
        .order_by(RUNS.c.started_at.desc())
        .limit(sa.literal_column("1"))
    )
    row = sa.select(*(bind(RUNS, "r_", k) for k in _RUN_KEYS)).where(sa.text("NOT EXISTS (SELECT 1 FROM o)"))
    run = RUNS.insert().from_select(list(_RUN_KEYS), row)

    def sql(stmt: Any) -> str:
        return str(stmt.compile(dialect=dialect))

    return f"WITH g AS ({sql(gap)}), o AS ({sql(open_run)}), r AS ({sql(run)}) SELECT run_id FROM o", binds


@dataclass
class _Held:
    """A run's node events held back, and when the oldest of them was said."""

    since: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


def _redacted(values: dict[str, Any]) -> dict[str, Any]:
    return {k: redact_data(v) if k in _FREE_TEXT and v is not None else v for k, v in values.items()}


class EventStoreError(StorageError):
    """The event store was asked something it cannot do (unknown run, bad prefix, broken URL)."""


class RunLookupError(EventStoreError, LookupError):
    """A run id or prefix does not name one run unambiguously."""


class AmbiguousRun(RunLookupError):
    """A run id prefix matches more than one run."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        self.prefix = prefix
        self.matches = matches
        shown = ", ".join(m[:12] for m in matches[:5])
        super().__init__(
            f"run id prefix {prefix!r} matches {len(matches)} runs ({shown}); give more characters"
        )


class RunRow(BaseModel):
    """One heal run, as `agentheal runs` lists it."""

    run_id: str
    fingerprint: str
    component: str | None
    gap_text: str
    status: RunStatus
    persona: str | None = None
    source: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    reason: str | None = None


class NodeEvent(BaseModel):
    """A node transition of a run."""

    at: datetime
    node: str
    detail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class ActionRow(BaseModel):
    """An action a run executed (or dry-ran), with its outcome."""

    at: datetime
    step: Step
    result: ActionResult


class LLMCallRow(BaseModel):
    """One call to the LLM endpoint, with its token counts."""

    at: datetime
    model: str
    purpose: str
    prompt_tokens: int
    completion_tokens: int
    duration_s: float
    ok: bool
    usage_known: bool = True
    error: str = ""


class AuditRow(BaseModel):
    """One change recorded in the audit trail, with who made it."""

    id: int
    at: datetime
    actor: str
    role: str | None = None
    door: str
    action: str
    target: str | None = None
    outcome: str
    detail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class RunTotals(BaseModel):
    """Sums over a run's recorded events."""

    duration_s: float | None = Field(description="Finished minus started; None while the run is open.")
    nodes: int
    actions: int
    actions_failed: int
    llm: LLMUsage
    llm_duration_s: float


class RunDetail(BaseModel):
    """A run with everything recorded about it: `agentheal runs show`."""

    row: RunRow
    gap: Gap | None
    timeline: list[NodeEvent]
    actions: list[ActionRow]
    llm_calls: list[LLMCallRow]
    totals: RunTotals
    result: dict[str, Any] | None = None


class EventStore:
    """Append-mostly store of what happened, on any SQLAlchemy URL (SQLite by default)."""

    def __init__(self, url: str) -> None:
        """Open the store at `url`, e.g. `sqlite:////abs/path/events.sqlite` (created if new) or
        `postgresql://USER@HOST:PORT/DB` (made by `agentheal db upgrade`).

        Raises:
            EventStoreError: the URL is malformed, the database cannot be reached, or its schema is
                not this agentheal's (the message names the command that upgrades it).
        """
        from agentheal.storage.schema import ensure_current

        url = sqlalchemy_url(url)
        self._pooled_ping = IdlePing(IDLE_PING_S)
        try:
            self._engine = event_store_engine(url, self._pooled_ping, json_serializer=dumps_json)
        except sa.exc.ArgumentError as exc:
            raise EventStoreError(f"bad event store URL {shown(url)!r}: {exc}") from exc
        self.url = url
        dialect = self._engine.dialect.name
        self._local = threading.local()
        self._writers: list[sa.Connection] = []
        self._writers_lock = threading.Lock()
        self._fast_inserts = fast_inserts(self._engine.dialect) if dialect == "sqlite" else {}
        self._postgres = dialect == "postgresql"
        self._pg_inserts = fast_inserts(self._engine.dialect, _PG_FAST) if self._postgres else {}
        self._pg_begin = _pg_begin_heal(self._engine.dialect) if self._postgres else None
        self._pg_nodes = _pg_many(self._engine.dialect, NODE_EVENTS) if self._postgres else ""
        # Runs this store started (begin_heal) for which it recorded no LLM call, while this
        # process drives them (until `forget`): their LLM use is known to be none without a read.
        self._no_llm_yet: set[str] = set()
        self._ended: set[str] = set()  # runs whose end (with its answer) was recorded here
        # Node events held back per run (hold_nodes), and who is told a run's were written: a watcher
        # told of a step as it was said (HealContext.progress) finds it in the store only then
        self._held: dict[str, _Held] = {}
        self.held_written: list[Callable[[str], None]] = []
        self._held_lock = threading.Lock()
        # PostgreSQL: the run's LLM use read made once: its SQL and its constants' parameters
        usage = LLM_USAGE.compile(dialect=self._engine.dialect)
        self._pg_usage = (str(usage), dict(usage.params)) if self._postgres else None
        # PostgreSQL: a thread's writer, or a pooled reader, idle this long is asked whether the
        # server still has it.
        self.idle_ping_s = IDLE_PING_S
        # A worker on a shared database (agentheal.work.fencing.Fences): the actions, status and end
        # of the runs it heals under a claim are written only while the claim is still its own.
        self.fence: Any = None
        try:
            ensure_current(self._engine)
        except StorageError as exc:
            self._engine.dispose()
            raise EventStoreError(str(exc)) from exc
        except sa.exc.SQLAlchemyError as exc:
            self._engine.dispose()
            raise EventStoreError(f"cannot open the event store at {shown(url)}: {exc}") from exc

    @property
    def idle_ping_s(self) -> float:
        return self._pooled_ping.idle_s

    @idle_ping_s.setter
    def idle_ping_s(self, seconds: float) -> None:
        self._pooled_ping.idle_s = seconds

    def close(self) -> None:
        """Release the connections."""
        with self._writers_lock:
            writers, self._writers = self._writers, []
        for conn in writers:
            conn.close()
        self._engine.dispose()

    # -- writes: each one its own transaction, committed before it returns --

    def _writer(self) -> sa.Connection:
        """This thread's connection for writes, kept open: a heal writes a dozen rows, and taking a
        connection from the pool and giving it back costs a third of a row's write."""
        kept: KeptConnection | None = getattr(self._local, "writer", None)
        if kept is None or not kept.usable(self.idle_ping_s if self._postgres else float("inf")):
            conn = self._engine.connect()
            if self._postgres:
                # A write of one statement is a transaction of its own in autocommit, committed when
                # it returns, in one round trip instead of three (BEGIN, the write, COMMIT): a heal's
                # dozen writes were most of its PostgreSQL traffic. `_transaction` opens a real one.
                conn.execution_options(isolation_level="AUTOCOMMIT")
            kept = KeptConnection(conn)
            self._local.writer = kept
            with self._writers_lock:
                self._writers.append(kept.conn)
        return kept.conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """This thread's writer in one transaction of several statements (PostgreSQL's writer is in
        autocommit otherwise), committed when the block ends."""
        conn = self._writer()
        if not self._postgres:
            with conn.begin():
                yield conn
            return
        conn.execution_options(isolation_level="READ COMMITTED")
        try:
            with conn.begin():
                yield conn
        finally:
            if not (conn.closed or conn.invalidated):
                conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sa.Connection]:
        """A connection for a read a heal makes on its way (rate limits, LLM use, a resumed run's
        steps): on PostgreSQL this thread's autocommit writer, one round trip with no pool ping and
        no rollback after; on SQLite one from the pool (its reads never wait on the writer)."""
        if not self._postgres:
            with self._engine.connect() as conn:
                yield conn
            return
        conn = self._writer()
        with conn.begin():  # SQLAlchemy's bookkeeping only: autocommit sends no BEGIN nor COMMIT
            yield conn

    def _write(
        self, stmt: Any, what: str, values: dict[str, Any] | None = None, run: str | None = None
    ) -> int:
        if run is not None and self._held:
            # what a run's steps said is in the store before its actions, status and end: a reader
            # that sees the run ended reads every step before that end (the chat follower does)
            self.write_held(run, release=False)
        try:
            if run is not None and self.fence is not None and self.fence.holds(run):
                return int(self.fence.write(run, stmt, values, what, self._writer()))
            conn = self._writer()
            with conn.begin():
                return int(conn.execute(stmt, values).rowcount)
        except sa.exc.IntegrityError as exc:
            raise EventStoreError(f"cannot record {what}: {exc.orig}") from exc

    def _insert(self, table: str, what: str, **values: Any) -> None:
        values = _redacted({"at": utcnow(), **values})
        pg = self._pg_inserts.get(table)
        if pg is not None:
            self._pg_insert(pg, what, values)
            return
        fast = self._fast_inserts.get(table)
        if fast is None:
            self._write(INSERTS[table], what, values, run=values["run_id"] if table == "actions" else None)
            return
        # SQLite: the dialect's own SQL and the columns' own bind conversions (so the row is the
        # one SQLAlchemy would write), run on this thread's connection underneath SQLAlchemy.
        sql, columns = fast
        self._sqlite_rows(sql, [tuple(c(values[k]) if c else values[k] for k, c in columns)], what)

    def _sqlite_rows(self, sql: str, rows: list[tuple[Any, ...]], what: str) -> None:
        """SQLite: rows of one INSERT on this thread's connection underneath SQLAlchemy, committed."""
        raw = self._writer().connection.dbapi_connection
        assert raw is not None
        try:
            if len(rows) == 1:
                raw.execute(sql, rows[0])
            else:
                raw.executemany(sql, rows)
            raw.commit()
        except sqlite3.IntegrityError as exc:
            raw.rollback()
            raise EventStoreError(f"cannot record {what}: {exc}") from exc
        except BaseException:
            raw.rollback()
            raise

    def _pg_insert(self, insert: FastInsert, what: str, values: dict[str, Any]) -> None:
        """PostgreSQL: the INSERT as the dialect compiles it, with the columns' own bind conversions,
        run on this thread's autocommit connection underneath SQLAlchemy (node events are most of a
        heal's writes, and SQLAlchemy's statement machinery cost as much as their round trip)."""
        import psycopg

        sql, columns = insert
        row = {key: convert(values[key]) if convert else values[key] for key, convert in columns}
        try:
            with underneath(self._writer()) as raw:
                raw.execute(sql, row)
        except psycopg.IntegrityError as exc:
            raise EventStoreError(f"cannot record {what}: {exc}") from exc

    def _update_run(self, run_id: str, what: str, **values: Any) -> None:
        if self._write(UPDATE_RUN, what, _redacted({"which_run": run_id, **values}), run=run_id) == 0:
            raise EventStoreError(f"no run {run_id!r} to record {what} for; start_run was not called")

    def record_gap(self, gap: Gap) -> None:
        """Record a gap as it was reported (every report, also repeats of one fingerprint)."""
        self._write(INSERTS["gaps"], f"gap {gap.fingerprint}", self._gap_values(gap))

    @staticmethod
    def _gap_values(gap: Gap) -> dict[str, Any]:
        return _redacted(
            {
                "fingerprint": gap.fingerprint,
                "kind": gap.kind.value,
                "component": gap.component,
                "severity": gap.severity.value,
                "text": gap.text,
                "gap": gap.model_dump(mode="json"),
                "created_at": gap.created_at,
                "recorded_at": utcnow(),
            }
        )

    @staticmethod
    def _run_values(run_id: str, gap: Gap) -> dict[str, Any]:
        return _redacted(
            {
                "run_id": run_id,
                "fingerprint": gap.fingerprint,
                "component": gap.component,
                "gap_text": gap.text,
                "gap": gap.model_dump(mode="json"),
                "status": RunStatus.running.value,
                "started_at": utcnow(),
            }
        )

    def begin_heal(self, gap: Gap, run_id: str) -> str | None:
        """Record a reported gap and, unless its fingerprint has an open run, start `run_id` for it:
        one transaction, so two processes reporting the same gap never both start a run.

        Returns:
            The open run's id when there is one (no run was started), else None.
        """
        if self._pg_begin is not None:
            found = self._pg_begin_heal(gap, run_id, *self._pg_begin)
        else:
            with self._transaction() as conn:  # (SQLite: its first INSERT takes the one write lock)
                conn.execute(INSERTS["gaps"], self._gap_values(gap))
                found = conn.execute(OPEN_RUN, {"fingerprint": gap.fingerprint}).scalar()
                if found is None:
                    conn.execute(INSERTS["runs"], self._run_values(run_id, gap))
        if found is not None:
            return str(found)
        self._no_llm_yet.add(run_id)
        return None

    def forget(self, run_id: str) -> None:
        """This process stopped driving a run: its LLM use is read from the store from now on (another
        process may drive it next)."""
        self._no_llm_yet.discard(run_id)
        self._ended.discard(run_id)

    def ended_here(self, run_id: str) -> bool:
        """Whether this process recorded the run's end with its answer (`finish_run`) while driving it."""
        return run_id in self._ended

    def _pg_begin_heal(self, gap: Gap, run_id: str, sql: str, binds: list[tuple[str, Any]]) -> str | None:
        """begin_heal on PostgreSQL: its turn and its writes, two statements sent in one message (one
        round trip, not four), underneath SQLAlchemy as `_pg_insert` writes. (A psycopg pipeline sends
        them in one too, but cost more CPU than the round trips it saved: measured.)"""
        import psycopg

        values = {"g_" + k: v for k, v in self._gap_values(gap).items()}
        # the run's copy of the gap is the gap's row's, redacted once
        values.update(r_run_id=run_id, r_fingerprint=gap.fingerprint, r_component=gap.component)
        values.update(r_gap_text=values["g_text"], r_gap=values["g_gap"], r_status=RunStatus.running.value)
        values["r_started_at"] = utcnow()
        params = {key: convert(values[key]) if convert else values[key] for key, convert in binds}
        params["turn_fingerprint"] = gap.fingerprint
        try:
            # READ COMMITTED would let two processes each see no open run of a fingerprint: they take
            # turns on it (a lock until the transaction ends), and the statement after it reads then
            # (each statement its own snapshot). Two statements in one query message (the values
            # bound here, by psycopg) are one transaction, which ends after the second.
            with underneath(self._writer()) as raw, psycopg.ClientCursor(raw) as cur:
                cur.execute(f"{FINGERPRINT_TURN}; {sql}", params)
                cur.nextset()
                found = cur.fetchone()
        except psycopg.IntegrityError as exc:
            raise EventStoreError(f"cannot record gap {gap.fingerprint} and its run: {exc}") from exc
        return str(found[0]) if found is not None else None

    def _pg_read(self, sql: str, params: dict[str, Any]) -> Any:
        """One row of a read made once (string parameters only), on this thread's writer."""
        with underneath(self._writer()) as raw:
            return raw.execute(sql, params).fetchone()

    def start_run(self, run_id: str, gap: Gap) -> None:
        """Open a run for a gap, status `running`. Starting a run id again only marks it running."""
        try:
            conn = self._writer()
            with conn.begin():
                conn.execute(INSERTS["runs"], self._run_values(run_id, gap))
        except sa.exc.IntegrityError:
            # A resumed run calls this again: keep its history, mark it running.
            self.set_status(run_id, RunStatus.running)

    def node(self, run_id: str, node: str, detail: str = "", data: dict[str, Any] | None = None) -> None:
        """Record a node transition of a run, timestamped now (held back while the run's are held)."""
        if self._held:
            values = {"at": utcnow(), "run_id": run_id, "node": node, "detail": detail, "data": data or {}}
            with self._held_lock:
                held = self._held.get(run_id)
                if held is not None:
                    if not held.rows:
                        held.since = time.monotonic()
                    held.rows.append(_redacted(values))
                    if time.monotonic() - held.since < HOLD_S:
                        return
                    rows, held.rows = held.rows, []
            if held is not None:
                self._write_nodes(run_id, rows)
                return
        what = f"node {node!r} of run {run_id!r} (is the run started?)"
        self._insert("node_events", what, run_id=run_id, node=node, detail=detail, data=data or {})

    def hold_nodes(self, run_id: str) -> None:
        """Hold back a run's node events until `write_held`, to write them in one statement.

        A new run's first steps only look (triage to guard) and leave no checkpoint: a process that
        ends among them has its run started again from the beginning, so what they said is said again
        then. Their events are written together at the breakpoint before the first acting step, before
        an LLM or a remote agent is asked (`HealContext.publish`), and whenever a step says something
        `HOLD_S` after the oldest event held; until then, only this process sees them."""
        with self._held_lock:
            self._held.setdefault(run_id, _Held())

    def write_held(self, run_id: str, *, release: bool = True) -> None:
        """Write the node events held for a run, in the order said; `release`: stop holding them."""
        with self._held_lock:
            held = self._held.pop(run_id, None) if release else self._held.get(run_id)
            if held is None:
                return
            rows, held.rows = held.rows, []
        self._write_nodes(run_id, rows)

    def _write_nodes(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self._insert_nodes(run_id, rows)
        for told in self.held_written:
            told(run_id)

    def _insert_nodes(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        what = f"{len(rows)} node events of run {run_id!r} (is the run started?)"
        if self._postgres:
            import psycopg

            _, columns = self._pg_inserts["node_events"]
            arrays = {key: [convert(r[key]) if convert else r[key] for r in rows] for key, convert in columns}
            try:
                with underneath(self._writer()) as raw:
                    raw.execute(self._pg_nodes, arrays)
            except psycopg.IntegrityError as exc:
                raise EventStoreError(f"cannot record {what}: {exc}") from exc
            return
        sql, columns = self._fast_inserts["node_events"]
        self._sqlite_rows(sql, [tuple(c(r[k]) if c else r[k] for k, c in columns) for r in rows], what)

    def node_data(self, run_id: str, node: str) -> list[dict[str, Any]]:
        """The data of a run's events of one node, oldest first (those held back too)."""
        if self._held:
            self.write_held(run_id, release=False)
        t = NODE_EVENTS.c
        stmt = sa.select(t.data).where(t.run_id == run_id, t.node == node).order_by(t.id)
        with self._reader() as conn:
            return [dict(d or {}) for d in conn.execute(stmt).scalars()]

    def action(self, run_id: str, step: Step, result: ActionResult) -> None:
        """Record an action a run executed, dry-ran or skipped, with its outcome."""
        self._insert(
            "actions",
            f"action {step.action} of run {run_id!r} (is the run started?)",
            run_id=run_id,
            action=step.action,
            component=step.component,
            dry_run=result.dry_run or result.outcome == "dry_run",
            outcome=result.outcome,
            step=step.model_dump(mode="json"),
            result=result.model_dump(mode="json"),
        )

    def llm_call(
        self,
        run_id: str,
        model: str,
        purpose: str,
        prompt_tokens: int,
        completion_tokens: int,
        duration_s: float,
        ok: bool,
        *,
        usage_known: bool = True,
        error: str = "",
    ) -> None:
        """Record one call to the LLM endpoint (`usage_known` False: it reported no token counts)."""
        self._no_llm_yet.discard(run_id)
        self._insert(
            "llm_calls",
            f"LLM call of run {run_id!r} (is the run started?)",
            run_id=run_id,
            model=model,
            purpose=purpose,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            duration_s=duration_s,
            ok=ok,
            usage_known=usage_known,
            error=error[:2000],
        )

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        persona: str | None,
        source: str,
        reason: str | None,
        result: dict[str, Any],
    ) -> None:
        """Close a run with its final status and keep its whole result as JSON."""
        self._update_run(
            run_id,
            "the end of the run",
            status=RunStatus(status).value,
            persona=persona,
            source=source,
            reason=reason,
            result=result,
            finished_at=utcnow(),
        )
        self._ended.add(run_id)

    def set_status(self, run_id: str, status: RunStatus, reason: str | None = None) -> None:
        """Change a run's status (e.g. awaiting approval); a final status also stamps finished_at."""
        status = RunStatus(status)
        values: dict[str, Any] = {"status": status.value}
        if reason is not None:
            values["reason"] = reason
        values["finished_at"] = None if status.value in OPEN_STATUSES else utcnow()
        self._update_run(run_id, "a status", **values)

    # -- reads --

    def open_run(self, fingerprint: str) -> str | None:
        """The newest run of this fingerprint that is running or awaiting approval, if any."""
        with self._engine.connect() as conn:
            found = conn.execute(OPEN_RUN, {"fingerprint": fingerprint}).scalar()
        return str(found) if found is not None else None

    def runs(self, limit: int = 50, status: str | None = None) -> list[RunRow]:
        """Runs, newest first, optionally only those with one status."""
        stmt = RUNS.select().order_by(RUNS.c.started_at.desc(), RUNS.c.run_id.desc()).limit(limit)
        if status is not None:
            if status not in RunStatus.__members__:
                known = ", ".join(RunStatus.__members__)
                raise EventStoreError(f"unknown run status {status!r}: one of {known}")
            stmt = stmt.where(RUNS.c.status == status)
        with self._engine.connect() as conn:
            return [RunRow.model_validate(dict(r._mapping)) for r in conn.execute(stmt)]

    def gaps(self, fingerprint: str | None = None, limit: int = 100) -> list[Gap]:
        """Recorded gap reports, newest first, optionally of one fingerprint."""
        stmt = GAPS.select().order_by(GAPS.c.recorded_at.desc(), GAPS.c.id.desc()).limit(limit)
        if fingerprint is not None:
            stmt = stmt.where(GAPS.c.fingerprint == fingerprint)
        with self._engine.connect() as conn:
            return [Gap.model_validate(r.gap) for r in conn.execute(stmt)]

    def run(self, run_id_or_prefix: str) -> RunDetail | None:
        """A run with its timeline, actions, LLM calls, totals and result, by id or a unique prefix.

        Raises:
            AmbiguousRun: the prefix matches several runs.
            RunLookupError: the prefix is shorter than 4 characters and no run has exactly that id.
        """
        key = run_id_or_prefix.strip()
        with self._engine.connect() as conn:
            found = conn.execute(RUNS.select().where(RUNS.c.run_id == key)).first()
            if found is None:
                if len(key) < MIN_PREFIX:
                    raise RunLookupError(
                        f"run id prefix {key!r} is too short: give {MIN_PREFIX} characters or more"
                    )
                prefixed = RUNS.select().where(RUNS.c.run_id.startswith(key, autoescape=True)).limit(6)
                matches = conn.execute(prefixed).all()
                if not matches:
                    return None
                if len(matches) > 1:
                    raise AmbiguousRun(key, [m.run_id for m in matches])
                found = matches[0]
            return self._detail(conn, dict(found._mapping))

    def _detail(self, conn: sa.Connection, run: dict[str, Any]) -> RunDetail:
        def rows(table: str) -> list[dict[str, Any]]:
            t = TABLES[table]
            return [
                dict(r._mapping)
                for r in conn.execute(t.select().where(t.c.run_id == run["run_id"]).order_by(t.c.id))
            ]

        row = RunRow.model_validate(run)
        timeline = [NodeEvent.model_validate(r) for r in rows("node_events")]
        actions = [ActionRow.model_validate(r) for r in rows("actions")]
        calls = [LLMCallRow.model_validate(r) for r in rows("llm_calls")]
        totals = RunTotals(
            duration_s=(row.finished_at - row.started_at).total_seconds() if row.finished_at else None,
            nodes=len(timeline),
            actions=len(actions),
            actions_failed=sum(1 for a in actions if a.result.outcome == "failed"),
            llm=LLMUsage(
                calls=len(calls),
                prompt_tokens=sum(c.prompt_tokens for c in calls),
                completion_tokens=sum(c.completion_tokens for c in calls),
                unknown_usage_calls=sum(1 for c in calls if not c.usage_known),
            ),
            llm_duration_s=sum(c.duration_s for c in calls),
        )
        gap = Gap.model_validate(run["gap"]) if run["gap"] else None
        return RunDetail(
            row=row,
            gap=gap,
            timeline=timeline,
            actions=actions,
            llm_calls=calls,
            totals=totals,
            result=run["result"],
        )

    def count_actions(self, component: str, action: str, window_s: float) -> int:
        """How often `action` really ran on `component` (not dry-run; ok or failed) in the last window."""
        since = utcnow() - timedelta(seconds=window_s)
        with self._reader() as conn:
            return int(
                conn.execute(
                    COUNT_ACTIONS, {"component": component, "action": action, "since": since}
                ).scalar_one()
            )

    def llm_usage(self, run_id: str) -> LLMUsage:
        """Calls and tokens a run spent on the LLM, summed from its recorded calls."""
        if run_id in self._no_llm_yet:  # started here, driven only here, and no call recorded: none
            return LLMUsage()
        if self._pg_usage is not None:  # (PostgreSQL: on the thread's writer, underneath SQLAlchemy)
            sql, constants = self._pg_usage
            n, prompt, completion, unknown = self._pg_read(sql, {**constants, "run_id": run_id})
        else:
            with self._reader() as conn:
                n, prompt, completion, unknown = conn.execute(LLM_USAGE, {"run_id": run_id}).one()
        return LLMUsage(
            calls=int(n),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            unknown_usage_calls=int(unknown),
        )

    # -- the audit trail, and reads the application services compose --

    def audit(
        self,
        actor: str,
        action: str,
        *,
        door: str,
        role: str | None = None,
        target: str | None = None,
        outcome: str = "ok",
        detail: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Append one row to the audit trail: who (`actor`, `role`) did `action` to `target` through
        which door (`cli`, `api`, ...), and whether it was done (`ok`) or `refused`."""
        self._insert(
            "audit",
            f"audit of {action}",
            actor=actor[:200],
            role=role,
            door=door,
            action=action,
            target=target[:200] if target else None,
            outcome=outcome,
            detail=detail,
            data=data or {},
        )

    def audit_rows(
        self,
        limit: int = 100,
        *,
        since: datetime | None = None,
        actor: str | None = None,
        action: str | None = None,
    ) -> list[AuditRow]:
        """The audit trail, newest first, optionally since a time, of one actor or one action."""
        stmt = AUDIT.select().order_by(AUDIT.c.id.desc()).limit(limit)
        if since is not None:
            stmt = stmt.where(AUDIT.c.at >= since)
        if actor is not None:
            stmt = stmt.where(AUDIT.c.actor == actor)
        if action is not None:
            stmt = stmt.where(AUDIT.c.action == action)
        return [AuditRow.model_validate(r) for r in self.query(stmt)]

    def query(self, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
        """Rows of a SELECT over the store's tables (`agentheal.event_schema`), as dicts.

        Raises:
            ValueError: a computed column has no label, or two columns have the same name (say
                `run_id` of two tables): the dict would name it by chance, or hide one; label them.
        """
        names = [c.key for c in stmt.selected_columns]
        if None in names:
            raise ValueError("a computed column of the query has no label: give it one (.label(...))")
        if len(set(names)) != len(names):
            twice = sorted({str(n) for n in names if names.count(n) > 1})
            raise ValueError(f"columns selected twice under one name: {', '.join(twice)}; label them")
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]
