"""Heal runs for every door: a page of runs with filters, one run as `heal --json` answers it with
its whole story, and a run's node events after a given one (what a live stream follows)."""

from __future__ import annotations

import base64
import binascii
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import BaseModel

from agentheal.event_schema import NODE_EVENTS, RUNS
from agentheal.events import RunDetail, RunRow
from agentheal.models import RunStatus

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.events import EventStore

FINAL_STATUSES = frozenset(s.value for s in RunStatus) - {"running", "awaiting_approval", "awaiting_remote"}
MAX_PAGE = 500


class RunQueryError(ValueError):
    """A filter or cursor that cannot be used; the message names it."""


class RunPage(BaseModel):
    """Runs, newest first, and the cursor of the next page (None on the last)."""

    runs: list[RunRow]
    next_cursor: str | None = None


def _cursor_of(row: RunRow) -> str:
    raw = f"{row.started_at.isoformat()}|{row.run_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, run_id = raw.split("|", 1)
        return datetime.fromisoformat(at), run_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise RunQueryError(f"cursor {cursor[:40]!r} is not one this server gave out") from None


def list_runs(
    events: EventStore,
    *,
    limit: int = 50,
    status: str | None = None,
    component: str | None = None,
    persona: str | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
) -> RunPage:
    """Runs newest first, filtered; `cursor` (from the previous page) continues where it ended.

    Raises:
        RunQueryError: an unknown status, a limit out of range or a cursor this server did not give.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise RunQueryError(f"limit {limit}: give 1 to {MAX_PAGE}")
    stmt = sa.select(RUNS).order_by(RUNS.c.started_at.desc(), RUNS.c.run_id.desc()).limit(limit + 1)
    if status is not None:
        if status not in RunStatus.__members__:
            raise RunQueryError(f"status {status!r}: one of {', '.join(RunStatus.__members__)}")
        stmt = stmt.where(RUNS.c.status == status)
    if component is not None:
        stmt = stmt.where(RUNS.c.component == component)
    if persona is not None:
        stmt = stmt.where(RUNS.c.persona == persona)
    if since is not None:
        stmt = stmt.where(RUNS.c.started_at >= since)
    if cursor:
        at, run_id = _parse_cursor(cursor)
        stmt = stmt.where(
            sa.or_(RUNS.c.started_at < at, sa.and_(RUNS.c.started_at == at, RUNS.c.run_id < run_id))
        )
    rows = [RunRow.model_validate(r) for r in events.query(stmt)]
    more = len(rows) > limit
    rows = rows[:limit]
    return RunPage(runs=rows, next_cursor=_cursor_of(rows[-1]) if more and rows else None)


def run_detail(events: EventStore, run: str) -> RunDetail | None:
    """A run with everything recorded about it, by id or a unique prefix (4 characters or more).

    Raises:
        RunLookupError: the prefix is too short or matches several runs.
    """
    return events.run(run)


def checkpoint_values(checkpoints: Path | Settings, run_id: str) -> dict[str, Any]:
    """A run's state at its last checkpoint (its plan, diagnosis, persona...); empty without one.

    `checkpoints`: the settings (wherever they keep checkpoints: the SQLite file or PostgreSQL),
    or a SQLite checkpoint file itself.
    """
    if not isinstance(checkpoints, Path):
        from agentheal.storage.checkpoints import last_values

        return last_values(checkpoints, run_id)
    if not checkpoints.is_file():
        return {}
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(checkpoints), check_same_thread=False, timeout=10)
    try:
        found = SqliteSaver(conn).get_tuple({"configurable": {"thread_id": run_id}})
    finally:
        conn.close()
    return dict(found.checkpoint.get("channel_values") or {}) if found is not None else {}


def result_of_run(detail: RunDetail, checkpoints: Path | Settings | None = None) -> dict[str, Any]:
    """The run as `agentheal heal --json` answers it, its status as it is now.

    A finished run has its answer recorded. An open one (running, or waiting for approval) is told
    from its last checkpoint when `checkpoints` is given and it has one (so an approver sees the
    plan), else from its rows so far.
    """
    from agentheal.graphs.results import result_of

    row = detail.row
    values = checkpoint_values(checkpoints, row.run_id) if checkpoints and not detail.result else {}
    if detail.result:
        result = dict(detail.result)
    elif values:
        result = result_of({**values, "llm": detail.totals.llm.model_dump()})
    else:
        result = {
            "run_id": row.run_id,
            "persona": row.persona,
            "source": row.source or "none",
            "actions": [
                {
                    "action": a.step.action,
                    "component": a.step.component,
                    "dry_run": a.result.dry_run,
                    "outcome": a.result.outcome,
                    "detail": a.result.detail,
                }
                for a in detail.actions
            ],
            "validation": {"ok": False, "detail": "not validated"},
            "llm": detail.totals.llm.model_dump(),
            "fingerprint": row.fingerprint,
            "component": row.component,
            "diagnosis": None,
            "plan": None,
            "factory": None,
        }
    result["status"] = row.status.value
    result["reason"] = row.reason if row.reason is not None else result.get("reason")
    if row.status == RunStatus.awaiting_approval and row.reason:
        result["reason"] = f"awaiting approval: {row.reason}"  # as the heal that stopped said it
    return result


def show_run(
    events: EventStore, run: str, checkpoints: Path | Settings | None = None
) -> dict[str, Any] | None:
    """The heal JSON object of a run with its whole story beside it (`story`, as `runs show --json`);
    `checkpoints`: the settings (or a SQLite checkpoint file), to tell an open run from its last
    checkpoint.

    Raises:
        RunLookupError: the prefix is too short or matches several runs.
    """
    detail = events.run(run)
    if detail is None:
        return None
    return {**result_of_run(detail, checkpoints), "story": detail.model_dump(mode="json")}


def node_events_after(
    events: EventStore, run_id: str, after_id: int = 0, limit: int = 200
) -> list[dict[str, Any]]:
    """A run's node events with ids above `after_id`, oldest first.

    Each is `{"id", "at", "node", "detail", "data"}`; `id` is the row's, increasing with time."""
    stmt = (
        sa.select(NODE_EVENTS)
        .where(NODE_EVENTS.c.run_id == run_id, NODE_EVENTS.c.id > after_id)
        .order_by(NODE_EVENTS.c.id)
        .limit(limit)
    )
    return [
        {"id": r["id"], "at": r["at"].isoformat(), **{k: r[k] for k in ("node", "detail", "data")}}
        for r in events.query(stmt)
    ]


def run_status(events: EventStore, run_id: str) -> str | None:
    """A run's status now, by its full id (None: no such run)."""
    rows = events.query(sa.select(RUNS.c.status).where(RUNS.c.run_id == run_id))
    return str(rows[0]["status"]) if rows else None
