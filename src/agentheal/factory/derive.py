"""The offline design: a specialist derived from the gap itself when no LLM is configured.

The gap's symptoms (`agentheal.factory.symptoms`) come from its facts, when an estate reported
them, and from its words; they choose the facts, actions and hand-off partners. The new
specialist is named and written in the gap's distinctive words, so it claims gaps like this one
and no others.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentheal.factory.design import (
    AgentDesign,
    HandoffDesign,
    PlaybookDesign,
    PlaybookStepDesign,
    ProcedureDesign,
    StepArg,
    policy_allows,
)
from agentheal.factory.symptoms import HEALTHY_FACTS, OBSERVE_ONLY, Symptom, gap_text, symptoms_of
from agentheal.factory.terms import content_terms, distinctive_terms
from agentheal.models import Gap, GapKind

if TYPE_CHECKING:
    from agentheal.persona_model import FactInput
    from agentheal.personas import Registry
    from agentheal.policy import Policy


def known_vocabulary(registry: Registry, skip: str | None = None) -> list[str]:
    """Every word the existing personas use (but `skip`): a gap word none of them uses is distinctive."""
    return [
        w
        for p in registry.all()
        if p.name != skip
        for w in content_terms(f"{p.title} {p.expertise} {p.body} {p.tags}")
    ]


def _slug(words: Sequence[str], limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(words).lower()).strip("-")[:limit].strip("-")
    return slug if re.match(r"^[a-z]", slug or "") else f"gap-{slug}".strip("-")


def _free_name(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def _ticks(names: Sequence[str], joiner: str = ", ") -> str:
    return joiner.join(f"`{n}`" for n in names) or "none"


@dataclass(frozen=True)
class _Words:
    """The phrases every sentence of the derived persona is built from."""

    phrase: str  # "nightly search-index compaction"
    terms_or: str  # "nightly, search-index or compaction"
    comp: str  # "`web`" or "the component behind nightly search-index compaction"
    on_comp: str  # " on `web`" or ""


def _words(terms: Sequence[str], component: str | None) -> _Words:
    top = list(terms[:3]) or ["this gap"]
    terms_or = top[0] if len(top) == 1 else f"{', '.join(top[:-1])} or {top[-1]}"
    phrase = " ".join(top)
    comp = f"`{component}`" if component else f"the component behind {phrase}"
    return _Words(phrase, terms_or, comp, f" on `{component}`" if component else "")


def derive_design(
    gap: Gap, facts: Sequence[FactInput], registry: Registry, policy: Policy, replace: str | None = None
) -> AgentDesign:
    """A design for a specialist that handles this gap, from the gap alone (no LLM).

    Args:
        gap: The gap no persona fits.
        facts: Its diagnosis facts (names or `Fact` objects); empty when no estate reported any.
        registry: Existing personas: their words make the gap's other words distinctive, and
            they are the hand-off partners.
        policy: Only remedies some policy rule allows on the gap's component are used.
        replace: The persona this design is a new version of: its words do not count as known.
    """
    from agentheal.persona_model import fact_names
    from agentheal.redaction import redact

    names = fact_names(facts)
    # The component is already in `components`; as a term it would claim every gap of that component.
    component_words = content_terms(gap.component or "")
    terms = distinctive_terms(gap.text, known_vocabulary(registry, replace), component_words) or [
        t for t in content_terms(gap_text(gap)) if t not in component_words
    ]
    w = _words(terms, gap.component)
    symptoms = symptoms_of(gap, names)[:2] or [OBSERVE_ONLY]
    base_name = _slug(terms[:3]) if terms else "gap-specialist"
    name = replace or _free_name(base_name, {p.name for p in registry.all()})
    # Whatever kind caused it, the same trouble arrives as an incident first and recurs later.
    first_kind = GapKind.incident if gap.kind is GapKind.capability else gap.kind
    kinds = list(dict.fromkeys([GapKind.incident, GapKind.recurring, first_kind]))
    # A symptom whose remedy policy forbids, or whose fact is missing, is left out altogether.
    kept = [(s, b) for s in symptoms if (b := _playbook(s, gap, names, terms, w, policy)) is not None]
    if not kept:
        fallback = _playbook(OBSERVE_ONLY, gap, names, terms, w, policy)
        kept = [(OBSERVE_ONLY, fallback)] if fallback is not None else []
    symptoms = [s for s, _ in kept] or [OBSERVE_ONLY]
    books = [b for _, b in kept]
    actions = list(dict.fromkeys(step.action for p in books for step in p.steps))
    remedies = [a for a in actions if a not in _OBSERVATIONS] or ["escalation"]
    observed = [n for n in names if n not in HEALTHY_FACTS]
    shown = list(dict.fromkeys([*observed, *(f for s in symptoms for f in s.facts)])) or ["no fact yet"]
    first = books[0] if books else PlaybookDesign(name="none", hypothesis="")
    facts_or = " or ".join(f"`{f}`" for f in shown[:3])
    quoted = redact(gap.text)[:240]
    expertise = " ".join(
        [
            f'Specialist for {w.phrase} gaps{w.on_comp}, first reported as: "{quoted}".',
            *(_SYMPTOM_SENTENCE.get(s.label, _SYMPTOM_SENTENCE["observe"]).format(w=w) for s in symptoms),
            f"Reads {facts_or} and the logs of {w.comp} for {w.terms_or};",
            f"treats {w.phrase} with {_ticks(remedies)} and proves it with the probes of {w.comp}.",
            *(f"Evidence with the first report: {redact(e)[:160]}." for e in gap.evidence[:2]),
        ]
    )
    owners = list(dict.fromkeys([s.owner for s in symptoms] + ["dependencies", "configuration"]))
    active = {p.name for p in registry.all() if p.status == "active"}
    return AgentDesign(
        name=name,
        title=f"{w.phrase[:1].upper()}{w.phrase[1:]} specialist",
        role=(
            f"Owns {' and '.join(k.value for k in kinds)} gaps about {w.phrase}{w.on_comp}: "
            f"{symptoms[0].cause.split(';')[0]}. It acts only when the report names {w.terms_or} and "
            f"the facts agree, and leaves {w.comp} to the built-in specialists for anything else."
        ),
        goal=(
            f"{w.comp[0].upper()}{w.comp[1:]} answers its probes again after {w.phrase}, through "
            f"{_ticks(remedies)}, with a person told whenever {_ticks(remedies)} is not enough."
        ),
        expertise=expertise,
        tags=list(dict.fromkeys([*(_slug([t], 30) for t in terms[:5]), *(s.label for s in symptoms)]))
        + ([gap.component.lower()] if gap.component else []),
        kinds=kinds,
        components=[gap.component] if gap.component else ["*"],
        actions=actions,
        procedures=[_procedure(k, w, first, facts_or, remedies) for k in kinds],
        playbooks=books,
        hands_to=[HandoffDesign(persona=o, when=_HANDOFF_WHEN[o].format(w=w)) for o in owners if o in active],
        receives_from=[
            HandoffDesign(persona=o, when=when.format(w=w, kinds=" and ".join(k.value for k in kinds)))
            for o, when in {symptoms[0].owner: _RECEIVE_OWNER, "triage-lead": _RECEIVE_WHEN}.items()
            if o in active
        ],
        escalates_when=[e.format(w=w, remedy=_ticks(remedies), facts=facts_or) for e in _ESCALATIONS],
        judged_by=[j.format(w=w, playbook=first.name) for j in _JUDGED_BY],
    )


_OBSERVATIONS = frozenset({"probe", "tail_logs", "process_stats", "read_config", "dependencies"})

_SYMPTOM_SENTENCE = {
    "latency": "Requests to {w.comp} that time out or answer late around {w.phrase} show as "
    "`slow_response` or `probe_failed`.",
    "outage": "{w.comp} stops answering around {w.phrase}: `process_down` or `probe_failed`, with the "
    "cause in its last log lines.",
    "disk": "{w.phrase} fills a data folder of {w.comp} past its budget (`disk_over_budget`); "
    "`clean_dir` frees only declared folders.",
    "logs": "{w.phrase} grows the logs of {w.comp} past their budget (`logs_large`); `rotate_logs` "
    "frees them without a restart.",
    "memory": "{w.phrase} grows the memory of {w.comp} past its budget (`memory_high`); a restart "
    "returns it.",
    "config": "A config file of {w.comp} changed around {w.phrase} (`config_changed`, "
    "`config_missing`); `restore_config` puts back the last known good copy.",
    "dependency": "{w.phrase} on {w.comp} follows a dependency that is down (`dependency_down`); "
    "the dependency is restarted first.",
    "errors": "{w.comp} logs errors about {w.phrase} (`log_errors`) and fails its probes.",
    "observe": "No fact of the vocabulary names {w.phrase} yet, so it observes {w.comp} and "
    "escalates with what it finds.",
}
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
_ESCALATIONS = (
    "{remedy} did not bring the probes of {w.comp} back: escalate with the {w.phrase} evidence "
    "from before and after.",
    "The facts of {w.comp} show none of {facts} although the report names {w.terms_or}: escalate "
    "rather than act on the words alone.",
    "The rate limit on {remedy} is reached for {w.comp}: {w.phrase} comes back faster than {remedy} "
    "helps, so a person must remove its cause.",
    "`crash_loop`, `config_changed` or `dependency_down` appears on {w.comp} during {w.phrase}: hand "
    "over to its owner instead of running {remedy}.",
)
_JUDGED_BY = (
    "Success rate of its runs on {w.phrase} gaps{w.on_comp}: heals over finished runs, from the event store.",
    "Median time to heal of those {w.phrase} runs, and how many of them were escalated.",
    "Runs in which `{playbook}` needed a second plan or a person for {w.phrase}.",
)


def _procedure(
    kind: GapKind, w: _Words, playbook: PlaybookDesign, facts_or: str, remedies: list[str]
) -> ProcedureDesign:
    steps_text = ", then ".join(f"`{s.action}`" for s in playbook.steps)
    remedy = _ticks(remedies)
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


def _playbook(
    symptom: Symptom, gap: Gap, names: list[str], terms: list[str], w: _Words, policy: Policy
) -> PlaybookDesign | None:
    remedies = [a for a in symptom.remedy if policy_allows(policy, a, gap.component)]
    if symptom.remedy and not remedies:
        return None  # policy allows none of its remedies: another symptom, or observe only
    observed = [n for n in names if n not in HEALTHY_FACTS]
    # With facts from an estate, the condition uses those that hold; with none, those the words imply.
    shown = [f for f in symptom.facts if f in observed] if names else list(symptom.facts)
    facts_all = [symptom.needs] if symptom.needs else []
    facts_any = [f for f in shown if f not in facts_all]
    facts_none = [f for f in ("crash_loop", "config_changed", "dependency_down") if f not in symptom.facts]
    if symptom.label in ("config", "dependency"):
        facts_none = ["crash_loop"]
    if symptom.needs and names and symptom.needs not in names:
        return None  # its target or path comes from a fact this gap does not have
    text_any = [rf"\b{re.escape(t)}" for t in terms[:4]]
    target = "dependency" if symptom.label == "dependency" else "gap"
    args = [StepArg(name="path", value=f"{{{symptom.needs}.path}}")] if symptom.label == "disk" else []
    steps = [
        PlaybookStepDesign(action=a, why=f"record {w.phrase} evidence first") for a in symptom.observe[:2]
    ]
    steps += [
        PlaybookStepDesign(
            action=a,
            target=target,
            args=args if a == "clean_dir" else [],
            why=f"{symptom.cause} ({w.phrase})",
        )
        for a in remedies
    ]
    verb = remedies[0].replace("_", "-") if remedies else "observe"
    return PlaybookDesign(
        name=_slug([verb, *terms[:3]], 60),
        hypothesis=f"{{component}} shows {{facts}} while the report names {w.phrase}: {symptom.cause}.",
        facts_all=facts_all,
        facts_any=facts_any,
        facts_none=[f for f in facts_none if f not in facts_any and f not in facts_all],
        text_any=text_any,
        steps=steps,
    )
