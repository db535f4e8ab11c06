"""Resolution memory with the real offline embedder: on a real chromadb folder (the default), and for the
tests that take the `memory` fixture also on a real PostgreSQL and a real `chroma run` server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentheal.config import Settings
from agentheal.memory import (
    ImportReport,
    Memory,
    MemoryImportError,
    MemoryStoreError,
    facts_digest,
    heal_record,
)
from agentheal.models import Check, Diagnosis, Gap, Plan, Resolution, RunStatus, Step
from chroma_server import chroma_fixture, memory_home_fixture  # noqa: F401  (fixtures)
from pg_cluster import postgres_fixture  # noqa: F401  (fixtures)

HISTORY = [
    {
        "gap": "checkout API returns 502, upstream connection pool exhausted",
        "resolution": "raised pool size and restarted api",
        "outcome": "healed",
        "component": "api",
    },
    {
        "gap": "disk on db host is 98% full, writes failing",
        "resolution": "rotated and compressed logs, cleaned tmp",
        "outcome": "healed",
        "component": "db",
    },
    {
        "gap": "TLS certificate expired on the public load balancer",
        "resolution": "renewed certificate and reloaded",
        "outcome": "healed",
        "component": "lb",
    },
    {
        "gap": "worker stuck: queue depth growing, no consumer progress",
        "resolution": "removed stale lock and restarted worker",
        "outcome": "healed",
        "component": "worker",
    },
]


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8"
    )
    return path


def _heal(gap: Gap, plan: Plan, status: RunStatus, run_id: str) -> Resolution:
    return Resolution(
        run_id=run_id,
        gap=gap,
        persona="availability",
        diagnosis=Diagnosis(facts=["process_down"]),
        plan=plan,
        status=status,
        reason=None if status is RunStatus.healed else "probe still fails",
    )


RESTART = Plan(
    hypothesis="the web process died",
    steps=[Step(action="restart", component="web")],
    checks=[Check(component="web")],
    source="persona",
)
ROTATE = Plan(
    hypothesis="logs filled the disk", steps=[Step(action="rotate_logs", component="web")], source="llm"
)


@pytest.fixture
def memory(memory_home: Settings) -> Memory:
    """Memory embedded (the default), and on PostgreSQL and a Chroma server (chroma_server.py)."""
    return Memory(memory_home)


def test_acceptance_full_disk_recalls_the_log_rotation(memory: Memory, tmp_path: Path) -> None:
    report = memory.import_jsonl(_write(tmp_path / "m.jsonl", HISTORY))
    assert report == ImportReport(imported=4, skipped=0, errors=[])
    hits = memory.search("no space left on device on the database server", k=3)
    assert len(hits) == 3
    assert "rotated" in hits[0].resolution
    assert hits[0].gap == "disk on db host is 98% full, writes failing"
    assert hits[0].component == "db" and hits[0].outcome == "healed"
    sims = [h.similarity for h in hits]
    assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)


def test_import_reports_each_bad_line_and_keeps_the_good(memory: Memory, tmp_path: Path) -> None:
    lines: list[Any] = [
        HISTORY[0],
        "{not json",
        ["a", "list"],
        {"gap": "db slow", "resolution": "vacuumed"},
        {"gap": "db slow", "resolution": "vacuumed", "outcome": "maybe"},
        {**HISTORY[1], "severity": "high"},
        "",
        {**HISTORY[2], "gap": "   "},
        HISTORY[0],
        {**HISTORY[3], "kind": "recurring", "tags": ["queue"], "occurred_at": "2025-01-02T03:04:05Z"},
    ]
    report = memory.import_jsonl(_write(tmp_path / "mixed.jsonl", lines))
    assert report.imported == 2 and report.skipped == 7
    errors = "\n".join(report.errors)
    assert errors.startswith("line 2: not JSON")
    assert "line 3: expected a JSON object, got list" in errors
    assert "line 4: field 'outcome' is missing" in errors
    assert "line 5: field 'outcome'" in errors
    assert "line 6: unknown field 'severity'" in errors
    assert "line 8: field 'gap': is empty" in errors
    assert "line 9: skipped, the same record as line 1" in errors
    assert memory.count() == 2
    hit = memory.search("consumers make no progress on the queue", k=1)[0]
    assert hit.kind == "recurring" and hit.resolution == "removed stale lock and restarted worker"

    again = memory.import_jsonl(tmp_path / "mixed.jsonl")
    assert again.imported == 0 and memory.count() == 2
    assert "line 1: skipped, already in memory" in again.errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("\n  \n", "the file is empty"),
        ('{"gap": "x"}\n[]\n', "no valid line: line 1"),
    ],
)
def test_an_import_with_nothing_to_keep_is_an_error(
    memory: Memory, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MemoryImportError, match=message) as info:
        memory.import_jsonl(path)
    assert str(path) in str(info.value)
    assert memory.count() == 0


def test_an_unreadable_import_file_is_named(memory: Memory, tmp_path: Path) -> None:
    with pytest.raises(MemoryImportError, match="no such file"):
        memory.import_jsonl(tmp_path / "missing.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"gap": "caf\xe9 down"}\n')
    with pytest.raises(MemoryImportError, match="UTF-8"):
        memory.import_jsonl(latin)


def test_import_embeds_in_batches(memory: Memory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = memory.embedder.embed

    def counting(texts: list[str]) -> Any:
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(memory.embedder, "embed", counting)
    lines = [
        {"gap": f"service {n} is down after deploy {n}", "resolution": "rolled back", "outcome": "healed"}
        for n in range(150)
    ]
    assert memory.import_jsonl(_write(tmp_path / "many.jsonl", lines)).imported == 150
    assert calls == [64, 64, 22]
    assert memory.count() == 150


def test_playbook_and_remembered_plan_follow_the_outcomes(memory: Memory) -> None:
    gap = Gap(text="web is down", component="web")
    fp, facts = gap.fingerprint, ["process_down", "probe_failed"]
    assert memory.playbook(fp, facts) is None and memory.remembered_plan(fp, facts) is None

    first = memory.store(_heal(gap, RESTART, RunStatus.healed, "run-1"), facts)
    remembered = memory.remembered_plan(fp, facts)
    assert remembered is not None and remembered.signature() == "restart(web)"
    assert remembered.source == "memory" and remembered.playbook == first
    assert remembered.checks == RESTART.checks
    assert memory.playbook(fp, facts) is None  # one success is not yet a playbook (playbook_after=2)

    second = memory.store(_heal(gap, RESTART, RunStatus.healed, "run-2"), list(reversed(facts)))
    playbook = memory.playbook(fp, facts)
    assert playbook is not None and playbook.source == "playbook" and playbook.playbook == second
    assert playbook.signature() == "restart(web)"

    memory.store(_heal(gap, RESTART, RunStatus.failed, "run-3"), facts)
    assert memory.playbook(fp, facts) is None
    assert memory.remembered_plan(fp, facts) is None

    # other findings are another problem: memory offers nothing it has not proven under them
    new_evidence = [*facts, "crash_loop"]
    assert memory.remembered_plan(fp, new_evidence) is None
    assert memory.playbook(fp, new_evidence) is None
    memory.store(_heal(gap, RESTART, RunStatus.healed, "run-4"), new_evidence)
    again = memory.remembered_plan(fp, new_evidence)
    assert again is not None and again.signature() == "restart(web)" and again.source == "memory"
    assert memory.remembered_plan(fp, facts) is None  # still failed last under the first findings

    other = Gap(text="db is down", component="db")
    assert memory.remembered_plan(other.fingerprint, facts) is None


def test_another_plan_that_healed_is_still_remembered_when_one_fails(memory: Memory) -> None:
    gap = Gap(text="web answers slowly", component="web")
    memory.store(_heal(gap, ROTATE, RunStatus.healed, "run-a"), ["logs_large"])
    memory.store(_heal(gap, RESTART, RunStatus.healed, "run-b"), ["logs_large"])
    memory.store(_heal(gap, RESTART, RunStatus.failed, "run-c"), ["logs_large"])
    plan = memory.remembered_plan(gap.fingerprint, ["logs_large"])
    assert plan is not None and plan.signature() == "rotate_logs(web)"


def test_storing_the_same_attempt_twice_counts_once(memory: Memory) -> None:
    resolution = _heal(Gap(text="web is down", component="web"), RESTART, RunStatus.healed, "run-x")
    assert memory.store(resolution, []) == memory.store(resolution, [])
    assert memory.count() == 1


def test_recall_counts_outcomes_per_plan_signature(memory: Memory, tmp_path: Path) -> None:
    gap = Gap(text="web process is down and the page does not load", component="web")
    memory.store(_heal(gap, RESTART, RunStatus.healed, "run-1"), ["process_down"])
    memory.store(_heal(gap, RESTART, RunStatus.healed, "run-2"), ["process_down"])
    memory.store(_heal(gap, RESTART, RunStatus.failed, "run-3"), ["process_down"])
    memory.import_jsonl(_write(tmp_path / "m.jsonl", HISTORY))
    hits = memory.recall(Gap(text="the web page does not load, process down", component="web"), k=4)
    assert all(h.plan is not None and h.plan.signature() == "restart(web)" for h in hits[:3])
    assert {(h.healed_count, h.failed_count) for h in hits[:3]} == {(2, 1)}
    assert {h.outcome for h in hits[:3]} == {"healed", "failed"}
    failed = next(h for h in hits if h.outcome == "failed")
    assert "did not heal" in failed.resolution and "probe still fails" in failed.resolution
    imported = hits[3]
    assert imported.plan is None and (imported.healed_count, imported.failed_count) == (1, 0)


def test_outcome_counts_recover_from_a_write_cut_short(settings: Settings) -> None:
    gap = Gap(text="web process is down", component="web")
    memory = Memory(settings)
    memory.store(_heal(gap, RESTART, RunStatus.healed, "run-1"), [])
    memory.store(_heal(gap, RESTART, RunStatus.healed, "run-2"), [])
    # A process killed after the collection's write but before the outcome index's:
    record = heal_record(_heal(gap, RESTART, RunStatus.failed, "run-3"), [])
    memory.collection.add(
        ids=[record[0]],
        embeddings=memory.embedder.embed([record[1]]),
        documents=[record[1]],
        metadatas=[record[2]],
    )
    hits = Memory(settings).recall(gap, k=3)
    assert {(h.healed_count, h.failed_count) for h in hits} == {(2, 1)}


def test_search_edges(memory: Memory) -> None:
    assert memory.search("anything at all") == []
    with pytest.raises(MemoryStoreError, match="empty"):
        memory.search("  ")


def test_facts_digest_ignores_order_and_repeats() -> None:
    assert facts_digest(["b", "a", "a"]) == facts_digest(["a", "b"]) != facts_digest(["a"])


_READER = textwrap.dedent(
    """
    import sys
    from agentheal.config import Settings
    from agentheal.memory import Memory

    memory = Memory(Settings(home=sys.argv[1]))
    print(memory.count(), memory.search("database disk is full", k=1)[0].resolution)
    """
)


def test_memory_survives_a_new_object_and_a_new_process(settings: Settings, tmp_path: Path) -> None:
    memory = Memory(settings)
    memory.import_jsonl(_write(tmp_path / "m.jsonl", HISTORY))
    memory.store(_heal(Gap(text="web is down", component="web"), RESTART, RunStatus.healed, "run-1"), [])
    assert Memory(settings).count() == 5
    del memory
    proc = subprocess.run(
        [sys.executable, "-c", _READER, str(settings.home)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "5 rotated and compressed logs, cleaned tmp"


def test_a_memory_built_by_another_embedder_is_refused(settings: Settings) -> None:
    Memory(settings)
    other = settings.model_copy(update={"embed_base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(
        MemoryStoreError, match="built with the embedder 'all-MiniLM-L6-v2-onnx-qint8-dynamic'"
    ):
        Memory(other)


_STORE_AND_DIE = textwrap.dedent(
    """
    import os, sys
    from agentheal.config import Settings
    from agentheal.memory import Memory
    from agentheal.models import Gap, Plan, Resolution, RunStatus, Step

    memory = Memory(Settings(home=sys.argv[1]))
    steps = [Step(action="rotate_logs", component="db")]
    plan = Plan(hypothesis="logs filled the disk", steps=steps, source="llm")
    gap = Gap(text="no space left on device on the database server", component="db")
    done = Resolution(run_id="run-killed", gap=gap, plan=plan, status=RunStatus.healed)
    memory.store(done, ["disk_over_budget"])
    os._exit(0)  # killed before any flush: the record is only in the record store
    """
)


def test_a_stored_heal_is_recalled_before_and_after_it_reaches_the_vector_index(settings: Settings) -> None:
    memory = Memory(settings)
    gap = Gap(text="web process is down", component="web")
    memory.store(_heal(gap, RESTART, RunStatus.healed, "run-1"), ["process_down"])
    assert (memory.count(), memory.count_indexed()) == (1, 0)  # pending: below the batch size
    pending = memory.recall(Gap(text="the web server process died", component="web"), k=3)
    assert [h.id for h in pending] == [heal_record(_heal(gap, RESTART, RunStatus.healed, "run-1"), [])[0]]
    assert (pending[0].healed_count, pending[0].failed_count) == (1, 0)
    assert memory.flush() == 1 and (memory.count(), memory.count_indexed()) == (1, 1)
    indexed = memory.recall(Gap(text="the web server process died", component="web"), k=3)
    assert [(h.id, round(h.similarity, 4)) for h in indexed] == [
        (h.id, round(h.similarity, 4)) for h in pending
    ]
    assert memory.flush() == 0


def test_heal_records_reach_the_vector_index_in_batches(settings: Settings) -> None:
    memory = Memory(settings.model_copy(update={"memory_index_batch": 3}))
    gap = Gap(text="web process is down", component="web")
    for n in range(1, 8):
        memory.store(_heal(gap, RESTART, RunStatus.healed, f"run-{n}"), ["process_down"])
        assert memory.count() == n and memory.count_indexed() == 3 * (n // 3)
    hits = memory.recall(gap, k=10)  # indexed and pending records together, each once
    assert len(hits) == 7 and len({h.id for h in hits}) == 7
    assert {(h.healed_count, h.failed_count) for h in hits} == {(7, 0)}
    # A playbook needs no vector: it is read from the record store, pending records included.
    assert memory.playbook(gap.fingerprint, ["process_down"]) is not None


def test_a_record_of_a_killed_process_is_kept_and_indexed_later(settings: Settings) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _STORE_AND_DIE, str(settings.home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    memory = Memory(settings)
    assert (memory.count(), memory.count_indexed()) == (1, 0)
    hit = memory.search("disk on db host is 98% full, writes failing", k=1)[0]
    assert hit.id.startswith("heal-run-killed-") and hit.outcome == "healed"
    memory.close()
    assert (Memory(settings).count(), Memory(settings).count_indexed()) == (1, 1)


def test_a_vector_index_lost_is_rebuilt_from_the_record_store(settings: Settings, tmp_path: Path) -> None:
    memory = Memory(settings)
    memory.import_jsonl(_write(tmp_path / "m.jsonl", HISTORY))
    memory.store(_heal(Gap(text="web is down", component="web"), RESTART, RunStatus.healed, "run-1"), [])
    memory.close()
    del memory
    for path in settings.memory_dir.iterdir():  # chromadb's files; the record store stays
        if not path.name.startswith("records.sqlite"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    # A new process: chromadb keeps a client per folder for the life of a process.
    proc = subprocess.run(
        [sys.executable, "-c", _REINDEXED, str(settings.home)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["0 5 5", "rotated and compressed logs, cleaned tmp"]


_REINDEXED = textwrap.dedent(
    """
    import sys
    from agentheal.config import Settings
    from agentheal.memory import Memory

    settings = Settings(home=sys.argv[1])
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    client = chromadb.PersistentClient(str(settings.memory_dir), ChromaSettings(anonymized_telemetry=False))
    before = sum(c.count() for c in client.list_collections())
    memory = Memory(settings)
    print(before, memory.count(), memory.count_indexed())
    print(memory.search("database disk is full", k=1)[0].resolution)
    """
)


def test_vectors_with_no_record_are_dropped(settings: Settings) -> None:
    memory = Memory(settings)
    memory.collection.add(ids=["stray"], embeddings=memory.embedder.embed(["a vector with no record"]))
    again = Memory(settings)
    assert (again.count(), again.count_indexed()) == (0, 0)
