"""The agent factory: a graph that designs, renders, validates and registers a new specialist.

design   the LLM answers an `AgentDesign`; with no LLM configured it is derived from the gap
render   the persona file, its body through a sandboxed template, its provenance in front matter
validate schema, catalogue and policy, filler, near-duplicates, a dry run on the gap, routing,
         and a replay of recorded runs
register written under the home folder (earlier versions kept) and added to the live registry;
         or **reject**: the reasons, the draft kept for a person, nothing registered

The heal graph's route node calls `create_for_gap` for a capability gap; `agentheal agents
create` calls it for a gap given on the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from agentheal.factory.checks import ReplaySummary
from agentheal.graphs.context import HealContext
from agentheal.models import Gap, Plan, utcnow

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from agentheal.persona_model import FactInput


class FactoryState(TypedDict, total=False):
    gap: dict[str, Any]
    run_id: str | None
    replace: str | None
    trigger: str
    design: dict[str, Any]
    source: str
    name: str
    version: int
    text: str | None
    reasons: list[str]
    notes: list[str]
    closest: dict[str, Any] | None
    plan: dict[str, Any] | None
    replay: dict[str, Any] | None
    path: str | None
    registered: bool
    next: str


NODE_NAMES = ("design", "render", "validate", "register", "reject")
Trigger = Literal["capability", "pattern", "cli"]


class FactoryResult(BaseModel):
    """What the factory did with a gap: the persona it registered, or each reason it did not."""

    model_config = ConfigDict(extra="forbid")

    created: str | None = Field(
        description="The registered persona's name; None when nothing was registered."
    )
    name: str | None = Field(default=None, description="The designed name, registered or not.")
    path: str | None = Field(default=None, description="The persona file, or the rejected draft.")
    registered: bool = False
    reasons: list[str] = Field(default_factory=list, description="Why it was not registered.")
    notes: list[str] = Field(default_factory=list, description="What a person should know either way.")
    source: Literal["llm", "offline"] | None = None
    version: int | None = None
    closest: dict[str, Any] | None = Field(
        default=None, description="The nearest existing persona and cosine."
    )
    plan: Plan | None = Field(default=None, description="The dry run's plan for the causing gap.")
    replay: ReplaySummary | None = None

    def for_heal(self) -> dict[str, Any]:
        """The `"factory"` entry of a heal's JSON result."""
        return {"created": self.created, "reasons": list(self.reasons)}


@dataclass
class _Job:
    """What the nodes share besides the JSON state: the context and the facts as objects."""

    ctx: HealContext
    facts: list[FactInput]
    dry_facts: list[FactInput]
    tags: list[str]
    candidates: list[tuple[str, float]] = field(default_factory=list)


def _say(job: _Job, state: FactoryState, node: str, detail: str, data: dict[str, Any] | None = None) -> None:
    run_id = state.get("run_id")
    if run_id:
        job.ctx.say(run_id, "factory", f"{node}: {detail}", data)
    elif job.ctx.progress is not None:
        job.ctx.progress(None, f"factory:{node}", detail, data or {})


def _design(state: FactoryState, job: _Job) -> FactoryState:
    from agentheal.factory.derive import derive_design
    from agentheal.factory.design import AgentDesign, design_with_llm
    from agentheal.factory.render import slug_name
    from agentheal.llm import LLM, LLMError, LLMNotConfigured

    ctx, gap = job.ctx, Gap.model_validate(state["gap"])
    run_id, replace = state.get("run_id"), state.get("replace")
    notes: list[str] = []
    lines = [f.line() if hasattr(f, "line") else str(f) for f in job.facts]
    design: AgentDesign | None = None
    try:
        # In a heal run the call is recorded with the run; from the CLI it belongs to no run.
        llm = ctx.llm(run_id) if run_id else LLM(ctx.settings)
        try:
            design = design_with_llm(llm, gap, lines, ctx.registry, ctx.policy, job.candidates)
        finally:
            if not run_id:
                llm.close()
    except LLMNotConfigured:
        pass
    except LLMError as exc:
        notes.append(f"the LLM gave no usable design ({exc}); derived one offline")
    source = "llm" if design is not None else "offline"
    if design is None:
        design = derive_design(gap, job.facts, ctx.registry, ctx.policy, replace)
    if replace:
        design = design.model_copy(update={"name": replace})
    name = slug_name(design.name)
    _say(
        job,
        state,
        "design",
        f"{name} ({source}): {len(design.playbooks)} playbook(s), actions {design.actions}",
    )
    return {"design": design.model_dump(mode="json"), "source": source, "name": name, "notes": notes}


def _render(state: FactoryState, job: _Job) -> FactoryState:
    from agentheal.factory.design import AgentDesign
    from agentheal.factory.render import FACTORY_VERSION, render_persona
    from agentheal.factory.store import next_version

    ctx, gap = job.ctx, Gap.model_validate(state["gap"])
    design = AgentDesign.model_validate(state["design"])
    version = next_version(ctx.settings, state["name"]) if state.get("replace") else 1
    provenance = {
        "trigger": state.get("trigger", "capability"),
        "gap": gap.text,
        "fingerprint": gap.fingerprint,
        "kind": gap.kind.value,
        "component": gap.component,
        "run_id": state.get("run_id"),
        "created_at": utcnow().isoformat(),
        "model": ctx.settings.llm_model if state["source"] == "llm" else "offline",
        "factory_version": FACTORY_VERSION,
    }
    known = {p.name for p in ctx.registry.all()}
    rendered = render_persona(design, gap, version=version, provenance=provenance, known=known)
    lines = rendered.text.count("\n") if rendered.text else 0
    _say(job, state, "render", f"{state['name']} v{version}: {lines} lines" if rendered.text else "no file")
    return {"text": rendered.text, "version": version, "reasons": rendered.reasons}


def _validate(state: FactoryState, job: _Job) -> FactoryState:
    from agentheal.factory import checks
    from agentheal.factory.design import AgentDesign
    from agentheal.factory.filler import design_units, echo_problems, filler_problems
    from agentheal.factory.terms import Vocabulary
    from agentheal.personas import PersonaLoadError, Registry, parse_persona

    ctx, gap = job.ctx, Gap.model_validate(state["gap"])
    design = AgentDesign.model_validate(state["design"])
    registry, replace = ctx.registry, state.get("replace")
    reasons = list(state.get("reasons", []))
    notes = list(state.get("notes", []))
    reasons += checks.design_problems(design, ctx.policy, gap.component)
    reasons += checks.unsuitable_actions(design, gap, job.dry_facts)
    builtin = {p.name for p in registry.all() if p.origin == "builtin"}
    reasons += checks.name_problems(state["name"], registry, builtin, replace)
    update: FactoryState = {}
    text = state.get("text")
    try:
        unparsed = any(r.startswith("schema:") for r in reasons)
        persona = parse_persona(text, state["name"]) if text and not unparsed else None
    except PersonaLoadError as exc:
        persona, reasons = None, [*reasons, f"schema: {exc.message}"]
    if persona is not None:
        names = [*(f if isinstance(f, str) else f.name for f in job.dry_facts), *persona.actions]
        names += [
            *persona.handoffs,
            *(f for b in persona.playbooks for f in (*b.when.facts_all, *b.when.facts_any)),
        ]
        words = [gap.text, *gap.evidence, gap.component or ""]
        reasons += filler_problems(design_units(design), Vocabulary(words, names))
        reasons += echo_problems(design, gap)
        closest, cosine = checks.closest_persona(persona, registry, ctx.settings, replace)
        update["closest"] = {"name": closest, "cosine": cosine} if closest else None
        if closest and cosine >= checks.DUPLICATE_COSINE:
            reasons.append(
                f"near-duplicate of {closest}: expertise cosine {cosine:.2f} >= {checks.DUPLICATE_COSINE:.2f}"
            )
        plan, failed, said = checks.dry_run(persona, gap, job.dry_facts, ctx.policy, ctx.estate)
        reasons, notes = reasons + failed, notes + said
        update["plan"] = plan.model_dump(mode="json") if plan else None
        trial = Registry([*(p for p in registry.all() if p.name != persona.name), persona], ctx.settings)
        threshold = ctx.settings.match_threshold
        reasons += checks.routing_problems(trial, persona, gap, job.dry_facts, job.tags, threshold)[0]
        summary = checks.replay(
            trial, persona, ctx.events, threshold, state.get("run_id"), _plan_ok(job, persona)
        )
        update["replay"] = summary.model_dump(mode="json")
        reasons += [f"replay: {r}" for r in summary.regressions]
        if summary.replayed == 0:
            notes.append("replay: no recorded runs of its gap kinds to replay")
    verdict = "passed" if not reasons else f"{len(reasons)} problem(s): " + "; ".join(reasons)
    _say(job, state, "validate", verdict, {"reasons": reasons})
    return {**update, "reasons": reasons, "notes": notes, "next": "reject" if reasons else "register"}


def _plan_ok(job: _Job, persona: Any) -> Callable[[Plan], bool]:
    from agentheal.factory.checks import STAND_IN, stand_in_estate
    from agentheal.policy import evaluate

    def ok(plan: Plan) -> bool:
        estate = job.ctx.estate
        if estate is None or any(s.component not in estate.components for s in plan.steps):
            estate = stand_in_estate(plan.steps[0].component if plan.steps else STAND_IN)
        return evaluate(job.ctx.policy, plan, estate, persona.actions, lambda *_: 0).allowed

    return ok


def _register(state: FactoryState, job: _Job) -> FactoryState:
    from agentheal.agents import clear_retirement
    from agentheal.factory.store import save_version
    from agentheal.personas import parse_persona

    ctx = job.ctx
    persona = parse_persona(state["text"] or "", state["name"])
    path = save_version(ctx.settings, persona)
    # A retired agent's new version is active; the retirement stays in the old version's file.
    if clear_retirement(ctx.settings, persona.name) is not None:
        _say(job, state, "register", f"{persona.name} was retired; version {persona.version} is active")
    ctx.registry.add(persona, replace=persona.name in {p.name for p in ctx.registry.all()})
    ctx.audit(
        {"factory": "registered", "persona": persona.name, "version": persona.version, "path": str(path)}
    )
    _say(job, state, "register", f"{persona.name} v{persona.version} registered: {path}", {"path": str(path)})
    return {"path": str(path), "registered": True}


def _reject(state: FactoryState, job: _Job) -> FactoryState:
    from agentheal.factory.store import save_rejected

    path = None
    if state.get("text"):
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        path = str(save_rejected(job.ctx.settings, state.get("name", "design"), state["text"] or "", stamp))
    _say(job, state, "reject", f"not registered; draft kept at {path}" if path else "not registered")
    return {"path": path, "registered": False}


def build_factory_graph(job: _Job | None) -> Any:
    """The uncompiled factory `StateGraph`; `job` is None only to draw it."""
    from langgraph.graph import END, START, StateGraph

    graph: Any = StateGraph(FactoryState)
    for name, fn in zip(NODE_NAMES, (_design, _render, _validate, _register, _reject), strict=True):
        graph.add_node(name, _bind(fn, job))
    graph.add_edge(START, "design")
    graph.add_edge("design", "render")
    graph.add_edge("render", "validate")
    graph.add_conditional_edges(
        "validate", lambda s: s.get("next", "reject"), {n: n for n in ("register", "reject")}
    )
    graph.add_edge("register", END)
    graph.add_edge("reject", END)
    return graph


def _bind(
    fn: Callable[[FactoryState, _Job], FactoryState], job: _Job | None
) -> Callable[[FactoryState], FactoryState]:
    def run(state: FactoryState) -> FactoryState:
        assert job is not None, "the factory graph was built without a job; it can only be drawn"
        return fn(state, job)

    run.__name__ = fn.__name__.lstrip("_")
    return run


def compile_factory_graph(job: _Job | None = None) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled factory graph (no checkpointer: a factory run is short and repeatable)."""
    compiled: CompiledStateGraph[Any, Any, Any, Any] = build_factory_graph(job).compile(name="factory")
    return compiled


def create_for_gap(
    ctx: HealContext,
    gap: Gap,
    facts: list[FactInput],
    run_id: str | None,
    *,
    replace: str | None = None,
    trigger: Trigger = "capability",
) -> FactoryResult:
    """Design, render, validate and register a specialist for a gap no persona fits.

    On success the persona file is under `settings.generated_personas_dir` and `ctx.registry`
    holds the persona, so the caller can route the gap to `result.created` in the same run.

    Args:
        ctx: The heal context (registry, policy, events, estate when there is one, LLM).
        gap: The gap.
        facts: Its diagnosis facts (`Fact` objects or names); with none, the dry run uses the
            facts the gap's words imply.
        run_id: The heal run it belongs to (node events and LLM calls are recorded there), or None.
        replace: Make a new version of this generated persona instead of a new persona.
        trigger: What asked for it, kept in the provenance.

    Returns:
        The result: `created` and `path` when registered, else each reason in `reasons`.
    """
    from agentheal.factory.checks import STAND_IN, stand_in_facts
    from agentheal.factory.symptoms import implied_facts

    tags: list[str] = []
    estate = ctx.estate
    if estate is not None and gap.component in estate.components:
        tags = list(estate.components[gap.component or ""].tags)
    implied = implied_facts(gap)
    dry_facts = list(facts) if facts else stand_in_facts(implied, gap.component or STAND_IN)
    _, _, candidates = ctx.registry.route(gap, facts, tags)
    job = _Job(ctx=ctx, facts=list(facts), dry_facts=dry_facts, tags=tags, candidates=candidates)
    notes = (
        []
        if facts
        else [f"no facts given: the dry run used those the gap's words imply ({implied or 'none'})"]
    )
    initial: FactoryState = {
        "gap": gap.model_dump(mode="json"),
        "run_id": run_id,
        "replace": replace,
        "trigger": trigger,
        "reasons": [],
        "notes": [],
    }
    final: dict[str, Any] = compile_factory_graph(job).invoke(initial)
    registered = bool(final.get("registered"))
    return FactoryResult(
        created=final.get("name") if registered else None,
        name=final.get("name"),
        path=final.get("path"),
        registered=registered,
        reasons=list(final.get("reasons", [])),
        notes=notes + list(final.get("notes", [])),
        source=final.get("source"),
        version=final.get("version"),
        closest=final.get("closest"),
        plan=Plan.model_validate(final["plan"]) if final.get("plan") else None,
        replay=ReplaySummary.model_validate(final["replay"]) if final.get("replay") else None,
    )
