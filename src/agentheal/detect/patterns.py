"""Patterns in history: recurring gaps, and a ranking of weak components, read from the event store.

A fingerprint reported `recurring_count` times within the window recurs; so does a cluster of
similar gaps of one component (token overlap of their texts with numbers folded) whose members
add up to that count. Components are ranked by failure frequency, time spent unhealthy (from the
heal runs' durations) and risk (failed or escalated heals, number of dependents); a score above
the threshold is a `weakness` gap. Every figure is counted from recorded rows, with its window.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from agentheal.detect.alerts import similarity
from agentheal.detect.config import DetectConfig
from agentheal.detect.gaps import problem
from agentheal.models import Gap, GapKind, Severity, Signal, utcnow

if TYPE_CHECKING:
    from agentheal.estate.model import Estate
    from agentheal.events import EventStore, RunRow

HISTORY_LIMIT = 5000


class Weakness(BaseModel):
    """How weak one component has been within the window, and why."""

    model_config = ConfigDict(extra="forbid")

    component: str
    failures: int
    unhealthy_s: float
    heals: int
    heals_failed: int
    dependents: int
    score: float


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h"


def recurring_signals(gaps: list[Gap], config: DetectConfig, now: datetime | None = None) -> list[Signal]:
    """Recurring gaps from reported incidents: one fingerprint, or a cluster of similar ones, too often."""
    now = now or utcnow()
    since = now - timedelta(seconds=config.recurring_window_s)
    incidents = [g for g in gaps if g.kind is GapKind.incident and g.created_at >= since]
    counts = Counter(g.fingerprint for g in incidents)
    by_fp = {g.fingerprint: g for g in incidents}
    out: list[Signal] = []
    window = _hours(config.recurring_window_s)
    lonely: list[str] = []
    for fp, n in counts.most_common():
        if n >= config.recurring_count:
            g = by_fp[fp]
            times = sorted(x.created_at for x in incidents if x.fingerprint == fp)
            out.append(_recurring(g, n, [fp], window, times))
        else:
            lonely.append(fp)
    # Similar fingerprints of one component: greedy clusters around the most frequent member.
    taken: set[str] = set()
    for fp in lonely:
        if fp in taken:
            continue
        head = by_fp[fp]
        members = [
            other
            for other in lonely
            if other not in taken
            and by_fp[other].component == head.component
            and (other == fp or similarity(head.text, by_fp[other].text) >= config.recurring_similarity)
        ]
        total = sum(counts[m] for m in members)
        if len(members) >= 2 and total >= config.recurring_count:
            taken.update(members)
            times = sorted(x.created_at for x in incidents if x.fingerprint in members)
            out.append(_recurring(head, total, members, window, times))
    return out


def _recurring(gap: Gap, n: int, members: list[str], window: str, times: list[datetime]) -> Signal:
    evidence = [
        f"{n} reports in the last {window} across {len(members)} fingerprint(s): {', '.join(members[:10])}",
        "first "
        + times[0].isoformat(timespec="seconds")
        + ", last "
        + times[-1].isoformat(timespec="seconds"),
    ]
    severity = Severity.high if gap.severity in (Severity.high, Severity.critical) else Severity.medium
    return problem(
        "patterns", gap.component, f"recurring: {gap.text}", "recurring", kind=GapKind.recurring,
        severity=severity, evidence=evidence, details={"occurrences": n, "members": members},
        channel=f"recurring:{members[0]}", ttl_s=86_400.0,
    )  # fmt: skip


def rank_components(
    gaps: list[Gap], runs: list[RunRow], estate: Estate, config: DetectConfig, now: datetime | None = None
) -> list[Weakness]:
    """Every component scored 0..1 by failure frequency, time unhealthy and risk, weakest first."""
    now = now or utcnow()
    since = now - timedelta(seconds=config.weakness_window_s)
    failures = Counter(
        g.component for g in gaps if g.kind is GapKind.incident and g.created_at >= since and g.root is None
    )
    out = []
    for name in estate.order():
        mine = [r for r in runs if r.component == name and r.started_at >= since]
        unhealthy = sum(((r.finished_at or now) - r.started_at).total_seconds() for r in mine)
        failed = sum(1 for r in mine if r.status.value in ("failed", "escalated", "rejected"))
        dependents = len(estate.dependents(name))
        frequency = min(1.0, failures[name] / (2 * config.recurring_count))
        downtime = min(1.0, unhealthy / 3600)
        risk = 0.5 * (failed / len(mine) if mine else 0.0) + 0.5 * min(1.0, dependents / 3)
        # Frequency leads: a component that fails often is weak even if each heal is quick.
        score = round(0.5 * frequency + 0.25 * downtime + 0.25 * risk, 3) if failures[name] else 0.0
        out.append(
            Weakness(component=name, failures=failures[name], unhealthy_s=round(unhealthy, 1),
                     heals=len(mine), heals_failed=failed, dependents=dependents, score=score)
        )  # fmt: skip
    return sorted(out, key=lambda w: -w.score)


def weakness_signals(ranking: list[Weakness], config: DetectConfig) -> list[Signal]:
    """`weakness` gaps for the components scoring at or above the threshold."""
    window = _hours(config.weakness_window_s)
    out = []
    for w in ranking:
        if w.score < config.weakness_threshold or w.score == 0:
            continue
        evidence = [
            f"weakness score {w.score:.2f} (threshold {config.weakness_threshold:g}) over the last {window}",
            f"{w.failures} incident(s); {w.unhealthy_s:.0f} s in heal runs; {w.heals_failed} of {w.heals} "
            f"heal(s) failed or escalated; {w.dependents} dependent(s)",
        ]
        severity = Severity.high if w.score >= 0.8 else Severity.medium
        out.append(
            problem("patterns", w.component, f"weak component {w.component}: fails often", "weakness",
                    kind=GapKind.weakness, severity=severity, evidence=evidence, channel="weakness",
                    details={"score": w.score}, ttl_s=86_400.0)
        )  # fmt: skip
    return out


def scan_history(
    events: EventStore, estate: Estate | None, config: DetectConfig, now: datetime | None = None
) -> list[Signal]:
    """Recurring and weakness signals from what the event store recorded."""
    gaps = events.gaps(limit=HISTORY_LIMIT)
    out = recurring_signals(gaps, config, now)
    if estate is not None:
        runs = events.runs(limit=HISTORY_LIMIT)
        out += weakness_signals(rank_components(gaps, runs, estate, config, now), config)
    return out
