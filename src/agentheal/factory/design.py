"""The agent design: what the factory decides about a new specialist before any file is written.

An LLM answers an `AgentDesign`; with no LLM configured, `agentheal.factory.derive` builds one
from the gap. Either way nothing here is trusted: names, actions and playbooks are plain strings
until `agentheal.factory.render` turns the design into a persona and the checks judge it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentheal.models import Gap, GapKind

if TYPE_CHECKING:
    from agentheal.llm import LLM
    from agentheal.personas import Registry
    from agentheal.policy import Policy


class ProcedureDesign(BaseModel):
    """How the specialist works one kind of gap."""

    model_config = ConfigDict(extra="forbid")

    kind: GapKind
    title: str = Field(description="What the procedure is for, in a few words.")
    steps: list[str] = Field(
        default_factory=list, description="Ordered steps, each naming the facts, actions or evidence it uses."
    )


class StepArg(BaseModel):
    """One argument of a playbook step, as text (numbers are converted when the step is built)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    value: str


class PlaybookStepDesign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(description="An action name from the catalogue.")
    target: Literal["gap", "dependency"] = Field(
        default="gap", description="gap: the gap's component; dependency: the one dependency_down names."
    )
    args: list[StepArg] = Field(default_factory=list)
    why: str = ""


class PlaybookDesign(BaseModel):
    """An offline remedy: when its condition holds, its steps are the plan (no LLM needed)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="lower-case words joined by '-'")
    hypothesis: str = Field(description="Root cause; {component}, {dependency}, {facts} are filled in.")
    facts_all: list[str] = Field(default_factory=list, description="Facts that must all be present.")
    facts_any: list[str] = Field(default_factory=list, description="At least one of these facts.")
    facts_none: list[str] = Field(default_factory=list, description="None of these facts.")
    text_any: list[str] = Field(
        default_factory=list, description="Regexes; one must match the gap text or evidence."
    )
    steps: list[PlaybookStepDesign] = Field(default_factory=list)


class HandoffDesign(BaseModel):
    """A hand-off partner: an existing persona, and when the gap passes between them."""

    model_config = ConfigDict(extra="forbid")

    persona: str
    when: str


class AgentDesign(BaseModel):
    """A new specialist as designed: the factory renders it into a persona file, then checks it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique id: lower-case words joined by '-', about the gap, not generic.")
    title: str
    role: str = Field(description="What it owns and what it does not, in two or three sentences.")
    goal: str = Field(description="The outcome it works for, in one sentence.")
    expertise: str = Field(description="What it knows, in the gap's own specific words (80+ characters).")
    tags: list[str] = Field(default_factory=list)
    kinds: list[GapKind] = Field(default_factory=list, description="Gap kinds it takes.")
    components: list[str] = Field(default_factory=list, description="Component globs it takes.")
    actions: list[str] = Field(default_factory=list, description="Catalogue actions it may use.")
    procedures: list[ProcedureDesign] = Field(default_factory=list, description="One per gap kind it takes.")
    playbooks: list[PlaybookDesign] = Field(default_factory=list)
    hands_to: list[HandoffDesign] = Field(default_factory=list)
    receives_from: list[HandoffDesign] = Field(default_factory=list)
    escalates_when: list[str] = Field(default_factory=list)
    judged_by: list[str] = Field(
        default_factory=list, description="The figures it is judged by, computed from recorded events."
    )


DesignSource = Literal["llm", "offline"]


def _persona_summary(registry: Registry) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "title": p.title,
            "role": p.role,
            "status": p.status,
            "kinds": [k.value for k in p.kinds],
            "actions": p.actions,
            "expertise": p.expertise,
        }
        for p in registry.all()
    ]


def allowed_actions(policy: Policy, component: str | None) -> list[dict[str, Any]]:
    """The catalogue entries policy lets run on `component` (observations always), for the prompt."""
    from agentheal.estate.actions import CATALOGUE

    return [
        {
            **spec.describe(),
            "needs_approval": spec.risk.rank > policy.max_auto_risk.rank,
            # What it changes and the facts that change answers: a design's actions must answer the gap.
            "effect": spec.effect,
            "answers": list(spec.answers),
        }
        for name, spec in CATALOGUE.items()
        if spec.read_only or policy_allows(policy, name, component)
    ]


def policy_allows(policy: Policy, action: str, component: str | None) -> bool:
    """Whether some policy rule allows `action` on `component` (None: on any component at all)."""
    from fnmatch import fnmatchcase

    return any(
        any(fnmatchcase(action, a) for a in rule.allow)
        and (component is None or any(fnmatchcase(component, c) for c in rule.components))
        for rule in policy.rules
    )


def design_with_llm(
    llm: LLM,
    gap: Gap,
    fact_lines: Sequence[str],
    registry: Registry,
    policy: Policy,
    candidates: Sequence[tuple[str, float]],
) -> AgentDesign:
    """Ask the LLM for a design (one retry on an invalid reply, inside `LLM.structured`).

    Args:
        llm: The LLM door.
        gap: The gap no persona fits.
        fact_lines: Its diagnosis facts as "name (component): detail" lines.
        registry: The existing personas (the design must not duplicate them).
        policy: What may run; only allowed actions are offered.
        candidates: The router's best (name, score) pairs for the gap.

    Raises:
        LLMError: The endpoint failed or the reply stayed invalid.
    """
    from agentheal.persona_model import FACTS
    from agentheal.prompts import render

    system = render(
        "factory_design_system.j2",
        actions=allowed_actions(policy, gap.component),
        personas=_persona_summary(registry),
        facts_vocabulary=sorted(FACTS),
        kinds=[k.value for k in GapKind if k is not GapKind.capability],
    )
    user = render("factory_design_user.j2", gap=gap, facts=list(fact_lines), candidates=list(candidates))
    return llm.structured("factory_design", system, user, AgentDesign)
