"""The shared work table on a real PostgreSQL: one open item per fingerprint however many workers
report it, one claim per component across claimers racing in threads, a lease that ends hands the
claim to the next claimer, hand-back, renewals, and the workers registry."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from agentheal.config import Settings
from agentheal.models import Gap
from agentheal.work import Registry, WorkerNameTaken, WorkQueue
from pg_cluster import Cluster, postgres_fixture  # noqa: F401  (fixture)


@pytest.fixture
def queue(postgres: Cluster) -> Iterator[WorkQueue]:
    opened = WorkQueue(postgres.new_database(upgraded=True))
    yield opened
    opened.close()


def _word(i: int) -> str:
    """i in letters: a fingerprint folds numbers, so texts that differ only by one are one gap."""
    return "".join(chr(ord("a") + int(d)) for d in str(i))


def _gap(i: int, component: str = "web") -> Gap:
    return Gap(text=f"trouble {_word(i)} on {component}", component=component)


def test_one_fault_reported_by_many_workers_at_once_is_one_item(queue: WorkQueue) -> None:
    gap = _gap(1)
    answers: list[tuple[str, bool]] = []
    barrier = threading.Barrier(6)

    def report() -> None:
        barrier.wait()
        answers.append(queue.enqueue(gap))

    threads = [threading.Thread(target=report) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({run_id for run_id, _ in answers}) == 1
    assert sorted(joined for _, joined in answers) == [False] + [True] * 5
    assert queue.counts() == {"queued": 1, "claimed": 0, "done": 0}


def test_one_claim_per_component_across_racing_claimers(queue: WorkQueue) -> None:
    for i in range(5):
        queue.enqueue(_gap(i, "web"))
        queue.enqueue(_gap(i, "db"))
    claimed: list[tuple[str, str]] = []
    barrier = threading.Barrier(8)

    def claimer(name: str) -> None:
        barrier.wait()
        found = queue.claim(name, lease_s=30)
        if found is not None:
            claimed.append((name, found.key))

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(key for _, key in claimed) == ["db", "web"]
    assert queue.claim("late", lease_s=30) is None  # both components are held
    name, _ = claimed[0]
    held = next(i for i in queue.items() if i.worker == name)
    assert queue.finish(held.run_id, name, "healed")
    again = queue.claim("late", lease_s=30)
    assert again is not None and again.key == held.key and not again.resumed


def test_a_lease_that_ends_passes_the_claim_to_another_worker(queue: WorkQueue) -> None:
    run_id, _ = queue.enqueue(_gap(1))
    first = queue.claim("dies", lease_s=0.5)
    assert first is not None and first.run_id == run_id
    assert queue.claim("other", lease_s=30) is None  # held, lease running
    time.sleep(0.7)
    taken = queue.claim("other", lease_s=30)
    assert taken is not None and taken.run_id == run_id and taken.resumed
    assert queue.renew("dies", 30) == set()  # the dead worker's renewal no longer holds it
    assert not queue.finish(run_id, "dies", "healed")
    assert queue.finish(run_id, "other", "healed")
    item = queue.item(run_id)
    assert item is not None and (item.state, item.outcome, item.worker, item.claims) == (
        "done",
        "healed",
        "other",
        2,
    )


def test_renewal_keeps_a_claim_and_hand_back_requeues_it(queue: WorkQueue) -> None:
    run_id, _ = queue.enqueue(_gap(1))
    assert queue.claim("w1", lease_s=0.6) is not None
    for _ in range(3):
        time.sleep(0.3)
        assert queue.renew("w1", 0.6) == {run_id}
    assert queue.claim("w2", lease_s=30) is None
    assert queue.hand_back("w1") == [run_id]
    taken = queue.claim("w2", lease_s=30)
    assert taken is not None and taken.run_id == run_id


def test_a_gap_reported_again_after_its_heal_ended_is_queued_again(queue: WorkQueue) -> None:
    run_id, _ = queue.enqueue(_gap(1))
    claim = queue.claim("w1", 30)
    assert claim is not None and queue.finish(run_id, "w1", "escalated")
    second, joined = queue.enqueue(_gap(1))
    assert second != run_id and not joined
    assert queue.counts() == {"queued": 1, "claimed": 0, "done": 1}


def test_a_gap_whose_run_is_still_open_queues_that_runs_item_again(queue: WorkQueue) -> None:
    from agentheal.events import EventStore

    gap = _gap(2)
    run_id, _ = queue.enqueue(gap)
    store = EventStore(queue.engine.url.render_as_string(hide_password=False))
    try:
        assert store.begin_heal(gap, run_id) is None  # its run started, and waits (e.g. for approval)
        claim = queue.claim("w1", 30)
        assert claim is not None and claim.claims == 1 and queue.finish(run_id, "w1", "awaiting_approval")
        # the same gap again: the open run's item is queued again, its claims going on
        again, joined = queue.enqueue(gap)
        assert (again, joined) == (run_id, True)
        item = queue.item(run_id)
        assert item is not None and (item.state, item.worker, item.outcome) == ("queued", None, None)
        assert item.claims == 1
        # and while it is queued, another report joins it
        assert queue.enqueue(gap) == (run_id, True)
        assert queue.counts() == {"queued": 1, "claimed": 0, "done": 0}
    finally:
        store.close()


def test_the_registry_lists_live_workers_and_what_each_holds(queue: WorkQueue) -> None:
    registry = Registry(queue)
    assert registry.register("alpha", lease_s=30, max_heals=2) == []
    run_id, _ = queue.enqueue(_gap(1))
    assert queue.claim("alpha", 30) is not None
    registry.register("beta", lease_s=30, max_heals=1)
    with queue.engine.begin() as conn:  # as if another process had registered beta
        conn.exec_driver_sql("UPDATE workers SET pid = pid + 1 WHERE name = 'beta'")
    with pytest.raises(WorkerNameTaken, match=r"'beta' is taken by a live worker"):
        registry.register("beta", lease_s=30, max_heals=1)
    with queue.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE workers SET pid = pid - 1 WHERE name = 'beta'")
    [alpha, beta] = registry.workers()
    assert (alpha.name, alpha.live, [h.run_id for h in alpha.holds]) == ("alpha", True, [run_id])
    assert beta.holds == []
    # alpha starts again under its name (its last life died): what it held goes back to the queue
    assert registry.register("alpha", lease_s=30, max_heals=2) == [run_id]
    registry.stopped("beta")
    assert [w.name for w in registry.workers()] == ["alpha"]
    assert {w.name: w.live for w in registry.workers(everyone=True)} == {"alpha": True, "beta": False}


def test_a_run_lock_is_held_across_processes_until_its_holder_goes(postgres: Cluster) -> None:
    from agentheal.work.runlocks import RunLocks

    url = postgres.new_database(upgraded=True)
    driver, other = RunLocks(url), RunLocks(url)
    try:
        with driver.hold("fp-1", wait=True) as held:
            assert held
            with other.hold("fp-1", wait=False) as free:
                assert not free  # a live driver holds it: join, do not drive
            with other.hold("fp-2", wait=False) as free:
                assert free  # another fingerprint is another lock
            driver.close()  # the driver's process died: its connection is gone, and its lock with it
            with other.hold("fp-1", wait=False) as free:
                assert free
    finally:
        other.close()


def test_agentheal_workers_lists_live_workers_and_their_claims(
    postgres: Cluster, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentheal.cli import main

    assert main(["workers"]) == 0  # SQLite: one worker, said so
    assert "one worker, no shared work" in capsys.readouterr().out
    url = postgres.new_database(upgraded=True)
    monkeypatch.setenv("AGENTHEAL_DATABASE_URL", url)
    queue = WorkQueue(url)
    try:
        Registry(queue).register("alpha", lease_s=30, max_heals=2)
        run_id, _ = queue.enqueue(_gap(1))
        queue.enqueue(_gap(2, "db"))
        assert queue.claim("alpha", 30) is not None
    finally:
        queue.close()
    assert main(["workers"]) == 0
    shown = capsys.readouterr().out
    assert "1 worker(s); 1 queued, 1 claimed, 0 done" in shown
    assert "alpha  live" in shown and "holds 1/2" in shown
    assert f"run {run_id[:12]}  web  lease ends in" in shown
    assert main(["workers", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    [alpha] = found["workers"]
    assert (alpha["name"], alpha["live"], [h["run_id"] for h in alpha["holds"]]) == ("alpha", True, [run_id])
    assert found["queue"] == {"queued": 1, "claimed": 1, "done": 0}
