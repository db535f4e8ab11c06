"""The event store's schema revision: checked each time a store opens, upgraded by Alembic.

Opening a store costs one look at `alembic_version` when it is current. A SQLite store with no
revision is brought to the current one at once: a new home needs no command, and a store made
before agentheal used Alembic was always brought up to date on open. Any other store not at the
current revision is refused with the command that upgrades it — on PostgreSQL several workers share
the database, and which of them changes its schema, and when, is the operator's call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentheal.storage.engines import BUSY_TIMEOUT_S, set_wal
from agentheal.storage.errors import UPGRADE_COMMAND, SchemaNotCurrent
from agentheal.storage.urls import shown

# The revisions in agentheal/migrations/versions, oldest first; a test keeps them equal.
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010")
HEAD = REVISIONS[-1]
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version"
# Any PostgreSQL transaction upgrading the event store's schema holds this advisory lock: two workers
# running `db upgrade` at once take turns, and the second finds nothing left to do. (The checkpoint
# tables have a key of their own: see agentheal.storage.checkpoints.)
_UPGRADE_LOCK = 0x61676865616C  # "agheal"


@dataclass(frozen=True)
class Revision:
    """Where a store's schema stands."""

    revision: str | None  # None: no revision recorded
    tables: int  # agentheal's event tables present

    @property
    def current(self) -> bool:
        return self.revision == HEAD

    @property
    def describe(self) -> str:
        if self.revision is not None:
            return self.revision
        return "none (made before agentheal used Alembic)" if self.tables else "none (empty)"


def revision(conn: sa.Connection) -> Revision:
    """The revision recorded in the store, and how many of the event tables it has."""
    from agentheal.event_schema import TABLES

    inspector = sa.inspect(conn)
    found: str | None = None
    if inspector.has_table(VERSION_TABLE):
        found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    if found is not None:
        return Revision(found, len(TABLES))
    have = set(inspector.get_table_names())
    return Revision(None, sum(1 for name in TABLES if name in have))


def ensure_current(engine: sa.Engine) -> None:
    """Let a store open only at the current revision, first upgrading a SQLite store that has none.

    Raises:
        SchemaNotCurrent: the store is at an older revision (the message names the command), at one
            this agentheal does not know (a newer one upgraded it), or a PostgreSQL database lacks
            agentheal's tables.
    """
    with engine.connect() as conn:
        now = revision(conn)
    if now.current:
        return
    if now.revision is None and engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    raise _refusal(engine, now)


def _refusal(engine: sa.Engine, now: Revision) -> SchemaNotCurrent:
    where = f"the event store at {shown(engine.url.render_as_string(hide_password=False))}"
    if now.revision is not None and now.revision not in REVISIONS:
        return SchemaNotCurrent(
            f"{where} is at schema revision {now.revision}, which this agentheal does not know "
            f"(it knows {REVISIONS[0]}..{HEAD}): a newer agentheal upgraded it; upgrade agentheal"
        )
    return SchemaNotCurrent(
        f"{where} is at schema revision {now.describe}; this agentheal needs {HEAD}: run `{UPGRADE_COMMAND}`"
    )


def upgrade(engine: sa.Engine) -> tuple[Revision, Revision]:
    """Bring the store to the current revision, in one transaction that holds off other upgraders.

    Returns:
        The revision before and after.
    """
    with _upgrading(engine) as conn:
        before = revision(conn)
        if before.revision is not None and before.revision not in REVISIONS:
            raise _refusal(engine, before)
        if not before.current:
            from alembic import command

            command.upgrade(_alembic_config(conn), "head")
        after = revision(conn)
    return before, after


def _alembic_config(conn: sa.Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    return config


class _upgrading:
    """A connection in a transaction no other upgrader can enter: on PostgreSQL an advisory lock;
    on a SQLite file a separate engine whose transactions begin IMMEDIATE (the write lock first),
    since pysqlite would otherwise begin one only at the first INSERT, after the tables were read."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.own: sa.Engine | None = None
        self.conn: sa.Connection | None = None
        self.tx: sa.RootTransaction | None = None

    def __enter__(self) -> sa.Connection:
        engine = self.engine
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
            engine = self.own = _sqlite_immediate(engine.url)
        self.conn = engine.connect()
        self.tx = self.conn.begin()
        if engine.dialect.name == "postgresql":
            self.conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        return self.conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        assert self.conn is not None and self.tx is not None
        try:
            if exc_type is None:
                self.tx.commit()
            else:
                self.tx.rollback()
        finally:
            self.conn.close()
            if self.own is not None:
                self.own.dispose()


def _sqlite_immediate(url: sa.URL) -> sa.Engine:
    from sqlalchemy import event

    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S}, poolclass=sa.pool.NullPool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver begins nothing itself; "begin" below does
        set_wal(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
