"""`agentheal watch`: detection and healing, continuously, until SIGTERM or Ctrl-C.

One HealContext for the process; each heal runs in a worker thread with its own `Healer` (its own
checkpoint connection), at most `max_heals` at once and one per component. Gaps with a `root`
wait for their root's heal. Runs left `running` by a process that died are resumed from their
checkpoints at start (`Healer.heal` of the same gap resumes them). The first SIGTERM or Ctrl-C
stops detection and lets running heals finish; a second one exits at once (the heal's
checkpoints are kept, so the next start resumes it).
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentheal.detect.config import DetectConfig
from agentheal.detect.detector import Detector
from agentheal.models import Gap, GapKind

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.detect.gaps import TrackedGap
    from agentheal.services.heal import HealPool

HEAL_KINDS = (GapKind.incident, GapKind.predicted)
_SAVE_EVERY = 10


class Watch:
    """The continuous loop: rounds of detection, heals dispatched from the open gaps."""

    def __init__(
        self,
        settings: Settings,
        estate_path: Path | None,
        config: DetectConfig | None = None,
        heal: bool = True,
        logs: list[Path] | None = None,
        policy_path: Path | None = None,
        dry_run: bool = False,
        say: Callable[[str], None] | None = None,
        live: bool = False,
    ) -> None:
        from agentheal.graphs.context import HealContext

        self.ctx = HealContext(settings=settings, estate_path=estate_path, policy_path=policy_path)
        self.config = config or DetectConfig()
        self.heal = heal and self.ctx.backend is not None
        self.dry_run = dry_run
        self.detector = Detector(
            settings, self.config, self.ctx.backend, logs, persist=True, events=self.ctx.events
        )
        self.stop = threading.Event()
        self._signals: queue.SimpleQueue[int | None] = queue.SimpleQueue()  # from the signal handler
        self.lock = threading.Lock()  # the gap book is read by other threads (the server's intake)
        self.pool = ThreadPoolExecutor(max_workers=self.config.max_heals, thread_name_prefix="heal")
        self.in_flight: dict[str, tuple[Gap, Future[dict[str, Any]]]] = {}
        self.cooldown: dict[str, float] = {}
        self.cooling: dict[str, str] = {}  # fingerprint in cool-down -> its component
        self.closed_why: dict[str, str] = {}  # fingerprint -> why watch closed it (for the log and the demo)
        self.settling: dict[str, float] = {}
        self.heals: list[dict[str, Any]] = []
        self.reports: list[str] = []
        self.say = say or (lambda line: None)
        self.live = live
        self._warm = False
        self._hard_stop = False
        self.shared_pool: HealPool | None = None  # PostgreSQL only (see _heal_one)
        from agentheal.metrics.watching import WatchFigures  # availability's probe answers, prevention

        self.figures = WatchFigures(settings, self.ctx.events, self.ctx.backend if self.heal else None,
                                    lambda: self.ctx.policy, dry_run=dry_run)  # fmt: skip

    def _report(self, message: str) -> None:
        self.reports.append(message)
        self.say(f"warning: {message}")

    # -- signals ---------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # A handler runs in the main thread between two of its steps, which may hold a lock: the stop
        # event's own (inside `Event.wait`), a thread pool's, stdout's. Setting the event here then
        # waited for ever on the thread it had interrupted (a CI run hung so), and printing fails.
        # `SimpleQueue.put` is reentrant (documented so); the stopper thread does the rest.
        self._signals.put(signum)

    def _stopper(self) -> None:
        """The signals' other half, in its own thread: the first stops detection, a second exits."""
        while (signum := self._signals.get()) is not None:
            if self.stop.is_set():
                self.say("stopping now; open heal runs resume from their checkpoints at the next start")
                os._exit(0)
            self.say(
                f"{signal.Signals(signum).name}: stopping; {len(self.in_flight)} running heal(s) finish first"
            )
            self.stop.set()

    # -- heals -----------------------------------------------------------------------------------------

    def _heal_one(self, gap: Gap) -> dict[str, Any]:
        if self.ctx.settings.database_url is not None:  # several workers: through the shared work table
            submitted = self._shared().submit(gap, actor="watch", door="watch", dry_run=self.dry_run)
            return submitted[1].result()
        from agentheal.graphs.runner import Healer

        with Healer(self.ctx) as healer:
            # a run whose plan is asked of a remote agent is carried on here until it answers or its
            # deadline passes, as `agentheal heal` does: no other process would resume it
            return healer.wait_remote(healer.heal(gap, dry_run=self.dry_run))

    def _shared(self) -> HealPool:
        """PostgreSQL: a heal pool that queues gaps for every worker and heals what this one claims."""
        with self.lock:
            if self.shared_pool is None:
                from agentheal.services.heal import HealPool

                self.shared_pool = HealPool(self.ctx, max_heals=self.config.max_heals)
                self.shared_pool.warm()
            return self.shared_pool

    def _warm_context(self) -> None:
        # cached_property is not thread-safe on first use: open every edge here, in one thread.
        if not self._warm:
            _ = (self.ctx.events, self.ctx.registry, self.ctx.policy, self.ctx.memory)
            self._warm = True

    def _submit(self, gap: Gap, why: str) -> None:
        self._warm_context()
        assert gap.component is not None
        future = self.pool.submit(self._heal_one, gap)
        self.in_flight[gap.component] = (gap, future)
        self.detector.paused.add(gap.component)  # its heal restarts and probes it; do not judge it meanwhile
        entry = {"component": gap.component, "text": gap.text, "fingerprint": gap.fingerprint,
                 "status": "running", "started": time.time()}  # fmt: skip
        self.heals.append(entry)
        self.heals = self.heals[-50:]
        self.say(f"heal {why}: {gap.component}: {gap.text}")

    def resume_open_runs(self) -> int:
        """Resume runs left `running` by a process that died; returns how many were started."""
        estate = self.ctx.estate
        assert estate is not None
        started = 0
        for row in self.ctx.events.runs(limit=200, status="running"):
            if row.component not in estate.components or row.component in self.in_flight:
                continue
            detail = self.ctx.events.run(row.run_id)
            if detail is None or detail.gap is None:
                continue
            self._submit(detail.gap, f"resumed (run {row.run_id[:12]})")
            started += 1
        return started

    def _collect(self) -> None:
        for component, (gap, future) in list(self.in_flight.items()):
            if not future.done():
                continue
            del self.in_flight[component]
            self.detector.paused.discard(component)
            try:
                result = future.result()
                status, reason, run_id = str(result.get("status")), result.get("reason"), result.get("run_id")
            except Exception as exc:  # a heal that raised must not stop the watch
                status, reason, run_id = "failed", f"{type(exc).__name__}: {exc}", None
            entry = next(h for h in reversed(self.heals) if h["fingerprint"] == gap.fingerprint)
            entry.update(status=status, run_id=run_id, reason=reason)
            self.say(f"heal {status}: {component}: {reason or gap.text}")
            if self.detector.monitor is not None:
                self.detector.monitor.kofn.reset(component)
            if status == "healed":
                self._after_heal(gap, component, float(entry["started"]))
            else:
                self.cooldown[gap.fingerprint] = time.time() + self.config.heal_cooldown_s
                self.cooling[gap.fingerprint] = component

    def _after_heal(self, gap: Gap, component: str, started: float) -> None:
        """Finish what a heal started: close what it explains, re-check the rest and the dependents now.

        The component's other gaps seen only before the heal began are closed: what still holds is
        observed again (its probes are sampled at once, its log read) and reopens, instead of being
        dispatched later against a fixed component and escalating with nothing to do. Its dependents'
        gaps leave their cool-down (a heal of theirs may have failed only because this one was down)
        and are sampled at once.
        """
        book, monitor = self.detector.book, self.detector.monitor
        dependents = book.dependents_of(component)
        with self.lock:
            for t in book.close_followers(gap.fingerprint):
                self.closed_why[t.gap.fingerprint] = f"followed {component}'s gap, which was healed"
            book.close_fingerprint(gap.fingerprint)
            self.closed_why[gap.fingerprint] = "healed"
            stale = [
                t
                for t in book.open.values()
                if t.gap.component == component and t.last_seen.timestamp() < started
            ]
            for t in stale:
                book.close_fingerprint(t.gap.fingerprint)
                self.closed_why[t.gap.fingerprint] = (
                    f"not seen again after {component} was healed (last seen before the heal began)"
                )
        for fingerprint, owner in list(self.cooling.items()):
            if owner in dependents:
                self.cooldown.pop(fingerprint, None)
                del self.cooling[fingerprint]
        now = time.time()
        if monitor is not None:
            monitor.expedite([component, *dependents], now)
        # Its dependents recover by themselves once it answers; give them the threshold to do so.
        grace = (self.config.k + 1) * self.config.interval_s * (1 + self.config.jitter) + 1
        for dependent in dependents:
            self.settling[dependent] = now + grace

    def _dispatch(self, tracked: list[TrackedGap]) -> None:
        now = time.time()
        estate = self.ctx.estate
        assert estate is not None
        for t in tracked:
            gap = t.gap
            if len(self.in_flight) >= self.config.max_heals:
                return
            if (
                gap.root is not None
                or gap.kind not in HEAL_KINDS
                or gap.component not in estate.components
                or gap.component in self.in_flight
                or self.cooldown.get(gap.fingerprint, 0) > now
                or self.settling.get(gap.component, 0) > now
                or self._held(t, now)
            ):
                continue
            self._submit(gap.model_copy(deep=True), "started")

    def _held(self, t: TrackedGap, now: float) -> bool:
        """Wait while a dependency may be the cause: failing now (confirmed or not), not sampled since
        the gap opened, being healed or settling; and never heal beside a related heal (a dependent's
        heal may act on its dependencies)."""
        component = t.gap.component or ""
        book, monitor = self.detector.book, self.detector.monitor
        ancestors = book.ancestors(component)
        related = ancestors | set(book.dependents_of(component))
        # ... except a dependent whose run waits for this component to validate: it acts no more
        from agentheal.graphs.validation import awaited_by

        estate = self.ctx.estate_path
        if any(c in self.in_flight and component not in awaited_by(estate, c) for c in related):
            return True
        if monitor is None or not ancestors:
            return False
        unseen = [d for d in ancestors if monitor.sampled_at.get(d, 0) < t.first_seen.timestamp()]
        if unseen:
            monitor.expedite(unseen, now)
            return True
        return any(
            not monitor.health[d].healthy or self.settling.get(d, 0) > now
            for d in ancestors
            if d in monitor.health
        )

    # -- the loop --------------------------------------------------------------------------------------

    def run(self) -> int:
        """Detect and heal until stopped; returns the exit code (0 after a clean stop)."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            threading.Thread(target=self._stopper, name="stopper", daemon=True).start()
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._on_signal)
        live = None
        try:
            estate = self.ctx.estate
            what = f"{estate.name}: {len(estate.components)} component(s)" if estate else "log files"
            logs = len(self.detector.streams)
            self.say(f"watching {what}, {logs} log(s), every {self.config.interval_s:g} s")
            if self.heal:
                resumed = self.resume_open_runs()
                if resumed:
                    self.say(f"{resumed} open run(s) resumed from their checkpoints")
            if self.live:
                from rich.live import Live

                live = Live(self._view(), refresh_per_second=2, transient=False)
                live.start()
            while not self.stop.is_set():
                self._tick()
                if live is not None:
                    live.update(self._view())
                self.stop.wait(self._sleep())
        finally:
            if self.shared_pool is not None:  # claims not started go back to the queue, waiting heals end
                self.shared_pool.close()
            self.pool.shutdown(wait=True)  # running heals finish
            self._collect()
            for line in self.figures.close():
                self.say(line)
            self.detector.close()
            if live is not None:
                live.update(self._view())
                live.stop()
            for sig, old in handlers.items():
                signal.signal(sig, old)
            if handlers:  # the stopper ends
                self._signals.put(None)
        self.say(f"stopped after {self.detector.rounds} round(s), {len(self.heals)} heal(s)")
        return 0

    def _tick(self) -> None:
        self._collect()  # before the round: a healed gap is closed before anything is dispatched again
        with self.lock:
            self.detector.round()
            opened, closed = self.detector.book.drain_changes()
            tracked = self.detector.book.tracked()
        for message in self.detector.take_reports():
            self._report(message)
        for t in opened:
            g = t.gap
            root = f" (follows {g.root[:8]})" if g.root else ""
            self.say(f"gap opened: {g.kind.value} {g.component or '-'} {g.severity.value}: {g.text}{root}")
        for t in closed:
            why = self.closed_why.pop(t.gap.fingerprint, None) or "no longer observed: recovered or expired"
            self.say(f"gap closed: {t.gap.component or '-'}: {t.gap.text} ({why})")
        for line in self.figures.after_round(self.detector, set(self.in_flight), tracked):  # before heals
            self.say(line)
        if self.heal and not self.stop.is_set():
            self._dispatch(tracked)
        elif not self.heal:
            for t in opened:
                if t.gap.root is None and self.detector.events is not None:
                    self.detector.events.record_gap(t.gap)  # history for recurring gaps, as a heal would
        if self.detector.rounds % _SAVE_EVERY == 0:
            self.detector.save()

    def _sleep(self) -> float:
        monitor = self.detector.monitor
        if monitor is None:
            return self.config.interval_s
        due = monitor.next_due(exclude=self.detector.paused)
        wait = due - time.time() if due is not None else self.config.interval_s
        if self.in_flight:
            wait = min(wait, 0.5)  # notice finished heals soon
        return max(0.05, min(wait, self.config.interval_s))

    def _view(self) -> Any:
        from agentheal.detect.view import live_view

        monitor = self.detector.monitor
        counters = {
            "rounds": self.detector.rounds,
            "signals": self.detector.signals_seen,
            "heals": f"{len(self.in_flight)} running/{len(self.heals)}",
        }
        with self.lock:
            tracked = self.detector.book.tracked()
        return live_view(tracked, dict(monitor.health) if monitor else {}, self.heals, counters, self.reports)
