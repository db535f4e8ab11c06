"""The heal pool's half on a shared database: every heal a door or the detection loop asks for is
queued in the work table (one per fingerprint), and the pool heals what its worker claims.

A door that waits for a heal (`?wait=true`, the detection loop) waits on a future that the claim's
end here resolves, or, when another worker healed the gap, the lease keeper's next look at the
work table (the heal's result read from the event store).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from agentheal.models import Gap, RunStatus
from agentheal.work import runlocks
from agentheal.work.claims import heal_claim
from agentheal.work.fencing import Fences, LeaseLost
from agentheal.work.queue import Claim, WorkQueue
from agentheal.work.registry import default_name
from agentheal.work.worker import Worker

if TYPE_CHECKING:
    from agentheal.graphs.runner import Healer
    from agentheal.services.heal import HealPool, _Job

_log = logging.getLogger("agentheal.work")

# A claim whose heal raised this many times is finished as an error instead of handed back again.
MAX_CLAIMS = 3


class SharedHeals:
    """Claims and leases for a `HealPool` whose event store is shared by several workers."""

    def __init__(self, pool: HealPool) -> None:
        settings = pool.ctx.settings
        self.pool = pool
        self.queue = WorkQueue(settings.events_url)
        self.name = settings.worker_name or default_name()
        # the claims this process heals under: only their holder acts and records their runs' ends
        self.fences = Fences(self.queue, settings.worker_lease_s)
        self.worker = Worker(
            self.queue,
            self.name,
            settings.worker_lease_s,
            pool.max_heals,
            room=self._room,
            dispatch=self._dispatch,
            tick=self._resolve_elsewhere,
            lost=self.fences.lost,
        )
        self._awaited: dict[str, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._starting = threading.Lock()
        self.started = False

    def start(self) -> None:
        """Register this worker and start claiming (once)."""
        with self._starting:
            if not self.started:
                self.pool.ctx.events.fence = self.fences
                runlocks.name_sessions(self.name)
                self.worker.start()
                self.started = True

    # -- intake --

    def submit(self, gap: Gap, dry_run: bool) -> tuple[str, Future[dict[str, Any]], bool]:
        run_id, joined = self.queue.enqueue(gap, dry_run=dry_run)
        with self._lock:
            future = self._awaited.setdefault(run_id, Future())
        self.worker.wake()
        return run_id, future, joined

    def awaited(self, run_id: str) -> Future[dict[str, Any]]:
        """The future of a run's work item queued here (a resume), resolved by whichever worker ends it."""
        with self._lock:
            future = self._awaited.setdefault(run_id, Future())
        self.worker.wake()
        return future

    def queued(self, run_id: str) -> dict[str, Any] | None:
        """A run queued or claimed in the work table, as heal JSON (before its run row exists)."""
        item = self.queue.item(run_id)
        if item is None or item.state == "done":
            return None
        where = f"claimed by worker {item.worker}" if item.state == "claimed" else "queued for a worker"
        return {"run_id": run_id, "status": RunStatus.running.value, "reason": where,
                "fingerprint": item.fingerprint, "queued": item.state == "queued"}  # fmt: skip

    # -- claims --

    def _room(self) -> int:
        busy = self.pool.busy()
        return self.pool.max_heals - busy["running"] - busy["queued"]

    def _dispatch(self, claim: Claim) -> None:
        from agentheal.services.heal import _Job

        def work(healer: Healer) -> dict[str, Any]:
            return heal_claim(healer, claim, self.fences, self.name)  # a gap's heal or a run's resume

        # close() hands back the claims not started
        job = _Job(claim.key, claim.run_id, claim.gap.fingerprint, work, "claim", claim=claim)
        job.future.add_done_callback(lambda f: self._ended(claim, f))
        try:
            self.pool.enqueue_claim(job)
        except RuntimeError:  # the pool is closing: the claim goes back at once
            self.worker.give_back([claim])

    def _ended(self, claim: Claim, future: Future[dict[str, Any]]) -> None:
        if future.cancelled():
            return  # handed back by close()
        exc = future.exception()
        if isinstance(exc, LeaseLost):  # another worker took it over: its end resolves the doors waiting
            self.worker.forget(claim)
            return
        if exc is not None and claim.claims < MAX_CLAIMS:
            _log.warning("run %s failed here (%s); handed back for another try", claim.run_id[:12], exc)
            self.worker.give_back([claim])
            return
        outcome = "error" if exc is not None else str(future.result().get("status"))
        try:
            self.worker.done(claim, outcome)
        except Exception:
            _log.exception("could not mark run %s done; its lease will end", claim.run_id[:12])
        with self._lock:
            awaited = self._awaited.pop(claim.run_id, None)
        if awaited is not None and awaited.set_running_or_notify_cancel():
            if exc is not None:
                awaited.set_exception(exc)
            else:
                awaited.set_result(future.result())

    def _resolve_elsewhere(self) -> None:
        """Resolve the futures of runs another worker ended, from the event store."""
        with self._lock:
            waiting = list(self._awaited)
        ended = self.queue.finished(waiting)
        for run_id in ended:
            with self._lock:
                awaited = self._awaited.pop(run_id, None)
            if awaited is None or not awaited.set_running_or_notify_cancel():
                continue
            detail = self.pool.ctx.events.run(run_id)
            result = dict(detail.result or {}) if detail is not None else {}
            result.setdefault("run_id", run_id)
            result["status"] = detail.row.status.value if detail is not None else ended[run_id]
            awaited.set_result(result)

    # -- stopping --

    def hand_back(self, jobs: list[_Job]) -> list[_Job]:
        """Give the claims among these jobs (not started) back to the queue; returns the others."""
        claims = [j for j in jobs if j.claim is not None]
        handed = self.worker.give_back([j.claim for j in claims])
        for job in claims:
            job.future.cancel()
        if handed:
            _log.info("worker %s stopping: %d claim(s) handed back", self.name, len(handed))
        return [j for j in jobs if j.claim is None]

    def stop_claiming(self) -> None:
        if self.started:
            self.worker.stop_claiming()

    def close(self) -> None:
        """After the pool's running heals ended: stop the lease keeper, mark the worker stopped."""
        try:
            if self.started:
                self.worker.stop()
            with self._lock:
                left, self._awaited = self._awaited, {}
            for future in left.values():
                if future.set_running_or_notify_cancel():
                    future.set_exception(
                        RuntimeError("this worker stopped; the heal stays queued for the other workers")
                    )
        finally:
            self.queue.close()
