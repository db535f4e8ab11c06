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


def percentiles(
    store: EventStore, value: Any, where: list[Any], ps: tuple[float, ...]
) -> tuple[int, list[float | None]]:
    """How many rows `where` selects, and the nearest-rank `p`-percentile of `value` over them for each p.

    Nearest rank: the value at position ceil(p * n) in ascending order, so it is always one of the
    measured values. One sort in the database; only the rows at those ranks come back.
    """
    inner = (
        sa.select(
            value.label("v"),
            sa.func.row_number().over(order_by=value).label("rn"),
            sa.func.count().over().label("cnt"),
        )
        .where(*where)
        .subquery()
    )
    # rn = ceil(p * cnt), written without ceil (not every SQLite has its math functions)
    at = [sa.and_(inner.c.rn >= p * inner.c.cnt, inner.c.rn - 1 < p * inner.c.cnt) for p in ps]
    rows = store.query(sa.select(inner.c.v, inner.c.rn, inner.c.cnt).where(sa.or_(*at)))
    if not rows:
        return 0, [None for _ in ps]
    n = int(rows[0]["cnt"])
    by_rank = {int(r["rn"]): float(r["v"]) for r in rows}
    return n, [by_rank.get(max(1, math.ceil(p * n))) for p in ps]


def week(col: Any, dialect: str) -> sa.ColumnElement[str]:
    """A time column's week as YYYY-Www (weeks start on Monday)."""
    if dialect == "sqlite":
        return sa.func.strftime("%Y-W%W", col)
    return sa.func.to_char(col, 'IYYY-"W"IW')
