"""The database of a home as the `db` commands see it: where its schema stands, and upgrading it
(the event store by Alembic, the checkpoints by their saver's own migrations)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentheal.storage import schema
from agentheal.storage.errors import StorageError
from agentheal.storage.urls import shown

if TYPE_CHECKING:
    from agentheal.config import Settings


def _engine(settings: Settings) -> sa.Engine:
    return sa.create_engine(settings.events_url, poolclass=sa.pool.NullPool)


def _postgres_url(settings: Settings) -> str | None:
    secret = settings.database_url
    return secret.get_secret_value() if secret is not None else None


def _where(settings: Settings) -> dict[str, str]:
    url = _postgres_url(settings)
    if url is not None:
        return {"backend": "postgresql", "database": shown(url)}
    return {"backend": "sqlite", "database": str(settings.home_dir / "events.sqlite")}


def _events(rev: schema.Revision, sqlite: bool) -> dict[str, Any]:
    # a SQLite store without a revision (new, or made before Alembic) is upgraded when it opens
    automatic = sqlite and rev.revision is None
    return {
        "revision": rev.revision,
        "head": schema.HEAD,
        "tables": rev.tables,
        "current": rev.current or automatic,
    }


def _checkpoints(version: int, needed: int) -> dict[str, Any]:
    return {"version": version if version >= 0 else None, "needed": needed, "current": version >= needed}


def _connected(what: str, settings: Settings, fn: Any) -> Any:
    try:
        return fn()
    except sa.exc.OperationalError as exc:
        where = _where(settings)["database"]
        raise StorageError(f"cannot {what} the database at {where}: {exc.orig}") from None


def status(settings: Settings) -> dict[str, Any]:
    """Where the event store's and the checkpoints' schema stand; `current` False: run `db upgrade`."""
    from agentheal.storage.checkpoints import checkpoint_schema

    found: dict[str, Any] = _where(settings)
    url = _postgres_url(settings)
    events_file = Path(settings.home_dir / "events.sqlite")
    if url is None and not events_file.exists():
        found["events"] = _events(schema.Revision(None, 0), sqlite=True)
    else:
        engine = _engine(settings)
        try:

            def read() -> schema.Revision:
                with engine.connect() as conn:
                    return schema.revision(conn)

            found["events"] = _events(_connected("read", settings, read), sqlite=url is None)
        finally:
            engine.dispose()
    if url is None:
        found["checkpoints"] = {"file": str(settings.checkpoints_path), "current": True}
    else:
        cps = checkpoint_schema(url)
        found["checkpoints"] = _checkpoints(cps.version, cps.needed)
    found["current"] = bool(found["events"]["current"] and found["checkpoints"]["current"])
    return found


def upgrade(settings: Settings) -> dict[str, Any]:
    """Bring the event store and the checkpoints to this agentheal's schema; safe to run again, and
    by several workers at once (they take turns).

    Returns:
        Each part's revision before and after.
    """
    from agentheal.storage.checkpoints import open_checkpoints, setup_checkpoints

    done: dict[str, Any] = _where(settings)
    engine = _engine(settings)
    try:
        before, after = _connected("upgrade", settings, lambda: schema.upgrade(engine))
    finally:
        engine.dispose()
    done["events"] = {"before": before.revision, "after": after.revision, "head": schema.HEAD}
    url = _postgres_url(settings)
    if url is None:
        with open_checkpoints(settings) as checkpoints:
            checkpoints.saver.setup()  # type: ignore[attr-defined]  # SqliteSaver's, made on first use anyway
        done["checkpoints"] = {"file": str(settings.checkpoints_path)}
    else:
        was, now = setup_checkpoints(url)
        done["checkpoints"] = {
            "before": was.version if was.version >= 0 else None,
            "after": now.version,
            "needed": now.needed,
        }
    return done
