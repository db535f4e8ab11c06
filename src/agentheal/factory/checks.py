"""The checks a new persona passes before it is registered.

Design: its actions exist and policy allows them; its name is free. Text: no generic filler, and
no near-duplicate of a persona that exists (cosine of the expertise, the closest one named).
Behaviour: a dry run on the gap that caused it gives a plan the policy guard passes and the router
sends that gap to it; a replay of recorded runs it would now take does no worse than before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from agentheal.factory.design import AgentDesign, policy_allows
from agentheal.models import Gap, GapKind, Plan, RunStatus

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.estate.model import Estate
    from agentheal.events import EventStore
    from agentheal.persona_model import FactInput, Persona
    from agentheal.personas import Registry
    from agentheal.policy import Policy

# Distinct built-in personas sit at 0.28-0.63 cosine of each other (all-MiniLM-L6-v2); a
# paraphrase of one persona's expertise lands above 0.85.
DUPLICATE_COSINE = 0.85
REPLAY_RUNS = 200
STAND_IN = "gap-component"
_FINISHED = {
    RunStatus.healed.value,
    RunStatus.escalated.value,
    RunStatus.failed.value,
    RunStatus.rejected.value,
}


class ReplaySummary(BaseModel):
    """What the replay of recorded runs found: how many it would take, improve, keep, or do worse on."""

    model_config = ConfigDict(extra="forbid")

    replayed: int = Field(description="Finished runs of the persona's gap kinds that were routed again.")
    taken: int = Field(description="Of those, runs the new persona would now take.")
    kept: int = Field(description="Taken runs that healed before and get the same plan.")
    improved: int = Field(description="Taken runs that did not heal before and now get a plan.")
    regressions: list[str] = Field(default_factory=list)


def design_problems(design: AgentDesign, policy: Policy, component: str | None) -> list[str]:
    """Actions outside the catalogue or beyond policy, in the design and in its playbooks."""
    from agentheal.estate.actions import CATALOGUE

    problems = []
    used = list(dict.fromkeys([*design.actions, *(s.action for b in design.playbooks for s in b.steps)]))
    where = f"on {component}" if component else "on any component"
    for action in used:
        spec = CATALOGUE.get(action)
        if spec is None:
            problems.append(f"action {action!r} is not in the catalogue (known: {', '.join(CATALOGUE)})")
        elif not spec.read_only and not policy_allows(policy, action, component):
            problems.append(f"action {action!r} is beyond policy: no policy rule allows it {where}")
    remedies = [a for a in used if a in CATALOGUE and not CATALOGUE[a].read_only]
    # With no remediation it is diagnosis-only and needs no playbook; with one, a playbook must use it.
    if remedies and not design.playbooks:
        problems.append(
            f"no playbook: with no LLM it could plan nothing with {', '.join(remedies)}, and the dry run "
            "has no plan to check (a specialist that only diagnoses lists no remediation at all)"
        )
    return problems


def unsuitable_actions(design: AgentDesign, gap: Gap, facts: Sequence[FactInput]) -> list[str]:
    """Remediations whose effect answers none of the gap's evidence, each with what it would change.

    The evidence is the facts of the gap's symptoms (`symptoms_of`: observed facts and the facts its
    words imply, minus consequences a named subject explains) and any other abnormal fact observed.
    A playbook's own condition is no evidence: a design could key `restart` to `log_errors` on a gap
    about a certificate. A `restart` or `start` that completes an action read only at start
    (`restore_config`, `rollback_release`) answers what that action answers.
    """
    from agentheal.estate.actions import CATALOGUE
    from agentheal.factory.symptoms import HEALTHY_FACTS, SYMPTOMS, symptoms_of
    from agentheal.persona_model import fact_names

    names = fact_names(facts)
    found = symptoms_of(gap, names)
    covered = {f for s in SYMPTOMS for f in s.facts}
    evidence = {f for s in found for f in s.facts}
    evidence |= {n for n in names if n not in HEALTHY_FACTS and n not in covered}
    beyond = [s.cause.split(" is wrong")[0] for s in found if not s.facts]
    about = f"; it is about {' and '.join(beyond)}, which no action changes" if beyond else ""
    said = ", ".join(sorted(evidence)) or "none"
    problems: list[str] = []
    sequences = [(f"playbooks.{b.name}", [s.action for s in b.steps]) for b in design.playbooks]
    sequences.append(("actions", list(design.actions)))
    for where, actions in sequences:
        for i, action in enumerate(actions):
            spec = CATALOGUE.get(action)
            if spec is None or spec.read_only or set(spec.answers) & evidence:
                continue
            before = [CATALOGUE[a] for a in actions[:i] if a in CATALOGUE]
            if action in ("restart", "start") and any(
                b.needs_restart and set(b.answers) & evidence for b in before
            ):
                continue
            answers = ", ".join(spec.answers) or "no fact"
            problems.append(
                f"{where}: {action!r} does not answer this gap: it changes {spec.effect}, which answers "
                f"{answers}; the gap's evidence is {said}{about}"
            )
    return list(dict.fromkeys(problems))


def name_problems(name: str, registry: Registry, builtin: set[str], replace: str | None) -> list[str]:
    """A generated persona never takes a built-in's name, nor another's without `--replace`."""
    if name in builtin:
        return [f"name {name!r} is a built-in persona; a generated persona never replaces one"]
    taken = {p.name for p in registry.all()}
    if name in taken and name != replace:
        return [f"name {name!r} is taken; `agentheal agents create --replace {name}` makes a new version"]
    return []


def closest_persona(
    persona: Persona, registry: Registry, settings: Settings, skip: str | None
) -> tuple[str | None, float]:
    """The existing persona whose expertise is nearest in meaning, and the cosine."""
    from agentheal.embedding import get_embedder

    others = [p for p in registry.all() if p.name not in (persona.name, skip)]
    if not others:
        return None, 0.0
    texts = [f"{p.title}. {p.expertise}" for p in [persona, *others]]
    vectors = get_embedder(settings).embed(texts)
    cosines = vectors[1:] @ vectors[0]
    best = int(cosines.argmax())
    return others[best].name, round(float(cosines[best]), 4)


# Where the stand-in facts of a dry run without an estate say their trouble is; never touched.
_STAND_IN_PATHS = {
    "disk_over_budget": "data/stand-in",
    "logs_large": "logs/stand-in.log",
    "config_changed": "config/stand-in.conf",
    "config_missing": "config/stand-in.conf",
    "stale_lock": "run/stand-in.lock",
}


def stand_in_facts(names: Sequence[str], component: str) -> list[FactInput]:
    """Facts for a dry run without an estate: the names the gap's words imply, with stand-in paths."""
    from agentheal.estate.facts import Fact

    return [
        Fact(
            name=n, component=component, detail=f"{_STAND_IN_PATHS.get(n, component)} (implied by the words)"
        )
        for n in names
    ]


def stand_in_estate(component: str) -> Estate:
    """A one-component estate for a dry run with no estate: the plan is checked, never executed."""
    from agentheal.estate.model import Component, Estate

    files = _STAND_IN_PATHS
    comp = Component(
        command=["true"],
        data=[files["disk_over_budget"]],
        logs=[files["logs_large"]],
        configs=[files["config_changed"]],
        locks=[files["stale_lock"]],
    )
    return Estate(name="factory-dry-run", components={component: comp})


def dry_run(
    persona: Persona, gap: Gap, facts: Sequence[FactInput], policy: Policy, estate: Estate | None
) -> tuple[Plan | None, list[str], list[str]]:
    """The new persona's plan for the gap that caused it, checked by the policy guard.

    Rate limits count no past runs here: they hold the moment it runs, not what it is.

    Returns:
        (plan or None, reasons it fails, notes).
    """
    from agentheal.estate.actions import CATALOGUE
    from agentheal.persona_model import fact_names
    from agentheal.policy import evaluate

    component = gap.component or STAND_IN
    notes = []
    if estate is None or component not in estate.components:
        estate = stand_in_estate(component)
        notes.append(f"dry run without an estate: the plan was checked against policy for {component!r}")
    if persona.diagnosis_only:
        notes.append(
            f"{persona.name} is diagnosis-only: no action of the catalogue answers this gap, so it gathers "
            "the evidence with its read-only tools and escalates with it"
        )
        return None, [], notes
    plan = persona.plan_for(gap, facts, component)
    if plan is None:
        names = ", ".join(fact_names(facts)) or "none"
        return (
            None,
            [f"dry run: no playbook of {persona.name} fits the gap it was made for (facts: {names})"],
            notes,
        )
    decision = evaluate(policy, plan, estate, persona.actions, lambda *_: 0)
    reasons = [f"dry run: policy refuses {v}" for v in decision.violations]
    if all(CATALOGUE[s.action].read_only for s in plan.steps if s.action in CATALOGUE):
        # Its checks would pass on a component that was never broken: a "heal" that changed nothing.
        reasons.append(f"dry run: its plan only observes ({plan.signature()}); it would change nothing")
    if decision.needs_approval:
        notes.append("its plan needs a person's approval: " + "; ".join(decision.approvals))
    return plan, reasons, notes


def routing_problems(
    trial: Registry,
    persona: Persona,
    gap: Gap,
    facts: Sequence[FactInput],
    tags: Sequence[str],
    threshold: float,
) -> tuple[list[str], float]:
    """The router, with the new persona registered, must send the causing gap to it."""
    chosen, score, top = trial.route(gap, facts, tags, threshold)
    own = next((s for n, s in top if n == persona.name), 0.0)
    if chosen is not None and chosen.name == persona.name:
        return [], score
    if chosen is None:
        return [
            f"routing: it scores {own:.2f} on the gap it was made for, below the threshold {threshold:.2f}"
        ], own
    return [f"routing: the gap would still go to {chosen.name} ({score:.2f}), not to it ({own:.2f})"], own


def replay(
    trial: Registry,
    persona: Persona,
    events: EventStore,
    threshold: float,
    skip_run: str | None,
    plan_ok: Callable[[Plan], bool],
) -> ReplaySummary:
    """Route recorded runs again with the new persona registered; what it would take must not do worse.

    A run it would take that healed before must get the same plan from it; one that did not heal
    counts as improved when it now gets a plan the guard passes. Facts are the recorded names.
    """
    kinds = {GapKind.incident if k is GapKind.capability else k for k in persona.kinds}
    summary = ReplaySummary(replayed=0, taken=0, kept=0, improved=0)
    for row in events.runs(limit=REPLAY_RUNS):
        if row.status not in _FINISHED or row.run_id == skip_run:
            continue
        detail = events.run(row.run_id)
        if detail is None or detail.gap is None or detail.gap.kind not in kinds:
            continue
        result = detail.result or {}
        facts = list((result.get("diagnosis") or {}).get("facts") or [])
        summary.replayed += 1
        chosen, _, _ = trial.route(detail.gap, facts, (), threshold)
        if chosen is None or chosen.name != persona.name:
            continue
        summary.taken += 1
        plan = persona.plan_for(detail.gap, facts, detail.gap.component or STAND_IN)
        before = Plan.model_validate(result["plan"]) if result.get("plan") else None
        what = f"run {row.run_id[:12]} ({detail.gap.text[:60]!r})"
        if row.status == RunStatus.healed.value:
            if plan is not None and before is not None and plan.signature() == before.signature():
                summary.kept += 1
            else:
                now = plan.signature() if plan else "no plan"
                was = before.signature() if before else "its plan"
                summary.regressions.append(
                    f"{what} was healed by {row.persona} with {was}; it would try {now}"
                )
        elif plan is not None and plan_ok(plan):
            summary.improved += 1
    return summary
