"""The gaps to heal, shared by every worker on one database: queued once per fingerprint, claimed
by one worker at a time under a lease, one claimed per component key.

A claim is a row lock taken with `SELECT … FOR UPDATE SKIP LOCKED` (workers never wait on each
other's candidates) and an UPDATE that sets the worker's name and its lease's end. The partial
unique index on the component key of claimed rows turns a second claim of a busy component into an
integrity error, also when both claims are in flight at once; the claimer then tries the next
candidate. A claim whose lease ended (its worker died or hung) is a candidate again, first in line:
the next worker to claim it resumes its run from the checkpoint.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from agentheal.event_schema import FINGERPRINT_TURN, OPEN_RUN, OPEN_STATUSES, RUNS, dumps_json
from agentheal.models import Gap
from agentheal.storage.engines import event_store_engine
from agentheal.storage.urls import sqlalchemy_url
from agentheal.work.tables import CLAIMED, DONE, HEAL, QUEUED, WORK_ITEMS, Clock

# Looks a claim takes when other claimers take the components it finds meanwhile.
_CANDIDATES = 8
_W = WORK_ITEMS.c
# The open item (queued or claimed) of a fingerprint
_OPEN_ITEM = sa.select(_W.run_id).where(_W.fingerprint == sa.bindparam("item_fingerprint"), _W.state != DONE)
# Items by state (`counts`, asked again and again by whoever waits for the queue to drain)
_COUNTS = sa.select(_W.state, sa.func.count()).group_by(_W.state)
# A claim's candidate, and the claims of its component (made once: an alias costs a millisecond)
_PICK, _HELD = WORK_ITEMS.alias("pick"), WORK_ITEMS.alias("held")
_BUSY = sa.exists(sa.select(sa.literal(1)).where(_HELD.c.key == _PICK.c.key, _HELD.c.state == CLAIMED))


class WorkError(Exception):
    """The shared work tables were asked something they cannot do."""


@dataclass(frozen=True)
class Claim:
    """A gap this worker holds: heal it under `run_id`; `claims` > 1 means it was claimed before (a
    worker whose lease ended, or an earlier turn of its run)."""

    run_id: str
    gap: Gap
    dry_run: bool
    key: str
    claims: int  # also the claim's epoch: a takeover raises it (agentheal.work.fencing)
    kind: str = HEAL  # or the resume of a waiting run, with its answer (agentheal.work.resumes)
    payload: dict[str, Any] | None = None

    @property
    def resumed(self) -> bool:
        return self.claims > 1


@dataclass(frozen=True)
class Item:
    """A row of the work table, as `agentheal workers` shows it."""

    run_id: str
    fingerprint: str
    key: str
    state: str
    worker: str | None
    lease_until: datetime | None
    claims: int
    queued_at: datetime
    claimed_at: datetime | None
    finished_at: datetime | None
    outcome: str | None


def component_key(component: str | None, fingerprint: str) -> str:
    """What one heal at a time is held to: the component, or the fingerprint of a gap without one."""
    return component if component is not None else f"fingerprint:{fingerprint}"


class WorkQueue:
    """The work table of the event store's database (PostgreSQL for several workers)."""

    def __init__(self, url: str) -> None:
        self.engine = event_store_engine(sqlalchemy_url(url), json_serializer=dumps_json)
        self.postgres = self.engine.dialect.name == "postgresql"
        self.clock = Clock(self.engine.dialect.name)
        # one-statement writes (claims, their ends, leases): no BEGIN nor COMMIT round trips
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # PostgreSQL: the statements a heal runs, made once (making one cost more than running it)
        self._claims: dict[tuple[str, float], Any] = {}
        self._finish: Any = None
        self._pg_intake: Any = None

    def close(self) -> None:
        self.engine.dispose()

    # -- intake --

    def enqueue(self, gap: Gap, *, dry_run: bool = False, run_id: str | None = None) -> tuple[str, bool]:
        """Queue a heal of `gap` unless its fingerprint has an open item (queued or claimed).

        Returns:
            The run id the heal has (a new one, the open run's, or the open item's) and whether the
            gap joined work already there.
        """
        for _ in range(3):  # an insert that lost a race to another worker's reads the winner's row
            try:
                return self._enqueue(gap, dry_run, run_id)
            except sa.exc.IntegrityError:
                continue
        raise WorkError(f"cannot queue gap {gap.fingerprint}: its work item keeps changing")

    def _enqueue(self, gap: Gap, dry_run: bool, run_id: str | None) -> tuple[str, bool]:
        if self.postgres:
            return self._pg_enqueue(gap, dry_run, run_id)
        with self.engine.begin() as conn:
            found = conn.execute(_OPEN_ITEM, {"item_fingerprint": gap.fingerprint}).scalar()
            if found is not None:
                return str(found), True
            open_run = conn.execute(OPEN_RUN, {"fingerprint": gap.fingerprint}).scalar()
            chosen = str(open_run) if open_run is not None else run_id or uuid.uuid4().hex
            values = {
                "run_id": chosen,
                "fingerprint": gap.fingerprint,
                "key": component_key(gap.component, gap.fingerprint),
                "component": gap.component,
                "gap": gap.model_dump(mode="json"),
                "dry_run": dry_run,
                "state": QUEUED,
                "claims": 0,
                "kind": HEAL,
                "payload": None,
            }
            # the item of an earlier turn of this run (e.g. it waited for approval) is queued again
            again_stmt, insert = self._intake_statements()
            binds = {f"item_{k}": v for k, v in values.items()}
            again = conn.execute(again_stmt, binds).rowcount
            if not again:
                conn.execute(insert, binds)
            return chosen, open_run is not None

    def _pg_enqueue(self, gap: Gap, dry_run: bool, run_id: str | None) -> tuple[str, bool]:
        """PostgreSQL: the fingerprint's turn, then one statement: the open item or else the open run,
        and the item queued (new, or an earlier turn's queued again) when there is no open item."""
        if self._pg_intake is None:
            self._pg_intake = self._pg_intake_statement()
        binds = {
            "item_run_id": run_id or uuid.uuid4().hex,
            "item_fingerprint": gap.fingerprint,
            "item_key": component_key(gap.component, gap.fingerprint),
            "item_component": gap.component,
            "item_gap": gap.model_dump(mode="json"),
            "item_dry_run": dry_run,
        }
        with self.engine.begin() as conn:
            conn.exec_driver_sql(FINGERPRINT_TURN, {"turn_fingerprint": gap.fingerprint})
            row = conn.execute(self._pg_intake, binds).one()
        if row.item is not None:
            return str(row.item), True
        if row.queued is None:  # the open run's item is not done, yet has another fingerprint
            raise WorkError(
                f"cannot queue gap {gap.fingerprint}: run {row.run} has an open item of another gap"
            )
        return str(row.queued), row.run is not None

    def _pg_intake_statement(self) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        fingerprint = sa.bindparam("item_fingerprint", type_=_W.fingerprint.type)
        item = (
            sa.select(_W.run_id).where(_W.fingerprint == fingerprint, _W.state != DONE).limit(1).cte("item")
        )
        run = (
            sa.select(RUNS.c.run_id)
            .where(RUNS.c.fingerprint == fingerprint, RUNS.c.status.in_(OPEN_STATUSES))
            .order_by(RUNS.c.started_at.desc())
            .limit(1)
            .cte("run")
        )
        chosen = sa.func.coalesce(
            sa.select(run.c.run_id).scalar_subquery(), sa.bindparam("item_run_id", type_=_W.run_id.type)
        )
        values = sa.select(
            chosen,
            fingerprint,
            *(sa.bindparam(f"item_{c}", type_=_W[c].type) for c in ("key", "component", "gap", "dry_run")),
            sa.literal(QUEUED),
            sa.literal(0),
            # this statement's time, not its transaction's: an item seen done by this statement
            # ended before the new one is queued (the turn taken first may have waited)
            sa.func.timezone("UTC", sa.func.statement_timestamp()),
            sa.literal(HEAL),
            sa.null(),
        ).where(~sa.exists(sa.select(item.c.run_id)))
        cols = ["run_id", "fingerprint", "key", "component", "gap", "dry_run", "state", "claims", "queued_at"]
        stmt = insert(WORK_ITEMS).from_select([*cols, "kind", "payload"], values)
        # the item of an earlier turn of this run (e.g. it waited for approval) is queued again; its
        # claims go on (the claims' epoch never repeats, agentheal.work.fencing)
        taken = ("fingerprint", "key", "component", "gap", "dry_run", "state", "kind", "payload", "queued_at")
        again: dict[str, Any] = {c: stmt.excluded[c] for c in taken}
        again.update(worker=None, lease_until=None, finished_at=None, outcome=None)
        put = (
            stmt.on_conflict_do_update(index_elements=[_W.run_id], set_=again, where=_W.state == DONE)
            .returning(_W.run_id)
            .cte("put")
        )
        return sa.select(
            sa.select(item.c.run_id).scalar_subquery().label("item"),
            sa.select(run.c.run_id).scalar_subquery().label("run"),
            sa.select(put.c.run_id).scalar_subquery().label("queued"),
        )

    def _intake_statements(self) -> tuple[Any, Any]:
        """SQLite: the UPDATE that queues a done item of a run again and the INSERT of a new item,
        every value a parameter `item_<column>`."""
        cols = ("run_id", "fingerprint", "key", "component", "gap", "dry_run", "state", "kind", "payload")
        binds = {c: sa.bindparam(f"item_{c}", type_=WORK_ITEMS.c[c].type) for c in cols}
        again = (
            WORK_ITEMS.update()
            .where(_W.run_id == sa.bindparam("item_run_id"), _W.state == DONE)
            .values({k: v for k, v in binds.items() if k != "run_id"})
            # (its claims go on: the claims' epoch never repeats, agentheal.work.fencing)
            .values(worker=None, lease_until=None, finished_at=None, outcome=None, queued_at=self.clock.now())
        )
        insert = (
            WORK_ITEMS.insert()
            .values(binds)
            .values(claims=sa.bindparam("item_claims", type_=sa.Integer), queued_at=self.clock.now())
        )
        return again, insert

    # -- claims --

    def claim(self, worker: str, lease_s: float) -> Claim | None:
        """Claim the next gap whose component no worker holds, or a claim whose lease ended; None
        when there is none."""
        # On PostgreSQL the statement reads the server's clock: made once per worker and lease
        stmt = self._claims.get((worker, lease_s)) if self.postgres else None
        if stmt is None:
            stmt = self._claim_statement(worker, lease_s)
            if self.postgres:
                self._claims[worker, lease_s] = stmt
        for _ in range(_CANDIDATES):
            try:
                with self._autocommit.begin() as conn:
                    row = conn.execute(stmt).first()
            except sa.exc.IntegrityError:
                continue  # another worker claimed this component meanwhile
            if row is None:
                return None
            gap = Gap.model_validate(row.gap)
            return Claim(row.run_id, gap, row.dry_run, row.key, row.claims, row.kind, row.payload)
        return None

    def _claim_statement(self, worker: str, lease_s: float) -> Any:
        # One statement in autocommit, one round trip: the UPDATE of the first candidate its
        # sub-select locks (SKIP LOCKED: never one another claimer is taking). A second claim of a
        # component in flight at once fails on the unique index; the next look skips that component.
        pick = _PICK.c
        expired = sa.and_(pick.state == CLAIMED, pick.lease_until < self.clock.now())
        candidate = (
            sa.select(pick.run_id)
            .where(sa.or_(sa.and_(pick.state == QUEUED, ~_BUSY), expired))
            .order_by(sa.case((pick.state == CLAIMED, 0), else_=1), pick.queued_at)
            .limit(1)
            .with_for_update(skip_locked=True, of=_PICK)
            .scalar_subquery()
        )
        return (
            WORK_ITEMS.update()
            .where(_W.run_id == candidate)
            .values(
                state=CLAIMED,
                worker=worker,
                lease_until=self.clock.later(lease_s),
                claimed_at=self.clock.now(),
                claims=_W.claims + 1,
            )
            .returning(_W.run_id, _W.gap, _W.dry_run, _W.key, _W.claims, _W.kind, _W.payload)
        )

    def renew(self, worker: str, lease_s: float) -> set[str]:
        """Extend the leases of every claim `worker` holds; returns the run ids it still holds."""
        with self._autocommit.begin() as conn:
            rows = conn.execute(
                WORK_ITEMS.update()
                .where(_W.worker == worker, _W.state == CLAIMED)
                .values(lease_until=self.clock.later(lease_s))
                .returning(_W.run_id)
            )
            return {str(r) for r in rows.scalars()}

    def finish(self, run_id: str, worker: str, outcome: str) -> bool:
        """Mark a claim done with the run's status; False when `worker` no longer held it."""
        stmt = self._finish if self.postgres else None  # (SQLite's clock is this host's: made each time)
        if stmt is None:
            stmt = (
                WORK_ITEMS.update()
                .where(_W.run_id == sa.bindparam("done_run"), _W.worker == sa.bindparam("done_by"))
                .where(_W.state == CLAIMED)
                .values(state=DONE, finished_at=self.clock.now(), lease_until=None)
                .values(outcome=sa.bindparam("done_outcome"))
            )
            if self.postgres:
                self._finish = stmt
        with self._autocommit.begin() as conn:
            values = {"done_run": run_id, "done_by": worker, "done_outcome": outcome[:32]}
            done = conn.execute(stmt, values).rowcount
        return bool(done)

    def hand_back(self, worker: str, run_ids: list[str] | None = None) -> list[str]:
        """Put `worker`'s claims (all, or those named) back in the queue; returns their run ids."""
        stmt = WORK_ITEMS.update().where(_W.worker == worker, _W.state == CLAIMED)
        if run_ids is not None:
            stmt = stmt.where(_W.run_id.in_(run_ids))
        with self.engine.begin() as conn:
            rows = conn.execute(stmt.values(state=QUEUED, worker=None, lease_until=None).returning(_W.run_id))
            return [str(r) for r in rows.scalars()]

    # -- reads --

    def finished(self, run_ids: list[str]) -> dict[str, str]:
        """Of these runs, those whose item is done, with the outcome each ended in."""
        if not run_ids:
            return {}
        stmt = sa.select(_W.run_id, _W.outcome).where(_W.run_id.in_(run_ids), _W.state == DONE)
        with self.engine.connect() as conn:
            return {str(r.run_id): str(r.outcome) for r in conn.execute(stmt)}

    def item(self, run_id: str) -> Item | None:
        """The work item of a run, if it has one."""
        found = self.items(sa.and_(_W.run_id == run_id), limit=1)
        return found[0] if found else None

    def items(self, where: Any = None, limit: int = 1000) -> list[Item]:
        """Work items, oldest first, optionally filtered by a SQL condition on `WORK_ITEMS`."""
        cols = [getattr(_W, f) for f in Item.__dataclass_fields__]
        stmt = sa.select(*cols).order_by(_W.queued_at, _W.run_id).limit(limit)
        if where is not None:
            stmt = stmt.where(where)
        with self.engine.connect() as conn:
            return [Item(**r._mapping) for r in conn.execute(stmt)]

    def counts(self) -> dict[str, int]:
        """How many items are queued, claimed and done."""
        with self.engine.connect() as conn:
            found = {str(state): int(n) for state, n in conn.execute(_COUNTS)}
        return {state: found.get(state, 0) for state in (QUEUED, CLAIMED, DONE)}
