"""Render an agent design into a persona file: front matter by the persona model, body by a template.

Everything the design holds may be an LLM's words, so it is only ever data: each text is folded
to one line that cannot start a Markdown heading, list or fence; the body template (shipped in
`prompts/`, never written by a model) is rendered in Jinja2's sandbox; the front matter is
dumped by `yaml.safe_dump` from the validated `Persona`. Jinja2 syntax in a design therefore
ends up as plain text in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agentheal.factory.design import AgentDesign, PlaybookDesign
from agentheal.models import Gap

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

    from agentheal.persona_model import Persona

FACTORY_VERSION = "1"
TEMPLATE = "factory_persona.j2"
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
# What could open a Markdown block at the start of a line: a heading, a quote, a fence, a rule, a table.
_LEADING = re.compile(r"^(?:\s|#|>|\||`{3,}|~{3,}|-{3,}|={3,})+")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[A-Z`\"'(])")


@dataclass
class Rendered:
    """A rendered persona (None when the design does not make a valid one) and why not."""

    persona: Persona | None
    text: str | None
    reasons: list[str] = field(default_factory=list)


def inline(value: Any, limit: int = 600) -> str:
    """Text from a design as one inert line: whitespace folded, no leading Markdown markers, cut.

    A newline in the middle of a model's text could start a `## Escalation` heading of its own
    or close the front matter with `---`; folded onto one line it is just words.
    """
    text = _LEADING.sub("", " ".join(str(value).split()))
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def slug_name(name: str) -> str:
    """A design's name as a persona name: lower-case words joined by "-"."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")
    return slug if re.match(r"^[a-z]", slug) else f"agent-{slug}".strip("-")[:63]


def _scalar(value: str) -> Any:
    # Catalogue args are typed (keep: int, older_than_s: float); a design passes text.
    if re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d*", value.strip()):
        return float(value)
    return value


def _playbook_data(book: PlaybookDesign) -> dict[str, Any]:
    when: dict[str, Any] = {
        k: list(getattr(book, k))
        for k in ("facts_all", "facts_any", "facts_none", "text_any")
        if getattr(book, k)
    }
    return {
        "name": slug_name(book.name),
        "hypothesis": inline(book.hypothesis, 400),
        "when": when,
        "steps": [
            {
                "action": s.action,
                "target": s.target,
                "args": {a.name: _scalar(a.value) for a in s.args},
                "why": inline(s.why, 200),
            }
            for s in book.steps
        ],
    }


def _describe_when(data: dict[str, Any]) -> str:
    when = data["when"]
    parts = []
    if when.get("facts_all"):
        parts.append("facts " + " and ".join(f"`{f}`" for f in when["facts_all"]))
    if when.get("facts_any"):
        parts.append("one of " + ", ".join(f"`{f}`" for f in when["facts_any"]))
    if when.get("facts_none"):
        parts.append("none of " + ", ".join(f"`{f}`" for f in when["facts_none"]))
    if when.get("text_any"):
        parts.append("the gap text matching " + " or ".join(f"`{inline(t, 80)}`" for t in when["text_any"]))
    return "; ".join(parts) or "always"


@cache
def _sandbox() -> SandboxedEnvironment:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    from agentheal.config import package_data

    # Our own template, model words only as values: the sandbox still guards the values' methods.
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(package_data("prompts")),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_body(**ctx: Any) -> str:
    """The persona body from `prompts/factory_persona.j2`, in the sandbox, with exactly its keys."""
    from agentheal.prompts import REQUIRED_KEYS, PromptError

    required = REQUIRED_KEYS[TEMPLATE]
    if set(ctx) != required:
        raise PromptError(f"{TEMPLATE}: keys {sorted(set(ctx) ^ required)} do not match {sorted(required)}")
    return re.sub(r"\n{3,}", "\n\n", _sandbox().get_template(TEMPLATE).render(**ctx))


def render_persona(
    design: AgentDesign, gap: Gap, *, version: int, provenance: dict[str, Any], known: set[str]
) -> Rendered:
    """Turn a design into a persona and its file text; the reasons say what made it invalid.

    Args:
        design: The design (LLM or offline).
        gap: The gap it was made for (quoted in the body and the provenance).
        version: The persona version to write.
        provenance: Front-matter provenance: the gap, its fingerprint, the time, model, factory version.
        known: Names of the personas loaded now (hand-offs must name one).
    """
    from agentheal.estate.actions import CATALOGUE
    from agentheal.persona_model import describe_error
    from agentheal.personas import Persona, PersonaLoadError, parse_persona

    reasons = []
    handoffs = [h for h in dict.fromkeys(h.persona for h in design.hands_to)]
    for name in handoffs:
        if name not in known:
            reasons.append(f"hands_to: no persona named {name!r} is loaded")
    books = [_playbook_data(b) for b in design.playbooks]
    actions = list(dict.fromkeys(design.actions))
    expertise = inline(design.expertise, 2000)
    body = render_body(
        title=inline(design.title, 100),
        role=inline(design.role),
        goal=inline(design.goal, 300),
        gap_kind=gap.kind.value,
        gap_text=inline(gap.text, 300),
        component=gap.component,
        expertise=[s for s in _SENTENCE.split(expertise) if s],
        facts=sorted({f for b in books for k in ("facts_all", "facts_any") for f in b["when"].get(k, [])}),
        actions=[
            {"name": a, "risk": CATALOGUE[a].risk.value, "reversible": CATALOGUE[a].reversible}
            for a in actions
            if a in CATALOGUE
        ],
        procedures=[
            {"kind": p.kind.value, "title": inline(p.title, 120), "steps": [inline(s) for s in p.steps]}
            for p in design.procedures
        ],
        playbooks=[
            {
                "name": b["name"],
                "when": _describe_when(b),
                "steps": ", then ".join(f"`{s['action']}`" for s in b["steps"]) or "nothing",
                "hypothesis": b["hypothesis"],
            }
            for b in books
        ],
        receives_from=[
            {"persona": inline(h.persona, 63), "when": inline(h.when)} for h in design.receives_from
        ],
        hands_to=[{"persona": inline(h.persona, 63), "when": inline(h.when)} for h in design.hands_to],
        escalates_when=[inline(e) for e in design.escalates_when],
        judged_by=[inline(j) for j in design.judged_by],
    )
    data = {
        "name": slug_name(design.name),
        "title": inline(design.title, 100),
        "role": "specialist",
        "version": version,
        "origin": "generated",
        "status": "active",
        "kinds": list(dict.fromkeys(design.kinds)),
        "components": [c for c in ("".join(c.split())[:100] for c in design.components) if c] or ["*"],
        "tags": [slug_name(t) for t in design.tags if slug_name(t)][:16] or [slug_name(design.name)],
        "expertise": expertise,
        "actions": actions,
        "handoffs": [h for h in handoffs if h in known],
        "playbooks": books,
        "provenance": provenance,
        "body": body,
    }
    try:
        persona = Persona.model_validate(data)
    except ValidationError as exc:
        return Rendered(None, None, [*reasons, f"schema: {describe_error(exc)}"])
    text = persona.to_markdown()
    try:
        parse_persona(text, f"<generated>/{persona.name}.md")  # the file must load as it will be read
    except PersonaLoadError as exc:
        return Rendered(None, text, [*reasons, f"schema: {exc.message}"])
    return Rendered(persona, text, reasons)
