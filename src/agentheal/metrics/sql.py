"""SQL pieces the figures share: time in seconds, days, percentiles by rank, all in the database."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from agentheal.events import EventStore

# Julian day of 1970-01-01T00:00Z: SQLite's julianday() minus this, in days, is epoch time.
_UNIX_JD = 2440587.5


def backend(store: EventStore) -> str:
    """The store's database, as SQLAlchemy names it (`sqlite`, `postgresql`)."""
    return sa.engine.make_url(store.url).get_backend_name()


def seconds(col: Any, dialect: str) -> sa.ColumnElement[float]:
    """A time column as epoch seconds (a float), so differences are plain arithmetic."""
    if dialect == "sqlite":
        return (sa.func.julianday(col) - _UNIX_JD) * 86400.0
    return sa.cast(sa.func.extract("epoch", col), sa.Float)


def day(col: Any, dialect: str) -> sa.ColumnElement[str]:
    """A time column's UTC date as YYYY-MM-DD."""
    if dialect == "sqlite":
        return sa.func.strftime("%Y-%m-%d", col)
    return sa.func.to_char(col, "YYYY-MM-DD")


def rate(hits: Any) -> sa.ColumnElement[int]:
    """The count of rows where `hits` holds, as one aggregate."""
    return sa.func.coalesce(sa.func.sum(sa.case((hits, 1), else_=0)), 0)


def percentile(store: EventStore, value: Any, where: list[Any], n: int, p: float) -> float | None:
    """The nearest-rank `p`-percentile of `value` over the rows `where` selects (`n` of them).

    Nearest rank: the value at position ceil(p * n) in ascending order, so it is always one of the
    measured values; the database sorts, only that one row comes back.
    """
    if n <= 0:
        return None
    rank = max(1, math.ceil(p * n))
    stmt = sa.select(value.label("v")).where(*where).order_by(value).limit(1).offset(rank - 1)
    rows = store.query(stmt)
    return float(rows[0]["v"]) if rows else None


def week(col: Any, dialect: str) -> sa.ColumnElement[str]:
    """A time column's week as YYYY-Www (weeks start on Monday)."""
    if dialect == "sqlite":
        return sa.func.strftime("%Y-W%W", col)
    return sa.func.to_char(col, 'IYYY-"W"IW')
