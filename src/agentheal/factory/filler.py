"""Generic filler in a generated persona: sections that could sit in any persona fail validation.

Length proves nothing, so each section (and each procedure) is judged sentence by sentence: a
sentence is specific when it uses the gap's own terms, its component, its facts, the persona's
actions or its hand-off partners. A section with no specific sentence, with as many generic as
specific sentences, or with a known boilerplate phrase is reported by name. Only the designer's
words are judged (the LLM's, or the offline derivation's), not the template's fixed lines.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agentheal.factory.terms import Vocabulary, content_terms, stem

if TYPE_CHECKING:
    from agentheal.factory.design import AgentDesign
    from agentheal.models import Gap

# Phrases that mark operations prose written to fill space; none of them says what to do.
BOILERPLATE = (
    r"best practices?",
    r"as (?:needed|appropriate|required)",
    r"appropriate (?:action|measures|steps)",
    r"ensur\w* (?:the )?(?:overall )?(?:system )?(?:stability|reliability|health|uptime)",
    r"in a timely (?:manner|fashion)",
    r"(?:various|any|all) (?:issues|problems)",
    r"proactive(?:ly)? monitor",
    r"monitor(?:s|ing)? the (?:system|situation)",
    r"high availability and reliability",
    r"seamless",
    r"robust (?:solution|approach)",
    r"industry[- ]standard",
    r"leverag\w+",
    r"synerg\w+",
    r"holistic",
    r"optimal performance",
    r"world[- ]class",
    r"state[- ]of[- ]the[- ]art",
    r"cutting[- ]edge",
    r"continuous improvement",
    r"standard (?:operating )?procedures",
    r"relevant (?:teams?|stakeholders)",
    r"\betc\b",
    r"and so on",
    r"a (?:wide )?(?:range|variety) of",
    r"as an ai\b",
    r"i am (?:an? )?(?:ai|language model|assistant)",
)
_BOILERPLATE = re.compile(r"\b(?:" + "|".join(BOILERPLATE) + r")", re.I)
_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_SPLIT = re.compile(r"(?<=[.!?;])\s+(?=[A-Z`*\"'(])")
_MIN_WORDS = 4

Unit = tuple[str, list[str]]


def design_units(design: AgentDesign) -> list[Unit]:
    """What the designer wrote, section by section (each procedure on its own).

    The template's own lines around them are fixed text built from the gap and the catalogue,
    so only the designer's words are judged.
    """
    units: list[Unit] = [
        ("Role", [design.role, design.goal]),
        ("Expertise", [design.expertise]),
        *((f"Procedures > {p.kind.value}: {p.title}", list(p.steps)) for p in design.procedures),
        (
            "Coordination",
            [f"Receives from {h.persona} {h.when}" for h in design.receives_from]
            + [f"Hands to {h.persona} {h.when}" for h in design.hands_to],
        ),
        ("Escalation", list(design.escalates_when)),
        ("Judged by", list(design.judged_by)),
    ]
    return units


def sentences(lines: list[str]) -> list[str]:
    """Sentences of a unit's lines, list markers dropped."""
    found: list[str] = []
    for line in lines:
        text = _MARKER.sub("", " ".join(line.split())).replace("**", "").strip()
        found.extend(part.strip() for part in _SPLIT.split(text) if part.strip())
    return found


def filler_problems(units: list[Unit], vocabulary: Vocabulary) -> list[str]:
    """Why a design reads as generic filler, one line per failing section; empty when it does not.

    Args:
        units: (section title, its lines), e.g. from `design_units`.
        vocabulary: The terms a specific sentence uses (gap words, component, facts, actions, partners).
    """
    problems = []
    for title, lines in units:
        every = sentences(lines)
        for sentence in every:
            for hit in _BOILERPLATE.finditer(sentence):
                problems.append(f"{title}: boilerplate {hit.group(0)!r} in {_cut(sentence)}")
        # Fragments ("Goal:", "See above.") are too short to judge for specificity.
        said = [s for s in every if len(s.split()) >= _MIN_WORDS]
        if not said:
            if not title.startswith("Judged"):
                problems.append(f"{title}: empty; every section says how this specialist handles the gap")
            continue
        generic = [s for s in said if s not in vocabulary]
        if len(generic) == len(said):
            problems.append(
                f"{title}: generic filler, no sentence names the gap's terms, component, facts or "
                f"actions ({_cut(said[0])})"
            )
        elif 2 * len(generic) >= len(said):
            share = f"{len(generic)} of {len(said)}"
            problems.append(f"{title}: {share} sentences are generic filler, e.g. {_cut(generic[0])}")
    return problems


# Share of the expertise's own words that come from the gap, from which it only says the gap again.
ECHO_SHARE = 0.7
_ECHO_MIN_WORDS = 6


def echo_problems(design: AgentDesign, gap: Gap) -> list[str]:
    """An expertise that quotes the gap, or is mostly the gap's own words, says nothing it knows.

    Specific is not enough: the expertise is what the router matches future gaps on, so it must
    say what a specialist for such gaps knows (causes, where to look, what fixes it), not the
    report it was made for. Names in backticks (facts, actions) do not count either way.
    """
    expertise = " ".join(design.expertise.split()).lower()
    quoted = " ".join(gap.text.split()).lower().strip(" .")
    if len(quoted) >= 30 and quoted in expertise:
        return [f"Expertise: quotes the gap ({_cut(gap.text)}) instead of saying what the specialist knows"]
    own = content_terms(re.sub(r"`[^`]*`", " ", design.expertise))
    if len(own) < _ECHO_MIN_WORDS:
        return []
    gap_stems = {stem(t) for t in content_terms(" ".join([gap.text, *gap.evidence, gap.component or ""]))}
    echoed = [t for t in own if stem(t) in gap_stems]
    if len(echoed) >= ECHO_SHARE * len(own):
        return [
            f"Expertise: repeats the gap's words ({len(echoed)} of its {len(own)} words are the gap's own): "
            "it must say what the specialist knows about such gaps, not the report again"
        ]
    return []


def _cut(sentence: str, limit: int = 90) -> str:
    return '"' + (sentence if len(sentence) <= limit else sentence[: limit - 1] + "…") + '"'
