"""The work tables (Alembic revision 0005) as SQLAlchemy Core, and the clock the leases are read by.

On PostgreSQL every time a lease is set or compared with comes from the database server's clock,
so workers on hosts whose clocks differ agree on when a lease ends. Times are naive UTC, as in
the event store.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from agentheal.event_schema import _UTCDateTime
from agentheal.models import utcnow

METADATA = sa.MetaData()

WORK_ITEMS = sa.Table(
    "work_items",
    METADATA,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("key", sa.String(300), nullable=False),
    sa.Column("component", sa.String(200)),
    sa.Column("gap", sa.JSON, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("worker", sa.String(200)),
    sa.Column("lease_until", _UTCDateTime),
    sa.Column("claims", sa.Integer, nullable=False),
    sa.Column("queued_at", _UTCDateTime, nullable=False),
    sa.Column("claimed_at", _UTCDateTime),
    sa.Column("finished_at", _UTCDateTime),
    sa.Column("outcome", sa.String(32)),
    # revision 0010: a gap to heal, or the resume of a waiting run with its answer (agentheal.work.resumes)
    sa.Column("kind", sa.String(16), nullable=False, server_default="heal"),
    sa.Column("payload", sa.JSON),
)

WORKERS = sa.Table(
    "workers",
    METADATA,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", _UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", _UTCDateTime, nullable=False),
    sa.Column("stopped_at", _UTCDateTime),
    sa.Column("lease_s", sa.Float, nullable=False),
    sa.Column("max_heals", sa.Integer, nullable=False),
)

QUEUED, CLAIMED, DONE = "queued", "claimed", "done"
HEAL, APPROVAL, REMOTE = "heal", "approval", "remote"


class Clock:
    """Now, and now plus some seconds, as SQL: the server's clock on PostgreSQL, this host's on SQLite
    (one host there)."""

    def __init__(self, dialect: str) -> None:
        self.postgres = dialect == "postgresql"

    def now(self) -> Any:
        if self.postgres:
            return sa.func.timezone("UTC", sa.func.now())
        return sa.literal(utcnow().replace(tzinfo=None), sa.DateTime)

    def later(self, seconds: float) -> Any:
        if self.postgres:
            return self.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)
        return sa.literal((utcnow() + timedelta(seconds=seconds)).replace(tzinfo=None), sa.DateTime)
