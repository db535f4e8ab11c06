"""Personas: specialist agents defined as files; loading, the registry, and routing gaps to them.

A persona file is YAML front matter (between `---` lines) validated by `Persona` with
`extra="forbid"`, then a Markdown body with the sections Role, Expertise, Procedures (one
procedure per gap kind the persona takes), Coordination and Escalation. The front matter is
what the machine uses (kinds, actions, playbooks); the body is what an LLM reads, and what an
SRE reads when a run is escalated. The model itself lives in `agentheal.persona_model`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from agentheal.models import Gap
from agentheal.persona_model import (
    FACTS,
    SECTIONS,
    Condition,
    FactInput,
    FactLike,
    Persona,
    PersonaPlaybook,
    PlaybookCheck,
    PlaybookStep,
    describe_error,
    fact_names,
    known_actions,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from agentheal.config import Settings

__all__ = [
    "FACTS",
    "RETIREMENTS",
    "SECTIONS",
    "Condition",
    "FactInput",
    "FactLike",
    "LoadResult",
    "Persona",
    "PersonaLoadError",
    "PersonaPlaybook",
    "PlaybookCheck",
    "PlaybookStep",
    "Registry",
    "UnknownPersona",
    "export_schema",
    "fact_names",
    "known_actions",
    "load_persona",
    "load_personas",
    "load_retirements",
    "parse_persona",
    "persona_schema",
    "write_persona",
]

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*$\r?\n?(.*)\Z", re.S | re.M)


class PersonaLoadError(Exception):
    """A persona file that cannot be used, with its path and a message naming the field."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)
        self.message = message


class UnknownPersona(LookupError):
    """A persona name the registry does not hold."""


@dataclass
class LoadResult:
    personas: dict[str, Persona] = field(default_factory=dict)
    errors: list[PersonaLoadError] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)


def parse_persona(text: str, path: Path | str = "<persona>") -> Persona:
    """Validate a persona file's text.

    Args:
        text: YAML front matter between `---` lines, then the Markdown body.
        path: Where the text came from, for the error message.

    Raises:
        PersonaLoadError: The text is not a valid persona; the message names the field.
    """
    match = _FRONT_MATTER.match(text.lstrip("\ufeff"))
    if match is None:
        raise PersonaLoadError(
            path, "no YAML front matter: the file must start with '---', fields, then '---'"
        )
    front, body = match.groups()
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PersonaLoadError(path, f"front matter is not valid YAML: {problem}{where}") from exc
    if not isinstance(data, dict):
        raise PersonaLoadError(path, f"front matter must be a mapping of fields, not {type(data).__name__}")
    if "body" in data:
        raise PersonaLoadError(path, "body: not a front-matter field; the body is the Markdown after '---'")
    try:
        return Persona.model_validate({**data, "body": body})
    except ValidationError as exc:
        raise PersonaLoadError(path, describe_error(exc)) from exc


def load_persona(path: Path) -> Persona:
    """Read and validate one persona file (raises `PersonaLoadError`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PersonaLoadError(path, f"cannot read: {exc}") from exc
    return parse_persona(text, path)


def write_persona(persona: Persona, folder: Path) -> Path:
    """Write a persona to `<folder>/<name>.md` (validated again on the way) and return the path."""
    text = persona.to_markdown()
    path = folder / f"{persona.name}.md"
    parse_persona(text, path)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_personas(dirs: Sequence[Path]) -> LoadResult:
    """Load every `*.md` in the folders, in order; a broken file is reported and the rest still load.

    A name already loaded from an earlier file is an error of the later file. Handoffs to
    personas that did not load are reported as errors of the persona's file and dropped from it
    (dropping the whole persona would cascade through everyone who hands off to it).
    """
    result = LoadResult()
    for folder in dirs:
        if not folder.is_dir():
            result.errors.append(PersonaLoadError(folder, "persona folder does not exist"))
            continue
        for path in sorted(folder.glob("*.md")):
            try:
                persona = load_persona(path)
            except PersonaLoadError as exc:
                result.errors.append(exc)
                continue
            if persona.name in result.personas:
                first = result.paths[persona.name]
                result.errors.append(
                    PersonaLoadError(path, f"name: {persona.name!r} is already defined in {first}")
                )
                continue
            result.personas[persona.name] = persona
            result.paths[persona.name] = path
    for name, persona in list(result.personas.items()):
        missing = [h for h in persona.handoffs if h not in result.personas]
        if missing:
            index = persona.handoffs.index(missing[0])
            result.errors.append(
                PersonaLoadError(
                    result.paths[name], f"handoffs.{index}: no persona named {missing[0]!r} is loaded"
                )
            )
            kept = [h for h in persona.handoffs if h in result.personas]
            result.personas[name] = persona.model_copy(update={"handoffs": kept})
    return result


def persona_schema() -> dict[str, Any]:
    """The JSON Schema of a persona file's front matter."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **Persona.model_json_schema()}


def export_schema(path: Path | str) -> None:
    """Write the persona front-matter JSON Schema (personas/schema.json) to `path`."""
    Path(path).write_text(json.dumps(persona_schema(), indent=2) + "\n", encoding="utf-8")


# Retirements of any persona (a built-in's file is never edited): name -> {at, why, by, ...}.
RETIREMENTS = "retired.yaml"


def load_retirements(path: Path) -> dict[str, dict[str, Any]]:
    """The retirement register: persona name -> its record; empty when there is no file.

    Raises:
        PersonaLoadError: The file is not YAML, or not a mapping of names to mappings.
    """
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PersonaLoadError(path, f"cannot read the retirement register: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise PersonaLoadError(path, "the retirement register must map persona names to records")
    return {str(k): v for k, v in data.items()}


def _apply_retirements(result: LoadResult, path: Path) -> None:
    """Mark retired personas as such: they stay loaded (and listed) but are never routed to."""
    try:
        retired = load_retirements(path)
    except PersonaLoadError as exc:
        result.errors.append(exc)
        return
    for name in retired:
        if name in result.personas:
            result.personas[name] = result.personas[name].model_copy(update={"status": "retired"})


# --- registry and matching -------------------------------------------------------------------------

# Match score = weighted sum of four parts, each in [0, 1]; the weights sum to 1.
#   facts 0.40  a playbook's condition holds on the diagnosis facts (1.0), else half the share of
#               the nearest playbook's requirements that are met; the facts are the strongest evidence.
#   text  0.40  cosine of the gap text with the persona's title, expertise and tags,
#               rescaled from [_COS_FLOOR, _COS_CEIL] to [0, 1]: unrelated text in this embedding
#               sits near or below the floor, a paraphrase of the expertise near the ceiling.
#   kind  0.10  the gap kind is one the persona takes.
#   component 0.10  a tag shared with the component's tags or a specific component glob match (1.0);
#               the catch-all "*" (or no component on the gap) only gives 0.5, since it tells nothing.
# Kind and component are coarse, so alone they reach 0.15: a persona never passes the 0.30
# threshold without evidence from facts or text.
_W_FACTS, _W_TEXT, _W_KIND, _W_COMPONENT = 0.40, 0.40, 0.10, 0.10
_COS_FLOOR, _COS_CEIL = 0.25, 0.60
_TOP = 5
_SENTENCE = re.compile(r"(?<=[.;!?])\s+")


def _score_facts(persona: Persona, gap: Gap, names: set[str], has_plan: bool) -> float:
    if not names:
        return 0.0
    if has_plan:
        return 1.0
    return 0.5 * max((p.when.affinity(gap, names) for p in persona.playbooks), default=0.0)


def _score_component(persona: Persona, gap: Gap, component_tags: Sequence[str]) -> float:
    if {t.lower() for t in persona.tags} & {t.lower() for t in component_tags}:
        return 1.0
    if gap.component is None:
        return 0.5 if "*" in persona.components else 0.0
    from fnmatch import fnmatchcase

    if any(g != "*" and fnmatchcase(gap.component, g) for g in persona.components):
        return 1.0
    return 0.5 if "*" in persona.components else 0.0


def _persona_texts(persona: Persona) -> list[str]:
    """What a persona is matched on: the whole expertise, each of its sentences, and title with tags.

    A short gap text is close to one sentence of a long expertise text but far from the mean of
    all of them, so the best of these is what counts.
    """
    whole = f"{persona.title}. {persona.expertise}"
    sentences = [s for s in _SENTENCE.split(persona.expertise) if len(s.split()) >= 4]
    return [whole, *sentences, f"{persona.title}: {', '.join(persona.tags)}"]


class Registry:
    """The loaded personas, with matching and routing of gaps to them."""

    def __init__(
        self, personas: Iterable[Persona], settings: Settings, errors: Iterable[PersonaLoadError] = ()
    ) -> None:
        self._personas = {p.name: p for p in personas}
        self._settings = settings
        self.errors: list[PersonaLoadError] = list(errors)
        # Persona embeddings by name, with the texts they were made from (a replaced persona is re-embedded).
        # name → (what its texts were made from, the texts' vectors): remade when that changes
        self._vectors: dict[str, tuple[tuple[str, str, tuple[str, ...]], npt.NDArray[np.float32]]] = {}

    @classmethod
    def load(cls, settings: Settings) -> Registry:
        """Built-ins, then generated personas, then `settings.personas_dir`; errors kept in `.errors`."""
        from agentheal.config import package_data

        dirs = [package_data("personas")]
        if settings.generated_personas_dir.is_dir():
            dirs.append(settings.generated_personas_dir)
        if settings.personas_dir is not None:
            dirs.append(settings.personas_dir)
        result = load_personas(dirs)
        _apply_retirements(result, settings.generated_personas_dir / RETIREMENTS)
        return cls(result.personas.values(), settings, result.errors)

    def get(self, name: str) -> Persona:
        """The persona called `name` (raises `UnknownPersona`)."""
        try:
            return self._personas[name]
        except KeyError:
            raise UnknownPersona(
                f"no persona named {name!r}; known: {', '.join(sorted(self._personas))}"
            ) from None

    def all(self) -> list[Persona]:
        """Every loaded persona, by name."""
        return [self._personas[n] for n in sorted(self._personas)]

    def add(self, persona: Persona, *, replace: bool = False) -> None:
        """Register a persona at run time (the factory's new specialist).

        Raises:
            PersonaLoadError: The name is taken (and `replace` is false) or a handoff is unknown.
        """
        where = f"<registry>/{persona.name}"
        if persona.name in self._personas and not replace:
            raise PersonaLoadError(where, f"name: {persona.name!r} is already registered")
        for i, name in enumerate(persona.handoffs):
            if name not in self._personas:
                raise PersonaLoadError(where, f"handoffs.{i}: no persona named {name!r} is loaded")
        self._personas[persona.name] = persona

    def _similarities(self, personas: Sequence[Persona], gap_vector: npt.NDArray[np.float32]) -> list[float]:
        """Per persona, the best cosine of the gap vector with its match texts (embedded once, cached)."""
        import numpy as np

        from agentheal.embedding import get_embedder

        def source(p: Persona) -> tuple[str, str, tuple[str, ...]]:
            return (p.title, p.expertise, tuple(p.tags))

        stale = [p for p in personas if p.name not in self._vectors or self._vectors[p.name][0] != source(p)]
        if stale:
            texts = [_persona_texts(p) for p in stale]
            rows = get_embedder(self._settings).embed([t for group in texts for t in group])
            start = 0
            for persona, group in zip(stale, texts, strict=True):
                self._vectors[persona.name] = (source(persona), rows[start : start + len(group)])
                start += len(group)
        return [float(np.max(self._vectors[p.name][1] @ gap_vector)) for p in personas]

    def _scores(
        self, personas: Sequence[Persona], gap: Gap, facts: Sequence[FactInput], component_tags: Sequence[str]
    ) -> list[tuple[Persona, float]]:
        if not personas:
            return []
        from agentheal.embedding import get_embedder

        names = fact_names(facts)
        # The findings are scored on their own (fact affinity); the text is the gap's alone, the
        # same text memory embeds, so a heal computes one embedding for both.
        gap_vector = get_embedder(self._settings).embed([gap.text])[0]
        cosines = self._similarities(personas, gap_vector)
        scored = []
        for persona, cos in zip(personas, cosines, strict=True):
            text = min(1.0, max(0.0, (float(cos) - _COS_FLOOR) / (_COS_CEIL - _COS_FLOOR)))
            has_plan = persona.matching_playbook(gap, facts) is not None
            score = (
                _W_FACTS * _score_facts(persona, gap, set(names), has_plan)
                + _W_TEXT * text
                + _W_KIND * (gap.kind in persona.kinds)
                + _W_COMPONENT * _score_component(persona, gap, component_tags)
            )
            scored.append((persona, round(min(1.0, score), 4)))
        # Deterministic: best score first, then name.
        return sorted(scored, key=lambda ps: (-ps[1], ps[0].name))

    def _active(self, role: str) -> list[Persona]:
        return [p for p in self.all() if p.status == "active" and p.role == role]

    def match(
        self, gap: Gap, facts: Sequence[FactInput] = (), component_tags: Sequence[str] = ()
    ) -> list[tuple[Persona, float]]:
        """Active specialists scored for the gap, best first (score in [0, 1], ties by name)."""
        return self._scores(self._active("specialist"), gap, facts, component_tags)

    def route(
        self,
        gap: Gap,
        facts: Sequence[FactInput] = (),
        component_tags: Sequence[str] = (),
        threshold: float | None = None,
    ) -> tuple[Persona | None, float, list[tuple[str, float]]]:
        """The best specialist if its score reaches the threshold, else None (a capability gap).

        The lead is only considered when no specialist exists at all.

        Returns:
            (persona or None, its score, the top candidates as (name, score) for the story).
        """
        limit = self._settings.match_threshold if threshold is None else threshold
        scored = self.match(gap, facts, component_tags)
        if not scored:
            scored = self._scores(self._active("lead"), gap, facts, component_tags)
        top = [(p.name, s) for p, s in scored[:_TOP]]
        if not scored:
            return None, 0.0, top
        best, score = scored[0]
        return (best if score >= limit else None), score, top

    def handoff(
        self, persona: Persona, gap: Gap, facts: Sequence[FactInput] = (), component_tags: Sequence[str] = ()
    ) -> Persona | None:
        """A persona from `persona.handoffs` whose playbook fits when `persona`'s own do not.

        Among several that fit, the best match score wins, then the order of `handoffs`.
        """
        if persona.matching_playbook(gap, facts) is not None:
            return None
        candidates = [
            self._personas[n]
            for n in persona.handoffs
            if n in self._personas
            and self._personas[n].status == "active"
            and self._personas[n].matching_playbook(gap, facts) is not None
        ]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        order = {n: i for i, n in enumerate(persona.handoffs)}
        scores = {p.name: s for p, s in self._scores(candidates, gap, facts, component_tags)}
        return min(candidates, key=lambda p: (-scores[p.name], order[p.name]))
