"""The words of an offline-derived persona: role, goal, expertise, procedures, hand-offs, escalation.

Each section says what the specialist does about the gap in the gap's terms, the facts it reads
and the actions it may run (`agentheal.factory.filler` refuses a section that does not), while
the expertise says what such a specialist knows (from the symptom table and the catalogue's
effects) instead of repeating the gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentheal.factory.design import HandoffDesign, PlaybookDesign, ProcedureDesign
from agentheal.factory.symptoms import Symptom
from agentheal.models import GapKind


def ticks(names: Sequence[str], joiner: str = ", ") -> str:
    return joiner.join(f"`{n}`" for n in names) or "none"


@dataclass(frozen=True)
class Words:
    """The phrases every sentence of the derived persona is built from."""

    terms: tuple[str, ...]
    phrase: str  # "nightly search-index compaction"
    terms_or: str  # "nightly, search-index or compaction"
    comp: str  # "`web`" or "the component behind nightly search-index compaction"
    on_comp: str  # " on `web`" or ""


def words_of(terms: Sequence[str], component: str | None, role: str | None = None) -> Words:
    """The phrases of a persona about these terms; named for its role ("TLS certificates") when it has one."""
    top = list(terms[:3]) or ["this gap"]
    terms_or = top[0] if len(top) == 1 else f"{', '.join(top[:-1])} or {top[-1]}"
    phrase = role or " ".join(top)
    comp = f"`{component}`" if component else f"the component behind {phrase}"
    return Words(tuple(terms), phrase, terms_or, comp, f" on `{component}`" if component else "")


def _kinds(kinds: Sequence[GapKind]) -> str:
    return " and ".join(k.value for k in kinds)


def _effects(actions: Sequence[str]) -> str:
    from agentheal.estate.actions import CATALOGUE

    said = [f"`{a}` changes {CATALOGUE[a].effect}" for a in actions if a in CATALOGUE]
    return "; ".join(said)


def _what_changes() -> str:
    """What the catalogue's actions change at all, each once ("process state, config content, …")."""
    from agentheal.estate.actions import CATALOGUE, REMEDIATIONS

    heads = dict.fromkeys(CATALOGUE[a].effect.split(":")[0] for a in REMEDIATIONS)
    return ", ".join(heads)


def remedy_texts(
    w: Words,
    kinds: Sequence[GapKind],
    symptoms: Sequence[Symptom],
    remedies: Sequence[str],
    facts_or: str,
    playbook: str,
) -> dict[str, Any]:
    """Role, goal, expertise, escalation and measures of a specialist whose playbooks treat the gap."""
    remedy = ticks(remedies)
    knows = [s.knows for s in symptoms if s.knows]
    return {
        "role": (
            f"Owns {_kinds(kinds)} gaps about {w.phrase}{w.on_comp}: {symptoms[0].cause.split(';')[0]}. "
            f"It acts only when the report names {w.terms_or} and the facts agree, and leaves {w.comp} "
            "to the built-in specialists for anything else."
        ),
        "goal": (
            f"{w.comp[0].upper()}{w.comp[1:]} answers its probes again after {w.phrase}, through {remedy}, "
            f"with a person told whenever {remedy} is not enough."
        ),
        "expertise": " ".join(
            [
                *knows,
                f"Its treatments answer the evidence: {_effects(remedies)}; each runs only while "
                f"{facts_or} shows on {w.comp}.",
                f"Made for {_kinds(kinds)} gaps{w.on_comp} that name {w.terms_or}; it reads "
                f"{facts_or} and the logs of {w.comp} before it acts.",
            ]
        ),
        "escalates_when": [
            f"{remedy} did not bring the probes of {w.comp} back: escalate with the {w.phrase} evidence "
            "from before and after.",
            f"The facts of {w.comp} show none of {facts_or} although the report names {w.terms_or}: "
            "escalate rather than act on the words alone.",
            f"The rate limit on {remedy} is reached for {w.comp}: {w.phrase} comes back faster than "
            f"{remedy} helps, so a person must remove its cause.",
            f"`crash_loop`, `config_changed` or `dependency_down` appears on {w.comp} during {w.phrase}: "
            f"hand over to its owner instead of running {remedy}.",
        ],
        "judged_by": [
            f"Success rate of its runs on {w.phrase} gaps{w.on_comp}: heals over finished runs, from the "
            "event store.",
            f"Median time to heal of those {w.phrase} runs, and how many of them were escalated.",
            f"Runs in which `{playbook}` needed a second plan or a person for {w.phrase}.",
        ],
    }


def _why_not(symptom: Symptom, w: Words) -> str:
    if not symptom.facts and symptom.label != "observe":
        return f"{symptom.cause[0].upper()}{symptom.cause[1:]} (it changes {_what_changes()})."
    if symptom.remedy:
        return (
            f"{ticks(symptom.remedy)} would answer {ticks(symptom.facts)}, but policy or the facts of "
            f"{w.comp} rule it out for {w.phrase}."
        )
    return f"No fact of the vocabulary names {w.phrase}, so no action of the catalogue is known to answer it."


def diagnosis_texts(
    w: Words, kinds: Sequence[GapKind], symptoms: Sequence[Symptom], tools: Sequence[str], observed: list[str]
) -> dict[str, Any]:
    """The texts of a diagnosis-only specialist: it reads, records and escalates; it never acts."""
    tools_said = ticks(tools)
    subject = next((s.cause.split(" is wrong")[0] for s in symptoms if not s.facts and s.knows), w.phrase)
    seen = ticks(observed) if observed else "the facts of the estate"
    kinds_said = _kinds(kinds)
    steps = [
        f"Read {w.comp} with {tools_said}: note {seen} and every line about {w.terms_or}.",
        f"Record what those readings say about {w.phrase}: since when, how often, and on which part "
        f"of {w.comp}.",
        f"Escalate with the readings and the reason no catalogue action answers {w.phrase}; run nothing.",
    ]
    titles = {
        GapKind.incident: f"{w.phrase} now{w.on_comp}",
        GapKind.recurring: f"{w.phrase} keeps coming back{w.on_comp}",
        GapKind.predicted: f"a trend says {w.phrase} is coming{w.on_comp}",
        GapKind.weakness: f"{w.comp} often suffers {w.phrase}",
    }
    return {
        "role": (
            f"Diagnoses {kinds_said} gaps{w.on_comp} where {subject} is at fault, named by {w.terms_or}. "
            f"It is diagnosis-only: it gathers the evidence with {tools_said} and escalates it to a "
            f"person, since no action of the catalogue answers {w.phrase}."
        ),
        "goal": (
            f"Every gap{w.on_comp} about {w.terms_or} reaches a person once, with the {tools_said} "
            f"readings of {w.comp} and why no catalogue action answers it."
        ),
        "expertise": " ".join(
            [
                *(s.knows for s in symptoms if s.knows),
                *dict.fromkeys(_why_not(s, w) for s in symptoms),
                f"Diagnosis only: for {kinds_said} gaps{w.on_comp} that name {w.terms_or}, it reads "
                f"{tools_said} and escalates with what they show.",
            ]
        ),
        "procedures": [
            ProcedureDesign(kind=k, title=titles.get(k, titles[GapKind.incident]), steps=steps) for k in kinds
        ],
        "escalates_when": [
            f"Always, once the readings of {w.comp} are gathered: no catalogue action answers "
            f"{w.phrase}, so a person acts on {w.terms_or}.",
            f"At once, with whatever {tools_said} returned, when {w.comp} cannot be observed.",
        ],
        "judged_by": [
            f"Share of its runs on gaps naming {w.terms_or}{w.on_comp} that escalate with evidence from "
            f"{tools_said}, from the event store.",
            f"Median time from a report that names {w.terms_or} to its escalation, from the event store.",
        ],
    }


def procedure(
    kind: GapKind, w: Words, playbook: PlaybookDesign, facts_or: str, remedies: Sequence[str]
) -> ProcedureDesign:
    steps_text = ", then ".join(f"`{s.action}`" for s in playbook.steps)
    remedy = ticks(remedies)
    book = f"`{playbook.name}`"
    steps = {
        GapKind.incident: (
            f"{w.phrase} now{w.on_comp}",
            [
                f"Observe {w.comp} with `probe`, `process_stats` and `tail_logs`: note {facts_or} and "
                f"the log lines about {w.terms_or}.",
                f"When the report names {w.terms_or} and the facts agree, apply {book}: {steps_text}.",
                f"The check is the probes of {w.comp} passing after {remedy}; record the {w.phrase} "
                "readings before and after.",
                f"When no fact confirms {w.phrase}, escalate with the observations instead of "
                f"running {remedy}.",
            ],
        ),
        GapKind.recurring: (
            f"{w.phrase} keeps coming back{w.on_comp}",
            [
                f"List the past runs whose gap names {w.terms_or}{w.on_comp}, with the plan and "
                "outcome of each.",
                f"If {book} healed each of them, heal as for an incident, then escalate with the interval "
                f"between {w.phrase} episodes so a person removes the cause.",
                f"If {book} failed before, do not repeat it: escalate with the {facts_or} readings of "
                f"each {w.phrase} episode.",
            ],
        ),
        GapKind.predicted: (
            f"a trend says {w.phrase} is coming{w.on_comp}",
            [
                f"Read the trend that predicts {w.phrase}{w.on_comp} and the time left before the breach.",
                f"Propose {book} ahead of the breach and escalate it for approval; never run {remedy} on "
                f"a healthy {w.comp} on a forecast alone.",
            ],
        ),
        GapKind.weakness: (
            f"{w.comp} often suffers {w.phrase}",
            [
                f"Count the {w.phrase} episodes of {w.comp} by fingerprint and the share {book} healed.",
                f"Escalate with that count and a proposal against the cause of {w.phrase}, not "
                f"another {remedy}.",
            ],
        ),
    }
    title, lines = steps.get(kind, steps[GapKind.incident])
    return ProcedureDesign(kind=kind, title=title, steps=lines)


_HANDOFF_WHEN = {
    "performance": "when {w.comp} is slow and the report does not name {w.terms_or}.",
    "availability": "when {w.comp} is down (`process_down`, `crash_loop`) with no {w.phrase} in the report.",
    "capacity": "when `disk_over_budget`, `logs_large` or `memory_high` explain {w.phrase} better.",
    "configuration": "when `config_changed` or `config_missing` shows on {w.comp} during {w.phrase}.",
    "dependencies": "when `dependency_down` names a component that {w.comp} needs for {w.phrase}.",
    "releases": "when a release of {w.comp} came just before {w.phrase}.",
    "triage-lead": "when the facts of {w.comp} contradict the {w.phrase} report.",
}
_RECEIVE_WHEN = (
    "{kinds} gaps{w.on_comp} whose text or evidence names {w.terms_or}, once the router scored no "
    "built-in persona above the match threshold for them."
)
_RECEIVE_OWNER = (
    "{kinds} gaps{w.on_comp} about {w.phrase} that its own playbooks do not cover, with the facts it "
    "gathered."
)


def handoffs(
    w: Words, kinds: Sequence[GapKind], symptoms: Sequence[Symptom], active: set[str]
) -> dict[str, list[HandoffDesign]]:
    """Who it hands gaps to (the owners of its symptoms, then the usual suspects) and who hands them in."""
    owners = list(dict.fromkeys([*(s.owner for s in symptoms), "dependencies", "configuration"]))
    receive = {symptoms[0].owner: _RECEIVE_OWNER, "triage-lead": _RECEIVE_WHEN}
    return {
        "hands_to": [
            HandoffDesign(persona=o, when=_HANDOFF_WHEN[o].format(w=w))
            for o in owners
            if o in active and o in _HANDOFF_WHEN
        ],
        "receives_from": [
            HandoffDesign(persona=o, when=when.format(w=w, kinds=_kinds(kinds)))
            for o, when in receive.items()
            if o in active
        ],
    }
