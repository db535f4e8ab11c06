"""A worker that loses its lease while alive is fenced: it stops the run before its next action and
cannot record the run's actions or its end; only the claim's holder (worker and epoch) can.

In-process against a real PostgreSQL: the fence refuses an action, a status and an end once another
worker took the claim over, and writes nothing. With real `agentheal serve` workers: one is frozen
with SIGSTOP in the middle of a heal past its lease, another takes the run over and ends it, the
first is woken with SIGCONT; the event store shows every action once, one end, and why the first
one stopped.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from agentheal.config import Settings
from agentheal.event_schema import ACTIONS, NODE_EVENTS, RUNS
from agentheal.events import EventStore
from agentheal.graphs.context import HealContext
from agentheal.graphs.execute import execute
from agentheal.models import ActionResult, Gap, Plan, RunStatus, Step
from agentheal.work import Registry, WorkQueue
from agentheal.work.fencing import Fences, LeaseLost
from conftest import free_port, stop_processes_under
from pg_cluster import Cluster, postgres_fixture  # noqa: F401  (fixture)
from test_work_workers import Workers, _wait_for

_SLOW = """import os, socket, sys, time
with open("starts.txt", "a") as fh:
    fh.write(f"{os.getpid()}\\n")
time.sleep(2.5)  # a slow start: a restart takes this long before its probe answers
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
while True:
    s.accept()[0].close()
"""


# -- the fence itself, in one process --


@pytest.fixture
def pg_url(postgres: Cluster) -> str:
    return postgres.new_database(upgraded=True)


def test_a_taken_over_claim_can_neither_act_nor_record(pg_url: str) -> None:
    queue, store = WorkQueue(pg_url), EventStore(pg_url)
    try:
        gap = Gap(text="the log of api is too large", component="api")
        run_id, _ = queue.enqueue(gap)
        store.start_run(run_id, gap)
        first = queue.claim("stalls", lease_s=0.5)
        assert first is not None and first.claims == 1
        fences = Fences(queue, lease_s=0.5)
        store.fence = fences
        fences.hold(run_id, "stalls", first.claims)
        step = Step(action="rotate_logs", component="api")
        ok = ActionResult(action="rotate_logs", component="api", outcome="ok", detail="rotated")
        fences.before_action(run_id, "the action")  # held: the lease is extended
        store.action(run_id, step, ok)  # held: recorded
        _wait_for("the lease to end", lambda: queue.claim("takes-over", lease_s=30), 10)
        with pytest.raises(LeaseLost, match="gives it to worker takes-over now") as lost:
            fences.before_action(run_id, "the action rotate_logs api")
        assert (lost.value.holder, lost.value.epoch) == ("takes-over", 1)
        with pytest.raises(LeaseLost):
            store.action(run_id, step, ok)
        with pytest.raises(LeaseLost):
            store.finish_run(run_id, RunStatus.healed, persona=None, source="none", reason=None, result={})
        with pytest.raises(LeaseLost):
            store.set_status(run_id, RunStatus.awaiting_approval, "a person decides")
        # nothing of the stalled worker's was written after the takeover
        assert len(store.query(sa.select(ACTIONS.c.id).where(ACTIONS.c.run_id == run_id))) == 1
        detail = store.run(run_id)
        assert detail is not None and detail.row.status == RunStatus.running
        # a run this process heals under no claim (a CLI heal) is not fenced
        fences.release(run_id)
        store.finish_run(run_id, RunStatus.healed, persona=None, source="none", reason=None, result={})
    finally:
        store.close()
        queue.close()


def test_the_execute_node_acts_only_while_its_claim_holds(
    pg_url: str, settings: Settings, tiny_estate_file: Path
) -> None:
    ctx = HealContext(
        settings=Settings(home=settings.home, database_url=pg_url), estate_path=tiny_estate_file
    )
    assert ctx.backend is not None
    assert all(r.outcome == "ok" for r in ctx.backend.up())
    queue = WorkQueue(pg_url)
    try:
        gap = Gap(text="web is wedged", component="web")
        run_id, _ = queue.enqueue(gap)
        ctx.events.start_run(run_id, gap)
        claim = queue.claim("stalls", lease_s=0.5)
        assert claim is not None
        fences = Fences(queue, lease_s=0.5)
        ctx.events.fence = fences
        fences.hold(run_id, "stalls", claim.claims)
        restart = Step(action="restart", component="web")
        plan = Plan(hypothesis="web is wedged", steps=[restart, restart], source="persona")
        state = {"run_id": run_id, "plan": plan.model_dump(mode="json"), "attempts": 0}
        (web,) = ctx.backend.status()
        _wait_for("the lease to end", lambda: queue.claim("takes-over", lease_s=30), 10)
        with pytest.raises(LeaseLost, match="stopped here before the action restart"):
            execute(state, ctx)
        (still,) = ctx.backend.status()
        assert still.pid == web.pid, "the restart ran after the claim was lost"
        detail = ctx.events.run(run_id)
        assert detail is not None and detail.actions == []
        # its lease keeper saw it first (its renewal touched no row): stopped without asking again
        fences.lost(run_id)
        with pytest.raises(LeaseLost):
            fences.before_action(run_id, "the action")
    finally:
        ctx.backend.down()
        ctx.events.close()
        queue.close()


# -- real workers: one frozen past its lease mid-heal --


def write_slow_estate(root: Path, port: int, policy: str = "") -> tuple[Path, Path]:
    """One component whose memory is always over budget (the capacity persona's plan: process_stats,
    then a restart) and whose start takes 2.5 s; restarts allowed 10 times in 10 minutes."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "slow.py").write_text(_SLOW)
    (root / "estate.yaml").write_text(
        "name: slow\ncomponents:\n  slow:\n"
        f"    command: [python3, -u, slow.py, '{port}']\n"
        f"    probes: [{{tcp: '127.0.0.1:{port}'}}]\n"
        "    memory_budget_mb: 1\n    depends_on: []\n"
    )
    limits = "rate_limits:\n  - {action: restart, max: 10, window_s: 600}\n"
    (root / "policy.yaml").write_text(limits + policy)
    return root / "estate.yaml", root / "policy.yaml"


@pytest.fixture
def workers(tmp_path: Path, postgres: Cluster) -> Iterator[Workers]:
    estate, policy = write_slow_estate(tmp_path / "estate", free_port())
    group = Workers(tmp_path, postgres.new_database(upgraded=True), estate, policy, lease_s=2.0)
    group.estate_up()
    try:
        yield group
    finally:
        for proc in group.procs.values():  # a worker left stopped would not hear SIGTERM
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        group.stop_all()
        stop_processes_under(tmp_path / "estate")


def _actions(store: EventStore, run_id: str) -> list[dict[str, Any]]:
    return store.query(
        sa.select(ACTIONS.c.action, ACTIONS.c.outcome)
        .where(ACTIONS.c.run_id == run_id)
        .order_by(ACTIONS.c.id)
    )


def _events(store: EventStore, run_id: str) -> list[dict[str, Any]]:
    return store.query(
        sa.select(NODE_EVENTS.c.node, NODE_EVENTS.c.detail, NODE_EVENTS.c.data)
        .where(NODE_EVENTS.c.run_id == run_id)
        .order_by(NODE_EVENTS.c.id)
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_frozen_past_its_lease_stops_and_the_run_ends_once(workers: Workers) -> None:
    workers.start("frozen")
    workers.ready("frozen")
    queue, store = WorkQueue(workers.url), EventStore(workers.url)
    frozen = workers.procs["frozen"]
    try:
        with httpx.Client(timeout=30) as client:
            gap = {"text": f"slow holds too much memory, rss over budget {uuid.uuid4().hex[:6]}",
                   "component": "slow"}  # fmt: skip
            run_id = workers.post_gap(client, "frozen", gap)["run_id"]
            # the plan (process_stats, then a restart that takes 2.5 s): frozen once its first step is
            # recorded, in the middle of the restart or just before it
            _wait_for("the first step", lambda: _actions(store, run_id), 60, every=0.02)
            frozen.send_signal(signal.SIGSTOP)
            workers.start("other")
            workers.ready("other")
            _wait_for(
                "the other worker to take the run over and end it",
                lambda: (i := queue.item(run_id)) is not None and i.state == "done" and i.worker == "other",
                90,
                every=0.2,
            )
            frozen.send_signal(signal.SIGCONT)

            def told() -> list[dict[str, Any]]:
                return [e for e in _events(store, run_id) if e["node"] == "lease"]

            [lease] = _wait_for("the frozen worker to say why it stopped", told, 30, every=0.2)
            assert lease["data"]["worker"] == "frozen" and lease["data"]["holder"] == "other", lease
            assert "lost the lease" in lease["detail"], lease
            time.sleep(1.0)  # whatever the frozen worker still did after saying so would show by now

        item = queue.item(run_id)
        assert item is not None and (item.worker, item.claims, item.outcome) == ("other", 2, "healed"), item
        # every action happened once in the record: the first step by the frozen worker, the restart
        # by the one that took over (the frozen one's, if it was under way, was not recorded)
        assert [(a["action"], a["outcome"]) for a in _actions(store, run_id)] == [
            ("process_stats", "ok"),
            ("restart", "ok"),
        ]
        # the run ended once, healed, by the worker holding its claim; nothing after the frozen
        # worker's note of why it stopped but what the holder had done before
        runs = store.query(sa.select(RUNS.c.status, RUNS.c.finished_at).where(RUNS.c.run_id == run_id))
        assert [r["status"] for r in runs] == ["healed"]
        timeline = _events(store, run_id)
        assert [e["node"] for e in timeline].count("learn") == 1, [e["node"] for e in timeline]
        assert [e["node"] for e in timeline][-1] == "lease", [e["node"] for e in timeline]
        assert any(e["node"] == "resume" for e in timeline)
        # the frozen worker lives on, a worker again: it stopped that run only
        assert frozen.poll() is None
        _wait_for(
            "the frozen worker's heartbeat",
            lambda: "frozen" in {w.name for w in Registry(queue).workers()},
            30,
        )
    finally:
        store.close()
        queue.close()
