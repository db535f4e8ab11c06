"""The state of each engine, read from what it last did and when: never declared.

- detection: the newest gap a detector recorded (not a person's report);
- healing: the newest heal run started or finished;
- factory: the newest factory step recorded in a run's timeline;
- evolution: the newest evolution proposed or decided;
- prevention: the newest prediction made or followed up.

`active` when that was within the last hour, `idle` when longer ago, `never` with no record.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from agentheal.event_schema import GAPS, NODE_EVENTS, RUNS
from agentheal.events import EventStore
from agentheal.metrics.figures import PERSON_SOURCES
from agentheal.metrics.records import EVOLUTIONS, PREDICTIONS
from agentheal.models import RunStatus, utcnow

ACTIVE_WITHIN = timedelta(hours=1)


class Engine(BaseModel):
    """One engine: its state, when it last did something, and what."""

    name: str
    state: str
    last_activity: datetime | None
    detail: str


def _newest(store: EventStore, col: Any, *where: Any) -> datetime | None:
    """The newest value of a time column among rows `where` selects: read backwards along an index
    on the column until the first row that qualifies, not an aggregate over every row."""
    stmt = sa.select(col.label("t")).where(col.is_not(None), *where).order_by(col.desc()).limit(1)
    rows = store.query(stmt)
    if not rows:
        return None
    found = rows[0]["t"]
    return found if isinstance(found, datetime) else _parse(found)


def _latest(*times: datetime | None) -> datetime | None:
    found = [t for t in times if t is not None]
    return max(found) if found else None


def _parse(value: Any) -> datetime:
    from datetime import UTC

    parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _engine(name: str, last: datetime | None, detail: str, now: datetime) -> Engine:
    if last is None:
        return Engine(name=name, state="never", last_activity=None, detail=f"no {detail} recorded")
    state = "active" if now - last <= ACTIVE_WITHIN else "idle"
    return Engine(name=name, state=state, last_activity=last, detail=f"last {detail}")


def engines(store: EventStore, now: datetime | None = None) -> list[Engine]:
    """The five engines' states, from the store's newest records of each."""
    now = now or utcnow()
    detected = _newest(store, GAPS.c.recorded_at, GAPS.c.gap["source"].as_string().not_in(PERSON_SOURCES))
    # a run's end: one seek per status in the runs' (status, finished_at, ...) index
    ends = (_newest(store, RUNS.c.finished_at, RUNS.c.status == s.value) for s in RunStatus)
    healed = _latest(_newest(store, RUNS.c.started_at), *ends)
    made = _newest(store, NODE_EVENTS.c.at, NODE_EVENTS.c.node == "factory")
    evolved = _latest(_newest(store, EVOLUTIONS.c.created_at), _newest(store, EVOLUTIONS.c.decided_at))
    prevented = _latest(_newest(store, PREDICTIONS.c.made_at), _newest(store, PREDICTIONS.c.checked_at))
    return [
        _engine("detection", detected, "gap found by a detector", now),
        _engine("healing", healed, "heal run started or finished", now),
        _engine("factory", made, "factory step", now),
        _engine("evolution", evolved, "evolution proposed or decided", now),
        _engine("prevention", prevented, "prediction made or followed up", now),
    ]
