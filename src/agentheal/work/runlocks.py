"""Which process drives a run, on a database several hosts share: a session advisory lock per
fingerprint, held on a connection of the driving process for as long as it drives the run.

On one host the heal runner holds a file lock under the home folder; workers on several hosts (or
with homes of their own) cannot see each other's files, so on PostgreSQL the lock is the
database's. It ends with the process: a killed worker's connection closes and the server releases
its locks, so the next heal of that fingerprint finds the run free and resumes it from its
checkpoint; a run whose driver is alive is joined, never driven twice.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from agentheal.storage.urls import libpq_url

# Not begin_heal's key for the fingerprint: that one is taken per transaction while a run starts.
_KEY = "SELECT hashtextextended('agentheal-run:' || %s, 0)"


class RunLocks:
    """One connection of this driver (a heal runner), holding the locks of the runs it drives."""

    def __init__(self, url: str) -> None:
        self.url = libpq_url(url)
        self._conn: Any = None
        self._mutex = threading.Lock()

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True)
        return self._conn

    @contextlib.contextmanager
    def hold(self, fingerprint: str, wait: bool) -> Iterator[bool]:
        """Hold the run lock of `fingerprint` (waiting for it, or not: then yields False when another
        process holds it)."""
        with self._mutex:
            conn = self._connection()
            key = conn.execute(_KEY, (fingerprint,)).fetchone()[0]
        if wait:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        else:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            if not got:
                yield False
                return
        try:
            yield True
        finally:
            with contextlib.suppress(Exception):  # a connection gone has released it already
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
