"""Proving a fix: the plan's checks, and waiting for a dependency that is down before judging them.

A component whose dependency is down fails its probes whatever its own run did (the api's health
check calls inventory). Failing its run then says nothing about its plan, and pages a person about
the wrong component. So when a check fails while a component it depends on is down, the run waits
for that dependency to be healthy again — healed by its own run, which the watch lets start while
this one waits (`awaited_by`) — and then checks again. Only a dependency still down
past `validate_dependency_wait_s` ends the run, escalated with the dependency named.

The wait holds nothing a restart would lose: it is part of `validate`, which a resumed run runs
again from its checkpoint, so a run resumed mid-wait checks, finds the dependency down, and waits
again (with a fresh bound: the first process's wait may have ended long ago).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentheal.graphs.context import HealContext
from agentheal.models import Check, Plan, Validation

# Actions whose own outcome includes the component passing its probes after it starts: a failure
# of theirs while a dependency is down is that dependency's doing as much as the action's.
STARTING_ACTIONS = frozenset({"start", "restart", "scale"})
_POLL_S = 0.05
_DEPENDENCY_POLL_S = 0.5

# (estate file, component) -> the dependencies its run waits for now. Process-wide, not per heal
# context: `serve --watch` heals through its pool's context, not the watch's own. A run driven by
# another worker process (PostgreSQL) is not seen here: the watch then holds the dependency's heal
# until that run's wait ends, and re-checks the dependent once the dependency is healed.
_AWAITED: dict[tuple[str, str], frozenset[str]] = {}
_AWAITED_LOCK = threading.Lock()


def _key(estate_path: Path | None, component: str) -> tuple[str, str]:
    return (str(estate_path.resolve()) if estate_path is not None else "", component)


def awaited_by(estate_path: Path | None, component: str) -> frozenset[str]:
    """The dependencies that a run of `component` (on that estate) is waiting for right now."""
    with _AWAITED_LOCK:
        return _AWAITED.get(_key(estate_path, component), frozenset())


@dataclass
class Checked:
    """The plan's checks once: ok, the detail of each, and the components whose check failed."""

    ok: bool
    details: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)

    @property
    def detail(self) -> str:
        return "; ".join(self.details) or "no checks"


def ancestors(ctx: HealContext, component: str) -> list[str]:
    """What `component` depends on, directly or through others, nearest first."""
    assert ctx.estate is not None
    found: list[str] = []
    todo = list(ctx.estate.components[component].depends_on)
    while todo:
        name = todo.pop(0)
        if name not in found and name != component:
            found.append(name)
            todo += ctx.estate.components[name].depends_on
    return found


def down_dependencies(ctx: HealContext, component: str, acted_on: set[str]) -> dict[str, str]:
    """The dependencies of `component` that are unhealthy now, each with its health's detail.

    A dependency the run's own plan acted on is left out: its staying down is that plan's
    failure, judged as such, not something to wait for. A dependency that was already down when
    the run began is waited for like one that went down during it: an SRE healing the api does not
    page anyone about the api because inventory is down — inventory has its own gap and its own
    run, which heals it or escalates it under its own name — so the api's run waits for it, and
    its validation then says what it can: whether the api's fix holds once inventory answers.
    """
    assert ctx.backend is not None
    down = {}
    for dep in ancestors(ctx, component):
        if dep in acted_on:
            continue
        health = ctx.backend.health(dep)
        if not health.healthy:
            down[dep] = health.detail
    return down


def run_checks(ctx: HealContext, checks: list[Check], acted_on: set[str]) -> Checked:
    """Each check after its settle time, polled until it passes or its deadline; a failing check
    stops polling early once a dependency of its component is seen down (waiting is the caller's)."""
    assert ctx.backend is not None
    out = Checked(ok=True)
    for check in checks:
        time.sleep(check.settle_s)
        now = time.monotonic()
        deadline, look_at = now + check.deadline_s, now
        while True:
            health = ctx.backend.health(check.component)
            passed = health.running if check.kind == "running" else health.healthy
            if passed or time.monotonic() >= deadline:
                break
            if time.monotonic() >= look_at:  # probes of the dependencies cost more than one poll
                if down_dependencies(ctx, check.component, acted_on):
                    break
                look_at = time.monotonic() + 1.0
            time.sleep(_POLL_S)
        out.details.append(f"{check.component}: {'ok' if passed else 'FAILED'} {health.detail}".strip())
        if not passed:
            out.ok = False
            out.failing.append(check.component)
    return out


def wait_for_dependencies(
    ctx: HealContext, state: dict[str, Any], failing: list[str], down: dict[str, str], bound_s: float
) -> tuple[list[str], float]:
    """Wait until every dependency in `down` is healthy again, at most `bound_s`; (still down, waited s).

    Each dependency is named in the run's story as the wait begins and ends, so it is seen live.
    """
    assert ctx.backend is not None
    subject, names = ", ".join(failing), ", ".join(down)
    before = {f["component"] for f in state.get("facts", []) if f["name"] == "dependency_down"}
    why = "; ".join(
        f"{d} {'down since before this run' if d in before else 'went down during this run'}: {detail}"
        for d, detail in down.items()
    )
    ctx.say(
        state["run_id"],
        "validate",
        f"{subject} fails its checks while {names}, which it depends on, is down ({why}): "
        f"waiting for dependency {names} to be healthy again (up to {bound_s:g} s) before judging the fix",
        {"waiting_for": list(down), "bound_s": bound_s},
    )
    began = time.monotonic()
    pending = list(down)
    gap_component = (state.get("gap") or {}).get("component")
    keys = [_key(ctx.estate_path, c) for c in {*failing, *([gap_component] if gap_component else [])}]
    with _AWAITED_LOCK:  # the watch may now heal these beside this run, which acts no more
        _AWAITED.update({k: frozenset(down) for k in keys})
    try:
        while True:
            pending = [d for d in pending if not ctx.backend.health(d).healthy]
            if not pending or time.monotonic() - began >= bound_s:
                break
            time.sleep(_DEPENDENCY_POLL_S)
    finally:
        with _AWAITED_LOCK:
            for k in keys:
                _AWAITED.pop(k, None)
    waited = time.monotonic() - began
    back = [d for d in down if d not in pending]
    if back:
        ctx.say(
            state["run_id"],
            "validate",
            f"dependency {', '.join(back)} healthy again after {waited:.1f} s: checking {subject} again",
            {"dependency_back": back, "waited_s": round(waited, 1)},
        )
    return pending, waited


def validate_plan(state: dict[str, Any], ctx: HealContext) -> dict[str, Any]:
    """The `validate` node's work: the checks, waiting for a dependency that is down, the next hop."""
    chosen = Plan.model_validate(state["plan"])
    run_id = state["run_id"]
    acted_on = {s.component for s in chosen.steps}
    checked = run_checks(ctx, chosen.checks, acted_on)
    prefix = ""
    if not checked.ok:
        down: dict[str, str] = {}
        for component in checked.failing:
            down.update(down_dependencies(ctx, component, acted_on))
        if down:
            bound = ctx.settings.validate_dependency_wait_s
            subject = ", ".join(checked.failing)
            still, waited = wait_for_dependencies(ctx, state, checked.failing, down, bound)
            if still:
                names = ", ".join(still)
                reason = (
                    f"{subject} could not be validated: dependency {names} stayed down for the "
                    f"{waited:.0f} s waited (validate_dependency_wait_s {bound:g}); its own gap is "
                    f"the one to heal; last check: {checked.detail}"
                )
                validation = Validation(ok=False, detail=reason)
                ctx.say(run_id, "validate", reason, {"ok": False, "dependency_down": still})
                return {"validation": validation.model_dump(), "reason": reason, "next": "escalate"}
            checked = run_checks(ctx, chosen.checks, acted_on)
            prefix = f"after waiting {waited:.1f} s for dependency {', '.join(down)}: "
    validation = Validation(ok=checked.ok, detail=prefix + checked.detail)
    ctx.say(run_id, "validate", validation.detail, {"ok": checked.ok})
    return {"validation": validation.model_dump(), "next": "learn"}


def deferred_to_validation(ctx: HealContext, component: str, action: str, acted_on: set[str]) -> list[str]:
    """The dependencies that explain a failed step, if its failure is only its component's probes
    failing after a start while they are down: then validation judges the fix once they are back."""
    assert ctx.backend is not None
    if action not in STARTING_ACTIONS or not ctx.backend.health(component).running:
        return []
    return list(down_dependencies(ctx, component, acted_on))
