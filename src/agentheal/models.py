"""Domain types shared by every part of agentheal: signals, gaps, plans, outcomes, resolutions.

Modules pass these models, never loose dicts. Anything that arrives from outside (a gap file,
an LLM reply, an HTTP request) is validated into one of them first, so a bad field is named
in the error before anything acts on it.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class GapKind(StrEnum):
    incident = "incident"
    recurring = "recurring"
    weakness = "weakness"
    predicted = "predicted"
    capability = "capability"


class Severity(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Risk(StrEnum):
    """Risk of an action; ordered, so policy can compare it with a ceiling."""

    none = "none"
    low = "low"
    medium = "medium"
    high = "high"

    @property
    def rank(self) -> int:
        return list(Risk).index(self)


class RunStatus(StrEnum):
    running = "running"
    healed = "healed"
    escalated = "escalated"
    failed = "failed"
    awaiting_approval = "awaiting_approval"
    # waits in interrupt() for a remote persona's agent (A2A) to answer, holding no worker
    awaiting_remote = "awaiting_remote"
    rejected = "rejected"
    dry_run = "dry_run"


PlanSource = Literal["playbook", "memory", "persona", "llm", "none"]

_NUMBER = re.compile(r"\b\d+(?:[.:]\d+)*\b")
_HEX = re.compile(r"\b[0-9a-f]{8,}\b")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower-case text with numbers, hex ids and extra spaces folded, for fingerprints."""
    text = text.lower()
    text = _HEX.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    return _SPACE.sub(" ", text).strip()


def fingerprint_of(kind: str, component: str | None, text: str) -> str:
    """A stable id for "the same problem": kind, component and the text with its numbers folded."""
    key = f"{kind}|{component or '-'}|{normalize_text(text)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def clean_text(value: str, what: str = "", limit: int = 4000) -> str:
    """Stripped text that is neither empty nor longer than `limit`; the error names `what`."""
    value = value.strip()
    if not value:
        raise ValueError(f"{what} is empty".lstrip())
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters; at most {limit}".lstrip())
    return value


def clean_component(value: str | None) -> str | None:
    """A component name stripped of spaces; blank means none."""
    return (value.strip() or None) if value else None


class Signal(BaseModel):
    """One raw observation: a probe result, an alert, a log line, a metric sample, feedback."""

    model_config = ConfigDict(extra="forbid")

    source: str
    text: str
    component: str | None = None
    at: datetime = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict)


class Gap(BaseModel):
    """Something to heal. The fingerprint is derived when not given, for de-duplication."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="What is wrong, in words.")
    kind: GapKind = GapKind.incident
    component: str | None = None
    severity: Severity = Severity.medium
    evidence: list[str] = Field(default_factory=list)
    fingerprint: str = ""
    source: str = "user"
    root: str | None = Field(default=None, description="Fingerprint of the root gap, if this one follows it.")
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("text")
    @classmethod
    def _text_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the gap text is empty: say what is wrong")
        return clean_text(v, "the gap text")

    @field_validator("component")
    @classmethod
    def _component_clean(cls, v: str | None) -> str | None:
        return clean_component(v)

    @model_validator(mode="after")
    def _derive_fingerprint(self) -> Gap:
        if not self.fingerprint:
            self.fingerprint = fingerprint_of(self.kind.value, self.component, self.text)
        return self


class Step(BaseModel):
    """One action of a plan, with its arguments. Validated against the catalogue before it runs."""

    model_config = ConfigDict(extra="forbid")

    action: str
    component: str
    args: dict[str, Any] = Field(default_factory=dict)
    why: str = ""

    def signature(self) -> str:
        args = json.dumps(self.args, sort_keys=True)[1:-1]
        return f"{self.action}({self.component}{', ' + args if args else ''})"


class Check(BaseModel):
    """A check that proves a fix: every probe of a component passes, within a deadline."""

    model_config = ConfigDict(extra="forbid")

    component: str
    kind: Literal["probes", "running"] = "probes"
    settle_s: float = Field(default=0.1, ge=0, le=600)
    deadline_s: float = Field(default=20.0, gt=0, le=3600)


class Plan(BaseModel):
    """Root-cause hypothesis, ordered steps, rollback steps, and the checks that prove the fix."""

    model_config = ConfigDict(extra="forbid")

    hypothesis: str
    steps: list[Step] = Field(default_factory=list)
    rollback: list[Step] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    source: PlanSource = "none"
    playbook: str | None = Field(default=None, description="Name of the persona playbook or memory id used.")

    def signature(self) -> str:
        """The steps alone, as text: two plans with the same signature do the same thing."""
        return "; ".join(s.signature() for s in self.steps)


class Diagnosis(BaseModel):
    """What the observation tools found and the root-cause hypothesis drawn from it."""

    model_config = ConfigDict(extra="forbid")

    facts: list[str] = Field(
        default_factory=list, description="Machine-readable findings, e.g. process_down."
    )
    evidence: list[str] = Field(default_factory=list, description="Observation excerpts, redacted and cut.")
    hypothesis: str = ""
    component: str | None = None


class ActionResult(BaseModel):
    """What an action did (or would do, in a dry run)."""

    model_config = ConfigDict(extra="forbid")

    action: str
    component: str
    dry_run: bool = False
    outcome: Literal["ok", "failed", "skipped", "dry_run"] = "ok"
    detail: str = ""
    duration_s: float = 0.0


class Validation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    detail: str = ""


class LLMUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Calls answered without usage figures (some local servers give none): their tokens are
    # unknown, not zero, and the token sums above leave them out.
    unknown_usage_calls: int = 0

    def add(self, other: LLMUsage) -> LLMUsage:
        return LLMUsage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            unknown_usage_calls=self.unknown_usage_calls + other.unknown_usage_calls,
        )


class Resolution(BaseModel):
    """A finished heal, as memory keeps it."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    gap: Gap
    persona: str | None = None
    diagnosis: Diagnosis = Field(default_factory=Diagnosis)
    plan: Plan | None = None
    status: RunStatus
    actions: list[ActionResult] = Field(default_factory=list)
    validation: Validation | None = None
    reason: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime = Field(default_factory=utcnow)
    llm: LLMUsage = Field(default_factory=LLMUsage)

    @property
    def healed(self) -> bool:
        return self.status is RunStatus.healed


class MemoryHit(BaseModel):
    """A past resolution recalled for a gap, with its similarity and the outcomes of its plan."""

    model_config = ConfigDict(extra="forbid")

    id: str
    gap: str
    resolution: str
    outcome: Literal["healed", "failed"]
    similarity: float
    component: str | None = None
    kind: str | None = None
    fingerprint: str | None = None
    plan: Plan | None = None
    healed_count: int = 0
    failed_count: int = 0


class DiagnosisReply(BaseModel):
    """What an LLM answers after observing: never trusted beyond these fields."""

    model_config = ConfigDict(extra="forbid")

    hypothesis: str = Field(description="The most likely root cause, one or two sentences.")
    root_component: str = Field(description="The component where the root cause lies.")
    facts: list[str] = Field(default_factory=list, description="Short findings that support the hypothesis.")


class PlanReply(BaseModel):
    """A plan as an LLM answers it; steps are checked against the catalogue and policy afterwards."""

    model_config = ConfigDict(extra="forbid")

    hypothesis: str
    steps: list[Step]
    rollback: list[Step] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
