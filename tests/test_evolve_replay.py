"""What a replay plays, read from recorded history, and the verdict it gives (no processes here; the
drill on the real estate is tests/test_evolve_drill.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agentheal.config import Settings
from agentheal.eval import materialize
from agentheal.event_schema import ACTIONS, RUNS
from agentheal.events import EventStore
from agentheal.evolve.judge import judge
from agentheal.evolve.replay import Script, home_files, script_for, staged_copy
from agentheal.models import utcnow
from test_metrics import History

H = timedelta(hours=1)
NOW = utcnow().replace(microsecond=0)


def _healed_by(h: History, run_id: str, fp: str, at: object, component: str, *actions: str) -> None:
    h.gap(fp, at)  # type: ignore[arg-type]
    h.rows(RUNS, {"run_id": run_id, "fingerprint": fp, "component": component, "gap_text": f"gap {fp}",
                  "gap": {}, "status": "healed", "persona": "capacity", "started_at": at,
                  "finished_at": at})  # fmt: skip
    for action in actions:
        step = {"action": action, "component": component, "args": {}, "why": ""}
        result = {"action": action, "component": component, "outcome": "ok", "detail": ""}
        h.rows(ACTIONS, {"run_id": run_id, "action": action, "component": component, "dry_run": False,
                         "outcome": "ok", "step": step, "result": result, "at": at})  # fmt: skip


@pytest.fixture
def events(settings: Settings) -> EventStore:
    return EventStore(settings.events_url)


def test_a_pattern_replays_as_the_fault_its_heals_undo(events: EventStore, tmp_path: Path) -> None:
    estate = materialize("shopfront", tmp_path / "shop")
    h = History(events)
    for i, hours in enumerate((2, 6, 9, 20, 23)):  # intervals 4, 3, 11 and 3 hours: the median is 3.5
        _healed_by(h, f"L{i}", "LOG", NOW - (24 - hours) * H, "inventory", "rotate_logs")
    assert script_for(events, estate, "LOG", NOW - 48 * H) == Script(
        str(estate), "inventory", "log_over_budget", "rotate_logs", "LOG", 3.5 * 3600, 4
    )
    # a killed worker is healed by removing its stale lock and restarting it: replayed as a kill
    for i in range(2):
        _healed_by(h, f"W{i}", "DOWN", NOW - (3 - i) * H, "worker", "remove_stale_lock", "restart")
    script = script_for(events, estate, "DOWN", NOW - 48 * H)
    assert isinstance(script, Script) and (script.fault, script.action) == ("process_killed", "restart")
    for i in range(2):
        _healed_by(h, f"A{i}", "STALE", NOW - (3 - i) * H, "api", "remove_stale_lock")
    assert "fault stale_lock does not apply to api" in str(script_for(events, estate, "STALE", NOW - 48 * H))
    _healed_by(h, "O1", "ONCE", NOW - H, "api", "restart")
    assert "fewer than two recorded runs" in str(script_for(events, estate, "ONCE", NOW - 48 * H))


def test_why_a_pattern_cannot_be_replayed(events: EventStore, tmp_path: Path) -> None:
    shop = materialize("shopfront", tmp_path / "shop")
    h = History(events)
    for i in range(3):
        h.run(f"E{i}", "ESC", "escalated", NOW - (5 - i) * H, 40, persona="availability")
    assert script_for(events, shop, None, NOW - 48 * H) == "the evolution names no pattern"
    assert "no estate given" in str(script_for(events, None, "ESC", NOW - 48 * H))
    assert "no recorded remediation" in str(script_for(events, shop, "ESC", NOW - 48 * H))


def test_the_arms_start_from_the_homes_policy_schedule_and_personas(
    settings: Settings, tmp_path: Path
) -> None:
    home = settings.home_dir
    (home / "evolution").mkdir(parents=True)
    (home / "evolution" / "schedule.yaml").write_bytes(b"schedule: []\n")
    (home / "personas" / "versions").mkdir(parents=True)
    (home / "personas" / "search-index.md").write_bytes(b"---\nname: x\n---\n")
    (home / "personas" / "versions" / "search-index.v1.md").write_bytes(b"old")
    policy = tmp_path / "elsewhere.yaml"
    policy.write_bytes(b"max_auto_risk: low\n")
    files = home_files(home, policy)
    assert files == {
        "evolution/schedule.yaml": b"schedule: []\n",
        "policy.yaml": b"max_auto_risk: low\n",
        "personas/search-index.md": b"---\nname: x\n---\n",
    }


def test_the_verdict_keeps_only_a_fall_with_nothing_worse() -> None:
    base = {"reports": 3, "runs": 3, "resolution_rate": 1.0, "time_to_heal_median_s": 2.0}
    assert judge(base, base | {"reports": 0, "runs": 0, "resolution_rate": None,
                               "time_to_heal_median_s": None})[0]  # fmt: skip
    assert judge(base, base | {"reports": 1, "time_to_heal_median_s": 2.9})[
        0
    ]  # within the noise of real heals
    keep, why = judge(base, base | {"reports": 1, "time_to_heal_median_s": 3.5})
    assert not keep and "time to heal rose (2 s to 3.5 s)" in why
    keep, why = judge(base, base | {"reports": 3})
    assert not keep and "did not fall (3 before, 3 after)" in why
    keep, why = judge(base, base | {"reports": 2, "resolution_rate": 0.5})
    assert not keep and "resolution rate dropped (1.00 to 0.50)" in why


def test_an_estate_is_staged_on_free_ports_without_its_runtime_folders(tmp_path: Path) -> None:
    from agentheal.estate.model import load_estate

    source = materialize("shopfront", tmp_path / "shop")
    (source.parent / "logs").mkdir()
    (source.parent / "logs" / "api.log").write_text("old lines\n")
    copy = staged_copy(source, tmp_path / "staged")
    assert not (copy.parent / "logs").exists()
    before, after = load_estate(source), load_estate(copy)
    assert set(before.components) == set(after.components)
    old = {c.port for c in before.components.values()}
    new = {c.port for c in after.components.values()}
    assert len(new) == len(old) == 3 and not old & new
    api = " ".join(after.component("api").command)
    assert str(after.component("inventory").port) in api  # the api's address of inventory follows
