"""The prevent graph: trends → predicted breaches → preventive measures → the follow-up.

forecast   fit each level series with a limit (detection's Theil–Sen forecast); a series heading
           over its limit within the horizon is recorded as a prediction, with its time and
           confidence (one pending prediction per series);
design     for a prediction due within the lead time whose trend still holds now, a preventive
           step: `clean_dir` for a data folder, `restart` for memory; other series get none. The
           maintenance actions the evolve graph scheduled (`evolution/schedule.yaml` under the
           home folder) join them when due (their last runs: `evolution/schedule-state.json`);
guard      the policy checks it like any plan; what needs approval or is refused is not acted on;
apply      the step runs on the estate ahead of the breach, and the measure is recorded;
follow_up  at the predicted time: is the series over its limit? breached; if not, avoided when
           acted on, or a false prediction when not (the trend flattened by itself). A series over
           its limit that no prediction announced is recorded as missed.

The outcomes feed prevention effectiveness and prediction precision and recall (`agentheal status`).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from agentheal.metrics import records

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from agentheal.detect.config import DetectConfig
    from agentheal.detect.predict import Sample
    from agentheal.estate.local import LocalBackend
    from agentheal.events import EventStore
    from agentheal.policy import Policy

NODE_NAMES = ("forecast", "design", "guard", "apply", "follow_up")
_MB = 1024 * 1024


class PreventState(TypedDict, total=False):
    now: float
    dry_run: bool
    predicted: list[dict[str, Any]]
    designed: list[dict[str, Any]]
    allowed: list[dict[str, Any]]
    applied: list[dict[str, Any]]
    followed: list[dict[str, Any]]


@dataclass
class PreventJob:
    """What the nodes act through: the event store, the trend samples, the estate and the policy."""

    events: EventStore
    config: DetectConfig
    samples: dict[str, list[Sample]]
    backend: LocalBackend | None = None
    policy: Policy | None = None
    lead_s: float | None = None  # act when the breach is due within this (default: half the horizon)
    home: Path | None = None  # where the evolve graph's maintenance schedule lives (evolution/schedule.yaml)
    notes: list[str] = field(default_factory=list)

    @property
    def lead(self) -> float:
        return self.lead_s if self.lead_s is not None else self.config.horizon_s / 2

    def level_now(self, series: str) -> float | None:
        """The series' value now: a data folder is measured on disk, anything else is its last sample."""
        samples = self.samples.get(series) or []
        if self.backend is not None and ":data:" in series:
            folder = self.backend.estate.path(series.split(":data:", 1)[1])
            from agentheal.estate import files

            return files.folder_size(folder) / _MB if folder.is_dir() else 0.0
        return samples[-1].value if samples else None


def _iso(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _forecast(job: PreventJob, series: str, now: float) -> Any:
    from agentheal.detect.predict import forecast

    samples = job.samples.get(series) or []
    last = samples[-1] if samples else None
    if last is None or last.limit is None or last.kind != "level" or last.value >= last.limit:
        return None
    if len(samples) < job.config.trend_min_samples:
        return None
    found = forecast([s.at for s in samples], [s.value for s in samples], last.limit, now)
    if found is None or not 0 < found.seconds_left <= job.config.horizon_s:
        return None
    return found if found.confidence >= job.config.trend_min_confidence else None


def _step_for(job: PreventJob, series: str, component: str | None) -> dict[str, Any] | None:
    if component is None:
        return None
    if ":data:" in series:
        path = series.split(":data:", 1)[1]
        return {"action": "clean_dir", "component": component, "args": {"path": path},
                "why": f"{path} is heading over its budget"}  # fmt: skip
    if series.endswith(":memory"):
        return {"action": "restart", "component": component, "args": {},
                "why": "memory is heading over its budget"}  # fmt: skip
    return None


def build_prevent_graph(job: PreventJob | None) -> Any:
    """The graph's nodes and edges (`job` None: the shape alone, for its diagram)."""
    from langgraph.graph import END, START, StateGraph

    def forecast(state: PreventState) -> dict[str, Any]:
        assert job is not None
        now = state["now"]
        pending = {p["series"] for p in records.pending_predictions(job.events)}
        made = []
        for series in sorted(job.samples):
            found = None if series in pending else _forecast(job, series, now)
            if found is None:
                continue
            last = job.samples[series][-1]
            what = f"{last.component or 'estate'} {last.what or series}"
            text = f"{what} will exceed its {last.limit:g} {last.unit} limit"
            pid = records.record_prediction(
                job.events, series=series, component=last.component, text=text.strip(),
                expected_at=_iso(found.expected_at), confidence=found.confidence, limit=last.limit,
                made_at=_iso(now), data={"level_now": found.level_now, "slope_per_s": found.slope},
            )  # fmt: skip
            made.append({"id": pid, "series": series, "expected_in_s": round(found.seconds_left, 1),
                         "confidence": found.confidence})  # fmt: skip
        return {"predicted": made}

    def design(state: PreventState) -> dict[str, Any]:
        assert job is not None
        now = state["now"]
        out = []
        for p in records.pending_predictions(job.events):
            due = p["expected_at"].timestamp() - now if p["expected_at"] else None
            if p["acted"] or due is None or due > job.lead or due <= 0:
                continue
            if _forecast(job, p["series"], now) is None:
                continue  # the trend no longer points at a breach: watch it, do nothing
            step = _step_for(job, p["series"], p["component"])
            if step is None:
                job.notes.append(
                    f"prediction {p['id']} ({p['series']}): no preventive action for this series"
                )
                continue
            out.append({"prediction": p["id"], "what": f"prediction {p['id']}", "step": step})
        out += _scheduled_due(job, now)
        return {"designed": out}

    def guard(state: PreventState) -> dict[str, Any]:
        assert job is not None
        from agentheal.models import Plan, Step
        from agentheal.policy import Policy, evaluate

        allowed = []
        for d in state.get("designed", []):
            if job.backend is None:
                job.notes.append(f"{d['what']}: no estate to act on")
                continue
            plan = Plan(hypothesis="prevent a predicted breach", steps=[Step(**d["step"])])
            verdict = evaluate(
                job.policy or Policy(), plan, job.backend.estate, None, job.events.count_actions
            )
            if verdict.allowed and not verdict.needs_approval:
                allowed.append(d)
            else:
                why = "; ".join(verdict.violations + verdict.approvals) or "not allowed"
                job.notes.append(f"{d['what']}: not acted on: {why}")
        return {"allowed": allowed}

    def apply(state: PreventState) -> dict[str, Any]:
        assert job is not None
        from agentheal.models import Step

        applied = []
        for d in state.get("allowed", []):
            assert job.backend is not None
            result = job.backend.execute(Step(**d["step"]), dry_run=state.get("dry_run", False))
            done = {"prediction": d.get("prediction"), "scheduled": d.get("scheduled"), "step": d["step"],
                    "outcome": result.outcome, "detail": result.detail,
                    "at": _iso(state["now"]).isoformat()}  # fmt: skip
            if result.outcome == "ok" and d.get("prediction") is not None:
                records.record_measure(job.events, d["prediction"], done)
            if d.get("scheduled") is not None and not state.get("dry_run", False):
                _mark_run(job, d["scheduled"], state["now"])
            applied.append(done)
        return {"applied": applied}

    def follow_up(state: PreventState) -> dict[str, Any]:
        assert job is not None
        now = state["now"]
        followed = []
        for p in records.pending_predictions(job.events):
            if p["expected_at"] is None or p["expected_at"].timestamp() > now:
                continue
            level = job.level_now(p["series"])
            if level is None:
                continue
            if p["limit"] is not None and level >= p["limit"]:
                outcome = "breached"
            else:
                outcome = "avoided" if p["acted"] else "false"
            records.record_outcome(job.events, p["id"], outcome, at=_iso(now), level_at_follow_up=level)
            followed.append(
                {"prediction": p["id"], "series": p["series"], "outcome": outcome, "level": level}
            )
        followed += _missed(job, now)
        return {"followed": followed}

    graph = StateGraph(PreventState)
    for name, fn in zip(NODE_NAMES, (forecast, design, guard, apply, follow_up), strict=True):
        graph.add_node(name, fn)
    graph.add_edge(START, "forecast")
    for a, b in itertools.pairwise(NODE_NAMES):
        graph.add_edge(a, b)
    graph.add_edge("follow_up", END)
    return graph


def _missed(job: PreventJob, now: float) -> list[dict[str, Any]]:
    """Series over their limit now with no prediction for them since their last sample under it."""
    import sqlalchemy as sa

    out = []
    for series, samples in sorted(job.samples.items()):
        last = samples[-1] if samples else None
        if last is None or last.limit is None or last.kind != "level":
            continue
        level = job.level_now(series)
        if level is None or level < last.limit:
            continue
        # the crossing: the first sample over the limit after the last one under it; a prediction
        # counts when it was made within the horizon before it (a missed row, after it)
        under = [i for i, s in enumerate(samples) if s.value < last.limit]
        crossed = samples[under[-1] + 1].at if under and under[-1] + 1 < len(samples) else samples[0].at
        since = _iso(crossed - job.config.horizon_s)
        p = records.PREDICTIONS
        seen = job.events.query(
            sa.select(sa.func.count().label("n")).where(p.c.series == series, p.c.made_at >= since)
        )[0]["n"]
        if not seen:
            text = f"{series} over its limit with no prediction"
            records.record_missed(
                job.events, series=series, component=last.component, text=text, at=_iso(now)
            )
            out.append({"series": series, "outcome": "missed", "level": level})
    return out


def _schedule_state(job: PreventJob) -> tuple[Path, dict[str, float]]:
    assert job.home is not None
    path = job.home / "evolution" / "schedule-state.json"
    try:
        return path, {str(k): float(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except FileNotFoundError:
        return path, {}
    except (OSError, ValueError, AttributeError) as exc:
        job.notes.append(f"{path}: unreadable, every scheduled action counts as due: {exc}")
        return path, {}


def _scheduled_due(job: PreventJob, now: float) -> list[dict[str, Any]]:
    """The maintenance actions the evolve graph scheduled (`evolution/schedule.yaml`) that are due:
    never run, or last run at least `every_s` ago."""
    if job.home is None or not (job.home / "evolution" / "schedule.yaml").is_file():
        return []
    import yaml

    schedule_file = job.home / "evolution" / "schedule.yaml"
    try:
        entries = (yaml.safe_load(schedule_file.read_text(encoding="utf-8")) or {}).get("schedule", [])
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        job.notes.append(f"{schedule_file}: unreadable, no scheduled action runs: {exc}")
        return []
    _, last = _schedule_state(job)
    due = []
    for entry in entries:
        step = {"action": entry["action"], "component": entry["component"], "args": entry.get("args", {}),
                "why": f"scheduled: {entry.get('why', '')}"[:300]}  # fmt: skip
        key = json.dumps([step["action"], step["component"], step["args"]], sort_keys=True)
        if now - last.get(key, float("-inf")) >= float(entry.get("every_s", 3600)):
            due.append(
                {"scheduled": key, "what": f"scheduled {step['action']} on {step['component']}", "step": step}
            )
    return due


def _mark_run(job: PreventJob, key: str, now: float) -> None:
    path, last = _schedule_state(job)
    last[key] = now
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(last, indent=2), encoding="utf-8")
    tmp.replace(path)


def compile_prevent_graph(job: PreventJob | None) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled prevent graph (no checkpointer: a round is short and starts afresh)."""
    compiled: CompiledStateGraph[Any, Any, Any, Any] = build_prevent_graph(job).compile(name="prevent")
    return compiled


def prevent_round(job: PreventJob, now: float, dry_run: bool = False) -> dict[str, Any]:
    """One round: forecast, design, guard, apply, follow up. Returns what each step did."""
    state = compile_prevent_graph(job).invoke({"now": now, "dry_run": dry_run})
    return {k: state.get(k, []) for k in ("predicted", "designed", "allowed", "applied", "followed")} | {
        "notes": list(job.notes)
    }


def load_samples(path: Path, config: DetectConfig) -> tuple[dict[str, list[Sample]], str | None]:
    """The trend samples `agentheal watch` keeps under the home folder (none yet: empty)."""
    from agentheal.detect.predict import TrendBook

    book = TrendBook(config)
    problem = book.load(path)
    return {k: list(v) for k, v in book.series.items()}, problem
