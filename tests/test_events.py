"""The event store on real SQLite files: runs, timelines, prefixes, crash safety, several processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from agentheal.events import AmbiguousRun, EventStore, EventStoreError, RunLookupError
from agentheal.models import ActionResult, Gap, RunStatus, Step, utcnow


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'events.sqlite'}"


@pytest.fixture
def store(url: str) -> EventStore:
    return EventStore(url)


def _gap(text: str = "web answers 502", component: str | None = "web") -> Gap:
    return Gap(text=text, component=component)


def test_a_run_reads_back_whole(store: EventStore) -> None:
    gap = _gap()
    store.record_gap(gap)
    run_id = "0f3a9c2e" * 4
    store.start_run(run_id, gap)
    store.node(run_id, "triage", "severity high", {"impact": 3})
    store.node(run_id, "execute", "restarting web")
    step = Step(action="restart", component="web", why="process down")
    store.action(
        run_id, step, ActionResult(action="restart", component="web", detail="pid 42", duration_s=0.4)
    )
    store.llm_call(run_id, "gpt-4o-mini", "diagnose", 120, 30, 0.8, True)
    store.llm_call(run_id, "gpt-4o-mini", "plan", 200, 50, 1.2, False)
    result = {"status": "healed", "plan": {"steps": [step.model_dump()]}, "at": utcnow(), "tags": {"b", "a"}}
    store.finish_run(
        run_id, RunStatus.healed, persona="availability", source="persona", reason=None, result=result
    )

    detail = store.run(run_id)
    assert detail is not None
    assert detail.row.status is RunStatus.healed
    assert (detail.row.persona, detail.row.source, detail.row.component) == ("availability", "persona", "web")
    assert detail.gap == gap
    assert [(n.node, n.detail) for n in detail.timeline] == [
        ("triage", "severity high"),
        ("execute", "restarting web"),
    ]
    assert detail.timeline[0].data == {"impact": 3}
    assert detail.actions[0].step == step
    assert detail.actions[0].result.detail == "pid 42"
    assert [c.purpose for c in detail.llm_calls] == ["diagnose", "plan"]
    assert detail.totals.nodes == 2 and detail.totals.actions == 1 and detail.totals.actions_failed == 0
    assert detail.totals.llm.calls == 2 and detail.totals.llm.prompt_tokens == 320
    assert detail.totals.llm_duration_s == pytest.approx(2.0)
    assert detail.totals.duration_s is not None and detail.totals.duration_s >= 0
    assert detail.result is not None
    assert detail.result["plan"]["steps"][0]["action"] == "restart"
    assert detail.result["tags"] == ["a", "b"]
    assert store.llm_usage(run_id).completion_tokens == 80
    assert store.gaps(gap.fingerprint) == [gap]


def test_times_come_back_in_utc(store: EventStore) -> None:
    before = utcnow()
    store.start_run("r-times", _gap())
    store.node("r-times", "triage")
    detail = store.run("r-times")
    assert detail is not None
    for at in (detail.row.started_at, detail.timeline[0].at):
        assert at.tzinfo is not None and at.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= at <= utcnow()
    assert detail.row.finished_at is None and detail.totals.duration_s is None


def test_runs_newest_first_and_by_status(store: EventStore) -> None:
    for n in range(3):
        store.start_run(f"run-{n}", _gap(f"gap number {n}"))
    store.set_status("run-1", RunStatus.awaiting_approval, "restart of db is high risk")
    assert [r.run_id for r in store.runs()] == ["run-2", "run-1", "run-0"]
    assert [r.run_id for r in store.runs(limit=1)] == ["run-2"]
    waiting = store.runs(status="awaiting_approval")
    assert [(r.run_id, r.reason) for r in waiting] == [("run-1", "restart of db is high risk")]
    with pytest.raises(EventStoreError, match="unknown run status 'done'"):
        store.runs(status="done")


def test_open_run_follows_the_status(store: EventStore) -> None:
    gap = _gap()
    assert store.open_run(gap.fingerprint) is None
    store.start_run("r-open", gap)
    assert store.open_run(gap.fingerprint) == "r-open"
    store.set_status("r-open", RunStatus.awaiting_approval)
    assert store.open_run(gap.fingerprint) == "r-open"
    store.set_status("r-open", RunStatus.rejected, "a person said no")
    assert store.open_run(gap.fingerprint) is None
    detail = store.run("r-open")
    assert (
        detail is not None and detail.row.finished_at is not None and detail.row.reason == "a person said no"
    )


def test_starting_a_run_again_keeps_its_history(store: EventStore) -> None:
    store.start_run("r-again", _gap())
    store.node("r-again", "triage")
    store.set_status("r-again", RunStatus.awaiting_approval)
    store.start_run("r-again", _gap())
    detail = store.run("r-again")
    assert detail is not None and detail.row.status is RunStatus.running and len(detail.timeline) == 1


def test_run_by_prefix(store: EventStore) -> None:
    store.start_run("abcd1234" + "0" * 24, _gap())
    store.start_run("abcd5678" + "0" * 24, _gap())
    store.start_run("r1", _gap())
    found = store.run("abcd12")
    assert found is not None and found.row.run_id.startswith("abcd1234")
    with pytest.raises(AmbiguousRun, match="matches 2 runs") as info:
        store.run("abcd")
    assert sorted(m[:8] for m in info.value.matches) == ["abcd1234", "abcd5678"]
    with pytest.raises(RunLookupError, match="too short"):
        store.run("ab")
    assert isinstance(info.value, LookupError)
    exact = store.run("r1")  # an exact id is found however short it is
    assert exact is not None and exact.row.run_id == "r1"
    assert store.run("ffff") is None
    assert store.run("ab%_") is None  # LIKE wildcards in a prefix match nothing by accident


def test_count_actions_counts_real_executions_in_the_window(store: EventStore) -> None:
    store.start_run("r-count", _gap())
    restart = Step(action="restart", component="web")
    for outcome in ("ok", "failed", "skipped"):
        store.action("r-count", restart, ActionResult(action="restart", component="web", outcome=outcome))
    store.action("r-count", restart, ActionResult(action="restart", component="web", dry_run=True))
    store.action("r-count", restart, ActionResult(action="restart", component="web", outcome="dry_run"))
    store.action(
        "r-count", Step(action="restart", component="db"), ActionResult(action="restart", component="db")
    )
    store.action(
        "r-count", Step(action="stop", component="web"), ActionResult(action="stop", component="web")
    )
    assert store.count_actions("web", "restart", 600) == 2
    assert store.count_actions("web", "restart", 0) == 0  # all of them happened before "now"
    assert store.count_actions("db", "restart", 600) == 1


def test_events_of_an_unknown_run_are_refused(store: EventStore) -> None:
    with pytest.raises(EventStoreError, match="run 'nope'"):
        store.node("nope", "triage")
    with pytest.raises(EventStoreError, match="no run 'nope'"):
        store.finish_run("nope", RunStatus.failed, persona=None, source="none", reason="x", result={})
    with pytest.raises(EventStoreError, match="no run 'nope'"):
        store.set_status("nope", RunStatus.running)


def test_a_gap_time_without_zone_is_taken_as_utc(store: EventStore) -> None:
    gap = Gap.model_validate({"text": "db slow", "created_at": "2025-03-01T12:00:00"})
    store.record_gap(gap)
    assert store.gaps()[0].text == "db slow"


_CRASH = textwrap.dedent(
    """
    import os, sys
    from agentheal.events import EventStore
    from agentheal.models import ActionResult, Gap, Step

    store = EventStore(sys.argv[1])
    gap = Gap(text="api process is down", component="api")
    store.record_gap(gap)
    store.start_run("crashrun", gap)
    store.node("crashrun", "triage", "severity high")
    restart = Step(action="restart", component="api")
    store.action("crashrun", restart, ActionResult(action="restart", component="api"))
    store.llm_call("crashrun", "m", "plan", 10, 5, 0.1, True)
    store.node("crashrun", "validate", "probing api", {"attempt": 1})
    os.kill(os.getpid(), 9)
    """
)


def test_a_killed_process_loses_nothing_it_recorded(url: str) -> None:
    EventStore(url)  # the tables exist before the child starts, as in a real heal
    proc = subprocess.run([sys.executable, "-c", _CRASH, url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    store = EventStore(url)
    detail = store.run("crashrun")
    assert detail is not None
    assert detail.row.status is RunStatus.running
    assert [n.node for n in detail.timeline] == ["triage", "validate"]
    assert detail.timeline[1].data == {"attempt": 1}
    assert len(detail.actions) == 1 and len(detail.llm_calls) == 1
    assert store.open_run(Gap(text="api process is down", component="api").fingerprint) == "crashrun"


_WRITER = textwrap.dedent(
    """
    import sys
    from agentheal.events import EventStore

    store = EventStore(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    for n in range(150):
        store.node("shared", sys.argv[2], str(n))
    """
)


def test_processes_share_one_file(url: str, store: EventStore) -> None:
    store.start_run("shared", _gap())
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for w in writers:
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
    for w in writers:  # released together, so their writes contend for the lock
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    for w in writers:
        assert w.wait(timeout=60) == 0
        assert w.stdin is not None and w.stdout is not None
        w.stdin.close()
        w.stdout.close()
    detail = store.run("shared")
    assert detail is not None
    assert sorted(n.node for n in detail.timeline) == ["a"] * 150 + ["b"] * 150
    assert [r.run_id for r in store.runs()] == ["shared"]  # a reader meanwhile sees one consistent run


def test_a_broken_url_is_named() -> None:
    with pytest.raises(EventStoreError, match="bad event store URL"):
        EventStore("not a url")


def test_the_sqlite_fast_path_writes_the_rows_sqlalchemy_would(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from agentheal import events

    store.start_run("r1", Gap(text="web down", component="web"))
    at = utcnow()
    monkeypatch.setattr(events, "utcnow", lambda: at)
    step = Step(action="restart", component="web")
    result = ActionResult(action="restart", component="web", outcome="ok", detail="pid 42")
    rows = {
        "node_events": {"run_id": "r1", "node": "triage", "detail": "d", "data": {"b": [1, 2], "a": "x"}},
        "llm_calls": {
            "run_id": "r1",
            "model": "m",
            "purpose": "plan",
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "duration_s": 0.25,
            "ok": False,
            "usage_known": False,
            "error": "HTTP 500: boom",
        },
        "actions": {
            "run_id": "r1",
            "action": "restart",
            "component": "web",
            "dry_run": False,
            "outcome": "ok",
            "step": step.model_dump(mode="json"),
            "result": result.model_dump(mode="json"),
        },
    }
    assert set(rows) == set(store._fast_inserts)  # every table with a fast path is compared here
    for table, values in rows.items():
        store._write(events.INSERTS[table], table, {"at": at, **values})  # through SQLAlchemy
        store._insert(table, table, **values)  # the fast path
    db = sqlite3.connect(store.url.removeprefix("sqlite:///"))
    for table in rows:
        written = db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        assert len(written) == 2 and written[0][1:] == written[1][1:], table


def test_begin_heal_records_every_report_and_starts_one_run(store: EventStore) -> None:
    gap = _gap()
    assert store.begin_heal(gap, "run-a") is None  # started
    assert store.begin_heal(gap, "run-b") == "run-a"  # joins the open run; starts nothing
    assert [r.run_id for r in store.runs()] == ["run-a"]
    store.set_status("run-a", RunStatus.healed)
    assert store.begin_heal(gap, "run-c") is None
    assert {r.run_id for r in store.runs()} == {"run-a", "run-c"}
    assert len(store.gaps(limit=10)) == 3
