"""The heal graph's execute node: a plan's typed steps run in order, a failed one answered by the
rollback steps, each recorded as it runs; a run resumed after its process ended does not run again
the steps its story says already ran."""

from __future__ import annotations

from typing import Any

from agentheal.graphs.context import HealContext
from agentheal.graphs.validation import deferred_to_validation
from agentheal.models import ActionResult, Plan, Step, Validation


def _json(result: ActionResult) -> dict[str, Any]:
    return result.model_dump(mode="json")


def execute(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """The steps in order; a failed step runs the rollback steps."""
    assert ctx.backend is not None
    chosen = Plan.model_validate(state["plan"])
    dry, run_id = bool(state.get("dry_run")), state["run_id"]
    done: list[dict[str, Any]] = []
    failed = False
    acted_on = {s.component for s in chosen.steps}
    attempt = int(state.get("attempts", 0))
    ran = _steps_ran(ctx, run_id, attempt)
    for index, step in enumerate(chosen.steps):
        if ("step", index) in ran:
            result = ran["step", index]
            again = (
                f"{step.signature()}: {result.outcome} before the process driving this run ended; not again"
            )
            ctx.say(run_id, "execute", again, {"attempt": attempt, "step": index, "again": False})
        else:
            result = _run_step(ctx, run_id, step, dry)
            told = f"{step.signature()}: {result.outcome} {result.detail}".strip()
            ctx.say(run_id, "execute", told, {"attempt": attempt, "step": index, "result": _json(result)})
        done.append(result.model_dump(mode="json"))
        if result.outcome == "failed" and not dry:
            down = deferred_to_validation(ctx, step.component, step.action, acted_on)
            if down:  # started, but cannot pass its probes until they answer: not this plan's failure
                ctx.say(
                    run_id,
                    "execute",
                    f"{step.component} runs but fails its probes while dependency {', '.join(down)} is "
                    "down: validation waits for it, then judges the fix",
                    {"deferred": step.signature(), "waiting_for": down},
                )
                continue
        if result.outcome == "failed":
            failed = True
            break
    if failed and chosen.rollback:
        for index, step in enumerate(chosen.rollback):
            result = ran.get(("rollback", index)) or _act(ctx, run_id, step, dry)
            if ("rollback", index) not in ran:
                ctx.events.action(run_id, step, result)
            told = f"{step.signature()}: {result.outcome}"
            ctx.say(
                run_id, "rollback", told, {"attempt": attempt, "rollback": index, "result": _json(result)}
            )
            done.append(result.model_dump(mode="json"))
    if failed:
        validation = Validation(ok=False, detail=f"step failed: {done[-1]['detail']}")
        return {"actions": done, "validation": validation.model_dump(), "next": "learn"}
    return {"actions": done, "next": "validate"}


def _run_step(ctx: HealContext, run_id: str, step: Step, dry: bool) -> ActionResult:
    assert ctx.backend is not None
    result = _act(ctx, run_id, step, dry)
    ctx.events.action(run_id, step, result)
    if not dry:
        ctx.audit(
            {"run_id": run_id, "step": step.model_dump(), "outcome": result.outcome, "detail": result.detail}
        )
    return result


def _act(ctx: HealContext, run_id: str, step: Step, dry: bool) -> ActionResult:
    """One step's action, unless this worker lost the run's claim to another (then LeaseLost,
    nothing done: agentheal.work.fencing)."""
    assert ctx.backend is not None
    if ctx.events.fence is not None:
        ctx.events.fence.before_action(run_id, f"the action {step.signature()}")
    return ctx.backend.execute(step, dry_run=dry)


def _steps_ran(ctx: HealContext, run_id: str, attempt: int) -> dict[tuple[str, int], ActionResult]:
    """The steps of this attempt's plan a run resumed after its process ended had already run (their
    results are in its story): a restart already done, or a rate-limited action, is not done twice.
    A fresh run has none, and does not look. (A step killed after it acted but before its result was
    recorded runs again: that window is the length of one insert.)"""
    if run_id not in ctx.resumed:
        return {}
    ran: dict[tuple[str, int], ActionResult] = {}
    for node in ("execute", "rollback"):
        for data in ctx.events.node_data(run_id, node):
            if data.get("attempt") == attempt and "result" in data:
                key = (
                    ("step", int(data["step"])) if node == "execute" else ("rollback", int(data["rollback"]))
                )
                ran[key] = ActionResult.model_validate(data["result"])
    return ran
