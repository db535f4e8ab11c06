"""The application services the doors share: pages of runs, the heal pool, the audit trail, and the
CLI commands of the HTTP door (tokens, serve's refusals, audit)."""

from __future__ import annotations

import itertools
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.events import EventStore
from agentheal.graphs.context import HealContext
from agentheal.models import Gap, RunStatus, utcnow
from agentheal.services import audit
from agentheal.services.heal import GapProblem, HealPool, parse_gap
from agentheal.services.runs import RunQueryError, list_runs, show_run


def _store_with_runs(settings: Settings) -> tuple[EventStore, list[str]]:
    store = EventStore(settings.events_url)
    ids = []
    for i in range(7):
        run_id = f"{i:02d}" + "ab" * 15
        store.start_run(run_id, Gap(text=f"gap {i}", component="web" if i % 2 else "db"))
        if i < 4:
            store.finish_run(run_id, RunStatus.healed, persona="restarter", source="persona", reason=None,
                             result={"run_id": run_id, "status": "healed"})  # fmt: skip
        ids.append(run_id)
    return store, ids


def test_runs_page_through_a_cursor_with_filters(settings: Settings) -> None:
    store, ids = _store_with_runs(settings)
    seen, cursor = [], None
    while True:
        page = list_runs(store, limit=3, cursor=cursor)
        seen += [r.run_id for r in page.runs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))  # newest first, each once
    web = list_runs(store, component="web").runs
    assert {r.run_id for r in web} == {ids[1], ids[3], ids[5]}
    healed = list_runs(store, status="healed", persona="restarter").runs
    assert {r.run_id for r in healed} == set(ids[:4])
    assert list_runs(store, since=utcnow() + timedelta(minutes=1)).runs == []
    with pytest.raises(RunQueryError, match="cursor"):
        list_runs(store, cursor="not-a-cursor")
    with pytest.raises(RunQueryError, match="status 'nope'"):
        list_runs(store, status="nope")


def test_an_open_run_is_shown_as_heal_json_with_its_story(settings: Settings) -> None:
    store, ids = _store_with_runs(settings)
    store.node(ids[6], "triage", "incident, medium")
    shown = show_run(store, ids[6])
    assert shown is not None
    assert (shown["status"], shown["run_id"], shown["component"]) == ("running", ids[6], "db")
    assert [e["node"] for e in shown["story"]["timeline"]] == ["triage"]
    assert show_run(store, "ffffffff") is None


def test_gap_problems_name_the_field() -> None:
    with pytest.raises(GapProblem, match="text"):
        parse_gap({"text": "   "})
    with pytest.raises(GapProblem, match="severity"):
        parse_gap({"text": "x", "severity": "apocalyptic"})
    with pytest.raises(GapProblem, match="JSON object"):
        parse_gap(["x"])
    assert parse_gap({"gap": "disk full", "component": "db"}).text == "disk full"


def test_pool_heals_one_per_component_at_a_time_and_joins_repeats(settings: Settings) -> None:
    ctx = HealContext(settings=settings)  # no estate: each heal escalates after triage, quickly
    pool = HealPool(ctx, max_heals=4)
    pool.warm()
    try:
        gaps = [Gap(text=f"web fault {w}", component="web") for w in ("alpha", "beta", "gamma")]
        gaps += [Gap(text="db fault", component="db")]
        submitted = [pool.submit(g, actor="tester", door="test") for g in gaps]
        repeat = pool.submit(gaps[0], actor="tester", door="test")
        assert repeat[0] == submitted[0][0] and repeat[2] is True
        results = [future.result(60) for _, future, _ in submitted]
    finally:
        pool.close()
    assert [r["run_id"] for r in results] == [s[0] for s in submitted]
    runs = sorted((r for r in ctx.events.runs() if r.component == "web"), key=lambda r: r.started_at)
    assert len(runs) == 3
    for before, after in itertools.pairwise(runs):
        assert before.finished_at is not None and before.finished_at <= after.started_at
    gaps_audited = [r for r in audit.trail(ctx.events) if r.action == "gap"]
    assert len(gaps_audited) == 5 and {r.actor for r in gaps_audited} == {"tester"}


def test_tokens_from_the_cli_and_the_audit_trail(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["tokens", "add", "alice", "--role", "operator"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("ahk_") and token not in (settings.home_dir / "tokens.json").read_text()
    assert main(["tokens", "add", "alice", "--role", "viewer"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["tokens", "add", "bob", "--role", "root"]) == 2
    assert "viewer, operator, admin" in capsys.readouterr().err
    assert main(["tokens", "list", "--json"]) == 0
    assert [(t["name"], t["role"]) for t in json.loads(capsys.readouterr().out)] == [("alice", "operator")]
    assert main(["tokens", "revoke", "alice"]) == 0
    assert main(["tokens", "revoke", "alice"]) == 2
    capsys.readouterr()
    assert main(["audit", "--json"]) == 0
    trail = json.loads(capsys.readouterr().out)
    assert [(r["action"], r["target"], r["door"]) for r in trail] == [
        ("token_revoke", "alice", "cli"),
        ("token_add", "alice", "cli"),
    ]


def test_serve_refuses_to_start_unsafely(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "1"]) == 2
    assert "no API tokens" in capsys.readouterr().err
    assert main(["serve", "--insecure-local", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "loopback only" in capsys.readouterr().err
    assert main(["serve", "--insecure-local", "--log-level", "loud", "--port", "1"]) == 2
    assert "--log-level 'loud'" in capsys.readouterr().err


def test_changes_made_from_the_cli_are_audited_as_the_local_user(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    history.write_text(
        json.dumps({"gap": "db disk full", "resolution": "rotated logs", "outcome": "healed"}) + "\n"
    )
    assert main(["memory", "import", str(history)]) == 0
    # an import that changed nothing is not audited
    assert main(["memory", "import", str(tmp_path / "missing.jsonl")]) == 2
    capsys.readouterr()
    assert main(["agents", "list", "--json"]) == 0
    name = json.loads(capsys.readouterr().out)[0]["name"]
    assert main(["agents", "retire", name, "--why", "replaced by a better one"]) == 0
    capsys.readouterr()
    assert main(["audit", "--json"]) == 0
    trail = json.loads(capsys.readouterr().out)
    assert [(r["action"], r["target"], r["door"], r["actor"]) for r in trail] == [
        ("agent_change", name, "cli", audit.local_actor()),
        ("memory_import", str(history), "cli", audit.local_actor()),
    ]
    assert trail[1]["data"] == {"imported": 1, "skipped": 0}


def test_heals_still_queued_when_the_pool_closes_resume_at_the_next_start(
    settings: Settings, tiny_estate_file: Path
) -> None:
    ctx = HealContext(settings=settings, estate_path=tiny_estate_file)
    pool = HealPool(ctx, max_heals=1)
    pool.warm()
    # one heal per component at a time: the first runs (or waits), the others queue behind it
    gaps = [Gap(text=f"web is down, report {w}", component="web") for w in ("alpha", "beta", "gamma")]
    submitted = [pool.submit(g, actor="tester", door="test") for g in gaps]
    pool.close()
    stopped = [s for s in submitted if s[1].exception() is not None]
    assert stopped, "every heal started before the pool closed: nothing was left queued"
    for _run_id, future, _joined in stopped:
        assert "resumes when it starts again" in str(future.exception())

    again = HealPool(HealContext(settings=settings, estate_path=tiny_estate_file), max_heals=1)
    again.warm()
    try:
        assert set(again.resume_open_runs()) == {s[0] for s in stopped}
        deadline = time.monotonic() + 120
        while any(again.ctx.events.run(s[0]).row.status == "running" for s in stopped):  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the resumed heals did not end"
            time.sleep(0.2)
    finally:
        again.close()
    for run_id, _future, _joined in stopped:
        detail = ctx.events.run(run_id)
        # web was healed by the first heal meanwhile: these end as their triage finds it, not lost
        assert detail is not None and detail.row.status in ("healed", "escalated"), detail
        assert detail.row.finished_at is not None
        assert any("started from the beginning" in e.detail for e in detail.timeline)
