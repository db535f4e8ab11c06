"""The factory's second trigger: escalations and failed heals piling up in the event store.

Several runs of one component (or, for gaps with none, of one gap kind) that ended escalated or
failed within a window say the team lacks a specialist for them. Each such group becomes a
proposal: a recurring gap in the words those runs were reported in, ready for `create_for_gap`
(`agentheal agents propose --create`, or the watch loop).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from agentheal.models import Gap, GapKind, RunStatus, normalize_text, utcnow

if TYPE_CHECKING:
    from agentheal.events import EventStore
    from agentheal.personas import Registry

WINDOW_S = 24 * 3600.0
MIN_COUNT = 3
_UNHEALED = (RunStatus.escalated, RunStatus.failed)


class Proposal(BaseModel):
    """A group of unhealed runs that asks for a new specialist, and the gap to create it for."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description='"component web" or "kind incident"')
    count: int
    run_ids: list[str]
    first: datetime
    last: datetime
    reasons: list[str] = Field(description="The distinct reasons the runs ended with, as recorded.")
    gap: Gap


def _made_since(registry: Registry, since: datetime) -> set[str]:
    """Group keys a pattern-triggered persona was made for within the window: not proposed again."""
    from agentheal.agents import created_at

    keys = set()
    for p in registry.all():
        prov = p.provenance or {}
        made = created_at(p)
        if prov.get("trigger") == "pattern" and made is not None and made >= since:
            keys.add(
                f"component {prov['component']}" if prov.get("component") else f"kind {prov.get('kind')}"
            )
    return keys


def propose(
    events: EventStore,
    registry: Registry,
    *,
    window_s: float = WINDOW_S,
    min_count: int = MIN_COUNT,
    now: datetime | None = None,
) -> list[Proposal]:
    """Proposals for new specialists from the runs that ended escalated or failed in the window.

    Args:
        events: The event store.
        registry: The personas now; a group a pattern-made persona already covers is skipped.
        window_s: How far back to look, in seconds.
        min_count: Unhealed runs of one group that make a proposal.
        now: The end of the window (tests pass a fixed time).

    Returns:
        One proposal per group, the largest first.
    """
    from agentheal.agents import all_runs

    since = (now or utcnow()) - timedelta(seconds=window_s)
    groups: dict[str, list[tuple[str, Gap, str | None, datetime]]] = {}
    for row in all_runs(events):
        if row.status not in _UNHEALED or row.started_at < since:
            continue
        detail = events.run(row.run_id)
        if detail is None or detail.gap is None:
            continue
        key = f"component {row.component}" if row.component else f"kind {detail.gap.kind.value}"
        groups.setdefault(key, []).append((row.run_id, detail.gap, row.reason, row.started_at))
    covered = _made_since(registry, since)
    out = []
    for key, runs in groups.items():
        if len(runs) < min_count or key in covered:
            continue
        texts = Counter(normalize_text(gap.text) for _, gap, _, _ in runs)
        common = texts.most_common(1)[0][0]
        sample = next(gap for _, gap, _, _ in runs if normalize_text(gap.text) == common)
        first, last = min(r[3] for r in runs), max(r[3] for r in runs)
        evidence = [
            f"{len(runs)} runs ended without a heal between {first:%Y-%m-%d %H:%M} and "
            f"{last:%Y-%m-%d %H:%M} UTC",
            *dict.fromkeys(e for _, gap, _, _ in runs for e in gap.evidence),
        ][:6]
        gap = Gap(
            text=sample.text,
            kind=GapKind.recurring,
            component=sample.component,
            severity=sample.severity,
            evidence=evidence,
            source="pattern",
        )
        out.append(
            Proposal(
                key=key,
                count=len(runs),
                run_ids=[r[0] for r in runs],
                first=first,
                last=last,
                reasons=list(dict.fromkeys(r[2] for r in runs if r[2])),
                gap=gap,
            )
        )
    return sorted(out, key=lambda p: (-p.count, p.key))
