"""LangGraph checkpoints where the event store is: a SQLite file under the home folder, or the
PostgreSQL database of `AGENTHEAL_DATABASE_URL` (langgraph-checkpoint-postgres's PostgresSaver).

`open_checkpoints` is the one place a heal's checkpointer comes from: the CLI's Healer, the
server's heal pool and `agentheal watch` all get theirs here. On PostgreSQL the saver's tables are
made by `agentheal db upgrade` (the saver's own migrations, recorded in `checkpoint_migrations`);
a database whose checkpoint tables are missing or older is refused with that command.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentheal.storage.errors import UPGRADE_COMMAND, SchemaNotCurrent, StorageError
from agentheal.storage.urls import libpq_url, shown

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from agentheal.config import Settings

CONNECT_TIMEOUT_S = 10
# One upgrader of the checkpoint tables at a time. Not the event store's key (agentheal.storage.schema),
# and asked for by polling, never waited on: the saver's migrations run CREATE INDEX CONCURRENTLY, which
# waits for every older transaction to end, a transaction blocked on that holder's lock included.
_UPGRADE_LOCK = 0x61676865616D
LOCK_WAIT_S = 300.0
# A pooled checkpoint connection idle this long is pinged before it is used again.
IDLE_CHECK_S = 5.0


class KnownThreads:
    """What a saver's caller knows of the checkpoints of the runs it drives, which spares the saver
    round trips. Each holds for a run until `forget` (this process stopped driving it); the run's
    lock keeps every other process from writing its checkpoints meanwhile.

    - A run the event store has just started (`new_thread`) has no checkpoint: its first read of the
      latest one, before its first step, gets nothing back without asking. (On PostgreSQL that read
      was a round trip of every heal.)
    - The checkpoint written last for a run is its latest: the read that resumes the run right after
      its breakpoint gets it back from memory, once, without asking or decoding its blobs.
    - A run that has a checkpoint and whose end the event store recorded with its answer
      (`skip_ended`) is not checkpointed again as the graph stops: whoever asks for the answer of an
      ended run reads it from the event store (`Healer.result`, `services.runs.result_of_run`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._new: set[str] = set()
        self._last: dict[str, Any] = {}  # thread -> the CheckpointTuple written last, to be read once
        self._checkpointed: set[str] = set()
        self._ended: Callable[[str], bool] = lambda thread: False

    def new_thread(self, thread_id: str) -> None:
        """The next read of this thread's latest checkpoint finds none without asking."""
        self._new.add(thread_id)

    def skip_ended(self, ended: Callable[[str], bool]) -> None:
        """`ended(thread)`: the run's end and answer are recorded; its checkpoint at the end is skipped."""
        self._ended = ended

    def forget(self, thread_id: str) -> None:
        """Reads of this thread's latest checkpoint ask the saver again."""
        self._new.discard(thread_id)
        self._last.pop(thread_id, None)
        self._checkpointed.discard(thread_id)

    def get_tuple(self, config: Any) -> Any:
        conf = config.get("configurable", {})
        thread = conf.get("thread_id")
        latest = not conf.get("checkpoint_id") and not conf.get("checkpoint_ns")
        if latest and thread in self._new:
            self._new.discard(thread)
            return None
        if latest and thread in self._last:
            return self._last.pop(thread)  # (read once: the loop that gets it updates it in place)
        found = super().get_tuple(config)  # type: ignore[misc]
        if found is not None:
            self._checkpointed.add(thread)
        return found

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        from langgraph.checkpoint.base import CheckpointTuple, get_checkpoint_metadata

        conf = config["configurable"]
        thread, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        if not ns and thread in self._checkpointed and self._ended(thread):
            skipped = {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}
            return {"configurable": skipped}
        saved = super().put(config, checkpoint, metadata, new_versions)  # type: ignore[misc]
        self._checkpointed.add(thread)
        self._last.pop(thread, None)
        values = checkpoint["channel_values"].values()
        if not ns and all(type(v).__name__ != "_DeltaSnapshot" for v in values):  # (those are read back)
            parent = conf.get("checkpoint_id")
            self._last[thread] = CheckpointTuple(
                config=saved,
                checkpoint=checkpoint,  # (the loop handed the saver a copy of its own)
                metadata=get_checkpoint_metadata(config, metadata),
                parent_config=(
                    {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": parent}}
                    if parent
                    else None
                ),
                pending_writes=[],
            )
        return saved

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        super().put_writes(config, writes, task_id, task_path)  # type: ignore[misc]
        self._last.pop(config["configurable"]["thread_id"], None)  # its latest has writes now: read back


class Checkpoints:
    """A checkpoint saver and what it holds open; `close()` (or leaving the `with`) releases it."""

    def __init__(
        self,
        saver: BaseCheckpointSaver[Any],
        close: Callable[[], None],
        where: str,
        idle: IdleCheck | None = None,
    ) -> None:
        self.saver = saver
        self.where = where
        self._close = close
        self._idle = idle

    @property
    def idle_check_s(self) -> float | None:
        """PostgreSQL: how long its connection sits idle before it is pinged at its next use."""
        return self._idle.idle_s if self._idle is not None else None

    @idle_check_s.setter
    def idle_check_s(self, seconds: float) -> None:
        if self._idle is not None:
            self._idle.idle_s = seconds

    def new_thread(self, thread_id: str) -> None:
        """A run just started: its first read of the latest checkpoint is skipped (`KnownThreads`)."""
        if isinstance(self.saver, KnownThreads):
            self.saver.new_thread(thread_id)

    def skip_ended(self, ended: Callable[[str], bool]) -> None:
        """Runs for which `ended(run_id)` holds are not checkpointed again at their end (`KnownThreads`)."""
        if isinstance(self.saver, KnownThreads):
            self.saver.skip_ended(ended)

    def forget(self, thread_id: str) -> None:
        """The run stopped driving here: later reads ask the saver."""
        if isinstance(self.saver, KnownThreads):
            self.saver.forget(thread_id)

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_checkpoints(settings: Settings) -> Checkpoints:
    """The checkpointer of this home: PostgreSQL when `database_url` is set, else the SQLite file.

    Raises:
        StorageError: PostgreSQL cannot be reached.
        SchemaNotCurrent: its checkpoint tables are missing or older than this agentheal's.
    """
    url = _database_url(settings)
    return _postgres(url) if url else _sqlite(settings.checkpoints_path)


def _database_url(settings: Settings) -> str | None:
    secret = settings.database_url
    return secret.get_secret_value() if secret is not None else None


def _sqlite(path: Path) -> Checkpoints:
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")

    class Saver(KnownThreads, SqliteSaver):
        pass

    return Checkpoints(Saver(conn), conn.close, str(path))


def _connect(url: str) -> Any:
    """One psycopg connection as PostgresSaver wants it (autocommit, dict rows, no prepared
    statements: a pooler in transaction mode cannot keep them)."""
    import psycopg
    from psycopg.rows import dict_row

    try:
        return psycopg.Connection.connect(
            libpq_url(url),
            autocommit=True,
            prepare_threshold=0,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
        )
    except psycopg.OperationalError as exc:
        raise StorageError(f"cannot connect to PostgreSQL at {shown(url)}: {exc}".strip()) from None


@dataclass(frozen=True)
class CheckpointSchema:
    """The saver's migrations a database has applied (`version`; -1: none) and this one needs."""

    version: int
    needed: int

    @property
    def current(self) -> bool:
        return self.version >= self.needed


def _needed() -> int:
    from langgraph.checkpoint.postgres import PostgresSaver

    return len(PostgresSaver.MIGRATIONS) - 1


def _version(conn: Any) -> int:
    if conn.execute("SELECT to_regclass('checkpoint_migrations') AS t").fetchone()["t"] is None:
        return -1
    found = conn.execute("SELECT max(v) AS v FROM checkpoint_migrations").fetchone()["v"]
    return -1 if found is None else int(found)


def checkpoint_schema(url: str) -> CheckpointSchema:
    """Where the checkpoint tables of the PostgreSQL database at `url` stand."""
    with _connect(url) as conn:
        return CheckpointSchema(_version(conn), _needed())


def _refusal(url: str, schema: CheckpointSchema) -> SchemaNotCurrent:
    what = "has no checkpoint tables" if schema.version < 0 else f"has checkpoint migration {schema.version}"
    return SchemaNotCurrent(
        f"the database at {shown(url)} {what}; this agentheal needs {schema.needed}: run `{UPGRADE_COMMAND}`"
    )


def _postgres(url: str) -> Checkpoints:
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    with _connect(url) as conn:
        schema = CheckpointSchema(_version(conn), _needed())
    if not schema.current:
        raise _refusal(url, schema)
    # A pool of one, not a bare connection: a connection PostgreSQL dropped (a restart, a failover)
    # is replaced at the next checkout instead of failing every later heal of a long-lived worker.
    # It is asked only after it sat idle: a heal checks it out twice a step, and a ping at each was a
    # fifth of a heal's statements.
    idle = IdleCheck(IDLE_CHECK_S)
    pool: ConnectionPool[Any] = ConnectionPool(
        libpq_url(url),
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        min_size=1,
        max_size=1,
        open=True,
        check=idle,
        num_workers=1,
        timeout=CONNECT_TIMEOUT_S * 3,
        name="agentheal-checkpoints",
    )

    class Saver(KnownThreads, PostgresSaver):
        pass

    return Checkpoints(Saver(pool), pool.close, shown(url), idle)


class IdleCheck:
    """psycopg_pool's check of a connection at checkout, asked only when it was last checked out
    `idle_s` ago or more: in use moments ago, the server had it then, and a write through one dropped
    since fails and is discarded by the pool on its return."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._taken: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: Any) -> None:
        from psycopg_pool import ConnectionPool

        now = time.monotonic()
        last = self._taken.get(conn)
        if last is None or now - last >= self.idle_s or conn.broken:
            ConnectionPool.check_connection(conn)  # raises if the server no longer has it
        self._taken[conn] = now


def setup_checkpoints(url: str) -> tuple[CheckpointSchema, CheckpointSchema]:
    """Apply the saver's migrations to the PostgreSQL database at `url`, one upgrader at a time.

    Returns:
        The checkpoint schema before and after.
    """
    from langgraph.checkpoint.postgres import PostgresSaver

    with _connect(url) as conn:
        deadline = time.monotonic() + LOCK_WAIT_S
        while not conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (_UPGRADE_LOCK,)).fetchone()["got"]:
            if time.monotonic() > deadline:
                raise StorageError(
                    f"another `{UPGRADE_COMMAND}` has been upgrading the checkpoint tables at {shown(url)} "
                    f"for {LOCK_WAIT_S:.0f} s; run it again when it has finished"
                )
            time.sleep(0.1)
        try:
            before = CheckpointSchema(_version(conn), _needed())
            if not before.current:
                PostgresSaver(conn).setup()
            return before, CheckpointSchema(_version(conn), _needed())
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_UPGRADE_LOCK,))


def ping(settings: Settings) -> str:
    """`ok` when the checkpointer can be reached (and, on PostgreSQL, its tables are current)."""
    url = _database_url(settings)
    if url is None:
        path = settings.checkpoints_path
        with sqlite3.connect(f"file:{path}?mode=rwc", uri=True, timeout=2) as conn:
            conn.execute("PRAGMA schema_version").fetchone()
        return "ok"
    schema = checkpoint_schema(url)
    if not schema.current:
        raise _refusal(url, schema)
    return "ok"


def last_values(settings: Settings, run_id: str) -> dict[str, Any]:
    """A run's state at its last checkpoint (its plan, diagnosis, persona...); empty without one."""
    url = _database_url(settings)
    if url is None and not settings.checkpoints_path.is_file():
        return {}
    with open_checkpoints(settings) as checkpoints:
        found = checkpoints.saver.get_tuple({"configurable": {"thread_id": run_id}})
    return dict(found.checkpoint.get("channel_values") or {}) if found is not None else {}
