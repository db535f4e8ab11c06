"""Guardrails: what may run without a person.

A policy file (YAML, validated with `extra="forbid"` so a typo is named) says which actions are
allowed on which components (glob patterns), the highest risk that runs automatically, which
steps always need a person's approval, and how often an action may run before agentheal stops
flapping and escalates. Policy is checked after the LLM and the personas, never by them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentheal.estate.actions import CATALOGUE, REMEDIATIONS, validate_step
from agentheal.estate.model import Estate, describe_validation_error, read_yaml_mapping
from agentheal.models import Plan, Risk, Step

if TYPE_CHECKING:
    from agentheal.config import Settings

CountRecent = Callable[[str, str, float], int]


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file and the field."""


def _known_actions(patterns: list[str]) -> list[str]:
    # A glob ("*", "re*") may match nothing today; a plain name must be in the catalogue.
    unknown = [p for p in patterns if not any(c in p for c in "*?[") and p not in CATALOGUE]
    if unknown:
        raise ValueError(f"unknown actions {unknown} (known: {', '.join(CATALOGUE)})")
    return patterns


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


class Rule(BaseModel):
    """Actions (names or globs) allowed on components (globs)."""

    model_config = ConfigDict(extra="forbid")

    components: list[str] = Field(default_factory=lambda: ["*"], description="Component name globs.")
    allow: list[str] = Field(description="Action names or globs allowed on those components.")

    _check_allow = field_validator("allow")(_known_actions)


class ApprovalRule(BaseModel):
    """Steps that always need a person: those matching `actions` and `components` (empty = any)."""

    model_config = ConfigDict(extra="forbid")

    actions: list[str] = Field(default_factory=list)
    components: list[str] = Field(default_factory=list)
    reason: str = Field(min_length=1, description="Why a person must approve; shown with the request.")

    _check_actions = field_validator("actions")(_known_actions)

    def matches(self, step: Step) -> bool:
        return (not self.actions or _matches(step.action, self.actions)) and (
            not self.components or _matches(step.component, self.components)
        )


class RateLimit(BaseModel):
    """At most `max` real runs of `action` on one component within `window_s` seconds."""

    model_config = ConfigDict(extra="forbid")

    action: str
    max: int = Field(ge=0)
    window_s: float = Field(gt=0)
    components: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("action")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in CATALOGUE:
            raise ValueError(f"unknown action {v!r} (known: {', '.join(CATALOGUE)})")
        return v


class Policy(BaseModel):
    """What may run without a person."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(default=False, description="Plan and check, change nothing.")
    max_auto_risk: Risk = Field(default=Risk.medium, description="Steps above this risk need approval.")
    rules: list[Rule] = Field(default_factory=lambda: [Rule(components=["*"], allow=list(REMEDIATIONS))])
    approval: list[ApprovalRule] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(
        default_factory=lambda: [RateLimit(action="restart", max=3, window_s=600)]
    )
    generated_first_heals: int = Field(
        default=3,
        ge=0,
        description="Real heals of a new generated agent that need approval; 0 trusts it at once.",
    )


class PolicyDecision(BaseModel):
    """The verdict on a plan: steps run only when `allowed`, and with `needs_approval` after a yes."""

    model_config = ConfigDict(extra="forbid")

    allowed: bool
    needs_approval: bool
    violations: list[str] = Field(default_factory=list)
    approvals: list[str] = Field(
        default_factory=list, description="Why approval is needed, one line per reason."
    )
    rate_limited: bool = False
    dry_run: bool = False


def load_policy(path: Path | None, settings: Settings) -> Policy:
    """Load a policy file, or the defaults when there is none.

    The settings' `max_auto_risk` applies when the file does not set one, and a dry run asked
    for in either place holds (`policy.dry_run or settings.dry_run`).

    Args:
        path: The policy YAML file, or None for the defaults.
        settings: agentheal's settings.

    Raises:
        PolicyError: The file is missing, is not valid YAML, or breaks the schema; the message
            names the file and each offending field.
    """
    if path is None:
        return Policy(max_auto_risk=settings.max_auto_risk, dry_run=settings.dry_run)
    file = Path(path).expanduser().resolve()
    data = read_yaml_mapping(file, "policy file", PolicyError)
    data.setdefault("max_auto_risk", settings.max_auto_risk.value)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(
            f"{file}: invalid policy file:\n  " + "\n  ".join(describe_validation_error(e))
        ) from None
    policy.dry_run = policy.dry_run or settings.dry_run
    return policy


def evaluate(
    policy: Policy,
    plan: Plan,
    estate: Estate,
    persona_actions: list[str] | None,
    count_recent: CountRecent,
) -> PolicyDecision:
    """Check a plan against the policy before anything runs.

    Args:
        policy: The policy.
        plan: The plan; its steps and its rollback steps are checked (a rollback also runs unattended).
        estate: The estate the plan acts on.
        persona_actions: The actions the planning persona may use; None means no restriction.
        count_recent: count_recent(component, action, window_s) -> real (not dry-run) runs in the window.

    Returns:
        The decision: violations are never executed; approvals say why a person must agree first.
    """
    violations: list[str] = []
    approvals: list[str] = []
    rate_limited = False
    for step in [*plan.steps, *plan.rollback]:
        problems = validate_step(step, estate)
        if problems:
            violations.extend(f"{step.signature()}: {p}" for p in problems)
            continue
        spec = CATALOGUE[step.action]
        if spec.read_only:
            continue  # observations change nothing: always allowed, never need approval
        if persona_actions is not None and step.action not in persona_actions:
            violations.append(
                f"{step.signature()}: {step.action} is not one of the persona's actions "
                f"({', '.join(persona_actions)})"
            )
        if not any(
            _matches(step.component, r.components) and _matches(step.action, r.allow) for r in policy.rules
        ):
            violations.append(f"{step.signature()}: no policy rule allows {step.action} on {step.component}")
        if spec.risk.rank > policy.max_auto_risk.rank:
            approvals.append(
                f"{step.signature()}: {step.action} is {spec.risk.value} risk, "
                f"above the automatic ceiling {policy.max_auto_risk.value}"
            )
        approvals.extend(f"{step.signature()}: {r.reason}" for r in policy.approval if r.matches(step))

    for limit in policy.rate_limits:
        planned: dict[str, int] = {}
        for step in plan.steps:
            if step.action == limit.action and _matches(step.component, limit.components):
                planned[step.component] = planned.get(step.component, 0) + 1
        for component, n in planned.items():
            ran = count_recent(component, limit.action, limit.window_s)
            if ran + n > limit.max:
                rate_limited = True
                violations.append(
                    f"{limit.action} of {component} ran {ran} times in {limit.window_s:g} s; "
                    f"escalating instead of flapping (limit {limit.max} in {limit.window_s:g} s)"
                )
    return PolicyDecision(
        allowed=not violations,
        needs_approval=bool(approvals),
        violations=violations,
        approvals=list(dict.fromkeys(approvals)),
        rate_limited=rate_limited,
        dry_run=policy.dry_run,
    )
