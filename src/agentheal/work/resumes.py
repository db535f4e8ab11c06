"""Resumes through the work table: a run waiting for a person's approval or a remote agent's answer
is carried on by whichever worker claims its resume, under a lease like a gap's heal.

The worker that receives an approval (or whose poller finds a remote agent answered) only queues
the run's item again, as a resume of that kind with the answer as its payload; a worker that dies
before or while resuming it loses nothing, since its lease ends and another worker claims the item.
A resume claimed again after its worker died finds the run where that worker left it: still
waiting (resumed with the answer), running (resumed from its checkpoint), or ended (its end read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentheal.event_schema import FINGERPRINT_TURN, OPEN_STATUSES
from agentheal.models import RunStatus
from agentheal.work.queue import Claim, WorkQueue, component_key
from agentheal.work.tables import APPROVAL, CLAIMED, DONE, QUEUED, REMOTE, WORK_ITEMS

if TYPE_CHECKING:
    from agentheal.events import RunDetail
    from agentheal.graphs.runner import Healer

_W = WORK_ITEMS.c


class ResumeBusy(Exception):
    """The run's item is claimed by a worker now (a heal joining it, or its resume): not queued."""


def enqueue(queue: WorkQueue, detail: RunDetail, kind: str, payload: dict[str, Any] | None) -> None:
    """Queue the resume of a waiting run for any worker (its item again, or a new one for a run
    started where there was none, e.g. by `agentheal heal`).

    Raises:
        ResumeBusy: a worker holds the run's item now, or the same kind of resume is queued already
            (an approval answered twice).
    """
    row = detail.row
    if detail.gap is None:
        raise ResumeBusy(f"run {row.run_id[:12]} has no gap recorded to resume it with")
    values = {
        "kind": kind,
        "payload": payload,
        "state": QUEUED,
        "worker": None,
        "lease_until": None,
        "finished_at": None,
        "outcome": None,
        "queued_at": queue.clock.now(),
    }
    try:
        with queue.engine.begin() as conn:
            if queue.postgres:  # the same turn as a gap's enqueue: the two never interleave
                conn.exec_driver_sql(FINGERPRINT_TURN, {"turn_fingerprint": row.fingerprint})
            found = conn.execute(
                sa.select(_W.state, _W.kind).where(_W.run_id == row.run_id).with_for_update()
            ).first()
            if found is None:
                conn.execute(
                    WORK_ITEMS.insert().values(
                        run_id=row.run_id,
                        fingerprint=row.fingerprint,
                        key=component_key(row.component, row.fingerprint),
                        component=row.component,
                        gap=detail.gap.model_dump(mode="json"),
                        dry_run=False,
                        claims=0,
                        **values,
                    )
                )
                return
            if found.state == CLAIMED or (found.state == QUEUED and found.kind == kind):
                what = "being worked on by a worker" if found.state == CLAIMED else f"queued for its {kind}"
                raise ResumeBusy(f"run {row.run_id[:12]} is {what}")
            # done, or queued as a heal that would only join it: the resume takes its place
            conn.execute(WORK_ITEMS.update().where(_W.run_id == row.run_id).values(**values))
    except sa.exc.IntegrityError as exc:  # another open item of its fingerprint (a new gap's)
        raise ResumeBusy(f"run {row.run_id[:12]}: another item of its gap is open") from exc


def pending(queue: WorkQueue, run_id: str) -> bool:
    """Whether the run's item is queued or claimed now."""
    stmt = sa.select(_W.state).where(_W.run_id == run_id)
    with queue.engine.connect() as conn:
        state = conn.execute(stmt).scalar()
    return state is not None and state != DONE


def carry_on(healer: Healer, claim: Claim) -> dict[str, Any]:
    """Resume the claimed run from where it stands now (see the module's docstring)."""
    events = healer.ctx.events
    run_id = claim.run_id
    detail = events.run(run_id)
    if detail is None:
        from agentheal.graphs.runner import RunNotFound

        raise RunNotFound(f"no run {run_id!r} to resume")
    status = detail.row.status
    if status.value not in OPEN_STATUSES:  # resumed and ended before its last worker marked it done
        from agentheal.graphs.results import recorded_result

        return recorded_result(detail)
    if claim.kind == APPROVAL and claim.payload is not None:
        if status == RunStatus.running and _waits_for_approval(healer, run_id):
            # its last worker died between marking it running and the checkpoint past its approval
            events.set_status(run_id, RunStatus.awaiting_approval)
            status = RunStatus.awaiting_approval
        if status == RunStatus.awaiting_approval:
            return healer.resume(run_id, dict(claim.payload["answer"]))
    if claim.kind == REMOTE and status == RunStatus.awaiting_remote:
        still = {"run_id": run_id, "status": status.value, "reason": detail.row.reason}
        return healer.resume_remote(run_id) or still
    if status == RunStatus.running:  # its last worker died while resuming it: from its checkpoint
        return healer.heal(detail.gap or claim.gap, run_id=run_id)
    return healer.result(run_id)


def _waits_for_approval(healer: Healer, run_id: str) -> bool:
    snapshot = healer.graph.get_state({"configurable": {"thread_id": run_id}})
    return any(
        i.value.get("kind") != "remote" for t in (snapshot.tasks if snapshot else ()) for i in t.interrupts
    )
