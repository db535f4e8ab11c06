"""The event store and its schema on both backends, as LangGraph tests its checkpointers: SQLite
files (always) and a real PostgreSQL (when its server binaries are here; see pg_cluster.py).

Writes and reads, one open run per fingerprint, the schema Alembic makes equal to event_schema's
tables, a store at an older revision refused naming `agentheal db upgrade` and upgraded by it
without losing rows, a store made before Alembic upgraded on open, `db current` / `db upgrade`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import pg_cluster
from agentheal.cli import main
from agentheal.config import Settings
from agentheal.events import EventStore, EventStoreError
from agentheal.models import ActionResult, Gap, RunStatus, Step, utcnow
from agentheal.storage import SchemaNotCurrent, StorageError, schema
from agentheal.storage.checkpoints import open_checkpoints, ping
from pg_cluster import home_fixture, postgres_fixture, ready_home_fixture  # noqa: F401  (fixtures)


@pytest.fixture
def store(ready_home: Settings) -> Iterator[EventStore]:
    opened = EventStore(ready_home.events_url)
    yield opened
    opened.close()


def _engine(home: Settings) -> sa.Engine:
    return sa.create_engine(home.events_url, poolclass=sa.pool.NullPool)


def _migrate_to(home: Settings, revision: str) -> None:
    from alembic import command

    engine = _engine(home)
    with engine.begin() as conn:
        command.upgrade(schema._alembic_config(conn), revision)
    engine.dispose()


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


# -- writes and reads --


def test_a_run_is_written_and_read_back(store: EventStore) -> None:
    gap = Gap(text="web answers 502", component="web")
    run_id = "5e1f" * 8
    assert store.begin_heal(gap, run_id) is None
    store.node(run_id, "triage", "severity high", {"impact": 3})
    step = Step(action="restart", component="web", why="process down")
    store.action(
        run_id, step, ActionResult(action="restart", component="web", detail="pid 42", duration_s=0.4)
    )
    store.llm_call(run_id, "m", "diagnose", 120, 30, 0.8, True)
    store.llm_call(run_id, "m", "plan", 0, 0, 1.2, False, usage_known=False, error="refused")
    assert store.open_run(gap.fingerprint) == run_id
    store.finish_run(
        run_id,
        RunStatus.healed,
        persona="availability",
        source="persona",
        reason=None,
        result={"status": "healed", "tags": {"b", "a"}, "at": utcnow()},
    )

    detail = store.run(run_id[:6])  # by prefix
    assert detail is not None and detail.row.run_id == run_id
    assert detail.row.status is RunStatus.healed and detail.gap == gap
    assert detail.timeline[0].data == {"impact": 3}
    assert detail.actions[0].step == step
    assert [c.purpose for c in detail.llm_calls] == ["diagnose", "plan"]
    assert detail.result is not None and detail.result["tags"] == ["a", "b"]
    assert detail.row.started_at.tzinfo is not None
    usage = store.llm_usage(run_id)
    assert (usage.calls, usage.prompt_tokens, usage.unknown_usage_calls) == (2, 120, 1)
    assert store.count_actions("web", "restart", 60) == 1
    assert store.open_run(gap.fingerprint) is None
    assert [r.run_id for r in store.runs(status="healed")] == [run_id]
    assert store.gaps(gap.fingerprint) == [gap]


def test_a_second_report_of_an_open_gap_starts_no_second_run(store: EventStore) -> None:
    gap = Gap(text="disk almost full", component="db")
    assert store.begin_heal(gap, "a" * 32) is None
    assert store.begin_heal(gap, "b" * 32) == "a" * 32
    assert [r.run_id for r in store.runs()] == ["a" * 32]
    assert len(store.gaps(gap.fingerprint)) == 2
    with pytest.raises(EventStoreError, match="no run 'nope'"):
        store.set_status("nope", RunStatus.failed)


def test_held_node_events_are_written_together_in_the_order_said(
    store: EventStore, ready_home: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gap = Gap(text="web answers 502", component="web")
    run_id, other = "4e1d" * 8, "7c2b" * 8
    store.begin_heal(gap, run_id)
    store.begin_heal(Gap(text="db is slow", component="db"), other)
    reader = EventStore(ready_home.events_url)  # another process's view
    try:
        store.hold_nodes(run_id)
        said = [("triage", "web: process_down", {"facts": ["process_down"]}), ("recall", "token=s3cr3t", {})]
        for node, detail, data in said:
            store.node(run_id, node, detail, data)
        store.node(other, "triage", "not held")  # another run's events are not held
        assert [e.node for e in _timeline(reader, run_id)] == []
        assert [e.detail for e in _timeline(reader, other)] == ["not held"]
        # a read of the run's events in this process sees them (written, still held after)
        assert store.node_data(run_id, "triage") == [{"facts": ["process_down"]}]
        store.node(run_id, "route", "availability (0.61)")
        assert [e.node for e in _timeline(reader, run_id)] == ["triage", "recall"]
        # one said long after the oldest held is written with them at once
        monkeypatch.setattr("agentheal.events.HOLD_S", 0.0)
        store.node(run_id, "diagnose", "no LLM: the persona's playbook")
        timeline = _timeline(reader, run_id)
        assert [e.node for e in timeline] == ["triage", "recall", "route", "diagnose"]
        assert timeline[1].detail != "token=s3cr3t" and "s3cr3t" not in timeline[1].detail  # redacted
        assert [e.at for e in timeline] == sorted(e.at for e in timeline)
        monkeypatch.setattr("agentheal.events.HOLD_S", 60.0)
        store.node(run_id, "plan", "restart web")
        store.node(run_id, "guard", "allowed")
        store.write_held(run_id)  # the breakpoint: written, and no longer held
        store.node(run_id, "execute", "restart web: ok")
        assert [e.node for e in _timeline(reader, run_id)][-3:] == ["plan", "guard", "execute"]
    finally:
        reader.close()


def test_a_runs_held_events_are_written_before_its_end(store: EventStore, ready_home: Settings) -> None:
    run_id = "3f4e" * 8
    store.begin_heal(Gap(text="web answers 502", component="web"), run_id)
    store.hold_nodes(run_id)
    store.node(run_id, "plan", "restart web")
    store.node(run_id, "guard", "policy refused the plan")
    store.finish_run(run_id, RunStatus.escalated, persona=None, source="none", reason="refused", result={})
    reader = EventStore(ready_home.events_url)
    try:  # whoever sees the run ended reads every step it said before that end
        assert [e.node for e in _timeline(reader, run_id)] == ["plan", "guard"]
    finally:
        reader.close()


def test_the_llm_use_of_a_run_started_here_is_known_until_another_process_may_drive_it(
    store: EventStore, ready_home: Settings
) -> None:
    run_id = "9a8b" * 8
    assert store.begin_heal(Gap(text="web answers 502", component="web"), run_id) is None
    other = EventStore(ready_home.events_url)
    try:
        assert store.llm_usage(run_id).calls == 0  # started here, no call recorded here
        store.llm_call(run_id, "m", "diagnose", 100, 20, 0.5, True)
        assert store.llm_usage(run_id).calls == 1  # read from the store once a call was recorded
        second = "1c2d" * 8
        store.begin_heal(Gap(text="db is slow", component="db"), second)
        store.forget(second)  # this process stopped driving it; another records a call
        other.llm_call(second, "m", "plan", 50, 10, 0.3, True)
        assert (store.llm_usage(second).calls, store.llm_usage(second).prompt_tokens) == (1, 50)
    finally:
        other.close()


def _timeline(store: EventStore, run_id: str) -> list[Any]:
    detail = store.run(run_id)
    assert detail is not None
    return list(detail.timeline)


def test_the_audit_trail_and_the_window_of_counts(store: EventStore) -> None:
    store.audit("alice", "approve", door="cli", role="operator", target="run-1", detail="looks right")
    store.audit("bob", "heal", door="api", outcome="refused")
    rows = store.audit_rows()
    assert [(r.actor, r.outcome) for r in rows] == [("bob", "refused"), ("alice", "ok")]
    assert store.audit_rows(since=utcnow() + timedelta(hours=1)) == []


# -- the schema --


def test_the_revisions_in_code_are_the_migration_files() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(schema.MIGRATIONS_DIR))
    assert [s.revision for s in reversed(list(scripts.walk_revisions()))] == list(schema.REVISIONS)
    assert scripts.get_current_head() == schema.HEAD


def test_the_migrations_make_the_tables_event_schema_describes(ready_home: Settings) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from agentheal.event_schema import METADATA

    EventStore(ready_home.events_url).close()  # SQLite: made at the first open
    engine = _engine(ready_home)
    with engine.connect() as conn:
        # the checkpoint tables share the PostgreSQL database; they are the saver's, not ours
        ours = {"include_name": lambda name, kind, _parent: kind != "table" or name in METADATA.tables}
        diff = compare_metadata(MigrationContext.configure(conn, opts=ours), METADATA)
    engine.dispose()
    assert diff == [], "event_schema.py and agentheal/migrations differ: add a revision"


def test_an_older_revision_is_refused_then_upgraded_without_losing_rows(
    home: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _migrate_to(home, "0002")
    engine = _engine(home)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO runs (run_id, fingerprint, gap_text, gap, status, started_at) "
                "VALUES ('r-old', 'fp', 'web down', '{}', 'healed', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()

    with pytest.raises(
        EventStoreError,
        match=rf"revision 0002; this agentheal needs {schema.HEAD}: run `agentheal db upgrade`",
    ):
        EventStore(home.events_url)
    code, found = _json(capsys, "db", "current", "--json")
    assert code == 1 and found["events"] == {
        "revision": "0002",
        "head": schema.HEAD,
        "tables": 6,
        "current": False,
    }

    code, done = _json(capsys, "db", "upgrade", "--json")
    assert code == 0 and (done["events"]["before"], done["events"]["after"]) == ("0002", schema.HEAD)
    store = EventStore(home.events_url)
    try:
        assert [r.run_id for r in store.runs()] == ["r-old"]
        store.audit("carol", "heal", door="cli")  # the table 0003 made
    finally:
        store.close()
    code, found = _json(capsys, "db", "current", "--json")
    assert code == 0 and found["current"] is True


def test_a_newer_revision_is_refused(settings: Settings) -> None:
    EventStore(settings.events_url).close()
    db = sqlite3.connect(settings.home_dir / "events.sqlite")
    db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.commit()
    db.close()
    with pytest.raises(
        EventStoreError, match=r"revision 9999, which this agentheal does not know.*upgrade agentheal"
    ):
        EventStore(settings.events_url)


def test_a_sqlite_store_made_before_alembic_upgrades_on_open_keeping_its_rows(settings: Settings) -> None:
    path = settings.home_dir / "events.sqlite"
    _migrate_to(settings, "0001")  # the first release's tables, exactly
    db = sqlite3.connect(path)
    db.execute("DROP TABLE alembic_version")  # as create_all made them: no revision recorded
    db.execute(
        "INSERT INTO runs (run_id, fingerprint, gap_text, gap, status, started_at) "
        "VALUES ('r1', 'fp', 'web down', '{}', 'healed', '2026-01-01 00:00:00')"
    )
    db.execute(
        "INSERT INTO llm_calls (run_id, model, purpose, prompt_tokens, completion_tokens, "
        "duration_s, ok, at) VALUES ('r1', 'm', 'plan', 3, 4, 0.5, 1, '2026-01-01 00:00:00')"
    )
    db.commit()
    db.close()

    store = EventStore(settings.events_url)  # no command: as every earlier agentheal did
    try:
        detail = store.run("r1")
        assert detail is not None and detail.llm_calls[0].usage_known is True
        assert detail.llm_calls[0].error == ""
        store.audit("dave", "heal", door="cli")
    finally:
        store.close()
    found = sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchall()
    assert found == [(schema.HEAD,)]


def test_a_new_sqlite_home_needs_no_command(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, found = _json(capsys, "db", "current", "--json")
    assert code == 0 and found["backend"] == "sqlite" and found["events"]["revision"] is None
    EventStore(settings.events_url).close()
    code, found = _json(capsys, "db", "current", "--json")
    assert code == 0 and found["events"]["revision"] == schema.HEAD


def test_an_empty_postgres_database_is_refused_until_db_upgrade(
    postgres: pg_cluster.Cluster,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a password the server does not ask for (trust): it must not show in any message
    url = postgres.new_database().replace("postgres@", "postgres:hunter2@", 1)
    monkeypatch.setenv("AGENTHEAL_DATABASE_URL", url)
    home = Settings(home=settings.home, database_url=url)
    with pytest.raises(EventStoreError) as refused:
        EventStore(home.events_url)
    assert f"revision none (empty); this agentheal needs {schema.HEAD}: run `agentheal db upgrade`" in str(
        refused.value
    )
    assert "postgresql://postgres:***@127.0.0.1" in str(refused.value) and "hunter2" not in str(refused.value)
    with pytest.raises(SchemaNotCurrent) as refused_too:
        open_checkpoints(home)
    assert "has no checkpoint tables; this agentheal needs" in str(refused_too.value)
    assert "run `agentheal db upgrade`" in str(refused_too.value) and "hunter2" not in str(refused_too.value)
    with pytest.raises(SchemaNotCurrent):
        ping(home)
    code, found = _json(capsys, "db", "current", "--json")
    assert code == 1 and found["checkpoints"]["version"] is None

    assert main(["db", "upgrade"]) == 0
    assert f"events: revision none -> {schema.HEAD}" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0  # again: nothing to do, nothing broken
    assert f"events: revision {schema.HEAD} -> {schema.HEAD}" in capsys.readouterr().out
    assert ping(home) == "ok"
    with open_checkpoints(home) as checkpoints:
        assert checkpoints.saver.get_tuple({"configurable": {"thread_id": "none"}}) is None
    EventStore(home.events_url).close()


def test_a_bad_database_url_is_named(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTHEAL_DATABASE_URL", "mysql://root:hunter2@db/agentheal")
    assert main(["db", "current"]) == 2
    err = capsys.readouterr().err
    assert "database_url: Value error, expected postgresql://USER@HOST:PORT/DB, got scheme 'mysql'" in err
    assert "hunter2" not in err


def test_processes_reporting_one_gap_at_once_start_one_run(store: EventStore, ready_home: Settings) -> None:
    """Each thread its own store (its own connections), as separate workers have: per fingerprint,
    every report is recorded and exactly one run started."""
    stores = [store, EventStore(ready_home.events_url), EventStore(ready_home.events_url)]
    gaps = [Gap(text=f"queue {i} stuck", component=f"q{i}") for i in range(12)]
    started: list[tuple[str, str]] = []
    barrier = threading.Barrier(len(stores))

    def report(worker: int) -> None:
        for gap in gaps:
            barrier.wait(10)
            run_id = uuid.uuid4().hex
            if stores[worker].begin_heal(gap, run_id) is None:
                started.append((gap.fingerprint, run_id))

    threads = [threading.Thread(target=report, args=(w,)) for w in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for extra in stores[1:]:
        extra.close()
    assert sorted(fp for fp, _ in started) == sorted(g.fingerprint for g in gaps)
    assert {r.run_id for r in store.runs(limit=100)} == {run_id for _, run_id in started}
    assert all(len(store.gaps(g.fingerprint)) == len(stores) for g in gaps)


def test_database_urls_in_each_drivers_form_and_as_messages_show_them() -> None:
    from agentheal.storage.urls import check_database_url, libpq_url, shown, sqlalchemy_url

    url = "postgres://agentheal:s3cret@db.internal:5432/heal?sslmode=require"
    assert (
        sqlalchemy_url(url) == "postgresql+psycopg://agentheal:s3cret@db.internal:5432/heal?sslmode=require"
    )
    assert (
        libpq_url(sqlalchemy_url(url))
        == "postgresql://agentheal:s3cret@db.internal:5432/heal?sslmode=require"
    )
    assert shown(url) == "postgresql://agentheal:***@db.internal:5432/heal?sslmode=require"
    assert shown("sqlite:////home/a/events.sqlite") == "sqlite:////home/a/events.sqlite"
    assert check_database_url(" postgresql:///heal?host=/var/run/postgresql ") == (
        "postgresql:///heal?host=/var/run/postgresql"
    )
    for bad, why in [
        ("sqlite:///x.db", "got scheme 'sqlite'"),
        ("db.internal:5432", "got scheme 'db.internal'"),
        ("postgresql:///heal", "no host"),
        ("postgresql://h:port/heal", "expected postgresql://USER@HOST:PORT/DB"),
    ]:
        with pytest.raises(StorageError, match=why):
            check_database_url(bad)


def test_several_workers_upgrading_at_once_take_turns(home: Settings) -> None:
    """Three upgraders on one new store at once (`db upgrade` on PostgreSQL, the first open on
    SQLite): none fails, and the store ends at the head revision with its tables made once."""
    from agentheal.storage import database

    def upgrade() -> None:
        if home.database_url is not None:
            database.upgrade(home)
        else:
            EventStore(home.events_url).close()

    failures: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker() -> None:
        try:
            barrier.wait(10)
            upgrade()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    engine = _engine(home)
    with engine.connect() as conn:
        assert schema.revision(conn) == schema.Revision(schema.HEAD, 6)
    engine.dispose()


def test_connections_postgresql_dropped_are_replaced_before_use(
    postgres: pg_cluster.Cluster, settings: Settings
) -> None:
    """A restart, a failover or an idle time-out drops a long-lived worker's connections: its next
    read, write and checkpoint go through new ones instead of failing."""
    import psycopg

    url = postgres.new_database(upgraded=True)
    home = Settings(home=settings.home, database_url=url)
    store = EventStore(home.events_url)
    store.idle_ping_s = 0.0  # the test does not wait out the idle time (the writer's, the pool's)
    checkpoints = open_checkpoints(home)
    checkpoints.idle_check_s = 0.0
    try:
        store.start_run("r-drop", Gap(text="web down", component="web"))
        assert len(store.runs()) == 1
        assert checkpoints.saver.get_tuple({"configurable": {"thread_id": "r-drop"}}) is None
        with psycopg.connect(postgres.admin_url, autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                (url.rsplit("/", 1)[1],),
            ).fetchone()
        assert dropped is not None and dropped[0] >= 3  # the writer, a pooled reader, the checkpointer
        store.node("r-drop", "triage", "after the drop")
        detail = store.run("r-drop")
        assert detail is not None and [n.detail for n in detail.timeline] == ["after the drop"]
        assert checkpoints.saver.get_tuple({"configurable": {"thread_id": "r-drop"}}) is None
    finally:
        checkpoints.close()
        store.close()


def test_a_server_a_killed_test_session_left_running_is_reaped(postgres: pg_cluster.Cluster) -> None:
    # a session killed with SIGKILL never stops its server: the next session's start stops it
    script = "import os, pg_cluster; print(pg_cluster.start().folder, flush=True); os.kill(os.getpid(), 9)"
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )  # fmt: skip
    folder = Path(child.stdout.strip())
    assert child.returncode == -signal.SIGKILL and (folder / "data" / "postmaster.pid").exists(), child.stderr
    assert postgres.bindir is not None  # (a server started here, not one given by URL)
    assert folder in pg_cluster.reap(postgres.bindir)
    assert not folder.exists()
    # the session's own server, whose starting process lives, is left alone
    assert postgres.folder is not None and postgres.folder.exists()
