"""The persona model: what a persona file's front matter and body must hold, and its offline plans.

`agentheal.personas` loads files into these models and routes gaps to them; this module is the
schema (published as personas/schema.json) and the playbook logic that needs no LLM.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from agentheal.models import Check, Gap, GapKind, Plan, Step

SECTIONS = ("Role", "Expertise", "Procedures", "Coordination", "Escalation")

# The diagnosis facts vocabulary of the spine (produced by the estate backend's `facts()`).
FACTS = frozenset(
    {"process_down", "process_running", "probe_failed", "probes_ok", "slow_response", "config_changed"}
    | {"config_missing", "log_errors", "logs_large", "disk_over_budget", "memory_high", "dependency_down"}
    | {"crash_loop", "bad_release", "flag_changed", "stale_lock", "queue_stalled"}
)

# Used only while `agentheal.estate.actions` does not exist: the spine's catalogue, name -> read-only.
_SPEC_ACTIONS = {
    **dict.fromkeys(["restart", "start", "stop", "restore_config", "rotate_logs", "clean_dir"], False),
    **dict.fromkeys(["probe", "tail_logs", "process_stats", "read_config", "dependencies"], True),
}

_NAME = r"^[a-z][a-z0-9-]{1,62}$"
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_PLACEHOLDER = re.compile(r"\{(component|dependency|facts)\}")
# In step args, "{disk_over_budget.path}" is the path a fact of that name is about: file and folder
# facts (config_changed, config_missing, logs_large, disk_over_budget, stale_lock, queue_stalled)
# start their detail with it; flag_changed starts with the flag's name, so "{flag_changed.path}"
# is the flag.
_PATH_ARG = re.compile(r"\{([a-z_]+)\.path\}")


class FactLike(Protocol):
    """What the estate backend's `Fact` offers: a vocabulary name, its component and a detail."""

    @property
    def name(self) -> str: ...

    @property
    def component(self) -> str: ...

    @property
    def detail(self) -> str: ...


FactInput = FactLike | str


@lru_cache(maxsize=1)
def _catalogue() -> dict[str, tuple[bool, Any]]:
    """Action name -> (read_only, args model or None), from the estate catalogue when it exists."""
    try:
        module = importlib.import_module("agentheal.estate.actions")
    except ModuleNotFoundError as exc:
        if exc.name != "agentheal.estate.actions":
            raise
        return {name: (read_only, None) for name, read_only in _SPEC_ACTIONS.items()}
    specs: dict[str, Any] = module.CATALOGUE
    return {name: (bool(spec.read_only), getattr(spec, "args_model", None)) for name, spec in specs.items()}


def known_actions() -> dict[str, bool]:
    """Every action name a persona may declare, mapped to whether it is a read-only observation."""
    return {name: read_only for name, (read_only, _) in _catalogue().items()}


def _unknown_action(name: str) -> str | None:
    known = known_actions()
    if name in known:
        return None
    return f"unknown action {name!r}; the catalogue has {', '.join(sorted(known))}"


def fact_names(facts: Iterable[FactInput]) -> list[str]:
    """Fact names from `Fact` objects or plain strings, in order."""
    return [f if isinstance(f, str) else f.name for f in facts]


def _failed_dependency(facts: Iterable[FactInput]) -> str | None:
    # A plain string carries no component, so only fact objects can name the dependency.
    for f in facts:
        if not isinstance(f, str) and f.name == "dependency_down" and f.component:
            return f.component
    return None


def _fact_paths(facts: Iterable[FactInput]) -> dict[str, str]:
    """Fact name -> the path its first fact object is about (the first word of its detail)."""
    paths: dict[str, str] = {}
    for f in facts:
        if isinstance(f, str):
            continue
        words = (getattr(f, "detail", "") or "").split(maxsplit=1)
        if words and f.name not in paths:
            paths[f.name] = words[0]
    return paths


_FACT_ITEMS: dict[str, Any] = {"items": {"type": "string", "enum": sorted(FACTS)}}


class Condition(BaseModel):
    """When a playbook applies: all of `facts_all`, one of `facts_any`, none of `facts_none`."""

    model_config = ConfigDict(extra="forbid")

    facts_all: list[str] = Field(
        default_factory=list, description="Facts that must all be present.", json_schema_extra=_FACT_ITEMS
    )
    facts_any: list[str] = Field(
        default_factory=list,
        description="At least one of these facts is present.",
        json_schema_extra=_FACT_ITEMS,
    )
    facts_none: list[str] = Field(
        default_factory=list, description="None of these facts may be present.", json_schema_extra=_FACT_ITEMS
    )
    kinds: list[GapKind] = Field(default_factory=list, description="Gap kinds it applies to; empty: any.")
    text_any: list[str] = Field(
        default_factory=list, description="Case-insensitive regexes; one must match the gap text or evidence."
    )

    @field_validator("facts_all", "facts_any", "facts_none")
    @classmethod
    def _known_facts(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in FACTS]
        if unknown:
            raise ValueError(f"unknown fact {unknown[0]!r}; known facts: {', '.join(sorted(FACTS))}")
        return v

    @field_validator("text_any")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Condition:
        if not (self.facts_all or self.facts_any or self.text_any):
            raise ValueError(
                "needs at least one of facts_all, facts_any, text_any; it would fire on every gap"
            )
        clash = sorted(set(self.facts_none) & (set(self.facts_all) | set(self.facts_any)))
        if clash:
            raise ValueError(f"fact {clash[0]!r} is both required and excluded")
        return self

    def _text_hit(self, gap: Gap) -> bool:
        text = "\n".join([gap.text, *gap.evidence])
        return any(re.search(p, text, re.I) for p in self.text_any)

    def matches(self, gap: Gap, names: set[str]) -> bool:
        """Whether the condition holds for this gap and these fact names."""
        return self.affinity(gap, names) == 1.0

    def affinity(self, gap: Gap, names: set[str]) -> float:
        """Share of the condition's requirements met, in [0, 1]; 0 when a fact or kind excludes it."""
        if names & set(self.facts_none) or (self.kinds and gap.kind not in self.kinds):
            return 0.0
        met = sum(1 for f in self.facts_all if f in names)
        need = len(self.facts_all)
        if self.facts_any:
            need += 1
            met += bool(names & set(self.facts_any))
        if self.text_any:
            need += 1
            met += self._text_hit(gap)
        return met / need


class PlaybookStep(BaseModel):
    """One step of a persona playbook; `target` says which component it acts on."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(description="An action name from the estate catalogue.")
    target: Literal["gap", "dependency"] = Field(
        default="gap",
        description="gap: the gap's component; dependency: the one a dependency_down fact names.",
    )
    args: dict[str, Any] = Field(default_factory=dict)
    why: str = ""

    @field_validator("action")
    @classmethod
    def _known_action(cls, v: str) -> str:
        problem = _unknown_action(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _valid_args(self) -> PlaybookStep:
        args_model = _catalogue().get(self.action, (False, None))[1]
        if args_model is not None:
            try:
                args_model.model_validate(self.args)
            except ValidationError as exc:
                raise ValueError(f"args: {describe_error(exc)}") from exc
        return self


class PlaybookCheck(BaseModel):
    """A check that proves the playbook worked, on the gap's component or the failed dependency."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["gap", "dependency"] = "gap"
    kind: Literal["probes", "running"] = "probes"
    settle_s: float = Field(default=0.1, ge=0, le=600)
    deadline_s: float = Field(default=20.0, gt=0, le=3600)


class PersonaPlaybook(BaseModel):
    """A remedy a persona applies without an LLM when its condition holds."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    hypothesis: str = Field(
        default="", description="Root cause; {component}, {dependency}, {facts} are filled in."
    )
    when: Condition
    steps: list[PlaybookStep] = Field(min_length=1)
    checks: list[PlaybookCheck] = Field(
        default_factory=list,
        description="Default: probes of the dependency acted on, then of the gap's component.",
    )

    @property
    def needs_dependency(self) -> bool:
        return any(s.target == "dependency" for s in self.steps) or any(
            c.target == "dependency" for c in self.checks
        )

    @property
    def path_facts(self) -> set[str]:
        """Facts whose path the step args use ("{disk_over_budget.path}")."""
        return {
            m for s in self.steps for v in s.args.values() if isinstance(v, str) for m in _PATH_ARG.findall(v)
        }

    def resolvable(self, dependency: str | None, paths: dict[str, str]) -> bool:
        """Whether the facts name every component and path this playbook's steps need."""
        return (dependency is not None or not self.needs_dependency) and self.path_facts <= set(paths)

    @model_validator(mode="after")
    def _targets_known(self) -> PersonaPlaybook:
        if self.needs_dependency and "dependency_down" not in self.when.facts_all:
            raise ValueError(
                "a 'dependency' target needs dependency_down in when.facts_all, or nothing names it"
            )
        for name in sorted(self.path_facts - set(self.when.facts_all)):
            raise ValueError(f"args use {{{name}.path}}, so {name!r} must be in when.facts_all")
        return self


class RemoteAgent(BaseModel):
    """Another agent that plans for this persona over A2A (`agentheal agents add-remote URL`)."""

    model_config = ConfigDict(extra="forbid")

    a2a: str = Field(pattern=r"^https?://\S+$", description="The agent's A2A (JSON-RPC) endpoint URL.")
    timeout_s: float = Field(default=120.0, gt=0, le=86400, description="How long a run waits for its plan.")
    token_env: str | None = Field(
        default=None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="An environment variable holding a bearer token for the agent (never the token).",
    )


class Persona(BaseModel):
    """A persona: YAML front matter of personas/<name>.md; the Markdown after it is `body`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="Unique id, lower-case words joined by '-'.")
    title: str = Field(min_length=1)
    role: Literal["lead", "specialist"]
    version: int = Field(default=1, ge=1)
    origin: Literal["builtin", "generated"] = "builtin"
    status: Literal["active", "retired"] = "active"
    kinds: list[GapKind] = Field(min_length=1, description="Gap kinds this persona takes.")
    components: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="Component globs.")
    tags: list[str]
    expertise: str = Field(
        min_length=80, description="What it knows, in specific words; embedded for matching."
    )
    actions: list[str] = Field(description="Catalogue actions it may use; plans are held to these.")
    handoffs: list[str] = Field(default_factory=list, description="Personas it passes gaps to.")
    playbooks: list[PersonaPlaybook] = Field(default_factory=list)
    provenance: dict[str, Any] | None = None
    remote: RemoteAgent | None = Field(
        default=None, description="Plans come from another agent over A2A instead of playbooks or the LLM."
    )
    body: SkipJsonSchema[str] = Field(exclude=True)

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, v: list[str]) -> list[str]:
        for name in v:
            problem = _unknown_action(name)
            if problem:
                raise ValueError(problem)
        if len(set(v)) != len(v):
            raise ValueError("an action is listed twice")
        return v

    @field_validator("body")
    @classmethod
    def _sections(cls, v: str) -> str:
        if not v.strip():
            raise ValueError(f"the Markdown body is empty; it needs the sections {', '.join(SECTIONS)}")
        titles = [text for _, text in _headings(v)]
        for section in SECTIONS:
            if not any(re.match(rf"{section}\b", t, re.I) for t in titles):
                raise ValueError(f"missing section {section!r} (a heading such as '## {section}')")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Persona:
        catalogue = known_actions()
        if self.role == "lead":
            remedies = [a for a in self.actions if not catalogue.get(a, True)]
            if remedies:
                raise ValueError(f"actions: a lead only observes; {remedies[0]!r} is a remediation")
        seen: set[str] = set()
        for i, playbook in enumerate(self.playbooks):
            if playbook.name in seen:
                raise ValueError(f"playbooks.{i}.name: {playbook.name!r} is used twice")
            seen.add(playbook.name)
            for j, step in enumerate(playbook.steps):
                if step.action not in self.actions:
                    raise ValueError(
                        f"playbooks.{i}.steps.{j}.action: {step.action!r} is not in this persona's actions"
                    )
        if self.name in self.handoffs:
            raise ValueError("handoffs: a persona cannot hand off to itself")
        if self.remote is not None and self.playbooks:
            raise ValueError("playbooks: a remote persona's plans come from its agent; it has no playbooks")
        procedures = _subheadings(self.body, "Procedures")
        for kind in dict.fromkeys(self.kinds):
            if not any(re.search(rf"\b{kind.value}\b", t, re.I) for t in procedures):
                raise ValueError(
                    f"body: Procedures has no procedure for gap kind {kind.value!r} "
                    f"(a sub-heading such as '### {kind.value}: ...')"
                )
        return self

    @property
    def diagnosis_only(self) -> bool:
        """A specialist with no remediation among its actions: it gathers evidence and escalates it."""
        catalogue = known_actions()
        return self.role == "specialist" and all(catalogue.get(a, True) for a in self.actions)

    @property
    def condition_facts(self) -> set[str]:
        """Facts its playbooks look for (required or alternative), for matching."""
        return {f for p in self.playbooks for f in (*p.when.facts_all, *p.when.facts_any)}

    def matching_playbook(self, gap: Gap, facts: Iterable[FactInput]) -> PersonaPlaybook | None:
        """The first playbook whose condition holds and whose targets the facts can name."""
        facts = list(facts)
        names = set(fact_names(facts))
        dependency, paths = _failed_dependency(facts), _fact_paths(facts)
        for playbook in self.playbooks:
            if playbook.when.matches(gap, names) and playbook.resolvable(dependency, paths):
                return playbook
        return None

    def plan_for(
        self, gap: Gap, facts: Iterable[FactInput], estate_component: str | None = None
    ) -> Plan | None:
        """A plan from the first matching playbook, or None when none applies.

        Args:
            gap: The gap to heal.
            facts: Diagnosis facts (`Fact` objects or names). Only fact objects can name a failed
                dependency, so a playbook that targets "dependency" needs them.
            estate_component: The estate component the gap is about; defaults to `gap.component`.

        Returns:
            A `Plan` with source "persona" and the playbook's name, or None.
        """
        facts = list(facts)
        playbook = self.matching_playbook(gap, facts)
        component = estate_component or gap.component
        if playbook is None or component is None:
            return None
        dependency, paths = _failed_dependency(facts), _fact_paths(facts)

        def target(kind: str) -> str:
            return dependency if kind == "dependency" and dependency else component

        def fill(value: Any) -> Any:
            return _PATH_ARG.sub(lambda m: paths[m.group(1)], value) if isinstance(value, str) else value

        steps = [
            Step(
                action=s.action,
                component=target(s.target),
                args={k: fill(v) for k, v in s.args.items()},
                why=s.why or f"{self.name} playbook {playbook.name}",
            )
            for s in playbook.steps
        ]
        checks = [
            Check(component=target(c.target), kind=c.kind, settle_s=c.settle_s, deadline_s=c.deadline_s)
            for c in playbook.checks
        ]
        if not checks:
            # The component acted on must recover, and so must the one the gap is about.
            order = dict.fromkeys([*(s.component for s in steps if s.component != component), component])
            checks = [Check(component=c) for c in order]
        return Plan(
            hypothesis=_hypothesis(playbook, component, dependency, facts),
            steps=steps,
            checks=checks,
            source="persona",
            playbook=playbook.name,
        )

    def to_markdown(self) -> str:
        """The persona as a file: YAML front matter, then the body."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        data = {"name": self.name, "title": self.title, "role": self.role, **data}
        front = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        return f"---\n{front}---\n\n{self.body.strip()}\n"


def _hypothesis(
    playbook: PersonaPlaybook, component: str, dependency: str | None, facts: list[FactInput]
) -> str:
    # A detail can carry a whole config diff; the first line of each says what it is about.
    described = "; ".join(_fact_summary(f) for f in facts) or "no facts"
    if not playbook.hypothesis:
        return f"{component}: {described}"
    values = {"component": component, "dependency": dependency or "its dependency", "facts": described}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], playbook.hypothesis)


def _fact_summary(fact: FactInput) -> str:
    if isinstance(fact, str):
        return fact
    lines = (getattr(fact, "detail", "") or "").strip().splitlines()
    return f"{fact.name}: {lines[0][:160]}" if lines else fact.name


def _headings(body: str) -> list[tuple[int, str]]:
    """Markdown ATX headings (level, text), skipping fenced code blocks."""
    found: list[tuple[int, str]] = []
    fenced = False
    for line in body.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            found.append((len(m.group(1)), m.group(2)))
    return found


def _subheadings(body: str, section: str) -> list[str]:
    """Headings nested under the first heading named `section`."""
    out: list[str] = []
    level: int | None = None
    for depth, text in _headings(body):
        if level is None:
            if re.match(rf"{section}\b", text, re.I):
                level = depth
        elif depth <= level:
            break
        else:
            out.append(text)
    return out


_FIELDS = sorted(
    {
        *Persona.model_fields,
        *PersonaPlaybook.model_fields,
        *PlaybookStep.model_fields,
        *Condition.model_fields,
    }
    | set(PlaybookCheck.model_fields)
)


def describe_error(exc: ValidationError) -> str:
    """A pydantic error as `field.path: message; ...`, with a suggestion for a mistyped field."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), _FIELDS, n=1)
            msg = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
