"""The offline design: a specialist derived from the gap itself when no LLM is configured.

The gap's symptoms (`agentheal.factory.symptoms`) come from its facts, when an estate reported
them, and from its words. A symptom's treatments stay only when the catalogue says their effect
answers the symptom's facts and policy allows them; with none left, the specialist is
**diagnosis-only**: it gathers the evidence with the read-only tools and escalates with it, and its
persona text says so. It is named by the role noun of what the gap is about (`tls-certificates`,
`search-index-latency`), and its expertise says what such a specialist knows, not the gap's words
again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agentheal.factory.derive_text import (
    Words,
    diagnosis_texts,
    handoffs,
    procedure,
    remedy_texts,
    ticks,
    words_of,
)
from agentheal.factory.design import (
    AgentDesign,
    PlaybookDesign,
    PlaybookStepDesign,
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


def _qualifier(terms: Sequence[str]) -> str:
    """The gap's word that names the thing best: a compound name ("search-index") before a plain word."""
    head = list(terms[:4])
    named = [t for t in head if re.search(r"[-._]", t)]
    return _slug(named[:1] or head[:1], 24) if head else ""


def role_name(symptoms: Sequence[Symptom], terms: Sequence[str], taken: set[str], builtin: set[str]) -> str:
    """A name that reads like a role: the role noun of what the gap is about, qualified when needed.

    A role a built-in specialist owns in general (latency, disk space) is qualified by the gap's own
    word ("search-index-latency"); a role new to the team stands alone ("tls-certificates") until
    another persona holds it. A gap that names no known subject is named by its own words.
    """
    first = symptoms[0] if symptoms else OBSERVE_ONLY
    qualifier = _qualifier(terms)
    if not first.role:
        base = _slug(terms[:2]) if terms else "gap-specialist"
        options = [base]
    elif first.owner in builtin or first.role in taken:
        options = [f"{qualifier}-{first.role}" if qualifier else first.role]
    else:
        options = [first.role, f"{qualifier}-{first.role}" if qualifier else first.role]
    for option in options:
        if option not in taken and option not in builtin:
            return option
    base, n = options[-1], 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


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

    names = fact_names(facts)
    # The component is already in `components`; as a term it would claim every gap of that component.
    component_words = content_terms(gap.component or "")
    terms = distinctive_terms(gap.text, known_vocabulary(registry, replace), component_words) or [
        t for t in content_terms(gap_text(gap)) if t not in component_words
    ]
    found = symptoms_of(gap, names)[:2]
    builtin = {p.name for p in registry.all() if p.origin == "builtin" and p.role == "specialist"}
    taken = {p.name for p in registry.all()} - {replace or ""}
    name = replace or role_name(found, terms, taken, builtin)
    w = words_of(terms, gap.component, _phrase(name) if found else None)
    # Whatever kind caused it, the same trouble arrives as an incident first and recurs later.
    first_kind = GapKind.incident if gap.kind is GapKind.capability else gap.kind
    kinds: list[GapKind] = list(dict.fromkeys([GapKind.incident, GapKind.recurring, first_kind]))
    # No playbook for a symptom no action answers, whose remedy policy forbids or whose fact is missing.
    kept = [(s, b) for s in found if (b := _playbook(s, gap, names, terms, w, policy)) is not None]
    active = {p.name for p in registry.all() if p.status == "active"}
    observed = [n for n in names if n not in HEALTHY_FACTS]
    if not kept:
        return _diagnosis_only(name, gap, kinds, found or [OBSERVE_ONLY], observed, w, active)
    symptoms = [s for s, _ in kept]
    books = [b for _, b in kept]
    actions = list(dict.fromkeys(step.action for p in books for step in p.steps))
    remedies = [a for a in actions if a not in _OBSERVATIONS]
    shown = list(dict.fromkeys([*observed, *(f for s in symptoms for f in s.facts)]))
    facts_or = " or ".join(f"`{f}`" for f in shown[:3])
    texts = remedy_texts(w, kinds, symptoms, remedies, facts_or, books[0].name)
    return AgentDesign(
        name=name,
        title=_title(name),
        tags=_tags(terms, symptoms, gap),
        kinds=kinds,
        components=[gap.component] if gap.component else ["*"],
        actions=actions,
        procedures=[procedure(k, w, books[0], facts_or, remedies) for k in kinds],
        playbooks=books,
        **handoffs(w, kinds, symptoms, active),
        **texts,
    )


_OBSERVATIONS = frozenset({"probe", "tail_logs", "process_stats", "read_config", "dependencies"})


_ACRONYMS = {"tls": "TLS", "dns": "DNS", "ssl": "SSL", "api": "API", "db": "DB"}


def _phrase(name: str) -> str:
    """A role name as words: "tls-certificates-2" is "TLS certificates"."""
    return " ".join(_ACRONYMS.get(w, w) for w in re.sub(r"-\d+$", "", name).split("-"))


def _title(name: str) -> str:
    text = _phrase(name)
    return f"{text[:1].upper()}{text[1:]} specialist"


def _tags(terms: Sequence[str], symptoms: Sequence[Symptom], gap: Gap) -> list[str]:
    tags = [*(_slug([t], 30) for t in terms[:5]), *(s.label for s in symptoms), *(s.role for s in symptoms)]
    return list(dict.fromkeys(t for t in tags if t)) + ([gap.component.lower()] if gap.component else [])


def _diagnosis_only(
    name: str,
    gap: Gap,
    kinds: list[GapKind],
    symptoms: Sequence[Symptom],
    observed: list[str],
    w: Words,
    active: set[str],
) -> AgentDesign:
    """No catalogue action answers this gap: a specialist that gathers the evidence and escalates it."""
    tools = list(dict.fromkeys(a for s in symptoms for a in s.observe))
    texts = diagnosis_texts(w, kinds, symptoms, tools, observed)
    return AgentDesign(
        name=name,
        title=_title(name),
        tags=[*_tags(w.terms, [s for s in symptoms if s.role], gap), "diagnosis-only"],
        kinds=kinds,
        components=[gap.component] if gap.component else ["*"],
        actions=tools,
        **handoffs(w, kinds, symptoms, active),
        **texts,
    )


def _answers(action: str, symptom: Symptom, chosen: Sequence[str]) -> bool:
    """Whether the action's effect answers one of the symptom's facts, or completes one that does."""
    from agentheal.estate.actions import CATALOGUE

    spec = CATALOGUE.get(action)
    if spec is None or spec.read_only:
        return False
    if set(spec.answers) & set(symptom.facts):
        return True
    # restore_config and rollback_release change what the process reads when it starts again.
    return action in ("restart", "start") and any(
        CATALOGUE[a].needs_restart for a in chosen if a in CATALOGUE
    )


def _playbook(
    symptom: Symptom, gap: Gap, names: list[str], terms: list[str], w: Words, policy: Policy
) -> PlaybookDesign | None:
    allowed = [a for a in symptom.remedy if policy_allows(policy, a, gap.component)]
    remedies = [a for a in allowed if _answers(a, symptom, allowed[: allowed.index(a)])]
    if not remedies:
        return None  # nothing answers it within policy: another symptom, or diagnosis only
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
    return PlaybookDesign(
        name=_slug([remedies[0].replace("_", "-"), *terms[:3]], 60),
        hypothesis=f"{{component}} shows {{facts}} while the report names {w.phrase}: {symptom.cause}.",
        facts_all=facts_all,
        facts_any=facts_any,
        facts_none=[f for f in facts_none if f not in facts_any and f not in facts_all],
        text_any=text_any,
        steps=steps,
    )


__all__ = ["derive_design", "known_vocabulary", "role_name", "ticks"]
