"""The evolve graph over a real event store and home folder: a pattern healed again and again gets a
scheduled maintenance action that is kept when the pattern's reports fall; a persona lesson after
which history gets worse is reverted, the persona file back byte for byte."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from agentheal.cli import main
from agentheal.config import Settings, package_data
from agentheal.event_schema import ACTIONS
from agentheal.events import EventStore
from agentheal.graphs.evolve import EvolveJob, evolve_round, revert
from agentheal.metrics import Window, compute
from agentheal.models import utcnow
from agentheal.policy import load_policy
from test_metrics import History

H, M, S = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
T = utcnow().replace(microsecond=0) - 30 * H  # "now" of the first round; the trial runs 24 hours after it


def _rotate(h: History, run_id: str) -> None:
    step = {"action": "rotate_logs", "component": "web", "args": {"path": "logs/web.log"}, "why": ""}
    h.rows(ACTIONS, {"run_id": run_id, "action": "rotate_logs", "component": "web", "dry_run": False,
                     "outcome": "ok", "step": step, "result": {}, "at": T})  # fmt: skip


def _job(settings: Settings, events: EventStore, now: object, dry_run: bool = False) -> EvolveJob:
    return EvolveJob(events=events, home=settings.home_dir, now=now, dry_run=dry_run)  # type: ignore[arg-type]


def test_a_recurring_pattern_gets_a_schedule_that_is_kept_when_recurrence_falls(settings: Settings) -> None:
    events = EventStore(settings.events_url)
    h = History(events)
    for i in range(4):  # the web log fills the disk every five hours; rotate_logs heals it each time
        h.run(f"L{i}", "LOG", "healed", T - (20 - 5 * i) * H, 30, persona="capacity")
        _rotate(h, f"L{i}")
    assert evolve_round(_job(settings, events, T, dry_run=True))["applied"][0]["status"] == "dry_run"
    assert not (settings.home_dir / "evolution" / "schedule.yaml").exists()

    first = evolve_round(_job(settings, events, T))
    assert [(a["kind"], a["status"]) for a in first["applied"]] == [("schedule_action", "applied")]
    schedule = yaml.safe_load((settings.home_dir / "evolution" / "schedule.yaml").read_text())
    entry = schedule["schedule"][0]
    assert (entry["component"], entry["action"], entry["args"]) == (
        "web",
        "rotate_logs",
        {"path": "logs/web.log"},
    )
    assert entry["every_s"] == pytest.approx(5 * 3600 / 2)
    assert evolve_round(_job(settings, events, T + H))["applied"] == []  # on trial: not proposed twice

    h.run("L9", "LOG", "healed", T + 10 * H, 25, persona="capacity")  # once in the trial, four times before
    second = evolve_round(_job(settings, events, T + 25 * H))
    assert [(d["kind"], d["status"]) for d in second["decided"]] == [("schedule_action", "kept")]
    assert "fell from 4 to 1" in second["decided"][0]["reason"]
    assert (settings.home_dir / "evolution" / "schedule.yaml").exists()
    span = Window(T - 48 * H, T + 26 * H)
    rate = next(f for f in compute(events, span) if f.name == "evolution_success_rate")
    assert (rate.value, rate.n) == (1.0, 1)


def test_a_lesson_that_makes_history_worse_is_reverted_byte_for_byte(settings: Settings) -> None:
    events = EventStore(settings.events_url)
    h = History(events)
    persona = settings.home_dir / "personas" / "availability.md"
    persona.parent.mkdir(parents=True)
    original = (package_data("personas") / "availability.md").read_bytes()
    persona.write_bytes(original)
    h.run("E1", "API", "escalated", T - 10 * H, 40, persona="availability")
    h.run("E2", "API", "escalated", T - 6 * H, 40, persona="availability")
    h.run("K1", "OK", "healed", T - 5 * H, 20, persona="availability")

    first = evolve_round(_job(settings, events, T))
    assert [(a["kind"], a["status"]) for a in first["applied"]] == [("persona_lesson", "applied")]
    changed = persona.read_text()
    assert "version: 2" in changed and "## Lessons" in changed and "escalated 2 times" in changed

    for i in range(3):  # after the lesson: the gap keeps coming back and heals take longer
        h.run(f"E{i + 3}", "API", "escalated", T + (2 + i) * H, 40, persona="availability")
    h.run("K2", "OK", "healed", T + 8 * H, 200, persona="availability")
    second = evolve_round(_job(settings, events, T + 25 * H))
    assert [(d["kind"], d["status"]) for d in second["decided"]] == [("persona_lesson", "reverted")]
    reason = second["decided"][0]["reason"]
    assert "did not fall (2 before, 3 after)" in reason and "time to heal rose" in reason
    assert persona.read_bytes() == original


def test_evolutions_from_the_cli_list_show_and_revert(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    events = EventStore(settings.events_url)
    h = History(events)
    for i in range(3):
        h.run(f"R{i}", "DOWN", "healed", utcnow() - (10 - 3 * i) * H, 10, persona="availability")
    assert main(["evolve", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    (applied,) = done["applied"]
    assert applied["kind"] == "add_check"
    checks = settings.home_dir / "evolution" / "checks.yaml"
    assert checks.exists()
    assert main(["evolutions", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["id"], e["status"]) for e in listed] == [(applied["id"], "applied")]
    assert main(["evolutions", "show", applied["id"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["data"]["proposal"]["entry"]["component"] == "web"
    assert main(["evolutions", "revert", applied["id"]]) == 0
    assert not checks.exists()  # it did not exist before the evolution
    assert main(["evolutions", "revert", applied["id"]]) == 2  # already reverted
    assert "reverted: nothing to revert" in capsys.readouterr().err
    assert main(["evolutions", "show", "ev-nope"]) == 2
    with pytest.raises(LookupError):
        revert(events, settings.home_dir, "ev-nope", utcnow())


def _fail_restart(h: History, run_id: str, at: object) -> None:
    step = {"action": "restart", "component": "web", "args": {}, "why": ""}
    result = {"action": "restart", "component": "web", "outcome": "failed", "detail": "exited at start"}
    h.run(run_id, "CRASH", "escalated", at, 30, persona="availability")  # type: ignore[arg-type]
    h.rows(ACTIONS, {"run_id": run_id, "action": "restart", "component": "web", "dry_run": False,
                     "outcome": "failed", "step": step, "result": result, "at": at})  # fmt: skip


def test_an_action_failing_again_and_again_gets_a_tighter_policy_reverted_byte_for_byte(
    settings: Settings,
) -> None:
    events = EventStore(settings.events_url)
    h = History(events)
    for i in range(3):
        _fail_restart(h, f"F{i}", T - (9 - 3 * i) * H)
    policy = settings.home_dir / "policy.yaml"
    original = b"# ours\nmax_auto_risk: medium\n"
    policy.write_bytes(original)
    outside = EvolveJob(events=events, home=settings.home_dir, now=T, policy_file=None)  # type: ignore[arg-type]
    assert not [p for p in evolve_round(outside)["proposals"] if p["kind"] == "tighten_policy"]
    assert "needs a policy file under the home folder" in " ".join(outside.notes)

    job = EvolveJob(events=events, home=settings.home_dir, now=T, policy_file=policy)  # type: ignore[arg-type]
    done = evolve_round(job)
    (applied,) = [a for a in done["applied"] if a["kind"] == "tighten_policy"]
    assert applied["status"] == "applied" and done["validated"] == []  # no estate: on its 24-hour trial
    assert "no replay (no estate given" in " ".join(job.notes)
    tightened = load_policy(policy, settings)
    # the built-in limit stays (a file's list replaces it), the new one is tighter on web alone
    assert [(r.action, r.max, r.window_s, r.components) for r in tightened.rate_limits] == [
        ("restart", 3, 600.0, ["*"]),
        ("restart", 1, 3600.0, ["web"]),
    ]
    assert yaml.safe_load(policy.read_text())["max_auto_risk"] == "medium"
    again = EvolveJob(events=events, home=settings.home_dir, now=T + H, policy_file=policy)  # type: ignore[arg-type]
    assert not [p for p in evolve_round(again)["proposals"] if p["kind"] == "tighten_policy"]  # tight already
    assert main(["evolutions", "revert", applied["id"]]) == 0
    assert policy.read_bytes() == original


def test_escalations_no_persona_handles_get_an_agent_from_the_factory(settings: Settings) -> None:
    from agentheal.models import Gap, RunStatus
    from agentheal.personas import load_persona

    events = EventStore(settings.events_url)
    for shard in range(3):
        gap = Gap(text=f"tantivy merges of search index {shard} never finish; searches time out",
                  component="search")  # fmt: skip
        events.record_gap(gap)
        events.start_run(f"S{shard}", gap)
        facts = {"diagnosis": {"facts": ["slow_response"]}}
        events.finish_run(f"S{shard}", RunStatus.escalated, persona=None, source="persona",
                          reason="no persona fits this gap", result=facts)  # fmt: skip
    personas = settings.home_dir / "personas"
    job = EvolveJob(events=events, home=settings.home_dir, now=utcnow())
    done = evolve_round(job)
    (applied,) = [a for a in done["applied"] if a["kind"] == "create_agent"]
    target = Path(applied["target"])
    assert target.parent == personas and target.is_file()
    assert not (personas / "versions").exists()  # the factory ran in a scratch home: only the change landed
    persona = load_persona(target)
    assert persona.origin == "generated" and (persona.provenance or {})["trigger"] == "pattern"
    assert (persona.provenance or {})["component"] == "search"
    assert evolve_round(EvolveJob(events=events, home=settings.home_dir, now=utcnow()))["applied"] == []
    assert main(["evolutions", "revert", applied["id"]]) == 0
    assert not target.exists()


def test_evolve_refuses_a_missing_estate(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evolve", "--estate", str(settings.home_dir / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def _restarts(h: History, fp: str, starts: list[object], lag_s: float, first: int = 0) -> None:
    """Heals of `fp` by a restart, each after a monitor saw the fault `lag_s` before reporting it."""
    for i, at in enumerate(starts, start=first):
        run_id = f"{fp}{i}"
        h.gap(fp, at + lag_s * S, source="monitor", created=at)  # type: ignore[operator]
        h.run(run_id, fp, "healed", at + lag_s * S, 10, persona="availability")  # type: ignore[operator]
        step = {"action": "restart", "component": "web", "args": {}, "why": ""}
        h.rows(ACTIONS, {"run_id": run_id, "action": "restart", "component": "web", "dry_run": False,
                         "outcome": "ok", "step": step, "result": {}, "at": at})  # fmt: skip


@pytest.mark.parametrize(("lag_after_s", "verdict"), [(2.0, "kept"), (6.0, "reverted")])
def test_a_fault_no_schedule_heads_off_gets_a_check_judged_by_its_time_to_detect(
    settings: Settings, lag_after_s: float, verdict: str
) -> None:
    events = EventStore(settings.events_url)
    h = History(events)
    checks = settings.home_dir / "evolution" / "checks.yaml"
    checks.parent.mkdir(parents=True)
    earlier = b"# kept by hand\nchecks:\n- component: db\n  every_s: 30\n"
    checks.write_bytes(earlier)
    _restarts(h, "DOWN", [T - (12 - 3 * i) * H for i in range(3)], lag_s=5.0)  # k-of-n at 5 s probes

    job = EvolveJob(events=events, home=settings.home_dir, now=T, estate_file=None, probe_interval_s=5.0)  # type: ignore[arg-type]
    first = evolve_round(job)
    (applied,) = first["applied"]
    assert (applied["kind"], applied["status"]) == ("add_check", "applied")
    assert first["validated"] == []  # a replay detects on every tick: the trial judges it
    assert "judged by its gaps' time to detect" in " ".join(job.notes)
    entry = yaml.safe_load(checks.read_text())["checks"][-1]
    assert (entry["component"], entry["check"], entry["every_s"], entry["after"]) == (
        "web",
        "probes",
        2.5,
        "restart",
    )

    _restarts(h, "DOWN", [T + 5 * H], lag_s=lag_after_s, first=3)  # once in the trial, caught sooner or not
    second = evolve_round(_job(settings, events, T + 25 * H))
    assert [(d["kind"], d["status"]) for d in second["decided"]] == [("add_check", verdict)]
    reason = second["decided"][0]["reason"]
    if verdict == "kept":
        assert "time to detect fell from 5 s to 2 s" in reason
        assert yaml.safe_load(checks.read_text())["checks"][-1]["every_s"] == 2.5
    else:
        assert "time to detect did not fall (5 s, 6 s)" in reason
        assert checks.read_bytes() == earlier
