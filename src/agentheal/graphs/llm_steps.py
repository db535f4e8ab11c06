"""The heal graph's LLM steps: diagnosis with read-only observation tools, and planning.

Only called when no playbook, remembered plan or persona playbook fits. What the LLM answers
is data: the root component must exist, and the plan goes through the policy guard.
"""

from __future__ import annotations

from typing import Any

from agentheal.graphs.context import HealContext
from agentheal.graphs.state import cut_evidence, gap_of
from agentheal.models import Diagnosis, Plan


def llm_diagnosis(
    state: dict[str, Any], ctx: HealContext, persona_name: str, offline: Diagnosis
) -> Diagnosis:
    from agentheal.estate.actions import tool_schemas
    from agentheal.models import DiagnosisReply, MemoryHit
    from agentheal.prompts import render
    from agentheal.protocols.mcp_client import ObservationToolsets

    assert ctx.estate is not None and ctx.backend is not None
    llm = ctx.llm(state["run_id"])
    gap = gap_of(state)
    persona = ctx.registry.get(persona_name)
    memory = [MemoryHit.model_validate(h) for h in state.get("memory", [])]
    system = render("diagnose_system.j2", persona=persona, estate_name=ctx.estate.name)
    user = render(
        "diagnose_user.j2",
        gap=gap,
        component=gap.component,
        facts=offline.facts,
        evidence=offline.evidence,
        memory=memory,
    )
    backend = ctx.backend
    run_id = state["run_id"]
    # Other MCP servers' allowed tools, as observations only: each call is recorded in the story.
    external = ObservationToolsets(ctx.settings, lambda text, data: ctx.say(run_id, "mcp", text, data))

    def call_tool(name: str, args: dict[str, Any]) -> str:
        if external.owns(name):
            return external.call(name, args)
        args = dict(args)
        component = str(args.pop("component", gap.component))
        return backend.observe(name, component, **args)

    with external:
        tools = tool_schemas(ctx.estate) + external.schemas
        reply = llm.tool_loop("diagnose", system, user, tools, call_tool, DiagnosisReply)
    root = reply.root_component if reply.root_component in ctx.estate.components else offline.component
    evidence = offline.evidence + [f"llm finding (unverified): {cut_evidence(f, 300)}" for f in reply.facts]
    return Diagnosis(facts=offline.facts, evidence=evidence, hypothesis=reply.hypothesis, component=root)


def llm_plan(state: dict[str, Any], ctx: HealContext) -> Plan:
    from agentheal.estate.actions import CATALOGUE, args_json_schema
    from agentheal.models import MemoryHit, PlanReply
    from agentheal.prompts import render

    assert ctx.estate is not None
    llm = ctx.llm(state["run_id"])
    persona = ctx.registry.get(state["persona"])
    actions = [
        {
            "name": spec.name,
            "risk": spec.risk.value,
            "reversible": spec.reversible,
            "description": spec.description,
            "args": args_json_schema(spec.args_model),
        }
        for name, spec in CATALOGUE.items()
        if name in persona.actions and not spec.read_only
    ]
    system = render("plan_system.j2", persona=persona, actions=actions)
    user = render(
        "plan_user.j2",
        gap=gap_of(state),
        diagnosis=Diagnosis.model_validate(state["diagnosis"]),
        memory=[MemoryHit.model_validate(h) for h in state.get("memory", [])],
        avoid=list(state.get("failed_plans", [])),
        components=list(ctx.estate.components),
    )
    reply = llm.structured("plan", system, user, PlanReply)
    plan = Plan(
        hypothesis=reply.hypothesis,
        steps=reply.steps,
        rollback=reply.rollback,
        checks=reply.checks,
        source="llm",
    )
    return plan
