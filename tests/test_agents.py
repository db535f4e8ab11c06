"""Agent records from a known history in the event store, retirement, and trust in new agents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from agentheal.agents import needs_first_approval, records, retire_underperformers
from agentheal.cli import main
from agentheal.config import Settings
from agentheal.events import EventStore
from agentheal.graphs.context import HealContext
from agentheal.graphs.factory import create_for_gap
from agentheal.models import Gap, RunStatus
from agentheal.personas import RETIREMENTS, Registry, load_persona

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
DISK = Gap(text="disk full on web: No space left on device", component="web")


class Clock:
    """The event store's clock, set by the test: runs start and finish when the history says."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("agentheal.events.utcnow", fake)
    return fake


def run(
    store: EventStore, clock: Clock, persona: str, status: RunStatus, start: datetime, seconds: float
) -> str:
    """Record one run of `persona` that starts at `start` and ends `seconds` later with `status`."""
    run_id = f"{persona}-{start:%H%M%S}-{status.value}"
    clock.now = start
    store.start_run(run_id, Gap(text=f"gap of {run_id}", component="web"))
    clock.now = start + timedelta(seconds=seconds)
    if status is RunStatus.running:
        store.node(run_id, "diagnose", "still at it")
    elif status is RunStatus.awaiting_approval:
        store.set_status(run_id, status, "restart needs approval")
    else:
        store.finish_run(run_id, status, persona=persona, source="persona", reason=None, result={})
    return run_id


def history(store: EventStore, clock: Clock) -> None:
    at = lambda minutes: T0 + timedelta(minutes=minutes)  # noqa: E731
    run(store, clock, "availability", RunStatus.healed, at(0), 10)
    run(store, clock, "availability", RunStatus.healed, at(5), 30)
    run(store, clock, "availability", RunStatus.healed, at(10), 20)
    run(store, clock, "availability", RunStatus.escalated, at(20), 5)
    run(store, clock, "availability", RunStatus.failed, at(30), 5)
    run(store, clock, "availability", RunStatus.rejected, at(40), 5)
    run(store, clock, "availability", RunStatus.dry_run, at(50), 5)
    run(store, clock, "capacity", RunStatus.healed, at(55), 7.5)
    # An open run names no persona until it finishes: it counts for nobody yet.
    run(store, clock, "availability", RunStatus.running, at(60), 1)


def test_figures_match_the_recorded_events_exactly(settings: Settings, clock: Clock) -> None:
    store = EventStore(settings.events_url)
    history(store, clock)
    by_name = {r.name: r for r in records(Registry.load(settings), store, settings)}
    a = by_name["availability"]
    assert (a.runs, a.heals, a.escalations, a.failures, a.rejected) == (6, 3, 1, 1, 1)
    assert a.success_rate == 0.5  # 3 heals of 6 finished runs; the dry run is not a run of it
    assert a.median_heal_s == 20.0  # of 10, 30 and 20 seconds
    assert a.last_used == T0 + timedelta(minutes=40)
    assert a.window == (T0, T0 + timedelta(minutes=40))
    c = by_name["capacity"]
    assert (c.runs, c.heals, c.success_rate, c.median_heal_s) == (1, 1, 1.0, 7.5)
    p = by_name["performance"]
    assert (p.runs, p.heals, p.success_rate, p.median_heal_s, p.last_used, p.window) == (
        0,
        0,
        None,
        None,
        None,
        None,
    )


def test_agents_list_json_contract(
    settings: Settings, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    history(EventStore(settings.events_url), clock)
    assert main(["agents", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert all(
        set(a) == {"name", "origin", "version", "status", "runs", "heals", "success_rate"} for a in listed
    )
    availability = next(a for a in listed if a["name"] == "availability")
    assert availability == {
        "name": "availability",
        "origin": "builtin",
        "version": 1,
        "status": "active",
        "runs": 6,
        "heals": 3,
        "success_rate": 0.5,
    }
    assert main(["agents", "show", "availability"]) == 0
    shown = capsys.readouterr().out
    assert "6 run(s) from 2026-01-01 10:00 to 2026-01-01 10:40 UTC: 3 healed, 1 escalated, 1 failed" in shown
    assert "success rate 50% of 6 finished; median time to heal 20.0 s" in shown
    assert (
        main(["agents", "show", "releases"]) == 0 and "no runs recorded for it yet" in capsys.readouterr().out
    )
    assert main(["agents", "show", "ghost"]) == 2


def test_retiring_a_builtin_stops_routing_to_it(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Registry.load(settings).route(DISK, ["disk_over_budget"])[0].name == "capacity"  # type: ignore[union-attr]
    assert (
        main(["agents", "retire", "capacity", "--why", "a person cleans disks by hand now", "--by", "ops"])
        == 0
    )
    capsys.readouterr()
    register = yaml.safe_load((settings.generated_personas_dir / RETIREMENTS).read_text())
    assert (
        register["capacity"]["why"] == "a person cleans disks by hand now"
        and register["capacity"]["by"] == "ops"
    )
    loaded = Registry.load(settings)
    assert loaded.get("capacity").status == "retired"
    routed = loaded.route(DISK, ["disk_over_budget"])[0]
    assert routed is None or routed.name != "capacity"
    main(["agents", "list", "--json"])
    assert (
        next(a for a in json.loads(capsys.readouterr().out) if a["name"] == "capacity")["status"] == "retired"
    )
    assert main(["agents", "retire", "capacity", "--why", "again"]) == 2
    assert "capacity is already retired" in capsys.readouterr().err
    assert main(["agents", "retire", "ghost", "--why", "x"]) == 2


def test_retiring_a_generated_persona_keeps_its_file(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = HealContext(settings=settings)
    made = create_for_gap(ctx, Gap(text="the ldap group sync cron fails on nested groups"), [], None)
    assert made.registered and made.created is not None
    assert main(["agents", "retire", made.created, "--why", "the ldap sync was replaced by scim"]) == 0
    persona = load_persona(Path(made.path or ""))
    assert persona.status == "retired" and persona.origin == "generated"
    assert (persona.provenance or {})["retired"]["why"] == "the ldap sync was replaced by scim"
    capsys.readouterr()
    main(["agents", "list", "--json"])
    entry = next(a for a in json.loads(capsys.readouterr().out) if a["name"] == made.created)
    assert (entry["origin"], entry["status"]) == ("generated", "retired")
    # A new version is a new start: active again, the retired version kept as it was.
    gap = Gap(text="the ldap group sync cron fails on nested groups after the scim move")
    again = create_for_gap(HealContext(settings=settings), gap, [], None, replace=made.created)
    assert again.registered and again.version == 2, again.reasons
    assert Registry.load(settings).get(made.created).status == "active"
    old = settings.generated_personas_dir / "versions" / f"{made.created}.v1.md"
    assert load_persona(old).status == "retired"


def test_underperformers_are_retired_with_their_figures(settings: Settings, clock: Clock) -> None:
    store = EventStore(settings.events_url)
    outcomes = {
        "availability": [RunStatus.healed] * 2 + [RunStatus.escalated] * 3,  # 40% of 5: retired
        "capacity": [RunStatus.healed] * 4 + [RunStatus.failed],  # 80% of 5: kept
        "performance": [RunStatus.failed] * 2,  # 0% of 2: too few runs to judge
    }
    for persona, statuses in outcomes.items():
        for i, status in enumerate(statuses):
            run(store, clock, persona, status, T0 + timedelta(minutes=10 * i, seconds=len(persona)), 3)
    registry = Registry.load(settings)
    done = retire_underperformers(settings, registry, store, min_runs=5, below=0.5)
    assert [name for name, _ in done] == ["availability"]
    assert done[0][1].startswith(
        "success rate 40% over 5 finished runs (2026-01-01 10:00 to 2026-01-01 10:40 UTC)"
    )
    assert registry.get("availability").status == "retired"
    assert Registry.load(settings).get("availability").status == "retired"
    assert Registry.load(settings).get("capacity").status == "active"
    register = yaml.safe_load((settings.generated_personas_dir / RETIREMENTS).read_text())
    assert register["availability"]["figures"] == {"runs": 5, "heals": 2, "success_rate": 0.4}


def test_a_new_generated_persona_needs_approval_for_its_first_heals(settings: Settings) -> None:
    ctx = HealContext(settings=settings)
    made = create_for_gap(ctx, Gap(text="the ldap group sync cron fails on nested groups"), [], None)
    persona = ctx.registry.get(made.created or "")
    why = needs_first_approval(persona, ctx.events, ctx.policy)
    assert why is not None and "0 real heal(s) so far; its first 3 need a person's approval" in why
    assert needs_first_approval(persona, ctx.events, ctx.policy, first_heals=0) is None
    assert needs_first_approval(ctx.registry.get("availability"), ctx.events, ctx.policy) is None
    for i in range(3):
        ctx.events.start_run(f"r{i}", Gap(text="ldap nested groups missing", component="ldap"))
        ctx.events.finish_run(
            f"r{i}", RunStatus.healed, persona=persona.name, source="persona", reason=None, result={}
        )
        expected = None if i == 2 else f"with {i + 1} real heal(s)"
        got = needs_first_approval(persona, ctx.events, ctx.policy)
        assert got is None if expected is None else expected in (got or "")


def test_a_broken_retirement_register_is_reported_and_the_personas_still_load(settings: Settings) -> None:
    folder = settings.generated_personas_dir
    folder.mkdir(parents=True)
    (folder / RETIREMENTS).write_text("- just a list\n")
    loaded = Registry.load(settings)
    assert any("retirement register must map persona names" in str(e) for e in loaded.errors)
    assert loaded.get("capacity").status == "active"
