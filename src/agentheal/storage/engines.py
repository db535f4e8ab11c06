"""The event store's SQLAlchemy engine on either backend, and asking a kept connection whether the
database still has it.

SQLite: WAL, NORMAL sync, foreign keys and a busy timeout on every connection. PostgreSQL (psycopg 3):
a pooled connection, and one a thread keeps for its writes, is pinged before use after it was idle,
since a restart, a failover or an idle time-out drops it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentheal.storage.urls import sqlalchemy_url

# How long a SQLite writer waits for another process's write lock before it gives up.
BUSY_TIMEOUT_S = 30.0
# Connections each store's pool keeps: each thread that writes keeps one, reads borrow one at a time.
POOL_SIZE = 16
# PostgreSQL: a pooled connection idle this long is pinged when it is taken from the pool again.
IDLE_PING_S = 5.0


class IdlePing:
    """How long a pooled PostgreSQL connection sits idle before it is pinged at its next checkout."""

    def __init__(self, idle_s: float = IDLE_PING_S) -> None:
        self.idle_s = idle_s


def event_store_engine(url: str, idle_ping: IdlePing | None = None, **kwargs: Any) -> sa.Engine:
    """An engine for the event store at a SQLite or PostgreSQL URL (the psycopg driver is named for a
    plain `postgresql://`); `kwargs` go to `sqlalchemy.create_engine`. `idle_ping`: PostgreSQL's
    pooled connections are pinged after that long idle (5 s unless given).

    Raises:
        sqlalchemy.exc.ArgumentError: the URL cannot be parsed.
    """
    from sqlalchemy import event

    parsed = sa.engine.make_url(sqlalchemy_url(url))
    if parsed.get_backend_name() != "sqlite":
        engine = sa.create_engine(parsed, pool_size=POOL_SIZE, **kwargs)
        ping_when_idle(engine, idle_ping or IdlePing())
        return engine
    in_memory = parsed.database in (None, "", ":memory:")
    if not in_memory:
        assert parsed.database is not None
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        parsed,
        # `timeout` is the driver's busy timeout: wait for another process's write lock.
        connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
        **({} if in_memory else {"pool_size": POOL_SIZE}),
        **kwargs,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        # WAL: readers never block the writer, and a commit is durable once it returns.
        set_wal(dbapi_conn)
        # NORMAL under WAL: a commit survives the process being killed (what a heal run must
        # survive); only an OS crash or power loss can take the last commits. Half the fsyncs.
        cursor.execute("PRAGMA synchronous=NORMAL")
        # SQLite ignores foreign keys unless asked; Postgres always checks them.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def ping_when_idle(engine: sa.Engine, idle: IdlePing) -> None:
    """Ask the server whether it still has a pooled connection when it is taken from the pool after
    `idle.idle_s` or more in it (a restart, a failover or an idle time-out drops connections), not at
    every checkout as `pool_pre_ping` does: a worker's claims, leases and reads took a round trip
    more each. A connection that fails the ping is replaced by a new one (SQLAlchemy's
    DisconnectionError at checkout)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _made(_dbapi_conn: Any, record: Any) -> None:
        record.info["returned"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["returned"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("returned", 0.0) < idle.idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DisconnectionError(f"the database dropped a pooled connection: {exc}") from exc


class KeptConnection:
    """When a connection kept open (not taken from the pool for each use) was last used, and whether
    the database still has it: asked before a write, never after a failed one (which may have been
    committed), and only after `idle_s`, so a busy writer pays nothing."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.used = time.monotonic()

    def usable(self, idle_s: float) -> bool:
        """False (and the connection invalidated) when it is closed or the database dropped it."""
        conn = self.conn
        if conn.closed or conn.invalidated:
            return False
        now = time.monotonic()
        idle, self.used = now - self.used, now
        if idle < idle_s:
            return True
        raw = conn.connection.dbapi_connection
        assert raw is not None
        try:
            cursor = raw.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            raw.rollback()
        except Exception:  # whatever the driver says, this connection cannot be written through
            conn.invalidate()
            return False
        return True


@contextlib.contextmanager
def underneath(conn: sa.Connection) -> Iterator[Any]:
    """The driver's connection under `conn`, for a statement made once and run underneath SQLAlchemy
    (its statement machinery costs as much as a cheap statement's round trip). Any error but an
    integrity error invalidates `conn`: the server may have dropped it, so the next use takes a new one."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    try:
        yield raw
    except conn.dialect.loaded_dbapi.IntegrityError:
        raise
    except BaseException:
        conn.invalidate()
        raise


def set_wal(dbapi_conn: Any) -> None:
    """Put a SQLite database in WAL mode. Switching a new file to WAL needs it to itself, and SQLite
    answers "database is locked" at once, without its busy wait, while another connection is
    opening it too (several workers starting on one new store): ask again until the busy time-out."""
    import sqlite3

    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
