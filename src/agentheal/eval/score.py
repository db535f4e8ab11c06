"""Scoring a drill: each fault stage by stage, wrong actions, and the scenario's line in the report.

A fault is *healed* when a run ended healed after acting on a component the fault's heal needs,
the estate's own probes and facts then show the fault gone, and that run ended within
`heal_within_s` of the injection. Its stages: detected (a gap opened on the component or where
the symptom shows), routed (the run's persona is one the fault expects), root cause named (the
diagnosis names the fault's component), fixed (its remediations on that component ran without a
failed step), validated (the run's checks passed and the fault is verifiably gone).

A remediation is *wrong* when it acts on a component no fault of the scenario needs, matches the
scenario's `expect.forbid`, or runs at all in a control scenario.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentheal.estate.actions import REMEDIATIONS
from agentheal.eval.drill import Drill, Track, short, targets_of
from agentheal.eval.results import RunSummary, ScenarioResult, Stages

if TYPE_CHECKING:
    from agentheal.eval.scenario import Scenario
    from agentheal.events import RunDetail

_UNFINISHED = ("running", "awaiting_approval", "awaiting_remote")


def summarize(run: RunDetail, t0: float) -> RunSummary:
    """A run as the report shows it."""
    result = run.result or {}
    ran = [a for a in run.actions if not a.result.dry_run and a.result.outcome in ("ok", "failed")]
    # A start that failed only its probes while a dependency was down is left by the run to its
    # validation, which waits for the dependency (graphs/validation.py): not a failed step of the plan.
    deferred = {str(e.data["deferred"]) for e in run.timeline if e.node == "execute" and "deferred" in e.data}
    validation = result.get("validation") or {}
    diagnosis = result.get("diagnosis") or {}
    finished = run.row.finished_at
    return RunSummary(
        run_id=run.row.run_id,
        component=run.row.component,
        gap=run.row.gap_text,
        status=run.row.status.value,
        persona=run.row.persona,
        source=run.row.source,
        remediations=[short(a.step.action, a.step.component) for a in ran if a.step.action in REMEDIATIONS],
        observations=[
            short(a.step.action, a.step.component) for a in ran if a.step.action not in REMEDIATIONS
        ],
        failed_steps=[
            short(a.step.action, a.step.component)
            for a in ran
            if a.result.outcome == "failed" and a.step.signature() not in deferred
        ],
        diagnosis_component=diagnosis.get("component"),
        validated=bool(validation.get("ok")),
        validation=validation.get("detail"),
        reason=run.row.reason,
        llm_calls=run.totals.llm.calls,
        llm_tokens=run.totals.llm.prompt_tokens + run.totals.llm.completion_tokens,
        started_s=round(run.row.started_at.timestamp() - t0, 2),
        finished_s=round(finished.timestamp() - t0, 2) if finished else None,
    )


def _relevant(drill: Drill, track: Track) -> RunDetail | None:
    """The run that healed the fault, else the last run about it (on its component, where its
    symptom shows, or on a component its heal needs) started after the injection."""
    assert track.record is not None and track.injected_at is not None
    if track.healed_by is not None:
        return next((r for r in drill.runs if r.row.run_id == track.healed_by), None)
    where = {track.record.component, track.record.gap_component} | targets_of(track.record)
    about = [
        r
        for r in drill.runs
        if r.row.component in where and r.row.started_at.timestamp() >= track.injected_at - 0.5
    ]
    return about[-1] if about else None


def score_fault(drill: Drill, track: Track) -> None:
    """Fill the fault's outcome: healed or not (with the reason), times and stages."""
    out, record, e = track.outcome, track.record, drill.expect
    if record is None or track.injected_at is None:
        out.reason = out.reason or "not injected"
        return
    run = _relevant(drill, track)
    stages = Stages(detected=out.detected)
    if run is not None:
        s = summarize(run, drill.t0)
        targets = targets_of(record)
        on_target = [r for r in s.remediations if r[r.index("(") + 1 : -1] in targets]
        stages.routed = s.persona is not None and s.persona in out.expected_personas
        stages.root_cause = s.diagnosis_component == record.component
        stages.fixed = bool(on_target) and not [f for f in s.failed_steps if f in on_target]
        out.run_id, out.persona, out.diagnosis_component = s.run_id, s.persona, s.diagnosis_component
        out.actions, out.validation = s.remediations, s.validation
    took = None if track.healed_at is None else track.healed_at - track.injected_at
    in_time = took is not None and took <= e.heal_within_s
    stages.validated = in_time and run is not None and summarize(run, drill.t0).validated
    out.healed = stages.validated
    out.time_to_heal_s = round(took, 2) if took is not None else None
    out.stages = stages
    if out.healed:
        out.reason = None
        return
    if not out.detected:
        out.reason = f"not detected within {e.detect_within_s:g} s"
    elif took is not None:
        out.reason = f"healed in {took:.1f} s, after the {e.heal_within_s:g} s expected"
    elif track.unverified is not None:
        out.reason = f"a run reported healed, but the fault still shows: {track.unverified}"
    elif run is None:
        out.reason = f"detected, but no heal acted on {record.component} within {e.heal_within_s:g} s"
    elif run.row.status.value in _UNFINISHED:
        out.reason = f"{run.row.status.value} at the deadline ({e.heal_within_s:g} s): {run.row.reason or ''}"
    else:
        out.reason = f"{run.row.status.value}: {run.row.reason or 'no reason recorded'}"
        s = summarize(run, drill.t0)
        if s.failed_steps and s.validation:
            first = s.validation.splitlines()[0]
            out.reason += f" (before that, {s.failed_steps[0]} failed: {first[:200]})"
    if track.at_end is not None:
        out.reason += f"; {track.at_end}"


def score(drill: Drill, scenario: Scenario, file: str = "") -> ScenarioResult:
    """The scenario's result from a finished drill."""
    for track in drill.tracks:
        score_fault(drill, track)
    runs = [summarize(r, drill.t0) for r in drill.runs]
    # A fault whose injection failed part-way may still have broken its component: acting there is no
    # wrong action, acting anywhere else is.
    needed = set().union(*(targets_of(t.record) if t.record else {t.step.component} for t in drill.tracks))
    actions: list[str] = []
    wrong: list[str] = []
    for run in runs:
        for action in run.remediations:
            actions.append(action)
            component = action[action.index("(") + 1 : -1]
            if scenario.control:
                wrong.append(f"{action}: a control scenario needs no remediation (run {run.run_id[:12]})")
            elif scenario.forbidden(action):
                wrong.append(f"{action}: forbidden by the scenario (run {run.run_id[:12]})")
            elif component not in needed:
                wrong.append(
                    f"{action}: no fault of the scenario is healed on {component} (run {run.run_id[:12]})"
                )
    gaps = [g for g in drill.observer.gaps if g.at >= drill.t0]
    faults = [t.outcome for t in drill.tracks]
    llm_calls = sum(r.llm_calls for r in runs)
    llm_tokens = sum(r.llm_tokens for r in runs)
    common = {
        "name": scenario.name,
        "description": scenario.description,
        "file": file,
        "wrong_actions": len(wrong),
        "wrong": wrong,
        "actions": actions,
        "observations": sum(len(r.observations) for r in runs),
        "llm_calls": llm_calls,
        "llm_tokens": llm_tokens,
        "faults": faults,
        "runs": runs,
        "gaps": [f"{g.at - drill.t0:6.2f} s {g.component or '-'}: {g.text}" for g in gaps],
        "operator": drill.operator_done,
        "load": drill.load_report,
        "duration_s": round(drill.ended_at - drill.t0, 1),
    }
    if scenario.control:
        clean = not actions
        return ScenarioResult(
            kind="control",
            detected=bool(gaps),
            time_to_detect_s=None,
            healed=clean,
            time_to_heal_s=None,
            reason=None if clean else "false remediation: " + "; ".join(wrong),
            stages=Stages(),
            false_alarms=len(gaps),
            **common,
        )
    detected = all(f.detected for f in faults)
    healed = all(f.healed for f in faults)  # wrong actions are counted apart, not held against the heal
    if len(faults) == 1:
        reason = faults[0].reason
    else:
        reason = "; ".join(f"{f.fault}({f.component}): {f.reason}" for f in faults if not f.healed) or None
    stages = Stages(**{k: all(getattr(f.stages, k) for f in faults) for k in Stages.model_fields})
    return ScenarioResult(
        kind="fault",
        detected=detected,
        time_to_detect_s=max(f.time_to_detect_s or 0.0 for f in faults) if detected else None,
        healed=healed,
        time_to_heal_s=max(f.time_to_heal_s or 0.0 for f in faults) if healed else None,
        reason=None if healed else reason,
        stages=stages,
        **common,
    )
