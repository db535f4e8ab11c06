"""Healing a gap for every door: a gap read from a door's input, a heal at once (the CLI), heals in a
bounded pool (the server), and the answer to an approval.

The pool runs at most `max_heals` heals at once and one per component, as `agentheal watch` does:
two heals acting on one component at the same time would undo each other. A gap whose fingerprint
already has a run queued or running in the pool joins it; one whose run is open in the event store
is handed to `Healer.heal`, which joins it (or resumes it, when the process driving it died).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentheal.models import Gap, RunStatus
from agentheal.services import audit

_log = logging.getLogger("agentheal.heal")

if TYPE_CHECKING:
    from agentheal.graphs.context import HealContext
    from agentheal.graphs.runner import Healer
    from agentheal.work.shared import SharedHeals

DEFAULT_MAX_HEALS = 4


class GapProblem(ValueError):
    """A gap that cannot be healed as given; the message names the field.

    `problems`: each problem's field path (empty: the gap as a whole) and message.
    """

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        shown = [f"{'.'.join(str(x) for x in loc) or '(top level)'}: {msg}" for loc, msg in problems]
        super().__init__("gap: " + "; ".join(shown))


def parse_gap(data: Any) -> Gap:
    """A gap from a door's JSON: `{"text", "component"?, "kind"?, "severity"?, "evidence"?}`.

    Raises:
        GapProblem: not an object, or a field missing or malformed (named in the message).
    """
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise GapProblem([((), 'expected a JSON object like {"text": "...", "component": "..."}')])
    data = dict(data)
    if "gap" in data and "text" not in data:  # the memory import spelling
        data["text"] = data.pop("gap")
    try:
        return Gap.model_validate(data)
    except ValidationError as exc:
        raise GapProblem([(tuple(e["loc"]), e["msg"]) for e in exc.errors()]) from None


def check_component(ctx: HealContext, gap: Gap) -> None:
    """Refuse a gap naming a component the estate does not have (before anything is recorded).

    Raises:
        UnknownComponent: the message names the component and the estate's components.
    """
    from agentheal.graphs.runner import UnknownComponent

    estate = ctx.estate
    if estate is not None and gap.component is not None and gap.component not in estate.components:
        raise UnknownComponent(
            f"unknown component {gap.component!r}: the estate {estate.name!r} has "
            + ", ".join(sorted(estate.components))
        )


def _record_gap(ctx: HealContext, gap: Gap, actor: str, door: str, role: str | None) -> None:
    audit.record(
        ctx.events,
        actor,
        "gap",
        door=door,
        role=role,
        target=gap.component or gap.fingerprint,
        detail=gap.text[:200],
        data={"fingerprint": gap.fingerprint, "kind": gap.kind.value, "severity": gap.severity.value},
    )


def heal_now(
    ctx: HealContext, gap: Gap, *, dry_run: bool = False, actor: str, door: str, role: str | None = None
) -> dict[str, Any]:
    """Heal one gap in this thread, to its end or an approval wait (a remote agent's answer is waited
    for here, to its deadline); returns the heal JSON object."""
    from agentheal.graphs.runner import Healer

    check_component(ctx, gap)
    _record_gap(ctx, gap, actor, door, role)
    with Healer(ctx) as healer:
        return healer.wait_remote(healer.heal(gap, dry_run=dry_run))


def answer_run(
    healer: Healer,
    run_id: str,
    approved: bool,
    *,
    by: str,
    note: str = "",
    actor: str | None = None,
    door: str,
    role: str | None = None,
) -> dict[str, Any]:
    """Approve or reject a run waiting for approval; it carries on (or ends) from its checkpoint.

    `by` is who decided; `actor` who passed the decision on (a token's name), when not `by`.

    Raises:
        RunNotFound: no such run. HealError: the run is not waiting for approval.
    """
    from agentheal.graphs.runner import HealError, RunNotFound

    events = healer.ctx.events
    detail = events.run(run_id)
    if detail is None:
        raise RunNotFound(f"no run {run_id!r}; `agentheal runs` lists them")
    row = detail.row
    if row.status != RunStatus.awaiting_approval.value:
        raise HealError(f"run {row.run_id[:12]} is {row.status.value}, not awaiting approval")
    _record_answer(healer.ctx, row.run_id, approved, by, note, actor, door, role)
    return healer.resume(row.run_id, {"approved": approved, "by": by, "note": note})


def _record_answer(
    ctx: HealContext,
    run_id: str,
    approved: bool,
    by: str,
    note: str,
    actor: str | None,
    door: str,
    role: str | None,
) -> None:
    audit.record(
        ctx.events,
        actor or by,
        "approve" if approved else "reject",
        door=door,
        role=role,
        target=run_id,
        detail=note,
        data={"by": by, "note": note},
    )


@dataclass
class _Job:
    key: str  # what one heal at a time is held to: the component, or the fingerprint without one
    run_id: str
    fingerprint: str
    work: Callable[[Healer], dict[str, Any]]
    what: str
    future: Future[dict[str, Any]] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    claim: Any = None  # PostgreSQL: the shared work table's claim (agentheal.work) this job heals
    gap: Gap | None = None  # a heal's gap: recorded as a run if the pool closes before it starts


class HealPool:
    """Heals (and approvals) of a long-lived process, in worker threads, one per component at a time."""

    def __init__(self, ctx: HealContext, max_heals: int = DEFAULT_MAX_HEALS) -> None:
        self.ctx = ctx
        self.max_heals = max_heals
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Job]] = {}
        self._busy: set[str] = set()
        self._jobs: dict[str, _Job] = {}  # by run id, until done
        self._by_fingerprint: dict[str, _Job] = {}
        self._executor = ThreadPoolExecutor(max_workers=max_heals, thread_name_prefix="heal")
        self._local = threading.local()
        self._opening = threading.Lock()
        self._healers: list[Healer] = []
        self._closed = False
        # PostgreSQL: heals are queued in the shared work table and healed by whichever worker claims them
        self.shared: SharedHeals | None = None
        if ctx.settings.database_url is not None:
            from agentheal.work.shared import SharedHeals

            self.shared = SharedHeals(self)

    def warm(self) -> None:
        """Open every edge now, in one thread: HealContext's parts are not safe to open concurrently."""
        _ = (self.ctx.events, self.ctx.registry, self.ctx.policy, self.ctx.memory, self.ctx.backend)
        if self.shared is not None:
            self.shared.start()  # registers this worker and starts claiming

    # -- submissions --

    def submit(
        self, gap: Gap, *, actor: str, door: str, role: str | None = None, dry_run: bool = False
    ) -> tuple[str, Future[dict[str, Any]], bool]:
        """Queue a heal of `gap`; returns its run id, a future of the heal JSON, and whether it joined
        a run already queued, running or open.

        Raises:
            UnknownComponent: the estate has no such component.
        """
        check_component(self.ctx, gap)
        _record_gap(self.ctx, gap, actor, door, role)
        if self.shared is not None:
            self._refuse_if_closed()
            self.shared.start()
            return self.shared.submit(gap, dry_run)
        with self._lock:
            self._refuse_if_closed()
            queued = self._by_fingerprint.get(gap.fingerprint)
            if queued is not None:
                return queued.run_id, queued.future, True
            open_run = self.ctx.events.open_run(gap.fingerprint)
            run_id = open_run or uuid.uuid4().hex

            def work(healer: Healer) -> dict[str, Any]:
                return healer.heal(gap, dry_run=dry_run, run_id=run_id)

            job = _Job(
                self._key(gap.component, gap.fingerprint), run_id, gap.fingerprint, work, "heal", gap=gap
            )
            self._enqueue(job)
        return run_id, job.future, open_run is not None

    def answer(
        self,
        run_id: str,
        approved: bool,
        *,
        by: str,
        note: str = "",
        actor: str | None = None,
        door: str,
        role: str | None = None,
    ) -> Future[dict[str, Any]]:
        """Queue the answer to a run waiting for approval (behind any heal of its component; on
        PostgreSQL as a resume in the shared work table, which any worker claims).

        Raises:
            RunNotFound, HealError: as `answer_run`, checked before anything is queued; also when the
                run's work item is queued or claimed already (an answer given twice)
        """
        from agentheal.graphs.runner import HealError, RunNotFound

        detail = self.ctx.events.run(run_id)
        if detail is None:
            raise RunNotFound(f"no run {run_id!r}")
        row = detail.row
        if row.status != RunStatus.awaiting_approval.value:
            raise HealError(f"run {row.run_id[:12]} is {row.status.value}, not awaiting approval")
        if self.shared is not None:  # any worker resumes it, also when this one dies first
            from agentheal.work import resumes
            from agentheal.work.tables import APPROVAL

            self._refuse_if_closed()
            self.shared.start()
            answer = {"approved": approved, "by": by, "note": note}
            try:
                resumes.enqueue(self.shared.queue, detail, APPROVAL, {"answer": answer})
            except resumes.ResumeBusy as exc:
                raise HealError(str(exc)) from None
            _record_answer(self.ctx, row.run_id, approved, by, note, actor, door, role)
            return self.shared.awaited(row.run_id)

        def work(healer: Healer) -> dict[str, Any]:
            return answer_run(
                healer, row.run_id, approved, by=by, note=note, actor=actor, door=door, role=role
            )

        job = _Job(self._key(row.component, row.fingerprint), row.run_id, row.fingerprint, work, "answer")
        with self._lock:
            self._refuse_if_closed()
            held = self._jobs.get(row.run_id)
            if held is not None and held.what == "answer":
                raise HealError(f"run {row.run_id[:12]} is being answered already")
            self._enqueue(job)
        return job.future

    def resume_remote(self, run_id: str) -> Future[dict[str, Any]] | None:
        """Queue the resume of a run awaiting a remote agent that answered or ran out of time (behind
        any heal of its component; on PostgreSQL in the shared work table); None if this pool (or the
        table) holds the run already. (The worker asks the agent once more: the run is still awaiting
        it if the agent took its answer back.)"""
        detail = self.ctx.events.run(run_id)
        if detail is None or detail.row.status != RunStatus.awaiting_remote.value:
            return None
        row = detail.row
        if self.shared is not None:  # any worker resumes it, also when this one dies first
            from agentheal.work import resumes
            from agentheal.work.tables import REMOTE

            self._refuse_if_closed()
            self.shared.start()
            try:
                resumes.enqueue(self.shared.queue, detail, REMOTE, None)
            except resumes.ResumeBusy:
                return None
            return self.shared.awaited(row.run_id)

        def work(healer: Healer) -> dict[str, Any]:
            still = {"run_id": row.run_id, "status": RunStatus.awaiting_remote.value, "reason": row.reason}
            return healer.resume_remote(row.run_id) or still

        job = _Job(self._key(row.component, row.fingerprint), row.run_id, row.fingerprint, work, "remote")
        with self._lock:
            self._refuse_if_closed()
            if row.run_id in self._jobs or row.fingerprint in self._by_fingerprint:
                return None
            self._enqueue(job)
        return job.future

    def resume_open_runs(self) -> list[str]:
        """Queue the runs left `running` by a process that died (on this estate); returns their ids."""
        estate = self.ctx.estate
        # shared: a dead worker's claims are resumed by whichever worker claims them when their leases end
        if estate is None or self.shared is not None:
            return []
        resumed = []
        for row in self.ctx.events.runs(limit=500, status=RunStatus.running.value):
            detail = self.ctx.events.run(row.run_id)
            if row.component not in estate.components or detail is None or detail.gap is None:
                continue
            gap, run_id = detail.gap, row.run_id

            def work(healer: Healer, gap: Gap = gap, run_id: str = run_id) -> dict[str, Any]:
                return healer.heal(gap, run_id=run_id)  # finds its open run, free: resumed

            with self._lock:
                if run_id in self._jobs or gap.fingerprint in self._by_fingerprint:
                    continue
                self._enqueue(
                    _Job(self._key(gap.component, gap.fingerprint), run_id, gap.fingerprint, work, "resume")
                )
            resumed.append(run_id)
        return resumed

    def queued(self, run_id: str) -> dict[str, Any] | None:
        """A run this pool holds that has no row in the event store yet (still queued), as heal JSON."""
        with self._lock:
            job = self._jobs.get(run_id)
        if job is None:
            return self.shared.queued(run_id) if self.shared is not None else None
        waiting = "starting" if job.started_at else f"queued behind another heal of {job.key}"
        return {"run_id": run_id, "status": RunStatus.running.value, "reason": waiting,
                "fingerprint": job.fingerprint, "queued": job.started_at is None}  # fmt: skip

    def enqueue_claim(self, job: _Job) -> None:
        """Heal a claim of the shared work table here (its component is held for all workers)."""
        with self._lock:
            self._refuse_if_closed()
            self._enqueue(job)

    def busy(self) -> dict[str, int]:
        """How many jobs run and wait now."""
        with self._lock:
            return {"running": len(self._busy), "queued": sum(len(q) for q in self._queues.values())}

    # -- the workers --

    @staticmethod
    def _key(component: str | None, fingerprint: str) -> str:
        return component if component is not None else f"fingerprint:{fingerprint}"

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise RuntimeError("the server is stopping; nothing new is started")

    def _enqueue(self, job: _Job) -> None:  # holds self._lock
        self._queues.setdefault(job.key, deque()).append(job)
        self._jobs[job.run_id] = job
        self._by_fingerprint[job.fingerprint] = job
        self._pump()

    def _pump(self) -> None:  # holds self._lock
        for key, queue in list(self._queues.items()):
            if len(self._busy) >= self.max_heals:
                return
            if key in self._busy or not queue:
                continue
            job = queue.popleft()
            if not queue:
                del self._queues[key]
            self._busy.add(key)
            self._executor.submit(self._run, job)

    def _run(self, job: _Job) -> None:
        job.started_at = time.time()
        try:
            if job.future.set_running_or_notify_cancel():  # False: the door gave up before it started
                job.future.set_result(job.work(self._healer()))
        except BaseException as exc:  # the waiting door gets it; the pool carries on
            from agentheal.work.fencing import LeaseLost

            # a door that answered 202 is not waiting: the server's log is where this is seen
            if not isinstance(exc, LeaseLost):  # (one taken over is logged and told in its story)
                _log.exception("the heal of run %s failed before it ended", job.run_id)
            job.future.set_exception(exc)
        finally:
            with self._lock:
                self._busy.discard(job.key)
                if self._jobs.get(job.run_id) is job:
                    del self._jobs[job.run_id]
                if self._by_fingerprint.get(job.fingerprint) is job:
                    del self._by_fingerprint[job.fingerprint]
                self._pump()
            if self.shared is not None:
                self.shared.worker.wake()  # a heal slot is free now: claim the next gap at once

    def _healer(self) -> Healer:
        """This worker thread's Healer, kept: it holds a checkpoint connection and a compiled graph."""
        from agentheal.graphs.runner import Healer

        healer: Healer | None = getattr(self._local, "healer", None)
        if healer is None:
            # one at a time: connections switching a new checkpoint file to WAL at once find it locked
            with self._opening:
                healer = Healer(self.ctx)
            self._local.healer = healer
            with self._lock:
                self._healers.append(healer)
        return healer

    def _keep_for_restart(self, dropped: list[_Job]) -> set[str]:
        """Record the heals still queued as runs (no step taken) under the ids their doors were given:
        the next start resumes them (`resume_open_runs`) from their beginning, so a gap answered 202
        is not lost when the server stops."""
        kept = set()
        for job in dropped:
            if job.what != "heal" or job.gap is None or self.ctx.events.run(job.run_id) is not None:
                continue
            if self.ctx.events.open_run(job.fingerprint) is None:
                self.ctx.events.start_run(job.run_id, job.gap)
                kept.add(job.run_id)
        return kept

    def close(self) -> None:
        """Let running jobs finish, drop queued ones (their doors hear why), close the checkpoints.
        Claims of the shared work table not started are handed back for the other workers instead."""
        if self.shared is not None:
            self.shared.stop_claiming()
        with self._lock:
            self._closed = True
            dropped = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            for job in dropped:
                self._jobs.pop(job.run_id, None)
                self._by_fingerprint.pop(job.fingerprint, None)
        if self.shared is not None:
            dropped = self.shared.hand_back(dropped)
        kept = self._keep_for_restart(dropped) if self.shared is None else set()
        for job in dropped:
            if job.future.set_running_or_notify_cancel():
                why = "the server stopped before this heal started"
                if job.run_id in kept:
                    why += f"; run {job.run_id[:12]} is recorded and resumes when it starts again"
                job.future.set_exception(RuntimeError(why))
        self._executor.shutdown(wait=True)
        for healer in self._healers:
            healer.__exit__(None, None, None)
        self._healers.clear()
        if self.shared is not None:
            self.shared.close()
        self.ctx.flush()
