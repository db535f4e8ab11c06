"""Agents: every persona's record computed from the event store, retirement, and trust in new ones.

A record counts the heal runs that ended with the persona in charge (the event store names the
persona when a run finishes; dry runs are left out, since they change nothing): heals,
escalations, failures, rejections, the success rate, the median time to heal and when it was
last used, with the window the figures cover.
Nothing is estimated: with no runs a figure is None. A persona is retired by name with a reason
(kept on disk and listed, never routed to again); the register is `personas.RETIREMENTS`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from agentheal.models import RunStatus, utcnow

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.events import EventStore, RunRow
    from agentheal.persona_model import Persona
    from agentheal.personas import Registry
    from agentheal.policy import Policy

# EventStore.runs has a limit; this one is meant as "all" (a run a minute for two years).
ALL_RUNS = 1_000_000
FIRST_HEALS = 3  # real heals of a new generated persona (version) that need a person's approval
RETIRE_MIN_RUNS = 5
RETIRE_BELOW = 0.5
_FINISHED = (RunStatus.healed, RunStatus.escalated, RunStatus.failed, RunStatus.rejected)


class AgentError(Exception):
    """An agent command that cannot be done: unknown name, already retired, nothing to compare."""


class AgentRecord(BaseModel):
    """One persona and its figures, as `agentheal agents list|show` print them."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    role: str
    origin: str
    version: int
    status: str
    runs: int = Field(description="Finished runs it was in charge of at the end, dry runs left out.")
    heals: int
    escalations: int
    failures: int
    rejected: int
    success_rate: float | None = Field(description="Heals over finished runs; None with no finished run.")
    median_heal_s: float | None = Field(description="Median start-to-finish time of its healed runs.")
    last_used: datetime | None
    window: tuple[datetime, datetime] | None = Field(description="First and last start of the runs counted.")
    retirement: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None

    def brief(self) -> dict[str, Any]:
        """The fixed `agents list --json` entry."""
        keys = ("name", "origin", "version", "status", "runs", "heals", "success_rate")
        return {k: getattr(self, k) for k in keys}


def all_runs(events: EventStore) -> list[RunRow]:
    """Every recorded run, newest first."""
    return events.runs(limit=ALL_RUNS)


def record_of(
    persona: Persona, rows: Iterable[RunRow], retirement: dict[str, Any] | None = None
) -> AgentRecord:
    """A persona's record from the recorded runs (all of them; those of other personas are skipped)."""
    mine = [r for r in rows if r.persona == persona.name and r.status is not RunStatus.dry_run]
    count = {s: sum(1 for r in mine if r.status is s) for s in RunStatus}
    finished = sum(count[s] for s in _FINISHED)
    healed = [r for r in mine if r.status is RunStatus.healed and r.finished_at is not None]
    starts = [r.started_at for r in mine]
    return AgentRecord(
        name=persona.name,
        title=persona.title,
        role=persona.role,
        origin=persona.origin,
        version=persona.version,
        status=persona.status,
        runs=len(mine),
        heals=count[RunStatus.healed],
        escalations=count[RunStatus.escalated],
        failures=count[RunStatus.failed],
        rejected=count[RunStatus.rejected],
        success_rate=round(count[RunStatus.healed] / finished, 4) if finished else None,
        median_heal_s=(
            round(
                statistics.median(
                    (r.finished_at - r.started_at).total_seconds() for r in healed if r.finished_at
                ),
                3,
            )
            if healed
            else None
        ),
        last_used=max(starts) if starts else None,
        window=(min(starts), max(starts)) if starts else None,
        retirement=retirement,
        provenance=persona.provenance,
    )


def records(registry: Registry, events: EventStore, settings: Settings) -> list[AgentRecord]:
    """Every loaded persona's record, by name."""
    from agentheal.personas import RETIREMENTS, load_retirements

    retired = load_retirements(settings.generated_personas_dir / RETIREMENTS)
    rows = all_runs(events)
    return [record_of(p, rows, retired.get(p.name)) for p in registry.all()]


def _write_register(settings: Settings, register: dict[str, dict[str, Any]]) -> None:
    import os

    from agentheal.personas import RETIREMENTS

    path = settings.generated_personas_dir / RETIREMENTS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(register, sort_keys=True, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)


def retire(
    settings: Settings,
    registry: Registry,
    name: str,
    why: str,
    by: str,
    figures: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Retire a persona: recorded with its reason, kept on disk, never routed to again.

    A generated persona's file says `status: retired` too (with the record in its provenance);
    a built-in's file is never edited, the register alone retires it. The live registry is updated.

    Raises:
        AgentError: Unknown name, already retired, or no reason given.
    """
    from agentheal.factory.store import current_path
    from agentheal.personas import RETIREMENTS, UnknownPersona, load_retirements

    if not why.strip():
        raise AgentError("say why the persona is retired (--why TEXT)")
    try:
        persona = registry.get(name)
    except UnknownPersona as exc:
        raise AgentError(str(exc)) from None
    register = load_retirements(settings.generated_personas_dir / RETIREMENTS)
    if persona.status == "retired" or name in register:
        raise AgentError(f"{name} is already retired")
    record = {"at": utcnow().isoformat(), "why": why.strip(), "by": by, "version": persona.version}
    if figures is not None:
        record["figures"] = figures
    retired = persona.model_copy(update={"status": "retired"})
    path = current_path(settings, name)
    if persona.origin == "generated" and path.is_file():
        provenance = {**(persona.provenance or {}), "retired": record}
        retired = retired.model_copy(update={"provenance": provenance})
        path.write_text(retired.to_markdown(), encoding="utf-8")
    _write_register(settings, {**register, name: record})
    registry.add(retired, replace=True)
    return record


def clear_retirement(settings: Settings, name: str) -> dict[str, Any] | None:
    """Drop a persona from the retirement register (a new version of it is active); the old record."""
    from agentheal.personas import RETIREMENTS, load_retirements

    register = load_retirements(settings.generated_personas_dir / RETIREMENTS)
    record = register.pop(name, None)
    if record is not None:
        _write_register(settings, register)
    return record


def retire_underperformers(
    settings: Settings,
    registry: Registry,
    events: EventStore,
    *,
    min_runs: int = RETIRE_MIN_RUNS,
    below: float = RETIRE_BELOW,
    by: str = "agentheal",
) -> list[tuple[str, str]]:
    """Retire every active specialist whose success rate is below `below` after `min_runs` finished runs.

    Leads are left alone: the router falls back on them when no specialist exists.

    Returns:
        (name, reason) for each persona retired.
    """
    done = []
    for rec in records(registry, events, settings):
        finished = rec.heals + rec.escalations + rec.failures + rec.rejected
        if rec.status != "active" or rec.role != "specialist" or finished < min_runs:
            continue
        if rec.success_rate is not None and rec.success_rate < below:
            assert rec.window is not None
            why = (
                f"success rate {rec.success_rate:.0%} over {finished} finished runs "
                f"({rec.window[0]:%Y-%m-%d %H:%M} to {rec.window[1]:%Y-%m-%d %H:%M} UTC) is below "
                f"{below:.0%} (judged after {min_runs} runs)"
            )
            figures = {"runs": rec.runs, "heals": rec.heals, "success_rate": rec.success_rate}
            retire(settings, registry, rec.name, why, by, figures)
            done.append((rec.name, why))
    return done


def needs_first_approval(
    persona: Persona, events: EventStore, policy: Policy, first_heals: int | None = None
) -> str | None:
    """Why a generated persona's plan needs a person's approval while it is new, or None.

    The first `first_heals` real heals of each version need approval: with `first_heals` None,
    the policy's `generated_first_heals` when it has one, else `FIRST_HEALS`; 0 trusts it at once.
    A heal counts from runs that healed under this persona after this version was made.
    """
    if persona.origin != "generated":
        return None
    wanted = first_heals if first_heals is not None else policy.generated_first_heals
    if wanted <= 0:
        return None
    made = created_at(persona)
    heals = sum(
        1
        for r in all_runs(events)
        if r.persona == persona.name
        and r.status is RunStatus.healed
        and (made is None or r.started_at >= made)
    )
    if heals >= wanted:
        return None
    return (
        f"{persona.name} v{persona.version} is a generated persona with {heals} real heal(s) so far; "
        f"its first {wanted} need a person's approval"
    )


def created_at(persona: Persona) -> datetime | None:
    """When this version of a generated persona was made, from its provenance (None if unknown)."""
    stamp = (persona.provenance or {}).get("created_at")
    try:
        return datetime.fromisoformat(str(stamp)) if stamp else None
    except ValueError:
        return None
