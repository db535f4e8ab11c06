"""Every effectiveness figure against a known history whose values were worked out by hand."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentheal.config import Settings
from agentheal.event_schema import AUDIT, GAPS, NODE_EVENTS, RUNS
from agentheal.events import EventStore
from agentheal.metrics import Window, compute, engines
from agentheal.metrics.records import EVOLUTIONS, PREDICTIONS, PROBES, engine_for
from agentheal.models import utcnow
from pg_cluster import home_fixture, postgres_fixture, ready_home_fixture  # noqa: F401  (fixtures)

NOW = utcnow().replace(microsecond=0)
D, H, S = timedelta(days=1), timedelta(hours=1), timedelta(seconds=1)


class History:
    """Rows written with chosen times, straight into the store's tables (real SQLite)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.engine = engine_for(store)

    def rows(self, table: sa.Table, *rows: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.insert(), list(rows))

    def gap(self, fp: str, at: datetime, *, source: str = "user", created: datetime | None = None,
            kind: str = "incident") -> None:  # fmt: skip
        gap = {"text": f"gap {fp}", "fingerprint": fp, "source": source, "kind": kind}
        row = {"fingerprint": fp, "kind": kind, "component": "web", "severity": "medium", "text": gap["text"]}
        self.rows(GAPS, {**row, "gap": gap, "created_at": created or at, "recorded_at": at})

    def run(self, run_id: str, fp: str, status: str, started: datetime, took_s: float | None,
            persona: str | None = None) -> None:  # fmt: skip
        self.gap(fp, started)
        finished = started + took_s * S if took_s is not None else None
        self.rows(RUNS, {"run_id": run_id, "fingerprint": fp, "component": "web", "gap_text": f"gap {fp}",
                         "gap": {}, "status": status, "persona": persona, "started_at": started,
                         "finished_at": finished})  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")


def _history(store: EventStore) -> None:
    h = History(store)
    # heal runs: four end inside the window (r1..r4), r2 healed only after a person approved it
    h.run("r1", "A", "healed", NOW - 10 * D, 30, persona="availability")
    h.run("r2", "B", "healed", NOW - 9 * D, 60)
    h.run("r3", "C", "escalated", NOW - 8 * D, 100, persona="availability")
    h.run("r4", "A", "healed", NOW - 5 * D, 90, persona="config")
    h.run("r5", "D", "running", NOW - H, None)  # still open: not handled yet
    h.run("r7", "F", "dry_run", NOW - 2 * D, 5)  # a dry run changes nothing: not counted
    h.run("r6", "E", "healed", NOW - 40 * D, 20)  # the previous window
    h.rows(AUDIT, {"at": NOW - 9 * D, "actor": "ann", "door": "cli", "action": "approve", "target": "r2",
                   "outcome": "ok", "detail": "", "data": {}})  # fmt: skip
    # B came back two hours after r2 healed it; A came back only four days after r1
    h.gap("B", NOW - 9 * D + 60 * S + 2 * H)
    h.gap("E", NOW - 35 * D)  # back after r6, in the previous window
    # found by detectors, 5 s, 15 s and 25 s after the first failing observation; a person's feedback
    for fp, ago, lag in (("M1", 20 * D, 5), ("M2", 3 * D, 15), ("M3", 2 * D, 25)):
        h.gap(fp, NOW - ago + lag * S, source="monitor", created=NOW - ago)
    h.gap("FB", NOW - D + 40 * S, source="feedback", created=NOW - D)
    h.gap("P", NOW - D, source="predict", kind="predicted", created=NOW - D)  # not a recurrence candidate

    def prediction(outcome: str, acted: bool, checked: datetime | None) -> dict[str, Any]:
        return {"series": "disk", "component": "web", "text": "disk fills", "made_at": NOW - 20 * D,
                "expected_at": None, "confidence": 0.9, "limit": 100.0, "acted": acted, "measure": None,
                "outcome": outcome, "checked_at": checked, "data": {}}  # fmt: skip

    h.rows(
        PREDICTIONS,
        prediction("avoided", True, NOW - 3 * D),
        prediction("avoided", True, NOW - 2 * D),
        prediction("breached", True, NOW - 2 * D),
        prediction("breached", False, NOW - 2 * D),
        prediction("false", False, NOW - D),
        prediction("missed", False, NOW - D),
        prediction("pending", False, None),
        prediction("avoided", True, NOW - 45 * D),  # followed up before the window
    )

    def evolution(i: int, status: str, decided: datetime | None) -> dict[str, Any]:
        return {"id": f"ev{i}", "kind": "add_check", "target": "web", "fingerprint": "A", "status": status,
                "created_at": NOW - 6 * D, "decided_at": decided, "reason": "", "data": {}}  # fmt: skip

    h.rows(
        EVOLUTIONS,
        evolution(1, "kept", NOW - 5 * D),
        evolution(2, "kept", NOW - 4 * D),
        evolution(3, "kept", NOW - 3 * D),
        evolution(4, "reverted", NOW - 3 * D),
        evolution(5, "refused", NOW - 3 * D),
        evolution(6, "proposed", None),
    )
    # web: 10 answers, 8 passed, in three batches; db: one passed, one failing before the window
    probes = [
        {"component": "web", "answers": 4, "passed": 2, "at": NOW - D},
        {"component": "web", "answers": 5, "passed": 5, "at": NOW - D + 5 * S},
        {"component": "web", "answers": 1, "passed": 1, "at": NOW - D + 6 * S},
        {"component": "db", "answers": 1, "passed": 1, "at": NOW - H},
        {"component": "db", "answers": 1, "passed": 0, "at": NOW - 50 * D},
    ]
    h.rows(PROBES, *probes)
    h.rows(
        NODE_EVENTS,
        {"run_id": "r3", "node": "factory", "detail": "made one", "data": {}, "at": NOW - 10 * 60 * S},
    )


def test_every_figure_matches_the_value_worked_out_by_hand(store: EventStore) -> None:
    _history(store)
    window = Window(NOW - 30 * D, NOW)
    got = {f.name: f for f in compute(store, window)}

    def check(name: str, value: float, n: int) -> None:
        f = got[name]
        assert (f.value, f.n, f.no_data) == (pytest.approx(value), n, False), f

    check("gap_resolution_rate", 2 / 4, 4)  # r1, r4 healed by themselves; r2 approved, r3 escalated
    check("time_to_detect_median_s", 15, 3)  # nearest rank: 5, [15], 25
    check("time_to_detect_p95_s", 25, 3)
    check("time_to_heal_median_s", 60, 3)  # 30, [60], 90
    check("time_to_heal_p95_s", 90, 3)
    check("resolution_quality", 2 / 3, 3)  # r1 and r4 held for a day, B came back after r2
    # 11 reports in the window (predicted ones aside): A again after r1, B again after r2
    check("recurrence_rate", 2 / 11, 11)
    check("recurrence_reduction", 1 / 2 - 2 / 11, 13)  # previous window: E reported, then back once
    check("prevention_effectiveness", 2 / 3, 3)
    check("breach_rate_not_acted_on", 1 / 2, 2)
    check("prediction_precision", 4 / 5, 5)
    check("prediction_recall", 4 / 5, 5)
    check("evolution_success_rate", 3 / 4, 4)
    check("availability:web", 8 / 10, 10)
    check("availability:db", 1.0, 1)
    check("agent_resolution_rate:availability", 1 / 2, 2)
    check("agent_resolution_rate:config", 1.0, 1)
    assert all(f.window == window.text() for n, f in got.items() if n != "recurrence_reduction")
    assert got["recurrence_reduction"].window == Window(NOW - 60 * D, NOW).text()

    state = {e.name: (e.state, e.last_activity) for e in engines(store, now=NOW)}
    assert state["factory"] == ("active", NOW - 10 * 60 * S)
    assert state["healing"] == ("active", NOW - H)
    assert state["detection"] == ("idle", NOW - D)  # the predicted gap, a detector's
    assert state["evolution"] == ("idle", NOW - 3 * D)
    assert state["prevention"] == ("idle", NOW - D)


def _same(store: EventStore, window: Window) -> None:
    summary = [f.model_dump() for f in compute(store, window)]
    assert summary == [f.model_dump() for f in compute(store, window, scratch=True)]


def test_the_summary_equals_a_computation_from_scratch_as_events_arrive(ready_home: Settings) -> None:
    """On SQLite and PostgreSQL: figures read from the summary equal those derived from the events,
    after the first fold and after each kind of new event (new, late, back-dated, re-opened)."""
    from agentheal.metrics.summary import refresh

    store = EventStore(ready_home.events_url)
    window = Window(NOW - 30 * D, NOW)
    _history(store)
    _same(store, window)
    assert refresh(store) is False  # nothing new: nothing folded (and nothing written)
    h = History(store)
    # rows that change older ones' flags: A reported again 3 hours after r4 healed it (r4 no longer
    # held), and a heal of M2 written late, ended before M2's report (which now came back)
    h.gap("A", NOW - 5 * D + 90 * S + 3 * H)
    h.run("n3", "M2", "healed", NOW - 4 * D, 30, persona="config")
    _same(store, window)
    got = {f.name: f for f in compute(store, window)}
    # of r1, r2, r4, n3 only r1 held: B back after 2 h, A after 3 h, M2 reported 23 h after n3
    assert (got["resolution_quality"].value, got["resolution_quality"].n) == (pytest.approx(1 / 4), 4)
    # a heal that ends now, of a fingerprint healed before; its report recurs
    h.run("n1", "A", "healed", NOW - 2 * H, 45, persona="config")
    h.gap("A", NOW - H)  # and A is back an hour later: n1 did not hold for a day
    # a run that ended long ago but was written only now (a late commit, or an import)
    h.run("n2", "G", "healed", NOW - 20 * D, 12, persona="storage")
    h.gap("G", NOW - 20 * D + 10 * H)
    # a person approves n1 after the fact; a detector's report with its lag
    h.rows(AUDIT, {"at": NOW - H, "actor": "bo", "door": "api", "action": "approve", "target": "n1",
                   "outcome": "ok", "detail": "", "data": {}})  # fmt: skip
    h.gap("M4", NOW - 3 * H + 7 * S, source="monitor", created=NOW - 3 * H)
    _same(store, window)
    got = {f.name: f for f in compute(store, window)}
    assert got["time_to_heal_median_s"].n == 6 and got["time_to_detect_median_s"].n == 4
    # a run opened again (no longer ended), and another's status changed to escalated
    with h.engine.begin() as conn:
        conn.execute(RUNS.update().where(RUNS.c.run_id == "r4").values(status="running", finished_at=None))
        conn.execute(RUNS.update().where(RUNS.c.run_id == "r1").values(status="escalated", finished_at=NOW))
    _same(store, window)
    _same(store, Window(NOW - 400 * D, NOW + D))
    store.close()


def test_reports_folded_before_any_run_ended_are_judged_when_one_does(tmp_path: Path) -> None:
    """A report folded while no run had ended, then a heal of its fingerprint written late that ended
    before it: the report came back after a heal."""
    store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    window = Window(NOW - 30 * D, NOW)
    h = History(store)
    h.gap("Q", NOW - 2 * D)
    _same(store, window)
    h.run("q1", "Q", "healed", NOW - 3 * D, 20)
    _same(store, window)
    got = {f.name: f for f in compute(store, window)}
    assert (got["recurrence_rate"].value, got["recurrence_rate"].n) == (pytest.approx(1 / 2), 2)


def test_folds_at_once_take_turns_and_count_each_event_once(ready_home: Settings) -> None:
    """Four readers fold the same new events at once (as status, /metrics and a watch may): each
    event is in the summary once, and the figures equal those from scratch."""
    import threading

    from agentheal.metrics.summary import SUMMARY_GAPS, SUMMARY_RUNS, refresh

    store = EventStore(ready_home.events_url)
    _history(store)
    h = History(store)
    for i in range(40):
        h.run(f"c{i}", f"K{i % 7}", "healed" if i % 3 else "failed", NOW - (i + 1) * H, 10 + i)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def fold() -> None:
        try:
            barrier.wait(10)
            refresh(store)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    runs = store.query(sa.select(sa.func.count().label("n")).select_from(SUMMARY_RUNS))[0]["n"]
    gaps = store.query(sa.select(sa.func.count().label("n")).select_from(SUMMARY_GAPS))[0]["n"]
    assert (runs, gaps) == (5 + 40, 14 + 40)  # r1-r4, r6 and c0-c39 ended; every report once
    _same(store, Window(NOW - 30 * D, NOW))
    store.close()


def test_an_empty_store_says_no_data_everywhere(store: EventStore) -> None:
    figures = compute(store)
    assert figures and all(f.no_data and f.value is None and f.n == 0 for f in figures)
    assert {e.state for e in engines(store)} == {"never"}


def test_a_window_with_nothing_in_it_is_no_data_not_zero(store: EventStore) -> None:
    _history(store)
    empty = Window(NOW - 400 * D, NOW - 300 * D)
    assert all(f.no_data and f.value is None for f in compute(store, empty))


def test_the_migrations_make_the_tables_records_describes(ready_home: Settings) -> None:
    """Revision 0004 makes exactly the tables metrics.records declares, on SQLite and PostgreSQL."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from agentheal.metrics.records import METADATA

    EventStore(ready_home.events_url).close()
    engine = sa.create_engine(ready_home.events_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        ours = {"include_name": lambda name, kind, _parent: kind != "table" or name in METADATA.tables}
        diff = compare_metadata(MigrationContext.configure(conn, opts=ours), METADATA)
    engine.dispose()
    assert diff == [], "metrics/records.py and agentheal/migrations differ: add a revision"


def test_a_store_with_the_tables_made_before_0004_keeps_its_probe_answers(tmp_path: Path) -> None:
    """probe_results as create_all made it (a row per answer, `ok`) becomes counts, nothing lost."""
    from alembic import command

    from agentheal.storage import schema

    url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        command.upgrade(schema._alembic_config(conn), "0003")
        conn.execute(sa.text("CREATE TABLE probe_results (id INTEGER PRIMARY KEY, component VARCHAR(200) "
                             "NOT NULL, ok BOOLEAN NOT NULL, at DATETIME NOT NULL)"))  # fmt: skip
        conn.execute(sa.text("CREATE INDEX ix_probe_results_component_at ON probe_results (component, at)"))
        at = (NOW - H).strftime("%Y-%m-%d %H:%M:%S.%f")
        for ok in (1, 1, 0):
            conn.execute(sa.text("INSERT INTO probe_results (component, ok, at) VALUES ('web', :ok, :at)"),
                         {"ok": ok, "at": at})  # fmt: skip
        command.upgrade(schema._alembic_config(conn), "head")
    engine.dispose()
    store = EventStore(url)
    got = {f.name: f for f in compute(store, Window(NOW - D, NOW))}
    assert (got["availability:web"].value, got["availability:web"].n) == (pytest.approx(2 / 3), 3)


def test_heal_times_from_the_summary_are_those_of_the_runs(store: EventStore) -> None:
    """The histogram parts /metrics can read from the summary: all-time healed runs of _history
    (r1 30 s, r2 60 s, r4 90 s, r6 20 s)."""
    from agentheal.metrics.from_summary import heal_times
    from agentheal.metrics.summary import refresh

    _history(store)
    refresh(store)
    under, n, total = heal_times(store, (25.0, 60.0, 100.0))
    assert (under, n, total) == ([1, 3, 4], 4, pytest.approx(200.0, abs=1e-3))
