"""One worker process's side of the shared work: it registers, claims gaps while it has room, renews
the leases of what it holds and beats its heart, and on a clean stop hands back what it has not
started.

Two threads: the claimer (claims when `room()` says a heal can start, hands each claim to
`dispatch`, and waits for a wake-up or the poll interval when there is nothing to claim) and the
lease keeper (every third of a lease: renew, heartbeat, `tick`). A claim the keeper finds taken
over (this worker's lease ended, another worker resumed the run) is logged and told to `lost`: its
heal here, if still running, stops before its next action or record (agentheal.work.fencing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agentheal.work.queue import Claim, WorkQueue
from agentheal.work.registry import Registry

_log = logging.getLogger("agentheal.work")

POLL_S = 0.1
TICK_S = 1.0


class Worker:
    """Claims and leases for one process, under one worker name."""

    def __init__(
        self,
        queue: WorkQueue,
        name: str,
        lease_s: float,
        max_heals: int,
        room: Callable[[], int],
        dispatch: Callable[[Claim], None],
        tick: Callable[[], None] | None = None,
        poll_s: float = POLL_S,
        lost: Callable[[str], None] | None = None,
    ) -> None:
        self.queue = queue
        self.registry = Registry(queue)
        self.name = name
        self.lease_s = lease_s
        self.max_heals = max_heals
        self.room = room
        self.dispatch = dispatch
        self.tick = tick or (lambda: None)
        self.lost = lost or (lambda run_id: None)
        self.poll_s = poll_s
        self.held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_claiming = threading.Event()
        self._stop_keeping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> list[str]:
        """Register, then start claiming and keeping leases; returns the run ids a previous life of
        this name held, handed back."""
        handed = self.registry.register(self.name, self.lease_s, self.max_heals)
        if handed:
            _log.warning(
                "worker %s started again: %d claim(s) of its last life handed back", self.name, len(handed)
            )
        for target, what in ((self._claimer, "claims"), (self._keeper, "leases")):
            thread = threading.Thread(target=target, name=f"work-{what}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return handed

    def wake(self) -> None:
        """Look for work now (a gap was queued here, or a heal ended)."""
        self._wake.set()

    def done(self, claim: Claim, outcome: str) -> None:
        """A claim's heal ended (`outcome`: the run's status): the item is done."""
        with self._lock:
            self.held.pop(claim.run_id, None)
        if not self.queue.finish(claim.run_id, self.name, outcome):
            _log.warning("run %s ended here after another worker took its claim over", claim.run_id[:12])
        self.wake()

    def forget(self, claim: Claim) -> None:
        """A claim another worker took over: its item is that worker's to finish or hand back."""
        with self._lock:
            if self.held.get(claim.run_id) is claim:
                del self.held[claim.run_id]
        self.wake()

    def give_back(self, claims: list[Claim]) -> list[str]:
        """Hand claims not started here back to the queue, for any worker."""
        with self._lock:
            for c in claims:
                self.held.pop(c.run_id, None)
        return self.queue.hand_back(self.name, [c.run_id for c in claims]) if claims else []

    def stop_claiming(self) -> None:
        self._stop_claiming.set()
        self._wake.set()
        if self._threads:
            self._threads[0].join()

    def stop(self) -> None:
        """Stop claiming and keeping leases; what is still held is handed back; the worker is stopped."""
        self.stop_claiming()
        self._stop_keeping.set()
        for thread in self._threads[1:]:
            thread.join()
        with self._lock:
            left = list(self.held)
            self.held.clear()
        if left:
            self.queue.hand_back(self.name, left)
        self.registry.stopped(self.name)

    def _claimer(self) -> None:
        while not self._stop_claiming.is_set():
            claim = None
            try:
                if self.room() > 0:
                    claim = self.queue.claim(self.name, self.lease_s)
            except Exception:  # the database away for a moment must not end the worker
                _log.exception("claiming failed; trying again")
            if claim is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            with self._lock:
                self.held[claim.run_id] = claim
            if claim.resumed:
                _log.info("run %s claimed again (claim %d): resuming it", claim.run_id[:12], claim.claims)
            self.dispatch(claim)

    def _keeper(self) -> None:
        every = self.lease_s / 3
        renewed = time.monotonic()
        # ticks (heals other workers ended, for the futures waiting here) come at least once a second
        while not self._stop_keeping.wait(min(every, TICK_S)):
            try:
                if time.monotonic() - renewed >= every:
                    with self._lock:
                        before = set(self.held)
                    still = self.queue.renew(self.name, self.lease_s)
                    self.registry.heartbeat(self.name)
                    renewed = time.monotonic()
                    with self._lock:
                        lost = [r for r in before if r in self.held and r not in still]
                    for run_id in lost:
                        _log.warning("lost the lease of run %s: another worker took it over", run_id[:12])
                        self.lost(run_id)
                self.tick()
            except Exception:
                _log.exception("renewing the leases failed; trying again")
