"""What a running watch adds to the figures: each component's probe answers, counted and written in
batches (availability), the figures' summary kept current as its runs end (every few seconds, so a
status reads only what is new), and a round of the prevent graph every few rounds (predictions,
preventive measures and their follow-ups, for prevention effectiveness and prediction accuracy).

Probe answers are counted in memory and written once per `probe_batch_s` (default a minute) as one
row per component: how many rounds answered, how many passed every probe. A watch probing each of
ten components every 5 s writes 14,400 rows a day instead of 172,800; batches older than
`probe_keep_days` are deleted (checked once an hour), so the table stays bounded. A stopping
watch writes what it has counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from agentheal.metrics import records
from agentheal.metrics.summary import refresh
from agentheal.models import GapKind, RunStatus, utcnow

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.detect.detector import Detector
    from agentheal.detect.gaps import TrackedGap
    from agentheal.estate.local import LocalBackend
    from agentheal.events import EventStore
    from agentheal.policy import Policy

_PRUNE_EVERY_S = 3600.0
_REFRESH_EVERY_S = 5.0


class ProbeTally:
    """Counts each component's probe answers as a monitor takes them; writes them in batches."""

    def __init__(self, events: EventStore, batch_s: float, keep: timedelta) -> None:
        self.events = events
        self.batch_s = batch_s
        self.keep = keep
        self.counts: dict[str, tuple[int, int]] = {}
        self._seen: dict[str, float] = {}  # component -> the time of its last answer counted
        self._since = time.monotonic()
        self._pruned = float("-inf")

    def observe(self, monitor: Any) -> None:
        """Count the answers the monitor took since the last call (its `sampled_at` moved on)."""
        for name, at in monitor.sampled_at.items():
            if self._seen.get(name) == at:
                continue
            self._seen[name] = at
            health = monitor.health.get(name)
            if health is None:
                continue
            answers, passed = self.counts.get(name, (0, 0))
            self.counts[name] = (answers + 1, passed + int(bool(health.healthy)))
        if time.monotonic() - self._since >= self.batch_s:
            self.flush()

    def flush(self) -> None:
        """Write what is counted (one row per component) and, once an hour, delete old batches."""
        self._since = time.monotonic()
        records.record_probes(self.events, self.counts)
        self.counts = {}  # only once written: a failed write keeps them for the next batch
        if time.monotonic() - self._pruned >= _PRUNE_EVERY_S:
            self._pruned = time.monotonic()
            records.forget_probes(self.events, utcnow() - self.keep)


class WatchFigures:
    """A watch's part in the figures, called after each of its detection rounds."""

    def __init__(
        self,
        settings: Settings,
        events: EventStore,
        backend: LocalBackend | None,
        policy: Callable[[], Policy] | None,
        dry_run: bool = False,
    ) -> None:
        self.probes = ProbeTally(events, settings.probe_batch_s, timedelta(days=settings.probe_keep_days))
        self.events = events
        self.backend = backend
        self.policy = policy  # read when first needed: a watch that never prevents never loads it
        self.dry_run = dry_run
        self.every = settings.prevent_every_rounds
        self.home = settings.home_dir
        self._refreshed = float("-inf")

    def after_round(
        self, detector: Detector, busy: set[str], tracked: list[TrackedGap] | None = None
    ) -> list[str]:
        """Count the round's probe answers; every `prevent_every_rounds` rounds, one prevent round.

        The prevent graph leaves for a later round the series of a component being healed, or with
        a predicted gap open (detection raised that breach and the heal graph answers it: one remedy
        at a time); a prediction whose breach the heal graph then healed counts as acted on.

        Args:
            detector: The watch's detector, after its round (its monitor and trend samples).
            busy: Components being healed.
            tracked: The open gaps, as the watch read them this round.

        Returns:
            Lines for the watch's log.
        """
        lines = []
        # a failure here must not stop the watch: the answers stay counted, the next round tries again
        if detector.monitor is not None:
            try:
                self.probes.observe(detector.monitor)
            except Exception as exc:
                lines.append(f"warning: probe answers not written yet: {type(exc).__name__}: {exc}")
        if time.monotonic() - self._refreshed >= _REFRESH_EVERY_S:
            self._refreshed = time.monotonic()
            try:  # the figures' summary kept current as runs end: status then reads only a few rows
                refresh(self.events)
            except Exception as exc:
                lines.append(f"warning: figures' summary not brought up to date: {type(exc).__name__}: {exc}")
        if self.every > 0 and detector.rounds % self.every == 0:
            predicted = {t.gap.component for t in tracked or [] if t.gap.kind is GapKind.predicted}
            try:
                lines += credit_heals(self.events)
                lines += self._prevent(detector, busy | {c for c in predicted if c is not None})
            except Exception as exc:
                lines.append(f"warning: prevent round failed: {type(exc).__name__}: {exc}")
        return lines

    def _prevent(self, detector: Detector, busy: set[str]) -> list[str]:
        from agentheal.graphs.prevent import PreventJob, prevent_round

        samples = {
            series: list(found)
            for series, found in detector.trends.series.items()
            if not (found and found[-1].component in busy)
        }
        job = PreventJob(events=self.events, config=detector.config, samples=samples, backend=self.backend,
                         policy=self.policy() if self.policy and self.backend else None,
                         home=self.home)  # fmt: skip
        done = prevent_round(job, time.time(), dry_run=self.dry_run)
        lines = [
            f"prevent: predicted {p['series']} over its limit in {p['expected_in_s']:.0f} s "
            f"(confidence {p['confidence']:.2f})"
            for p in done["predicted"]
        ]
        lines += [
            f"prevent: {a['step']['action']} on {a['step']['component']} {a['outcome']}: {a['detail']}"
            for a in done["applied"]
        ]
        lines += [f"prevent: follow-up of {f['series']}: {f['outcome']}" for f in done["followed"]]
        return lines + [f"prevent: {note}" for note in done["notes"]]

    def close(self) -> list[str]:
        """Write the probe answers counted and not yet written; lines for the log if that failed."""
        try:
            self.probes.flush()
        except Exception as exc:  # the watch is stopping: say what was lost, stop anyway
            return [f"warning: probe answers not written: {type(exc).__name__}: {exc}"]
        return []


def credit_heals(events: EventStore) -> list[str]:
    """Mark as acted on each pending prediction whose breach the heal graph healed in time: a healed
    run of a predicted gap with the prediction's text, started after the prediction was made and
    before its expected time. Returns lines for the log."""
    import sqlalchemy as sa

    from agentheal.event_schema import RUNS

    lines = []
    for p in records.pending_predictions(events):
        if p["acted"] or p["component"] is None or p["expected_at"] is None:
            continue
        stmt = (
            sa.select(RUNS.c.run_id.label("run_id"), RUNS.c.finished_at.label("finished_at"))
            .where(
                RUNS.c.component == p["component"],
                RUNS.c.gap_text == p["text"],
                RUNS.c.status == RunStatus.healed.value,
                RUNS.c.gap["kind"].as_string() == GapKind.predicted.value,
                RUNS.c.started_at >= p["made_at"],
                RUNS.c.started_at < p["expected_at"],
            )
            .order_by(RUNS.c.started_at)
            .limit(1)
        )
        found = events.query(stmt)
        if not found:
            continue
        run = found[0]
        run_id = str(run["run_id"])
        measure = {"prediction": p["id"], "scheduled": None, "heal_run": run_id,
                   "step": {"action": "heal", "component": p["component"], "args": {"run": run_id}},
                   "outcome": "ok", "detail": f"the heal graph healed the predicted gap (run {run_id[:12]})",
                   "at": run["finished_at"].isoformat() if run["finished_at"] else None}  # fmt: skip
        records.record_measure(events, p["id"], measure)
        lines.append(
            f"prevent: prediction {p['id']} ({p['series']}) acted on by heal run {run['run_id'][:12]}"
        )
    return lines
