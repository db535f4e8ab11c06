"""A drill: faults injected into a watched estate on schedule, each followed until it is healed and
verified, or its deadline passes; an operator's restarts and a bounded load loop, when asked for.

Nothing here heals or detects: `agentheal watch` (the `Observer`) does, from what it sees on the
estate. The drill only breaks things on time, notes when detection opened a gap, reads the heal
runs back from the event store, and checks on its own, with the estate's probes and facts, that
a fault a run reports healed is really gone. Scoring is in `score.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentheal.estate.actions import REMEDIATIONS
from agentheal.eval.fault_model import FaultError, FaultRecord
from agentheal.eval.results import FaultOutcome
from agentheal.eval.scenario import Expect, FaultStep, LoadSpec, OperatorStep

if TYPE_CHECKING:
    from agentheal.eval.observer import Observer
    from agentheal.eval.session import EstateSession
    from agentheal.events import RunDetail

_POLL_S = 0.2
_RUNS_EVERY_S = 0.5
_DRAIN_S = 60.0  # at most this long waiting for heals still running when the drill ends


def targets_of(record: FaultRecord) -> set[str]:
    """The components the fault's expected heal acts on (`restart(inventory)` -> inventory)."""
    return {a[a.index("(") + 1 : -1].split(",")[0].strip() for a in record.expected.actions}


def short(action: str, component: str) -> str:
    """An action as `restart(api)`, the form `expect.forbid` matches."""
    return f"{action}({component})"


def cleared(session: EstateSession, record: FaultRecord) -> tuple[bool, str]:
    """Is the fault gone, by the estate's own probes and facts (not by what agentheal says)?"""
    backend = session.backend
    for name in dict.fromkeys([record.component, record.gap_component]):
        health = backend.health(name)
        if not health.healthy:
            return False, f"{name} is unhealthy: {health.detail}"
    names = {f.name for f in backend.facts(record.gap_component)}
    still = [b for b in record.breaks if b in names and b not in ("probe_failed", "process_down")]
    if still:
        return False, f"{record.gap_component} still shows {', '.join(still)}"
    return True, "healthy, and the fault's findings are gone"


@dataclass
class Track:
    """One fault of the drill, as it goes."""

    step: FaultStep
    outcome: FaultOutcome
    record: FaultRecord | None = None
    injected_at: float | None = None
    detected_at: float | None = None
    healed_at: float | None = None
    healed_by: str | None = None
    ended_at: float | None = None
    unverified: str | None = None  # a run said healed, the estate says otherwise
    at_end: str | None = None  # not healed: whether the estate showed the fault gone at the end

    @property
    def done(self) -> bool:
        return self.ended_at is not None


@dataclass
class Drill:
    """Faults (and operator steps, and a load) on schedule against an observed estate."""

    observer: Observer
    session: EstateSession
    steps: list[FaultStep]
    expect: Expect
    operator: list[OperatorStep] = field(default_factory=list)
    load: LoadSpec | None = None
    say: Callable[[str], None] = lambda line: None
    t0: float = 0.0
    tracks: list[Track] = field(default_factory=list)
    runs: list[RunDetail] = field(default_factory=list)
    operator_done: list[str] = field(default_factory=list)
    load_report: str | None = None
    ended_at: float = 0.0

    @property
    def control(self) -> bool:
        return not self.steps

    def run(self) -> Drill:
        """Run to the end: every fault healed and verified (then `quiet_s` more), or past its deadline."""
        self.t0 = time.time()
        self.tracks = [
            Track(s, FaultOutcome(fault=s.fault, component=s.component, expected_personas=s.personas or []))
            for s in self.steps
        ]
        pending_ops = sorted(self.operator, key=lambda o: o.at_s)
        load_thread = self._start_load() if self.load is not None else None
        last_runs = 0.0
        while True:
            now = time.time()
            self._inject_due(now)
            while pending_ops and now >= self.t0 + pending_ops[0].at_s:
                self._operate(pending_ops.pop(0))
            self._note_detections()
            if now - last_runs >= _RUNS_EVERY_S:
                last_runs = now
                self.runs = self.observer.runs_since(self.t0)
                self._note_heals()
            self._note_deadlines(time.time())
            busy = bool(pending_ops) or (load_thread is not None and load_thread.is_alive())
            if not busy and self._finished(time.time()):
                break
            time.sleep(_POLL_S)
        self.ended_at = time.time()
        return self

    # -- schedule ----------------------------------------------------------------------------------

    def _inject_due(self, now: float) -> None:
        started = None
        for track in self.tracks:
            if track.injected_at is not None or track.done:
                continue
            if track.step.after == "start":
                base: float | None = self.t0
            else:
                first = [t.injected_at for t in self.tracks if t.step.after == "start" and t.injected_at]
                started = started or (self.observer.first_heal_since(min(first)) if first else None)
                base = started
            if base is not None and now >= base + track.step.at_s:
                self._inject(track)

    def _inject(self, track: Track) -> None:
        from agentheal.eval.faults import get_fault

        step = track.step
        track.injected_at = time.time()
        track.outcome.injected_s = round(track.injected_at - self.t0, 2)
        try:
            # No detection round runs while the injector acts (a crash loop is written, restarted and
            # seen dying): a heal must not undo the fault before the injector has seen it take hold.
            # The time it takes still counts towards the time to detect.
            with self.observer.watch.lock:
                record = get_fault(step.fault).inject(self.session.backend, step.component)
        except FaultError as exc:
            track.outcome.reason = f"injection failed: {exc}"
            track.ended_at = time.time()
            self.say(f"fault {step.fault} on {step.component} could not be injected: {exc}")
            return
        track.record = record
        track.outcome.injected = True
        track.outcome.did = record.did
        track.outcome.gap_component = record.gap_component
        track.outcome.expected_personas = step.personas or [p for p in [record.expected.persona] if p]
        self.say(f"injected {step.fault} into {step.component}: {'; '.join(record.did)}")

    def _operate(self, op: OperatorStep) -> None:
        from agentheal.eval.fault_model import relaunch

        try:
            done, _ = relaunch(self.session.backend, op.component)
            ok, detail = self.session.backend.wait_healthy(op.component)
            line = (
                f"operator restarted {op.component} ({done}); {'healthy' if ok else 'NOT healthy'}: {detail}"
            )
        except FaultError as exc:
            line = f"operator restart of {op.component} failed: {exc}"
        self.operator_done.append(line)
        self.say(line)

    def _start_load(self) -> threading.Thread:
        from agentheal.eval.load import run_load

        assert self.load is not None
        spec = self.load

        def work() -> None:
            time.sleep(max(0.0, self.t0 + spec.at_s - time.time()))
            self.load_report = run_load(self.session.estate, spec)
            self.say(self.load_report)

        thread = threading.Thread(target=work, name="drill-load", daemon=True)
        thread.start()
        return thread

    # -- following each fault ------------------------------------------------------------------------

    def _note_detections(self) -> None:
        for track in self.tracks:
            if track.record is None or track.detected_at is not None or track.injected_at is None:
                continue
            where = {track.record.component, track.record.gap_component}
            seen = next(
                (g for g in list(self.observer.gaps) if g.at >= track.injected_at and g.component in where),
                None,
            )
            if seen is not None:
                track.detected_at = seen.at
                track.outcome.detected = True
                track.outcome.time_to_detect_s = round(seen.at - track.injected_at, 2)
                track.outcome.gap = f"{seen.component}: {seen.text}"
                self.say(
                    f"detected {track.step.fault} in {track.outcome.time_to_detect_s:.2f} s: {seen.text}"
                )

    def _note_heals(self) -> None:
        for track in self.tracks:
            if track.record is None or track.healed_at is not None or track.injected_at is None:
                continue
            run = self.healing_run(track)
            if run is None or run.row.finished_at is None:
                continue
            ok, why = cleared(self.session, track.record)
            if ok:
                # A heal that ends after the deadline is recorded too; scoring says it came late.
                track.healed_at = run.row.finished_at.timestamp()
                track.healed_by = run.row.run_id
                track.unverified = None
                track.ended_at = track.ended_at or time.time()
                self.say(f"healed {track.step.fault} in {track.healed_at - track.injected_at:.2f} s")
            else:
                track.unverified = why

    def healing_run(self, track: Track) -> RunDetail | None:
        """The first run that ended healed after acting, after the injection, on a component the
        fault's heal needs."""
        assert track.record is not None and track.injected_at is not None
        targets = targets_of(track.record)
        for run in self.runs:
            if run.row.status.value != "healed":
                continue
            acted = [
                a
                for a in run.actions
                if a.step.action in REMEDIATIONS
                and a.step.component in targets
                and a.result.outcome == "ok"
                and a.at.timestamp() >= track.injected_at
            ]
            if acted:
                return run
        return None

    def _note_deadlines(self, now: float) -> None:
        e = self.expect
        for track in self.tracks:
            if track.done:
                continue
            if track.injected_at is None:
                if track.step.after == "heal_started" and now > self.t0 + e.detect_within_s + track.step.at_s:
                    track.outcome.reason = (
                        f"not injected: no heal started within {e.detect_within_s:g} s to inject it during"
                    )
                    track.ended_at = now
                continue
            undetected = track.detected_at is None and now > track.injected_at + e.detect_within_s
            if undetected or now > track.injected_at + e.heal_within_s:
                track.ended_at = now

    def _finished(self, now: float) -> bool:
        if self.control:
            return now >= self.t0 + self.expect.observe_s
        if not all(t.done for t in self.tracks):
            return False
        last = max(t.ended_at or 0.0 for t in self.tracks)
        return now >= last + self.expect.quiet_s and not self.observer.heals_running()

    def drain(self, timeout_s: float = _DRAIN_S) -> None:
        """Wait until no heal is running (their actions count), up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.observer.heals_running() and time.monotonic() < deadline:
            time.sleep(_POLL_S)

    def collect(self) -> Drill:
        """Read the runs a last time (after the watch stopped, or drained) and note late heals."""
        self.runs = self.observer.runs_since(self.t0)
        self._note_heals()
        for track in self.tracks:
            if track.record is not None and track.healed_at is None:
                gone, why = cleared(self.session, track.record)
                track.at_end = "the estate showed it gone at the end" if gone else f"at the end {why}"
        return self
