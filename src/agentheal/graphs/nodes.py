"""The heal graph's nodes: each a small function of (state, context) returning a state update.

Every node records its transition in the event store through `ctx.say`. Nothing an LLM or a
log line says is trusted: plans are checked by policy in `guard`, whatever produced them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from agentheal.graphs.context import HealContext
from agentheal.graphs.execute import execute as execute  # a node the heal graph binds by name
from agentheal.graphs.llm_steps import llm_diagnosis, llm_plan
from agentheal.graphs.results import finish, resolution_of
from agentheal.graphs.state import cut_evidence, fact_names, facts_of, gap_of
from agentheal.graphs.validation import validate_plan
from agentheal.models import (
    Check,
    Diagnosis,
    Gap,
    Plan,
    RunStatus,
    Severity,
    Validation,
)

Node = Callable[[dict[str, Any], HealContext], dict[str, Any]]

_FACT_SENTENCES = {
    "process_down": "its process is not running",
    "crash_loop": "it crashes again soon after each start",
    "config_changed": "a config file differs from the last known good copy",
    "config_missing": "a config file is missing",
    "dependency_down": "a component it depends on is down",
    "disk_over_budget": "a data folder is over its budget",
    "logs_large": "a log file is over its budget",
    "memory_high": "its memory use is over budget",
    "slow_response": "it answers slower than its latency budget",
    "probe_failed": "its probes fail",
    "log_errors": "its recent logs show errors",
    "bad_release": "the release it serves changed recently and it has failed since",
    "flag_changed": "a feature flag differs from its last known good value",
    "stale_lock": "a lock file left by a dead process stops it from starting",
    "queue_stalled": "its queue grows while nothing consumes it",
}


def bind(fn: Node, ctx: HealContext | None, name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Wrap a node so that an unexpected error ends the run as `failed` with the error named."""

    @functools.wraps(fn)
    def run(state: dict[str, Any]) -> dict[str, Any]:
        from langgraph.errors import GraphBubbleUp

        from agentheal.work.fencing import LeaseLost

        assert ctx is not None, "the heal graph was built without a context; it can only be drawn"
        try:
            return fn(state, ctx)
        except (GraphBubbleUp, LeaseLost):  # a lost claim stops the run here: its new holder goes on
            raise
        except Exception as exc:  # a bug or a broken edge must not lose the run's story
            reason = f"{name} failed: {type(exc).__name__}: {exc}"
            ctx.say(state["run_id"], name, reason, {"error": True})
            return {"status": RunStatus.failed.value, "reason": reason, "next": "escalate"}

    return run


def triage(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """Confirm the gap against the estate: what the component's health says, and how much depends on it."""
    gap = gap_of(state)
    run_id = state["run_id"]
    if ctx.estate is None or ctx.backend is None:
        reason = "no estate given (--estate FILE): nothing to observe or act on"
        ctx.say(run_id, "triage", reason)
        return {"next": "escalate", "reason": reason}
    if gap.component is None:
        reason = f"the gap names no component; pass --component (one of: {', '.join(ctx.estate.components)})"
        ctx.say(run_id, "triage", reason)
        return {"next": "escalate", "reason": reason}
    facts = [f.model_dump(mode="json") for f in ctx.backend.facts(gap.component)]
    dependents = sorted(n for n, c in ctx.estate.components.items() if gap.component in c.depends_on)
    severity = gap.severity
    if dependents and severity in (Severity.low, Severity.medium):
        severity = Severity.high
    names = sorted({f["name"] for f in facts})
    detail = f"{gap.component}: {', '.join(names) or 'no findings'}; severity {severity.value}"
    if dependents:
        detail += f"; {len(dependents)} dependent(s): {', '.join(dependents)}"
    ctx.say(run_id, "triage", detail, {"facts": names, "dependents": dependents})
    triaged = {"severity": severity.value, "dependents": dependents, "needs_action_now": bool(names)}
    return {"facts": facts, "triage": triaged, "next": "recall"}


def recall(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """The most similar past resolutions, with their outcomes."""
    hits = ctx.memory.recall(gap_of(state), k=ctx.settings.recall_k)
    shown = [f"{h.similarity:.2f} {h.outcome}: {h.gap[:60]}" for h in hits[:3]]
    ctx.say(state["run_id"], "recall", f"{len(hits)} similar past resolution(s)", {"top": shown})
    return {"memory": [h.model_dump(mode="json") for h in hits]}


def route(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """The best-matching specialist; below the threshold the gap is a capability gap."""
    gap = gap_of(state)
    assert ctx.estate is not None and gap.component is not None
    tags = list(ctx.estate.components[gap.component].tags)
    threshold = ctx.settings.match_threshold
    persona, score, candidates = ctx.registry.route(gap, facts_of(state), tags, threshold)
    top = [[n, round(s, 3)] for n, s in candidates[:3]]  # (lists: as a checkpoint gives them back)
    routed = {"score": score, "candidates": top}
    if persona is None:
        return _capability_gap(state, ctx, gap, routed)
    ctx.say(state["run_id"], "route", f"{persona.name} ({score:.2f})", {"candidates": top})
    return {"persona": persona.name, "route": routed, "handoffs": 0, "next": "diagnose"}


def _capability_gap(
    state: dict[str, Any], ctx: HealContext, gap: Gap, routed: dict[str, Any]
) -> dict[str, Any]:
    """No persona fits: the agent factory designs, validates and registers one, or says why not."""
    from agentheal.graphs.factory import create_for_gap

    top = routed["candidates"]
    best = f"{top[0][0]} at {top[0][1]:.2f}" if top else "none"
    run_id = state["run_id"]
    ctx.say(run_id, "route", f"no persona fits (best: {best}): a capability gap; asking the agent factory")
    made = create_for_gap(ctx, gap, facts_of(state), run_id)
    factory = made.for_heal()
    if not made.registered or made.created is None:
        reason = (
            f"no persona fits this gap (best: {best}, threshold {ctx.settings.match_threshold:.2f}) and the "
            "agent factory registered none: " + "; ".join(made.reasons)
        )
        ctx.say(run_id, "factory", reason, {"factory": factory})
        return {"next": "escalate", "reason": reason, "route": routed, "factory": factory}
    ctx.say(run_id, "factory", f"{made.created} created and registered ({made.source})", {"factory": factory})
    return {"persona": made.created, "route": routed, "factory": factory, "handoffs": 0, "next": "diagnose"}


def _offline_evidence(ctx: HealContext, component: str) -> list[str]:
    assert ctx.backend is not None
    evidence = []
    for name, args in (("process_stats", {}), ("tail_logs", {"lines": 20})):
        try:
            evidence.append(
                f"{name}({component}):\n" + cut_evidence(ctx.backend.observe(name, component, **args))
            )
        except Exception as exc:  # an unreadable log is evidence too, not a reason to stop
            evidence.append(f"{name}({component}) failed: {exc}")
    return evidence


def diagnose(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """Evidence from read-only observations, then a root-cause hypothesis; hand-offs between specialists."""
    from agentheal.llm import LLMError, LLMNotConfigured, ToolLoopExhausted

    gap, facts = gap_of(state), facts_of(state)
    run_id, persona_name = state["run_id"], state["persona"]
    assert ctx.estate is not None and gap.component is not None
    handoffs = state.get("handoffs", 0)
    persona = ctx.registry.get(persona_name)
    update: dict[str, Any] = {}
    if persona.plan_for(gap, facts, gap.component) is None and handoffs < ctx.settings.max_handoffs:
        other = ctx.registry.handoff(persona, gap, facts)
        if other is not None:
            ctx.say(
                run_id, "handoff", f"{persona.name} → {other.name}", {"from": persona.name, "to": other.name}
            )
            persona_name, handoffs = other.name, handoffs + 1
            update.update(persona=persona_name, handoffs=handoffs)
    root = next((f.component for f in facts if f.name == "dependency_down"), gap.component)
    names = fact_names(state)
    sentences = [_FACT_SENTENCES[n] for n in names if n in _FACT_SENTENCES]
    hypothesis = f"{root}: " + ("; ".join(sentences) if sentences else "no finding explains the gap yet")
    evidence = [f"{f.name} ({f.component}): {cut_evidence(f.detail, 300)}" for f in facts]
    evidence += _offline_evidence(ctx, root)
    diagnosis = Diagnosis(facts=names, evidence=evidence, hypothesis=hypothesis, component=root)
    remembered = [p.model_dump(mode="json") for p in ctx.memory.known_plans(gap.fingerprint, names)]
    update["remembered"] = remembered
    own = ctx.registry.get(persona_name).plan_for(gap, facts, gap.component)
    if not remembered and own is None:
        try:
            diagnosis = llm_diagnosis(state, ctx, persona_name, diagnosis)
        except LLMNotConfigured:
            ctx.say(run_id, "diagnose", "no LLM configured: diagnosis from observations only")
        except ToolLoopExhausted as exc:
            found = [cut_evidence(f, 300) for f in exc.findings]
            reason = f"diagnosis hit the observation-tool cap: {exc}"
            ctx.say(run_id, "diagnose", reason, {"findings": found})
            diagnosis.evidence += found
            return {
                **update,
                "diagnosis": diagnosis.model_dump(mode="json"),
                "reason": reason,
                "next": "escalate",
            }
        except LLMError as exc:
            ctx.say(run_id, "diagnose", f"LLM diagnosis failed, kept the offline one: {exc}")
    ctx.say(run_id, "diagnose", diagnosis.hypothesis, {"facts": names, "component": diagnosis.component})
    return {**update, "diagnosis": diagnosis.model_dump(mode="json"), "next": "plan"}


def plan(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """Replay a playbook when one fits; else a remembered plan, the persona's playbook, or the LLM."""
    from agentheal.llm import LLMError, LLMNotConfigured

    gap, facts, names = gap_of(state), facts_of(state), fact_names(state)
    diagnosis = Diagnosis.model_validate(state["diagnosis"])
    failed = set(state.get("failed_plans", []))
    run_id = state["run_id"]
    persona = ctx.registry.get(state["persona"])
    if persona.diagnosis_only:
        return _diagnosis_only(ctx, run_id, persona.name, diagnosis)
    # memory's playbook and remembered plan (looked up once, in diagnose), then the persona's own
    offers = [Plan.model_validate(p) for p in state.get("remembered", [])]
    own = persona.plan_for(gap, facts, gap.component or "")
    for chosen in [*offers, *([own] if own is not None else [])]:
        if chosen.signature() not in failed and chosen.steps:
            return _planned(ctx, run_id, chosen, diagnosis)
    if persona.remote is not None:
        return _remote_plan(ctx, run_id, state, diagnosis, failed)
    try:
        chosen = llm_plan(state, ctx)
    except LLMNotConfigured:
        reason = (
            f"no playbook of {persona.name} or memory fits the findings ({', '.join(names) or 'none'}); "
            "designing a new plan needs an LLM (set AGENTHEAL_LLM_BASE_URL)"
        )
        ctx.say(run_id, "plan", reason)
        return {"next": "escalate", "reason": reason, "plan": None}
    except LLMError as exc:
        reason = f"the LLM gave no usable plan: {exc}"
        ctx.say(run_id, "plan", reason)
        return {"next": "escalate", "reason": reason, "plan": None}
    if chosen.signature() in failed:
        reason = f"the LLM proposed a plan that already failed in this run: {chosen.signature()}"
        ctx.say(run_id, "plan", reason)
        return {"next": "escalate", "reason": reason}
    return _planned(ctx, run_id, chosen, diagnosis)


def _remote_plan(
    ctx: HealContext, run_id: str, state: dict[str, Any], diagnosis: Diagnosis, failed: set[str]
) -> dict[str, Any]:
    """A remote persona's agent designs the plan (over A2A); the guard checks it like any other.

    The task is sent once (found in the story when this node runs again), then the run waits in
    `interrupt()` holding no worker, unless the agent answered within its short grace."""
    from langgraph.types import interrupt

    from agentheal.protocols.a2a_client import RemoteError, ask_remote, plan_of_answer

    persona = ctx.registry.get(state["persona"])
    try:
        attempt = int(state.get("attempts", 0))
        ctx.publish(run_id)
        wait, answer = ask_remote(ctx, run_id, persona, gap_of(state), diagnosis, attempt)
        if answer is None:
            answer = interrupt(wait)
        chosen = plan_of_answer(wait, answer)
    except RemoteError as exc:
        reason = f"remote persona {persona.name} gave no usable plan: {exc}"
        ctx.say(run_id, "plan", reason)
        return {"next": "escalate", "reason": reason, "plan": None}
    if chosen.signature() in failed:
        reason = f"{persona.name} proposed a plan that already failed in this run: {chosen.signature()}"
        ctx.say(run_id, "plan", reason)
        return {"next": "escalate", "reason": reason}
    return _planned(ctx, run_id, chosen, diagnosis)


def _diagnosis_only(ctx: HealContext, run_id: str, name: str, diagnosis: Diagnosis) -> dict[str, Any]:
    """A specialist with no remediation plans nothing, not even a remembered plan: it passes evidence on."""
    # Each item's first line says what it is; the whole of it stays in the run's diagnosis.
    heads = [" ".join(e.strip().splitlines()[:2])[:160] for e in diagnosis.evidence if e.strip()]
    reason = (
        f"{name} is a diagnosis-only specialist: no action of the catalogue answers this gap, so it "
        f"escalates with the evidence it gathered ({len(heads)} item(s)): {diagnosis.hypothesis}"
        + "".join(f" | {h}" for h in heads[:4])
    )
    ctx.say(run_id, "plan", reason, {"evidence": diagnosis.evidence})
    return {"next": "escalate", "reason": reason, "plan": None}


def _planned(ctx: HealContext, run_id: str, chosen: Plan, diagnosis: Diagnosis) -> dict[str, Any]:
    if not chosen.checks:
        targets = dict.fromkeys(s.component for s in chosen.steps)
        chosen.checks = [Check(component=c) for c in targets]
    detail = f"[{chosen.source}] {chosen.signature()}"
    ctx.say(
        run_id, "plan", detail, {"plan": chosen.model_dump(mode="json"), "hypothesis": diagnosis.hypothesis}
    )
    return {"plan": chosen.model_dump(mode="json"), "next": "guard"}


def guard(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """Policy on every plan, whatever produced it; above the ceiling a person decides."""
    from agentheal.agents import needs_first_approval
    from agentheal.policy import evaluate

    assert ctx.estate is not None
    chosen = Plan.model_validate(state["plan"])
    persona = ctx.registry.get(state["persona"])
    decision = evaluate(ctx.policy, chosen, ctx.estate, persona.actions, ctx.events.count_actions)
    first = needs_first_approval(persona, ctx.events, ctx.policy)
    if first and decision.allowed:  # a new agent's first real heals are watched by a person
        decision = decision.model_copy(
            update={"needs_approval": True, "approvals": [*decision.approvals, first]}
        )
    run_id = state["run_id"]
    data = decision.model_dump(mode="json")
    if not decision.allowed:
        reason = f"policy refused the {chosen.source} plan: " + "; ".join(decision.violations)
        ctx.say(run_id, "guard", reason, data)
        return {"decision": data, "reason": reason, "next": "escalate"}
    dry = bool(state.get("dry_run")) or ctx.policy.dry_run or ctx.settings.dry_run
    if decision.needs_approval and not dry:
        ctx.events.set_status(run_id, RunStatus.awaiting_approval, "; ".join(decision.approvals))
        ctx.say(run_id, "guard", "approval needed: " + "; ".join(decision.approvals), data)
        return {"decision": data, "status": RunStatus.awaiting_approval.value, "next": "approval"}
    ctx.say(run_id, "guard", "allowed" + (" (dry run)" if dry else ""), data)
    return {"decision": data, "dry_run": dry, "next": "execute"}


def approval(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """Wait for a person. Nothing before `interrupt` has side effects: this node runs again on resume."""
    from langgraph.types import interrupt

    answer = interrupt(
        {"run_id": state["run_id"], "plan": state["plan"], "approvals": state["decision"]["approvals"]}
    )
    run_id = state["run_id"]
    who = str(answer.get("by", "someone"))
    if not answer.get("approved"):
        reason = f"rejected by {who}" + (f": {answer['note']}" if answer.get("note") else "")
        ctx.say(run_id, "approval", reason)
        finish(ctx, {**state, "reason": reason}, RunStatus.rejected.value)
        return {
            "approval": dict(answer),
            "status": RunStatus.rejected.value,
            "reason": reason,
            "next": "__end__",
        }
    ctx.events.set_status(run_id, RunStatus.running)
    ctx.say(run_id, "approval", f"approved by {who}")
    return {"approval": dict(answer), "status": RunStatus.running.value, "next": "execute"}


def validate(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """The plan's checks, after a settle time, until they pass or their deadline; a dependency that
    is down is waited for first, and one that stays down escalates the run, named."""
    assert ctx.backend is not None
    run_id = state["run_id"]
    if state.get("dry_run"):
        validation = Validation(ok=False, detail="dry run: nothing was changed, so nothing was validated")
        ctx.say(run_id, "validate", validation.detail)
        return {"validation": validation.model_dump(), "next": "learn"}
    # A check failing while a dependency is down waits for it (graphs/validation.py says why)
    return validate_plan(state, ctx)


def learn(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """Success: remember the resolution. Failure: try another plan, the failure as evidence, or escalate."""
    run_id = state["run_id"]
    chosen = Plan.model_validate(state["plan"])
    validation = Validation.model_validate(state["validation"])
    if state.get("dry_run"):
        final = {
            **state,
            "status": "dry_run",
            "reason": "dry run: the plan passed policy; nothing was changed",
        }
        finish(ctx, final, "dry_run")
        ctx.say(run_id, "learn", "dry run: nothing learned")
        return {"status": "dry_run", "reason": final["reason"], "next": "__end__"}
    names = fact_names(state)
    if validation.ok:
        usage = ctx.events.llm_usage(run_id)
        ctx.memory.store(resolution_of(ctx, state, RunStatus.healed, usage), names)
        assert ctx.backend is not None
        for component in dict.fromkeys(s.component for s in chosen.steps):
            ctx.backend.snapshot_configs(component)
        final = {**state, "status": RunStatus.healed.value, "reason": None}
        finish(ctx, final, RunStatus.healed.value, usage)
        ctx.say(run_id, "learn", f"healed; remembered [{chosen.source}] {chosen.signature()}")
        healed = RunStatus.healed.value
        return {"status": healed, "reason": None, "llm": usage.model_dump(), "next": "__end__"}
    ctx.memory.store(resolution_of(ctx, state, RunStatus.failed), names)
    attempts = state.get("attempts", 0) + 1
    failed = [*state.get("failed_plans", []), chosen.signature()]
    why = f"plan [{chosen.source}] {chosen.signature()} did not heal: {validation.detail}"
    diagnosis = Diagnosis.model_validate(state["diagnosis"])
    diagnosis.evidence.append(why)
    if attempts < ctx.settings.heal_attempts:
        ctx.say(run_id, "learn", f"{why}; trying another plan ({attempts}/{ctx.settings.heal_attempts})")
        return {
            "attempts": attempts,
            "failed_plans": failed,
            "diagnosis": diagnosis.model_dump(),
            "next": "plan",
        }
    ctx.say(run_id, "learn", why)
    return {"attempts": attempts, "failed_plans": failed, "reason": why, "next": "escalate"}


def escalate(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """Hand the whole story to a person: the reason, the evidence, what was tried."""
    status = (
        RunStatus.failed.value if state.get("status") == RunStatus.failed.value else RunStatus.escalated.value
    )
    reason = state.get("reason") or "escalated without a reason recorded"
    final = {**state, "status": status, "reason": reason}
    finish(ctx, final, status)
    ctx.say(state["run_id"], "escalate", reason)
    return {"status": status, "reason": reason}
