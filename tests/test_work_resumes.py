"""Approvals on a shared PostgreSQL go through the work table: the worker that receives one only
queues the run's resume, which any worker claims under a lease. Approved through one worker's API,
that worker killed with SIGKILL while it resumes the run, another worker takes the resume over and
heals the run."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from agentheal.config import Settings
from agentheal.estate.local import LocalBackend
from agentheal.event_schema import ACTIONS, AUDIT
from agentheal.events import EventStore
from agentheal.models import Gap, RunStatus
from agentheal.work import WorkQueue, resumes
from agentheal.work.tables import WORK_ITEMS
from conftest import free_port, stop_processes_under
from pg_cluster import Cluster, postgres_fixture  # noqa: F401  (fixture)
from test_a2a_remote import remote_agent
from test_a2a_wait import (
    _add,
    _left_waiting,
    estate_up,  # noqa: F401  (fixture)
)
from test_work_fencing import write_slow_estate
from test_work_workers import Workers, _wait_for

_APPROVAL = "approval:\n  - {actions: [restart], reason: a person watches restarts}\n"


@pytest.fixture
def workers(tmp_path: Path, postgres: Cluster) -> Iterator[Workers]:
    estate, policy = write_slow_estate(tmp_path / "estate", free_port(), _APPROVAL)
    group = Workers(tmp_path, postgres.new_database(upgraded=True), estate, policy, lease_s=2.0)
    group.estate_up()
    try:
        yield group
    finally:
        group.stop_all()
        stop_processes_under(tmp_path / "estate")


def _status(store: EventStore, run_id: str) -> str | None:
    detail = store.run(run_id)
    return detail.row.status.value if detail is not None else None


def test_a_resume_is_queued_once_and_claimed_with_its_answer(postgres: Cluster) -> None:
    url = postgres.new_database(upgraded=True)
    queue, store = WorkQueue(url), EventStore(url)
    try:
        gap = Gap(text="web is wedged", component="web")
        run_id, _ = queue.enqueue(gap)
        store.start_run(run_id, gap)
        heal = queue.claim("w1", lease_s=30)
        assert heal is not None and heal.kind == "heal" and heal.payload is None
        store.set_status(run_id, RunStatus.awaiting_approval, "a person decides")
        assert queue.finish(run_id, "w1", "awaiting_approval")
        detail = store.run(run_id)
        assert detail is not None
        resumes.enqueue(queue, detail, "approval", {"answer": {"approved": True, "by": "ops", "note": ""}})
        with pytest.raises(resumes.ResumeBusy, match="queued for its approval"):
            resumes.enqueue(queue, detail, "approval", {"answer": {"approved": False, "by": "x", "note": ""}})
        resume = queue.claim("w2", lease_s=30)
        assert resume is not None and (resume.run_id, resume.kind) == (run_id, "approval")
        assert resume.payload == {"answer": {"approved": True, "by": "ops", "note": ""}}
        assert resume.claims == 2  # the epoch goes on from the heal's claim: a stale fence never matches
        with pytest.raises(resumes.ResumeBusy, match="being worked on"):
            resumes.enqueue(queue, detail, "remote", None)
        # a run started with no work item (a CLI heal) gets one for its resume
        other = Gap(text="db is wedged", component="db")
        store.start_run("cli-run", other)
        store.set_status("cli-run", RunStatus.awaiting_remote, "waiting for an agent")
        cli = store.run("cli-run")
        assert cli is not None
        resumes.enqueue(queue, cli, "remote", None)
        item = queue.item("cli-run")
        assert item is not None and (item.state, item.key) == ("queued", "db")
    finally:
        store.close()
        queue.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_approval_outlives_the_worker_that_received_it(workers: Workers) -> None:
    workers.start("gets-it")
    workers.ready("gets-it")
    queue, store = WorkQueue(workers.url), EventStore(workers.url)
    try:
        with httpx.Client(timeout=30) as client:
            gap = {"text": f"slow holds too much memory {uuid.uuid4().hex[:6]}", "component": "slow"}
            run_id = workers.post_gap(client, "gets-it", gap)["run_id"]
            _wait_for("the run to wait", lambda: _status(store, run_id) == "awaiting_approval", 60)
            waiting = queue.item(run_id)
            assert waiting is not None and (waiting.state, waiting.outcome) == ("done", "awaiting_approval")
            # approved through the worker's API, answered at once (202: it carries on) ...
            approve = f"{workers.base('gets-it')}/runs/{run_id}/approve?timeout=0.05"
            answer = client.post(approve, json={"by": "ops", "note": "go"})
            assert answer.status_code == 202, answer.text

            # ... and killed while it resumes the run (approved, its restart taking 2.5 s)
            def resuming() -> bool:
                detail = store.run(run_id)
                return detail is not None and any(e.node == "approval" for e in detail.timeline)

            _wait_for("the worker to resume the run", resuming, 60, every=0.02)
            workers.procs["gets-it"].send_signal(signal.SIGKILL)
            workers.procs["gets-it"].wait()
            held = queue.item(run_id)
            assert held is not None and (held.state, held.worker) == ("claimed", "gets-it"), held
            workers.start("other")
            workers.ready("other")
            # a second answer is refused while the first one is worked on (or once it healed the run)
            again = client.post(f"{workers.base('other')}/runs/{run_id}/approve?timeout=0.05", json={})
            assert again.status_code == 409, again.text

        def ended() -> bool:  # the run's end is recorded first, then its item marked done
            item = queue.item(run_id)
            return item is not None and item.state == "done" and _status(store, run_id) == "healed"

        _wait_for("the other worker to heal it", ended, 90, every=0.2)
        item = queue.item(run_id)
        assert item is not None and (item.state, item.worker, item.outcome) == ("done", "other", "healed")
        assert item.claims == 3, item  # the heal, the resume on the worker killed, its takeover
        with queue.engine.connect() as conn:
            kind = conn.execute(sa.select(WORK_ITEMS.c.kind).where(WORK_ITEMS.c.run_id == run_id)).scalar()
        assert kind == "approval"
        actions: list[dict[str, Any]] = store.query(
            sa.select(ACTIONS.c.action, ACTIONS.c.outcome)
            .where(ACTIONS.c.run_id == run_id)
            .order_by(ACTIONS.c.id)
        )
        assert [(a["action"], a["outcome"]) for a in actions] == [("process_stats", "ok"), ("restart", "ok")]
        # the approval was recorded once, where it was received
        approvals = store.query(
            sa.select(AUDIT.c.door, AUDIT.c.data).where(AUDIT.c.target == run_id, AUDIT.c.action == "approve")
        )
        assert len(approvals) == 1 and approvals[0]["data"]["by"] == "ops", approvals
    finally:
        store.close()
        queue.close()


@pytest.mark.slow
def test_a_remote_wait_is_resumed_through_the_work_table(
    settings: Settings,
    postgres: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    estate_up: tuple[Path, LocalBackend],  # noqa: F811  (the fixture imported above)
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run a CLI heal left waiting for a remote agent (no work item of its own): a worker's poller
    queues its resume in the work table once the agent answered, and a worker claims and resumes it."""
    from agentheal.graphs.context import HealContext
    from agentheal.protocols.a2a_wait import RemotePoller
    from agentheal.services.heal import HealPool

    url = postgres.new_database(upgraded=True)
    monkeypatch.setenv("AGENTHEAL_DATABASE_URL", url)  # for the CLI heal
    home = Settings(home=settings.home, database_url=url, remote_poll_s=0.1, worker_name="poller")
    estate_file, _ = estate_up
    gate = threading.Event()
    queue = WorkQueue(url)
    try:
        with remote_agent("plan", gate=gate) as (agent_url, agent):
            _add(capsys, agent_url)
            row = _left_waiting(home, estate_file)
            assert queue.item(row.run_id) is None
            ctx = HealContext(settings=home, estate_path=estate_file)
            pool = HealPool(ctx, max_heals=1)
            pool.warm()
            poller = RemotePoller(pool).start()
            try:
                gate.set()
                _wait_for("the resume", lambda: _status(ctx.events, row.run_id) == "awaiting_approval", 60)
                _wait_for(
                    "its item done",
                    lambda: (i := queue.item(row.run_id)) is not None and i.state == "done",
                    30,
                )
            finally:
                poller.stop()
                pool.close()
        assert len(agent.received) == 1 and agent.answered == 1
        item = queue.item(row.run_id)
        assert item is not None and (item.state, item.worker, item.outcome) == (
            "done",
            "poller",
            "awaiting_approval",
        )
        with queue.engine.connect() as conn:
            kind = conn.execute(
                sa.select(WORK_ITEMS.c.kind).where(WORK_ITEMS.c.run_id == row.run_id)
            ).scalar()
        assert kind == "remote"
    finally:
        queue.close()
