"""Which process drives a run, on a database several hosts share: a session advisory lock per
fingerprint, held on a connection of the driving process for as long as it drives the run.

On one host the heal runner holds a file lock under the home folder; workers on several hosts (or
with homes of their own) cannot see each other's files, so on PostgreSQL the lock is the
database's. It ends with the process: a killed worker's connection closes and the server releases
its locks, so the next heal of that fingerprint finds the run free and resumes it from its
checkpoint; a run whose driver is alive is joined, never driven twice.

A worker that stalls past its lease (frozen, cut from the network) keeps its session, and with it
the lock, while another worker takes its claim over. The new holder ends that session (`seize`):
the stalled worker is fenced by its claim (agentheal.work.fencing), not by this lock, so nothing it
does when it wakes needs the lock, and the new holder can resume the run at once. Only sessions a
worker named after itself (`name_sessions`) are ended: a CLI heal's is left alone (joined).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from agentheal.storage.urls import libpq_url

# Not begin_heal's key for the fingerprint: that one is taken per transaction while a run starts.
_KEY = "SELECT hashtextextended('agentheal-run:' || %s, 0)"
# A run's lock taken (or tried) in one statement, its key with it (to release it by)
_RUN_KEY = "(SELECT hashtextextended('agentheal-run:' || %s, 0) AS k) AS s"
_LOCK = "SELECT k, pg_advisory_lock(k) FROM " + _RUN_KEY
_TRY_LOCK = "SELECT k, pg_try_advisory_lock(k) FROM " + _RUN_KEY
# The sessions holding a run's lock: pg_locks splits an advisory lock's bigint key in two oids.
_HOLDERS = """
SELECT l.pid, coalesce(a.application_name, '') FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid <> pg_backend_pid()
  AND l.classid::bigint = ((%(key)s::bigint >> 32) & 4294967295)
  AND l.objid::bigint = (%(key)s::bigint & 4294967295)
"""
_PREFIX = "agentheal-worker "
# The application name of this process's run-lock sessions, once it works as a worker.
_session_name: str | None = None


def name_sessions(worker: str) -> None:
    """Name this process's run-lock sessions after its worker (those opened from now on)."""
    global _session_name
    _session_name = (_PREFIX + worker)[:63]


def seize(url: str, fingerprint: str, worker: str, timeout_s: float = 10.0) -> list[int]:
    """End the sessions of other workers holding the run lock of `fingerprint` (this worker took their
    claim over); returns their server pids, once the lock is free of them (or `timeout_s` passed)."""
    import psycopg

    mine = (_PREFIX + worker)[:63]
    ended: list[int] = []
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        key = conn.execute(_KEY, (fingerprint,)).fetchone()[0]  # type: ignore[index]
        while True:
            rows = conn.execute(_HOLDERS, {"key": key}).fetchall()
            stale = [int(pid) for pid, name in rows if name.startswith(_PREFIX) and name != mine]
            if not stale or time.monotonic() > deadline:
                return ended
            for pid in stale:
                if pid not in ended:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    ended.append(pid)
            time.sleep(0.05)


class RunLocks:
    """One connection of this driver (a heal runner), holding the locks of the runs it drives."""

    def __init__(self, url: str) -> None:
        self.url = libpq_url(url)
        self._conn: Any = None
        self._mutex = threading.Lock()

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            # (a name of None is left out of the connection string)
            self._conn = psycopg.connect(self.url, autocommit=True, application_name=_session_name)
        return self._conn

    def _take(self, fingerprint: str, wait: bool) -> tuple[Any, int, bool]:
        """Take (or try) the lock in one statement, the key worked out by the server in it; returns
        the connection, the key (to release it with) and whether it was taken."""
        import psycopg

        stmt = _LOCK if wait else _TRY_LOCK
        with self._mutex:
            conn = self._connection()
        try:
            key, got = conn.execute(stmt, (fingerprint,)).fetchone()
        except psycopg.OperationalError:  # its session was ended (seized by another worker): a new one
            with self._mutex:
                if self._conn is conn:
                    with contextlib.suppress(Exception):
                        conn.close()
                    self._conn = None
                conn = self._connection()
            key, got = conn.execute(stmt, (fingerprint,)).fetchone()
        return conn, int(key), wait or bool(got)  # (pg_advisory_lock returns once it is taken)

    @contextlib.contextmanager
    def hold(self, fingerprint: str, wait: bool) -> Iterator[bool]:
        """Hold the run lock of `fingerprint` (waiting for it, or not: then yields False when another
        process holds it)."""
        conn, key, got = self._take(fingerprint, wait)
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
            # Released before the connection goes: the server lets go of a closed session's locks
            # only once it has noticed, and the next holder's one-statement take can be there first.
            with contextlib.suppress(Exception):
                self._conn.execute("SELECT pg_advisory_unlock_all()")
            self._conn.close()
