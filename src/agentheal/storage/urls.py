"""Database URLs: what `AGENTHEAL_DATABASE_URL` may say, and the forms each driver wants of it.

People write the libpq form (`postgresql://USER@HOST:PORT/DB`); SQLAlchemy needs the driver named
(`postgresql+psycopg://…`) or it looks for psycopg2, and psycopg itself wants the libpq form back.
Only the standard library is used here: settings are validated on every command, `--help` included.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from agentheal.storage.errors import StorageError

# What a PostgreSQL URL may start with; the last is SQLAlchemy's spelling, accepted as given.
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
EXPECTED = "postgresql://USER@HOST:PORT/DB"


def check_database_url(url: str) -> str:
    """The URL stripped, or StorageError naming what is wrong with it (never its password)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise StorageError(f"expected {EXPECTED}: {exc}") from None
    if parts.scheme not in POSTGRES_SCHEMES:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise StorageError(f"expected {EXPECTED}, got {got} (unset it for SQLite under the home folder)")
    if not parts.netloc and "host=" not in parts.query:
        raise StorageError(f"expected {EXPECTED}: no host (or ?host=/socket/folder)")
    return url


def is_postgres(url: str) -> bool:
    """Whether a database or SQLAlchemy URL names PostgreSQL."""
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def sqlalchemy_url(url: str) -> str:
    """The URL SQLAlchemy opens with psycopg 3: `postgresql+psycopg://…`."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        return url
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def libpq_url(url: str) -> str:
    """The URL psycopg connects with: `postgresql://…`."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise StorageError(f"not a PostgreSQL URL: {shown(url)}")
    return urlunsplit(parts._replace(scheme="postgresql"))


def shown(url: str) -> str:
    """The URL as messages show it: as people write it (no driver), the password replaced by `***`."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES and parts.password is None:
        return url  # urlunsplit would drop the empty host of sqlite:////path
    parts = parts._replace(scheme="postgresql") if parts.scheme in POSTGRES_SCHEMES else parts
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    return urlunsplit(parts)
