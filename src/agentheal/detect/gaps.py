"""Signals become gaps: one gap per problem (fingerprint), evidence appended, roots along dependencies.

Detectors speak in `Signal`s whose `data` follows one small convention (see `problem` and
`recovered`): a problem signal names its problem class, the *channel* it belongs to (what a
recovery closes, e.g. `availability` for down/unreachable) and its evidence. The `GapBook`
keeps the open gaps: a second signal of the same fingerprint only appends evidence; a recovery
closes the channel's gaps; and when a component's dependency is down, the component's gaps carry
`root` = the fingerprint of the dependency's gap, so only the root is healed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentheal.estate.model import Estate
from agentheal.models import Gap, GapKind, Severity, Signal, fingerprint_of, utcnow

AVAILABILITY = "availability"
# Problems that a failing dependency explains: a dependent's gap of these classes follows the root.
_CASCADING = {
    "process_down",
    "probe_failed",
    "crash_loop",
    "slow_response",
    "new_error_template",
    "error_spike",
    "alert",
    "metric_over",
    "metric_under",
    "latency_degraded",
    "queue_stalled",
}
_SEVERITIES = list(Severity)
_IMPACT = "impact: "


def problem(
    source: str,
    component: str | None,
    text: str,
    problem_class: str,
    *,
    channel: str | None = None,
    kind: GapKind = GapKind.incident,
    severity: Severity = Severity.medium,
    evidence: list[str] | None = None,
    details: dict[str, Any] | None = None,
    ttl_s: float | None = None,
    fingerprint: str | None = None,
    at: datetime | None = None,
) -> Signal:
    """A signal that something is wrong.

    Args:
        source: The detector (`monitor`, `logs`, `alerts`, `feedback`, `predict`, `patterns`).
        component: The component it is about, if known.
        text: The gap's text, stable per problem class (it makes the fingerprint; numbers fold).
        problem_class: e.g. process_down, new_error_template, disk_predicted.
        channel: What a later recovery closes; default: the problem class.
        kind: The gap kind to open.
        severity: Base severity before impact is weighed.
        evidence: Lines that show the problem (log lines with their numbers, probe results, ...).
        details: Extra figures for the gap (expected time, confidence, counts).
        ttl_s: Close the gap when no signal renews it for this long (events, not states).
        fingerprint: Join a known gap instead of deriving one (feedback matching a pattern).
        at: When it was observed (default: now).
    """
    from agentheal.redaction import redact

    # Evidence is log lines and probe output: redacted here, where every detector's signal is made.
    text = redact(text)
    data: dict[str, Any] = {
        "problem": problem_class,
        "channel": channel or problem_class,
        "kind": kind.value,
        "severity": severity.value,
        "evidence": [redact(e) for e in evidence or []],
        "details": dict(details or {}),
    }
    if ttl_s is not None:
        data["ttl_s"] = ttl_s
    if fingerprint is not None:
        data["fingerprint"] = fingerprint
    return Signal(source=source, text=text, component=component, data=data, at=at or utcnow())


def recovered(source: str, component: str | None, channel: str, text: str = "recovered") -> Signal:
    """A signal that a channel is healthy again: its open gaps close."""
    return Signal(source=source, text=text, component=component, data={"ok": True, "channel": channel})


class TrackedGap(BaseModel):
    """An open gap with what detection knows about it beyond the Gap itself."""

    model_config = ConfigDict(extra="forbid")

    gap: Gap
    problem: str
    channel: str
    base_severity: Severity
    first_seen: datetime
    last_seen: datetime
    count: int = 1
    ttl_s: float | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The gap as `detect --json` prints it: the Gap's fields plus the detection details."""
        out = self.gap.model_dump(mode="json")
        out["problem"] = self.problem
        out["count"] = self.count
        out.update({k: v for k, v in self.details.items() if k not in out})
        return out


class GapBook:
    """The open gaps of one detection session, keyed by fingerprint."""

    def __init__(self, estate: Estate | None = None, max_evidence: int = 40) -> None:
        self.estate = estate
        self.max_evidence = max_evidence
        self.open: dict[str, TrackedGap] = {}
        self.opened: list[TrackedGap] = []  # since the last `drain_changes`
        self.closed: list[TrackedGap] = []

    def add(self, signal: Signal) -> TrackedGap | None:
        """Take one signal: open or renew a gap, or close a channel on a recovery.

        Returns:
            The gap the signal opened or renewed (None for a recovery).
        """
        data = signal.data
        if data.get("ok"):
            self.close(signal.component, str(data.get("channel", "")))
            return None
        kind = GapKind(data.get("kind", GapKind.incident.value))
        channel = str(data.get("channel") or data.get("problem") or "signal")
        fingerprint = data.get("fingerprint") or fingerprint_of(kind.value, signal.component, signal.text)
        evidence = [str(e) for e in data.get("evidence", [])]
        tracked = self.open.get(fingerprint)
        if tracked is None:
            # One state per channel: a component that was down and now answers wrongly has one gap.
            if channel == AVAILABILITY:
                self.close(signal.component, channel)
            severity = Severity(data.get("severity", Severity.medium.value))
            gap = Gap(
                text=signal.text,
                kind=kind,
                component=signal.component,
                severity=severity,
                evidence=evidence[: self.max_evidence],
                fingerprint=fingerprint,
                source=signal.source,
                created_at=signal.at,
            )
            tracked = TrackedGap(
                gap=gap,
                problem=str(data.get("problem", channel)),
                channel=channel,
                base_severity=severity,
                first_seen=signal.at,
                last_seen=signal.at,
                ttl_s=data.get("ttl_s"),
                details=dict(data.get("details", {})),
            )
            self.open[fingerprint] = tracked
            self.opened.append(tracked)
            return tracked
        tracked.count += 1
        tracked.last_seen = max(tracked.last_seen, signal.at)
        tracked.details.update(data.get("details", {}))
        self._append_evidence(tracked.gap, evidence)
        return tracked

    def close(self, component: str | None, channel: str) -> list[TrackedGap]:
        """Close the open gaps of a component's channel; returns them."""
        gone = [t for t in self.open.values() if t.gap.component == component and t.channel == channel]
        for t in gone:
            del self.open[t.gap.fingerprint]
            self.closed.append(t)
        return gone

    def close_fingerprint(self, fingerprint: str) -> None:
        """Close one gap (e.g. once it is healed)."""
        tracked = self.open.pop(fingerprint, None)
        if tracked is not None:
            self.closed.append(tracked)

    def close_followers(self, fingerprint: str) -> list[TrackedGap]:
        """Close the gaps that followed a root gap (its heal explains them); what persists reopens."""
        gone = [t for t in self.open.values() if t.gap.root == fingerprint]
        for t in gone:
            self.close_fingerprint(t.gap.fingerprint)
        return gone

    def expire(self, now: datetime | None = None) -> None:
        """Close event-like gaps (log templates, alerts without a resolve) no signal renewed in time."""
        now = now or utcnow()
        for t in list(self.open.values()):
            if t.ttl_s is not None and (now - t.last_seen).total_seconds() > t.ttl_s:
                self.close_fingerprint(t.gap.fingerprint)

    def drain_changes(self) -> tuple[list[TrackedGap], list[TrackedGap]]:
        """The gaps opened and closed since the last call."""
        opened, closed = self.opened, self.closed
        self.opened, self.closed = [], []
        return opened, closed

    def _append_evidence(self, gap: Gap, lines: list[str]) -> None:
        seen = set(gap.evidence)
        fresh = [line for line in lines if line not in seen]
        if not fresh:
            return
        merged = gap.evidence + fresh
        if len(merged) > self.max_evidence:
            # Keep the first lines (how it began) and the newest (how it is now).
            head = self.max_evidence // 4
            merged = merged[:head] + merged[-(self.max_evidence - head) :]
        gap.evidence = merged

    # -- correlation along the dependency graph ----------------------------------------------------

    def correlate(self) -> None:
        """Point dependents' gaps at their root gap; weigh severity by role and number of dependents."""
        down = {
            t.gap.component: t
            for t in self.open.values()
            if t.channel == AVAILABILITY and t.gap.component is not None
        }
        for t in self.open.values():
            t.gap.root = None
            if self.estate is None or t.gap.component not in (self.estate.components if self.estate else {}):
                continue
            if t.gap.kind is GapKind.incident and t.problem in _CASCADING:
                root = self._root_of(t.gap.component, down)
                if root is None and t.channel != AVAILABILITY:
                    # A log error or an alert of a component that is down is a symptom of that outage.
                    root = down.get(t.gap.component or "")
                if root is not None and root.gap.fingerprint != t.gap.fingerprint:
                    t.gap.root = root.gap.fingerprint
        for t in self.open.values():
            self._weigh(t)

    def _root_of(self, component: str | None, down: dict[str, TrackedGap]) -> TrackedGap | None:
        """The deepest down dependency of a component (itself down on nothing it depends on)."""
        assert self.estate is not None and component is not None
        for dep in self.estate.order():  # dependencies first: the deepest root wins
            if dep in down and dep != component and dep in self.ancestors(component):
                return down[dep]
        return None

    def ancestors(self, component: str) -> set[str]:
        """Every component `component` depends on, directly or through others."""
        if self.estate is None or component not in self.estate.components:
            return set()
        found: set[str] = set()
        stack = list(self.estate.components[component].depends_on)
        while stack:
            name = stack.pop()
            if name not in found:
                found.add(name)
                stack.extend(self.estate.components[name].depends_on)
        return found

    def dependents_of(self, component: str) -> list[str]:
        """Every component that depends on `component`, directly or through others, in estate order."""
        if self.estate is None or component not in self.estate.components:
            return []
        return [n for n in self.estate.order() if n != component and component in self.ancestors(n)]

    def _weigh(self, t: TrackedGap) -> None:
        gap = t.gap
        gap.evidence = [e for e in gap.evidence if not e.startswith(_IMPACT)]
        rank = _SEVERITIES.index(t.base_severity)
        if gap.root is None and gap.component is not None and self.estate is not None:
            dependents = self.dependents_of(gap.component)
            comp = self.estate.components.get(gap.component)
            critical_role = comp is not None and any(tag.lower() == "critical" for tag in comp.tags)
            if dependents:
                rank += 2 if len(dependents) >= 3 else 1
                followers = [o.gap.component for o in self.open.values() if o.gap.root == gap.fingerprint]
                gap.evidence.insert(
                    0,
                    f"{_IMPACT}{len(dependents)} component(s) depend on {gap.component}: "
                    f"{', '.join(dependents)}; {len(set(followers))} failing with it",
                )
            if critical_role:
                rank += 1
        gap.severity = _SEVERITIES[min(rank, len(_SEVERITIES) - 1)]

    def gaps(self) -> list[Gap]:
        """The open gaps: roots before their followers, then by severity and component."""
        order = {name: i for i, name in enumerate(self.estate.order())} if self.estate else {}
        tracked = sorted(
            self.open.values(),
            key=lambda t: (
                t.gap.root is not None,
                -_SEVERITIES.index(t.gap.severity),
                order.get(t.gap.component or "", len(order)),
                t.gap.text,
            ),
        )
        return [t.gap for t in tracked]

    def tracked(self) -> list[TrackedGap]:
        """The open gaps with their detection details, in the order of `gaps()`."""
        by_fp = {t.gap.fingerprint: t for t in self.open.values()}
        return [by_fp[g.fingerprint] for g in self.gaps()]
