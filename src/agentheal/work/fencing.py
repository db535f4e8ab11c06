"""Fencing: only the worker that holds a run's claim now acts for it and records what only its
driver may record (its actions, its status, its end).

A worker that stalls past its lease (a long pause, a frozen VM, a network cut from PostgreSQL) has
its claim taken over: another worker claims it and resumes the run from its checkpoint. When the
first one wakes it must not carry on with the run. Each claim has an epoch, the item's `claims`
count, which every claim of the item raises; this process heals a claim as (worker, epoch), and:

- before each action, the execute node asks `before_action`: one UPDATE that extends the lease of
  exactly this claim (this worker's name and this epoch, still claimed). It touches no row when
  the claim is another's now (or was handed back): `LeaseLost` is raised and nothing is done;
- the records only the driver makes are written by `write`, one statement whose condition reads
  the claim's row `FOR SHARE`: unless it still names this worker and epoch, nothing is written
  (`LeaseLost`); a takeover's UPDATE of that row waits for the write to commit, so a write and a
  takeover never interleave (the new holder reads every record its predecessor made);
- the lease keeper marks a claim lost when its renewal touched no row (`lost`): the next action or
  write raises `LeaseLost` before asking the database.

What no check here can stop is an action already under way when the worker stalled: it finishes
when the worker wakes, and its record is refused. A lease longer than the slowest action leaves
that only to a stall in the middle of one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from agentheal.storage.engines import underneath
from agentheal.work.queue import WorkQueue
from agentheal.work.tables import CLAIMED, WORK_ITEMS

_W = WORK_ITEMS.c
# The claim's row still names this worker and epoch, read FOR SHARE (a takeover waits for the write)
_OURS = (
    _W.run_id == sa.bindparam("fence_run"),
    _W.worker == sa.bindparam("fence_worker"),
    _W.claims == sa.bindparam("fence_epoch"),
    _W.state == CLAIMED,
)
_STILL_OURS = sa.exists(
    sa.select(sa.literal(1)).select_from(WORK_ITEMS).where(*_OURS).with_for_update(read=True)
)
_RENEW = WORK_ITEMS.update().where(*_OURS)
_OURS_ROW = sa.select(_W.run_id).where(*_OURS)


class LeaseLost(Exception):
    """This worker no longer holds the claim of a run it was healing: another worker took it over.
    The run stops here; its holder carries it on."""

    def __init__(self, run_id: str, worker: str, epoch: int, holder: str | None, what: str) -> None:
        self.run_id, self.worker, self.epoch, self.holder = run_id, worker, epoch, holder
        now = f"the work table gives it to worker {holder} now" if holder else "it is claimed by no one now"
        super().__init__(
            f"worker {worker} lost the lease of run {run_id[:12]} (its claim {epoch}): {now}; "
            f"stopped here before {what}"
        )


@dataclass(frozen=True)
class Fence:
    worker: str
    epoch: int


class Fences:
    """The claims this process heals runs under, by run id."""

    def __init__(self, queue: WorkQueue, lease_s: float) -> None:
        self.queue = queue
        self.lease_s = lease_s
        self._held: dict[str, Fence] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._guards: dict[tuple[Any, ...], Any] = {}  # statements made once, by shape
        self._renew: Any = None
        self._renew_raw: tuple[Any, str, dict[str, Any]] | None = None

    def hold(self, run_id: str, worker: str, epoch: int) -> None:
        with self._lock:
            self._held[run_id] = Fence(worker, epoch)
            self._lost.discard(run_id)

    def release(self, run_id: str) -> None:
        with self._lock:
            self._held.pop(run_id, None)
            self._lost.discard(run_id)

    def lost(self, run_id: str) -> None:
        """The lease keeper's renewal no longer touched this run's claim."""
        with self._lock:
            if run_id in self._held:
                self._lost.add(run_id)

    def holds(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._held

    def _fence(self, run_id: str) -> tuple[Fence | None, bool]:
        with self._lock:
            return self._held.get(run_id), run_id in self._lost

    def before_action(self, run_id: str, what: str) -> None:
        """Extend this claim's lease before an action, or raise `LeaseLost` when it is not ours now.

        Raises:
            LeaseLost: the claim names another worker or epoch, or is no longer claimed.
        """
        fence, lost = self._fence(run_id)
        if fence is None:
            return  # not healed under a claim here (a CLI heal, a SQLite home)
        if not lost:
            # one statement, its own transaction: one round trip before an action
            if self.queue.postgres:  # (made once, run underneath SQLAlchemy as a fenced write is)
                with self.queue.engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    renew = self._renew_raw or self._compiled(self._renew_statement(), [], conn.dialect)
                    self._renew_raw = renew
                    touched = self._write_raw(renew, self._binds(run_id, fence), conn)
            else:
                with self.queue.engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    touched = conn.execute(self._renew_statement(), self._binds(run_id, fence)).rowcount
            if touched:
                return
        raise LeaseLost(run_id, fence.worker, fence.epoch, self.holder(run_id), what)

    def _renew_statement(self) -> Any:
        # PostgreSQL's lease reads the server's clock: nothing in it changes, so it is made once
        # (making it cost more than running it); SQLite's is this host's time, made each time.
        if self._renew is None or not self.queue.postgres:
            self._renew = _RENEW.values(lease_until=self.queue.clock.later(self.lease_s))
        return self._renew

    def write(self, run_id: str, stmt: Any, values: dict[str, Any] | None, what: str, conn: Any) -> int:
        """Run one write of the event store for `run_id` (an INSERT of one row, or an UPDATE) on its
        connection `conn`, only if this worker holds the run's claim now: one statement whose
        condition reads the claim's row `FOR SHARE`; returns its row count.

        Raises:
            LeaseLost: the claim is another's now; nothing was written.
        """
        fence, lost = self._fence(run_id)
        assert fence is not None, "write() is for runs this process holds (holds())"
        if not lost:
            params = {**(values or {}), **self._binds(run_id, fence)}
            if self.queue.postgres:
                count = self._write_raw(self._raw(stmt, list(values or {}), conn.dialect), params, conn)
            else:
                with conn.begin():
                    count = int(conn.execute(self._guarded(stmt, list(values or {})), params).rowcount)
            if count > 0 or self._still_ours(run_id, fence):  # (an UPDATE of no row: the caller says why)
                return count
        what = "recording " + what.removesuffix(" (is the run started?)")
        raise LeaseLost(run_id, fence.worker, fence.epoch, self.holder(run_id), what)

    def _guarded(self, stmt: Any, keys: list[str]) -> Any:
        shape = (id(stmt), tuple(keys) if isinstance(stmt, sa.Insert) else ())
        guarded = self._guards.get(shape)
        if guarded is None:
            if isinstance(stmt, sa.Insert):  # INSERT … SELECT the row's values WHERE the claim holds
                table = stmt.table
                row = sa.select(*(sa.bindparam(k, type_=table.c[k].type) for k in keys)).where(_STILL_OURS)
                # (SQLAlchemy keeps an INSERT's row count only when asked to)
                guarded = table.insert().from_select(keys, row).execution_options(preserve_rowcount=True)
            else:
                guarded = stmt.where(_STILL_OURS)
            self._guards[shape] = guarded
        return guarded

    def _raw(self, stmt: Any, keys: list[str], dialect: Any) -> tuple[Any, str, dict[str, Any]]:
        """PostgreSQL: the guarded statement of this shape compiled once: the compiled form (its
        parameters' defaults), its SQL and each parameter's bind conversion."""
        shape = ("raw", id(stmt), tuple(keys))
        made = self._guards.get(shape)
        if made is None:
            made = self._guards[shape] = self._compiled(self._guarded(stmt, keys), keys, dialect)
        return made

    @staticmethod
    def _compiled(stmt: Any, keys: list[str], dialect: Any) -> tuple[Any, str, dict[str, Any]]:
        compiled = stmt.compile(dialect=dialect, column_keys=keys)
        convert = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for bind, name in compiled.bind_names.items()
        }
        return compiled, compiled.string, {k: f for k, f in convert.items() if f}

    @staticmethod
    def _write_raw(raw_stmt: tuple[Any, str, dict[str, Any]], values: dict[str, Any], conn: Any) -> int:
        """Run it on an autocommit connection (the event store's, or the work table's) underneath
        SQLAlchemy (its statement machinery cost as much as the round trip): its own transaction."""
        import psycopg

        compiled, sql, convert = raw_stmt
        params = compiled.construct_params(values)
        for name, fn in convert.items():
            params[name] = fn(params[name])
        try:
            with underneath(conn) as raw:
                return int(raw.execute(sql, params).rowcount)
        except psycopg.IntegrityError as exc:  # as SQLAlchemy raises it: the event store names it
            raise sa.exc.IntegrityError(sql, params, exc) from exc

    @staticmethod
    def _binds(run_id: str, fence: Fence) -> dict[str, Any]:
        return {"fence_run": run_id, "fence_worker": fence.worker, "fence_epoch": fence.epoch}

    def _still_ours(self, run_id: str, fence: Fence) -> bool:
        with self.queue.engine.connect() as conn:
            found = conn.execute(_OURS_ROW, self._binds(run_id, fence))
            return found.first() is not None

    def holder(self, run_id: str) -> str | None:
        """The worker the run's item names now (claimed, or ended by it), if any."""
        stmt = sa.select(_W.worker).where(_W.run_id == run_id)
        with self.queue.engine.connect() as conn:
            found = conn.execute(stmt).scalar()
        return str(found) if found is not None else None
