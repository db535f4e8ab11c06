"""Where memory keeps what it keeps: chromadb embedded or a Chroma server, the records in SQLite or
PostgreSQL.

- Vectors: chromadb's PersistentClient in the home folder by default, or `chroma run` at
  `AGENTHEAL_MEMORY_URL=http://HOST:PORT` (the embedded client is not safe for several processes
  writing one folder, so several workers share a server).
- Records (text, metadata, outcomes, the lexical index): `records.sqlite` beside the collection by
  default, or the PostgreSQL database of `AGENTHEAL_DATABASE_URL` (`agentheal.memory_pg`), where
  every worker sees every other's records at once.

The URL check uses the standard library only: settings are validated on every command, `--help`
included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.memory_pg import PgRecordStore
    from agentheal.memory_store import RecordStore

EXPECTED = "http://HOST:PORT"
_DEFAULT_PORTS = {"http": 8000, "https": 443}  # 8000: what `chroma run` listens on unless told


class MemoryUrlError(ValueError):
    """A memory URL that does not name a Chroma server; the message says what is wrong."""


def check_memory_url(url: str) -> str:
    """The URL stripped of blanks and a trailing slash, or MemoryUrlError naming what is wrong."""
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise MemoryUrlError(f"expected {EXPECTED} of a Chroma server: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise MemoryUrlError(
            f"expected {EXPECTED} of a Chroma server, got {got} (unset it for the embedded store)"
        )
    if not parts.hostname:
        raise MemoryUrlError(f"expected {EXPECTED} of a Chroma server: no host")
    if parts.path or parts.query or parts.fragment or parts.username:
        raise MemoryUrlError(f"expected {EXPECTED} of a Chroma server: no path, query or user in it")
    return url


def chroma_client(settings: Settings) -> tuple[Any, str]:
    """chromadb's client for this home, and where it keeps the vectors (for messages).

    Raises:
        MemoryUrlError: the Chroma server at `memory_url` does not answer.
        chromadb.errors.ChromaError, OSError, ValueError: the embedded folder cannot be opened.
    """
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma = ChromaSettings(anonymized_telemetry=False)
    if settings.memory_url is None:
        folder = settings.memory_dir
        folder.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(folder), settings=chroma), str(folder)
    url = settings.memory_url
    parts = urlsplit(url)
    assert parts.hostname is not None  # check_memory_url
    try:
        client = chromadb.HttpClient(
            host=parts.hostname,
            port=parts.port or _DEFAULT_PORTS[parts.scheme],
            ssl=parts.scheme == "https",
            settings=chroma,
        )
    except ValueError as exc:  # chromadb's "Could not connect to a Chroma server"
        raise MemoryUrlError(
            f"the Chroma server at {url} (AGENTHEAL_MEMORY_URL) does not answer: {exc} Start it "
            "(`chroma run --path DIR --host HOST --port PORT`) or unset AGENTHEAL_MEMORY_URL for the "
            "embedded store in the home folder"
        ) from None
    return client, f"the Chroma server at {url}"


def record_store(settings: Settings) -> RecordStore | PgRecordStore:
    """The record store of this home: PostgreSQL when `database_url` is set, else SQLite beside the
    embedded collection.

    Raises:
        agentheal.storage.StorageError: PostgreSQL cannot be reached, or lacks memory's tables
            (`agentheal db upgrade` makes them).
        sqlite3.Error: the SQLite file cannot be opened.
    """
    if settings.database_url is not None:
        from agentheal.memory_pg import PgRecordStore

        return PgRecordStore(settings.database_url.get_secret_value())
    from agentheal.memory_store import RecordStore

    settings.memory_dir.mkdir(parents=True, exist_ok=True)
    return RecordStore(settings.memory_dir / "records.sqlite")
