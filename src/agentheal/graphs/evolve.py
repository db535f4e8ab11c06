"""The evolve graph: recurring patterns → typed proposals → policy → versioned changes → validated
by replay (or a trial) → kept or reverted.

decide    evolutions on a 24-hour trial (those no replay could validate) whose trial has run its
          course are judged from the event store: the trial against the same length before it;
patterns  recurring fingerprints (healed again and again), escalation patterns (a persona escalating
          one fingerprint more than once), actions that failed again and again on one component,
          from the runs of the window;
propose   one typed proposal per pattern: `schedule_action` (a maintenance action the pattern's
          heals used, such as rotate_logs or clean_dir, on a schedule), `add_check` (a preventive
          check for detection), `persona_lesson` (a new version of the persona's file),
          `tighten_policy` (a lower rate limit for a failing action: a new version of the policy
          file), `create_agent` (a persona the agent factory designs for escalations no persona
          handles);
guard     kinds that add a check, a schedule, a lesson or an agent, or tighten the policy, run
          unattended; loosening the policy never does (it waits for a person); a pattern with an
          evolution already on trial or kept gets no second one;
apply     each as a versioned change under the home folder (`agentheal evolutions revert ID`);
validate  each applied evolution whose pattern can be replayed is validated at once by replaying the
          history it concerns on two copies of the estate, before and after the change
          (`agentheal.evolve.replay`); the others stay on trial for `decide`.

Kept when the pattern's reports fell, the resolution rate did not drop and the median time to heal
did not rise (`agentheal.evolve.judge`); otherwise reverted, the changed file back to its previous
version byte for byte. The outcome and the figures it was judged on are recorded.
"""

from __future__ import annotations

import itertools
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import sqlalchemy as sa

from agentheal.event_schema import ACTIONS, RUNS
from agentheal.evolve.judge import judge, stats
from agentheal.graphs import evolve_changes as changes
from agentheal.metrics import records
from agentheal.metrics.figures import Window
from agentheal.models import RunStatus

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from agentheal.events import EventStore

NODE_NAMES = ("decide", "patterns", "propose", "guard", "apply", "validate")
UNATTENDED = frozenset({"schedule_action", "add_check", "persona_lesson", "tighten_policy", "create_agent"})
SCHEDULABLE = frozenset({"rotate_logs", "clean_dir"})


class EvolveState(TypedDict, total=False):
    decided: list[dict[str, Any]]
    patterns: list[dict[str, Any]]
    proposals: list[dict[str, Any]]
    allowed: list[dict[str, Any]]
    applied: list[dict[str, Any]]
    validated: list[dict[str, Any]]


@dataclass
class EvolveJob:
    """What the nodes read and change: the event store, the home folder, the clock and the rules."""

    events: EventStore
    home: Path
    now: datetime
    dry_run: bool = False
    window: timedelta = timedelta(days=7)
    trial: timedelta = timedelta(hours=24)
    min_repeats: int = 3
    min_failures: int = 2
    min_every_s: float = 60.0  # the shortest interval a maintenance schedule gets
    probe_interval_s: float = 5.0  # detection's probe interval (DetectConfig.interval_s): a check halves it
    min_probe_s: float = 1.0  # the shortest probe interval a check asks for
    estate_file: Path | None = None  # the estate the history was recorded on: replays run on a copy
    policy_file: Path | None = None  # the policy in use: carried into replays, tightened under the home
    replay: bool = True
    say: Callable[[str], None] = field(default=lambda line: None)
    notes: list[str] = field(default_factory=list)


def _patterns(job: EvolveJob) -> list[dict[str, Any]]:
    w = Window(job.now - job.window, job.now)
    n = sa.func.count().label("n")
    recurring = job.events.query(
        sa.select(RUNS.c.fingerprint, sa.func.max(RUNS.c.component).label("component"),
                  sa.func.max(RUNS.c.gap_text).label("text"), n)
        .where(RUNS.c.status == RunStatus.healed.value, *w.within(RUNS.c.started_at))
        .group_by(RUNS.c.fingerprint).having(sa.func.count() >= job.min_repeats).order_by(n.desc())
    )  # fmt: skip
    out = []
    for r in recurring:
        times = job.events.query(
            sa.select(RUNS.c.started_at)
            .where(RUNS.c.fingerprint == r["fingerprint"], *w.within(RUNS.c.started_at))
            .order_by(RUNS.c.started_at)
        )  # fmt: skip
        gaps = [(b["started_at"] - a["started_at"]).total_seconds() for a, b in itertools.pairwise(times)]
        used = job.events.query(
            sa.select(ACTIONS.c.action, ACTIONS.c.step, sa.func.count().label("n"))
            .select_from(ACTIONS.join(RUNS, RUNS.c.run_id == ACTIONS.c.run_id))
            .where(RUNS.c.fingerprint == r["fingerprint"], ACTIONS.c.dry_run.is_(False),
                   ACTIONS.c.outcome == "ok")
            .group_by(ACTIONS.c.action).order_by(sa.func.count().desc()).limit(1)
        )  # fmt: skip
        out.append({"type": "recurring", "fingerprint": r["fingerprint"], "component": r["component"],
                    "text": r["text"], "heals": int(r["n"]),
                    "median_interval_s": statistics.median(gaps) if gaps else None,
                    "action": used[0]["action"] if used else None,
                    "step": used[0]["step"] if used else None})  # fmt: skip
    escalated = job.events.query(
        sa.select(RUNS.c.fingerprint, RUNS.c.persona, sa.func.max(RUNS.c.gap_text).label("text"),
                  sa.func.max(RUNS.c.reason).label("reason"), n)
        .where(RUNS.c.status == RunStatus.escalated.value, RUNS.c.persona.is_not(None),
               *w.within(RUNS.c.started_at))
        .group_by(RUNS.c.fingerprint, RUNS.c.persona).having(sa.func.count() >= 2).order_by(n.desc())
    )  # fmt: skip
    for r in escalated:
        out.append({"type": "escalation", "fingerprint": r["fingerprint"], "persona": r["persona"],
                    "text": r["text"], "reason": r["reason"] or "", "escalations": int(r["n"])})  # fmt: skip
    from agentheal.evolve.proposals import failing_actions

    return out + failing_actions(job)


def _proposal(job: EvolveJob, p: dict[str, Any]) -> dict[str, Any] | None:
    evolution = job.home / "evolution"
    if p["type"] == "recurring" and p["component"]:
        every = max(job.min_every_s, (p["median_interval_s"] or 3600.0) / 2)
        why = f"{p['text'][:120]!r} healed {p['heals']} times in {job.window.days} days"
        if p["action"] in SCHEDULABLE:
            args = (p["step"] or {}).get("args", {})
            entry = {
                "component": p["component"],
                "action": p["action"],
                "args": args,
                "every_s": every,
                "why": why,
            }
            return {"kind": "schedule_action", "target": str(evolution / "schedule.yaml"), "entry": entry,
                    "fingerprint": p["fingerprint"]}  # fmt: skip
        # a fault no maintenance action heads off is caught sooner: its component probed twice as often
        probe = max(job.min_probe_s, job.probe_interval_s / 2)
        entry = {"component": p["component"], "check": "probes", "every_s": probe, "why": why,
                 "after": p["action"]}  # fmt: skip
        return {"kind": "add_check", "target": str(evolution / "checks.yaml"), "entry": entry,
                "fingerprint": p["fingerprint"]}  # fmt: skip
    if p["type"] == "escalation":
        lesson = (f"{p['text'][:160]!r} escalated {p['escalations']} times"
                  f"{': ' + p['reason'][:200] if p['reason'] else ''}; hand it over sooner")  # fmt: skip
        return {"kind": "persona_lesson", "target": str(job.home / "personas" / f"{p['persona']}.md"),
                "persona": p["persona"], "lesson": lesson, "fingerprint": p["fingerprint"]}  # fmt: skip
    if p["type"] == "failing":
        from agentheal.evolve.proposals import tighten_policy

        return tighten_policy(job, p)
    return None


def _content(job: EvolveJob, proposal: dict[str, Any]) -> bytes:
    target = Path(proposal["target"])
    if proposal["kind"] == "persona_lesson":
        from agentheal.config import package_data

        source = target if target.is_file() else package_data("personas") / f"{proposal['persona']}.md"
        return changes.persona_with_lesson(source, proposal["lesson"])
    if proposal["kind"] == "tighten_policy":
        from agentheal.evolve.proposals import tightened

        return tightened(job, proposal["entry"])
    if proposal["kind"] == "create_agent":
        return str(proposal["text"]).encode("utf-8")
    key = "schedule" if proposal["kind"] == "schedule_action" else "checks"
    return changes.yaml_list_with(target, key, proposal["entry"])


def _decide(job: EvolveJob) -> list[dict[str, Any]]:
    decided = []
    for row in records.evolutions(job.events, limit=10_000):
        applied_at = row["created_at"]
        if row["status"] != "applied" or applied_at + job.trial > job.now:
            continue
        before = stats(job.events, row["fingerprint"], Window(applied_at - job.trial, applied_at))
        after = stats(job.events, row["fingerprint"], Window(applied_at, applied_at + job.trial))
        keep, why = judge(before, after, row["kind"])
        decided.append(_outcome(job, row, keep, why, {"before": before, "after": after}))
    return decided


def _outcome(
    job: EvolveJob, row: dict[str, Any], keep: bool, why: str, figures: dict[str, Any]
) -> dict[str, Any]:
    """Record a verdict: kept, or reverted with the file back to its previous version."""
    data = dict(row["data"]) | figures
    if not keep:
        data["revert"] = changes.revert_change(job.home, row["id"])
    status = "kept" if keep else "reverted"
    records.save_evolution(job.events, dict(row) | {"status": status, "decided_at": job.now, "reason": why,
                                                    "data": data})  # fmt: skip
    return {"id": row["id"], "kind": row["kind"], "status": status, "reason": why}


def apply_one(job: EvolveJob, p: dict[str, Any]) -> dict[str, Any]:
    """Apply one proposal as a versioned change (or record it only, in a dry run); what was done."""
    evolution_id = "ev-" + uuid.uuid4().hex[:10]
    row = {"id": evolution_id, "kind": p["kind"], "target": p["target"], "fingerprint": p["fingerprint"],
           "created_at": job.now, "decided_at": None, "reason": "", "data": {"proposal": p}}  # fmt: skip
    if job.dry_run:
        records.save_evolution(job.events, row | {"status": "dry_run", "reason": "dry run: nothing changed"})
        return {"id": evolution_id, "kind": p["kind"], "status": "dry_run", "target": p["target"]}
    change = changes.apply_change(job.home, evolution_id, Path(p["target"]), _content(job, p))
    records.save_evolution(job.events, row | {"status": "applied", "reason": "on trial",
                                              "data": {"proposal": p, "change": change}})  # fmt: skip
    return {"id": evolution_id, "kind": p["kind"], "status": "applied", "target": p["target"]}


def validate_one(job: EvolveJob, evolution_id: str) -> dict[str, Any] | None:
    """Validate an applied evolution by replaying the history it concerns, before and after its change,
    and keep or revert it; None when it cannot be replayed (it stays on its 24-hour trial)."""
    from agentheal.evolve import replay

    row = next(r for r in records.evolutions(job.events, limit=10_000) if r["id"] == evolution_id)
    proposal = row["data"]["proposal"]
    if row["kind"] == "add_check":
        # a replay detects at once, on every tick: it cannot show a component caught sooner
        job.notes.append(f"{evolution_id} add_check: judged by its gaps' time to detect on a trial of "
                         f"{job.trial}")  # fmt: skip
        return None
    script = replay.script_for(job.events, job.estate_file, proposal.get("replay_of", row["fingerprint"]),
                               job.now - job.window)  # fmt: skip
    if isinstance(script, str):
        job.notes.append(f"{evolution_id} {row['kind']}: no replay ({script}); on trial for {job.trial}")
        return None
    target = Path(row["target"]).resolve()
    after = replay.home_files(job.home, job.policy_file)
    rel = _home_name(job, target)
    before = dict(after)
    previous = changes.previous_bytes(job.home, evolution_id)
    if previous is None:
        before.pop(rel, None)
    else:
        before[rel] = previous
    try:
        played = replay.replay(script, before, after, say=job.say)
    except replay.ReplayError as exc:
        job.notes.append(f"{evolution_id} {row['kind']}: the replay failed ({exc}); on trial for {job.trial}")
        return None
    keep, why = judge(played["before"], played["after"])
    return _outcome(job, row, keep, f"replay: {why}", {"replay": played})


def _home_name(job: EvolveJob, target: Path) -> str:
    """The name a replay's home gives the changed file (the policy in use is `policy.yaml` there)."""
    if job.policy_file is not None and target == job.policy_file.resolve():
        return "policy.yaml"
    return target.relative_to(job.home.resolve()).as_posix()


def build_evolve_graph(job: EvolveJob | None) -> Any:
    """The graph's nodes and edges (`job` None: the shape alone, for its diagram)."""
    from langgraph.graph import END, START, StateGraph

    def decide(state: EvolveState) -> dict[str, Any]:
        assert job is not None
        return {"decided": _decide(job)}

    def patterns(state: EvolveState) -> dict[str, Any]:
        assert job is not None
        return {"patterns": _patterns(job)}

    def propose(state: EvolveState) -> dict[str, Any]:
        assert job is not None
        from agentheal.evolve.proposals import create_agent

        made = [_proposal(job, p) for p in state.get("patterns", [])]
        return {"proposals": [p for p in made if p is not None] + create_agent(job)}

    def guard(state: EvolveState) -> dict[str, Any]:
        assert job is not None
        # a pattern with an evolution on trial or kept, or reverted within the window, gets no other
        recent = job.now - job.window
        busy = {
            (r["fingerprint"], r["kind"])
            for r in records.evolutions(job.events, limit=10_000)
            if r["status"] in ("applied", "kept") or (r["status"] == "reverted" and r["decided_at"] >= recent)
        }
        allowed = []
        for p in state.get("proposals", []):
            if (p["fingerprint"], p["kind"]) in busy:
                continue
            if p["kind"] not in UNATTENDED:
                job.notes.append(f"{p['kind']} on {p['target']}: needs a person's approval; not applied")
                continue
            allowed.append(p)
        return {"allowed": allowed}

    def apply(state: EvolveState) -> dict[str, Any]:
        assert job is not None
        return {"applied": [apply_one(job, p) for p in state.get("allowed", [])]}

    def validate(state: EvolveState) -> dict[str, Any]:
        assert job is not None
        done = []
        for a in state.get("applied", []):
            if a["status"] == "applied" and job.replay:
                verdict = validate_one(job, a["id"])
                if verdict is not None:
                    done.append(verdict)
        return {"validated": done}

    graph = StateGraph(EvolveState)
    for name, fn in zip(NODE_NAMES, (decide, patterns, propose, guard, apply, validate), strict=True):
        graph.add_node(name, fn)
    graph.add_edge(START, NODE_NAMES[0])
    for a, b in itertools.pairwise(NODE_NAMES):
        graph.add_edge(a, b)
    graph.add_edge(NODE_NAMES[-1], END)
    return graph


def compile_evolve_graph(job: EvolveJob | None) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled evolve graph (no checkpointer: each round reads the store afresh)."""
    compiled: CompiledStateGraph[Any, Any, Any, Any] = build_evolve_graph(job).compile(name="evolve")
    return compiled


def evolve_round(job: EvolveJob) -> dict[str, Any]:
    """One round: judge evolutions whose trial is over, then propose, apply and validate new ones by
    replay. What each step did."""
    state = compile_evolve_graph(job).invoke({})
    keys = ("decided", "patterns", "proposals", "applied", "validated")
    return {k: state.get(k, []) for k in keys} | {"notes": job.notes}


def revert(events: EventStore, home: Path, evolution_id: str, now: datetime) -> dict[str, Any]:
    """Revert an evolution by hand (applied or kept): its file back byte for byte, the outcome recorded."""
    row = next((r for r in records.evolutions(events, limit=10_000) if r["id"] == evolution_id), None)
    if row is None:
        raise LookupError(f"no evolution {evolution_id!r}; `agentheal evolutions list` shows them")
    if row["status"] not in ("applied", "kept"):
        raise changes.ChangeError(f"evolution {evolution_id} is {row['status']}: nothing to revert")
    done = changes.revert_change(home, evolution_id)
    data = dict(row["data"]) | {"revert": done}
    outcome = {"status": "reverted", "decided_at": now, "reason": "reverted by hand", "data": data}
    records.save_evolution(events, dict(row) | outcome)
    return done


__all__ = [
    "EvolveJob",
    "apply_one",
    "compile_evolve_graph",
    "evolve_round",
    "judge",
    "revert",
    "validate_one",
]
