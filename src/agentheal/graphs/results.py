"""How a heal run ends: its resolution for memory, its record in the event store, its JSON answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentheal.graphs.context import HealContext
from agentheal.graphs.state import gap_of
from agentheal.models import ActionResult, Diagnosis, LLMUsage, Plan, Resolution, RunStatus, Validation

if TYPE_CHECKING:
    from agentheal.events import RunDetail


def resolution_of(
    ctx: HealContext, state: dict[str, Any], status: RunStatus, usage: LLMUsage | None = None
) -> Resolution:
    """The run as memory keeps it (`usage`: its LLM use, when the caller has just read it)."""
    return Resolution(
        run_id=state["run_id"],
        gap=gap_of(state),
        persona=state.get("persona"),
        diagnosis=Diagnosis.model_validate(state.get("diagnosis") or {}),
        plan=Plan.model_validate(state["plan"]) if state.get("plan") else None,
        status=status,
        actions=[ActionResult.model_validate(a) for a in state.get("actions", [])],
        validation=Validation.model_validate(state["validation"]) if state.get("validation") else None,
        reason=state.get("reason"),
        llm=usage if usage is not None else ctx.events.llm_usage(state["run_id"]),
    )


def finish(ctx: HealContext, state: dict[str, Any], status: str, usage: LLMUsage | None = None) -> None:
    """Record the run's end in the event store, with its whole answer."""
    state = with_usage(ctx, state) if usage is None else {**state, "llm": usage.model_dump()}
    plan_source = (state.get("plan") or {}).get("source", "none")
    ctx.events.finish_run(
        state["run_id"],
        RunStatus(status),
        persona=state.get("persona"),
        source=plan_source,
        reason=state.get("reason"),
        result=result_of(state),
    )


def with_usage(ctx: HealContext, state: dict[str, Any]) -> dict[str, Any]:
    """The state with the run's LLM use as the event store recorded it, call by call."""
    return {**state, "llm": ctx.events.llm_usage(state["run_id"]).model_dump()}


def recorded_result(detail: RunDetail) -> dict[str, Any]:
    """A run's answer as the event store recorded it at its end, with its status now."""
    return {**(detail.result or {}), "run_id": detail.row.run_id, "status": detail.row.status.value}


def result_of(state: dict[str, Any]) -> dict[str, Any]:
    """The run as the CLI's and the API's JSON answer."""
    plan_dict = state.get("plan") or {}
    usage = state.get("llm") or {}
    validation = state.get("validation") or {"ok": False, "detail": "not validated"}
    result: dict[str, Any] = {
        "run_id": state.get("run_id"),
        "status": state.get("status", RunStatus.running.value),
        "persona": state.get("persona"),
        "source": plan_dict.get("source", "none"),
        "actions": [
            {k: a.get(k) for k in ("action", "component", "dry_run", "outcome", "detail")}
            for a in state.get("actions", [])
        ],
        "validation": {"ok": bool(validation.get("ok")), "detail": validation.get("detail", "")},
        "llm": {
            k: int(usage.get(k, 0))
            for k in ("calls", "prompt_tokens", "completion_tokens", "unknown_usage_calls")
        },
        "reason": state.get("reason"),
        "fingerprint": (state.get("gap") or {}).get("fingerprint"),
        "component": (state.get("gap") or {}).get("component"),
        "diagnosis": state.get("diagnosis"),
        "plan": state.get("plan"),
        "factory": state.get("factory"),
    }
    return result
