"""The records the evolve and prevent graphs keep beside the heal events: predictions with their
follow-up, evolutions with their outcome, and probe results for availability.

They live in the event store's database (tables of their own, made by schema revision 0004), so
every figure is read from one place. Writes go through an engine of this module's own on the same
URL: the event store's engine is its private business.
"""

from __future__ import annotations

import contextlib
import os
import threading
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from agentheal.event_schema import _UTCDateTime, dumps_json
from agentheal.events import BUSY_TIMEOUT_S, EventStore
from agentheal.models import utcnow

METADATA = sa.MetaData()


def _req(name: str, type_: Any, *args: Any, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, type_, *args, nullable=False, **kw)


# A predicted breach: made by the prevent graph from a trend, maybe acted on, then followed up.
# outcome: pending (not yet followed up), breached (the limit was crossed), avoided (acted on and
# not crossed), false (not acted on and not crossed: the trend flattened by itself), missed (a
# breach seen at a follow-up that no prediction announced).
PREDICTIONS = sa.Table(
    "predictions",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    _req("series", sa.String(200), index=True),
    sa.Column("component", sa.String(200)),
    _req("text", sa.Text),
    _req("made_at", _UTCDateTime, index=True),
    sa.Column("expected_at", _UTCDateTime),
    sa.Column("confidence", sa.Float),
    sa.Column("limit", sa.Float),
    _req("acted", sa.Boolean),
    sa.Column("measure", sa.JSON),
    _req("outcome", sa.String(16), index=True),
    sa.Column("checked_at", _UTCDateTime, index=True),
    _req("data", sa.JSON),
)
# One change the evolve graph made: status proposed, applied (being validated), kept, reverted,
# refused (policy said no, or it needs a person's approval) or dry_run.
EVOLUTIONS = sa.Table(
    "evolutions",
    METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    _req("kind", sa.String(32)),
    _req("target", sa.String(300)),
    sa.Column("fingerprint", sa.String(64)),
    _req("status", sa.String(16), index=True),
    _req("created_at", _UTCDateTime, index=True),
    sa.Column("decided_at", _UTCDateTime, index=True),
    _req("reason", sa.Text),
    _req("data", sa.JSON),
)
# A component's probe answers over one batch (what availability is computed from): how many rounds
# answered, how many of them passed every probe, and when the batch ended. A watch writes one row per
# component per batch, never one per answer.
PROBES = sa.Table(
    "probe_results",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    _req("component", sa.String(200)),
    _req("at", _UTCDateTime),
    _req("answers", sa.Integer),
    _req("passed", sa.Integer),
    sa.Index("ix_probe_results_component_at", "component", "at"),
)

_ENGINES: dict[tuple[str, int], sa.Engine] = {}
_LOCK = threading.Lock()


def _identity(url: str) -> tuple[str, int]:
    """The URL and, for a SQLite file, its inode: a store deleted and made again is another database
    (a connection kept to the old file would write to a file nobody reads)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        with contextlib.suppress(OSError):
            return url, os.stat(parsed.database).st_ino
    return url, 0


def engine_for(store: EventStore) -> sa.Engine:
    """This module's engine on the store's database (its tables and the figures' indexes are the
    migrations': the store's revision was checked when it opened)."""
    key = _identity(store.url)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            sqlite = store.url.startswith("sqlite")
            args: dict[str, Any] = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False} if sqlite else {}
            engine = sa.create_engine(store.url, connect_args=args, json_serializer=dumps_json)
            _ENGINES[key] = engine
        return engine


def _write(store: EventStore, stmt: Any, values: dict[str, Any] | list[dict[str, Any]]) -> Any:
    with engine_for(store).begin() as conn:
        return conn.execute(stmt, values)


def record_probe(store: EventStore, component: str, ok: bool, at: datetime | None = None) -> None:
    """Record one probe answer of a component (all its probes passed: `ok`)."""
    record_probes(store, {component: (1, int(ok))}, at)


def record_probes(store: EventStore, counts: dict[str, tuple[int, int]], at: datetime | None = None) -> None:
    """Record a batch of probe answers: per component, (answers, passed), in one row each."""
    when = at or utcnow()
    rows = [
        {"component": c, "answers": answers, "passed": passed, "at": when}
        for c, (answers, passed) in counts.items()
        if answers > 0
    ]
    if rows:
        _write(store, PROBES.insert(), rows)


def forget_probes(store: EventStore, before: datetime) -> int:
    """Delete probe batches that ended before `before`; returns how many."""
    result = _write(store, PROBES.delete().where(PROBES.c.at < before), {})
    return int(result.rowcount or 0)


def record_prediction(
    store: EventStore,
    *,
    series: str,
    component: str | None,
    text: str,
    expected_at: datetime | None,
    confidence: float | None,
    limit: float | None,
    made_at: datetime | None = None,
    data: dict[str, Any] | None = None,
) -> int:
    """Record a predicted breach (outcome pending); returns its id."""
    result = _write(
        store,
        PREDICTIONS.insert(),
        {
            "series": series,
            "component": component,
            "text": text,
            "made_at": made_at or utcnow(),
            "expected_at": expected_at,
            "confidence": confidence,
            "limit": limit,
            "acted": False,
            "measure": None,
            "outcome": "pending",
            "checked_at": None,
            "data": data or {},
        },
    )
    return int(result.inserted_primary_key[0])


def record_measure(store: EventStore, prediction_id: int, measure: dict[str, Any]) -> None:
    """Mark a prediction as acted on, with the preventive measure applied."""
    stmt = PREDICTIONS.update().where(PREDICTIONS.c.id == prediction_id)
    _write(store, stmt.values(acted=True, measure=measure), {})


def record_outcome(
    store: EventStore, prediction_id: int, outcome: str, at: datetime | None = None, **data: Any
) -> None:
    """Close a prediction's follow-up: breached, avoided or false."""
    if outcome not in ("breached", "avoided", "false"):
        raise ValueError(f"unknown prediction outcome {outcome!r}: breached, avoided or false")
    with engine_for(store).begin() as conn:
        old = conn.execute(sa.select(PREDICTIONS.c.data).where(PREDICTIONS.c.id == prediction_id)).scalar()
        if old is None:
            raise LookupError(f"no prediction {prediction_id}")
        stmt = PREDICTIONS.update().where(PREDICTIONS.c.id == prediction_id)
        conn.execute(stmt.values(outcome=outcome, checked_at=at or utcnow(), data={**old, **data}))


def record_missed(
    store: EventStore, *, series: str, component: str | None, text: str, at: datetime | None = None
) -> None:
    """Record a breach no prediction announced (it counts against prediction recall)."""
    when = at or utcnow()
    _write(
        store,
        PREDICTIONS.insert(),
        {"series": series, "component": component, "text": text, "made_at": when, "expected_at": None,
         "confidence": None, "limit": None, "acted": False, "measure": None, "outcome": "missed",
         "checked_at": when, "data": {}},
    )  # fmt: skip


def pending_predictions(store: EventStore) -> list[dict[str, Any]]:
    """Predictions not yet followed up, oldest first."""
    stmt = sa.select(PREDICTIONS).where(PREDICTIONS.c.outcome == "pending").order_by(PREDICTIONS.c.id)
    return store.query(stmt)


def save_evolution(store: EventStore, row: dict[str, Any]) -> None:
    """Insert an evolution, or update it when its id is already recorded."""
    with engine_for(store).begin() as conn:
        found = conn.execute(sa.select(EVOLUTIONS.c.id).where(EVOLUTIONS.c.id == row["id"])).first()
        if found is None:
            conn.execute(EVOLUTIONS.insert(), row)
        else:
            conn.execute(EVOLUTIONS.update().where(EVOLUTIONS.c.id == row["id"]), row)


def evolutions(store: EventStore, limit: int = 100) -> list[dict[str, Any]]:
    """Evolutions, newest first."""
    stmt = sa.select(EVOLUTIONS).order_by(EVOLUTIONS.c.created_at.desc(), EVOLUTIONS.c.id.desc())
    return store.query(stmt.limit(limit))
