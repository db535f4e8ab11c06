"""Hybrid memory search: identifiers kept as terms, BM25 in the record store, fused with meaning."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.memory import Memory, MemoryStoreError
from agentheal.memory_eval import KS, RetrievalSetError, evaluate, load_set
from agentheal.memory_lexical import lexical_score, terms
from agentheal.models import Gap
from agentheal.services.memory import MemoryQueryError, search

ROOT = Path(__file__).resolve().parent.parent
HISTORY = [
    {"gap": "billing database stopped accepting writes, archiver error ORA-00257 in the alert log",
     "resolution": "moved archived redo logs to the spare volume", "outcome": "healed",
     "component": "billing"},
    {"gap": "billing batch fails: ORA-01653 unable to extend table in tablespace USERS",
     "resolution": "added a datafile to the tablespace", "outcome": "healed", "component": "billing"},
    {"gap": "disk on db host is 98% full, writes failing",
     "resolution": "rotated and compressed logs, cleaned tmp", "outcome": "healed", "component": "db"},
    {"gap": "worker killed with SIGKILL, exit 137, oom-kill in dmesg",
     "resolution": "raised the worker memory limit", "outcome": "healed", "component": "worker"},
    {"gap": "api pods restarted with exit 143 during the deploy",
     "resolution": "longer termination grace period", "outcome": "healed", "component": "api"},
    {"gap": "connect() to db-01.prod:5432 failed: ECONNREFUSED",
     "resolution": "started postgres on db-01.prod", "outcome": "healed", "component": "db"},
    {"gap": "disk full writing /var/lib/pg/pg_wal on the primary",
     "resolution": "dropped the stale replication slot", "outcome": "healed", "component": "db"},
]  # fmt: skip


@pytest.fixture
def memory(settings: Settings, tmp_path: Path) -> Memory:
    m = Memory(settings)
    file = tmp_path / "history.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in HISTORY))
    assert m.import_jsonl(file).imported == len(HISTORY)
    return m


def test_identifiers_stay_whole_and_add_their_parts() -> None:
    got = terms("worker exited with code 137 after SIGKILL; connect() to db-01.prod:5432: ECONNREFUSED")
    assert {"exit:137", "sigkill", "econnrefused", "db-01.prod:5432", "db-01.prod", "prod", "5432"} <= set(
        got
    )
    assert {"ora-00257", "ora", "00257"} <= set(terms("archiver error ORA-00257."))
    path = terms("disk full writing /var/lib/pg/pg_wal.")
    assert "/var/lib/pg/pg_wal" in path and "pg_wal" not in path and {"var", "lib", "pg", "wal"} <= set(path)
    assert terms("Process exit 137") == ["exit:137", "process", "exit", "137"]
    # plain words meet across their forms; an upper-case name is not stemmed
    assert terms("writes")[0] == terms("writing")[0] == terms("write")[0]
    assert terms("ECONNREFUSED") == ["econnrefused"]


def test_lexical_score_is_the_share_of_the_query_explained() -> None:
    doc = terms("archiver error ORA-00257 in the alert log")
    dfs = {t: 1 for t in doc}
    assert lexical_score(terms("ORA-00257"), doc, dfs, 100, len(doc)) == pytest.approx(1.0, abs=0.05)
    half = lexical_score(terms("ORA-00257 unrelated words here"), doc, dfs, 100, len(doc))
    assert 0.1 < half < 0.7
    assert lexical_score(terms("nothing matches"), doc, dfs, 100, len(doc)) == 0.0


def test_each_mode_finds_what_it_is_good_at(memory: Memory) -> None:
    top = {mode: memory.search("ORA-00257", k=3, mode=mode)[0].resolution for mode in ("lexical", "hybrid")}
    assert top == {"lexical": "moved archived redo logs to the spare volume"} | {
        "hybrid": "moved archived redo logs to the spare volume"
    }
    meaning = memory.search("no space left on device on the database server", k=3)  # default: hybrid
    assert meaning[0].resolution == "rotated and compressed logs, cleaned tmp"
    # exit 137 is the OOM kill, not the other exit code of a similar story
    assert memory.search("exit 137", k=1, mode="hybrid")[0].component == "worker"
    assert (
        memory.search("/var/lib/pg", k=1, mode="lexical")[0].resolution
        == "dropped the stale replication slot"
    )
    assert memory.search("ECONNREFUSED db-01.prod", k=1)[0].resolution == "started postgres on db-01.prod"
    # similarity is the cosine in every mode: the same record has the same figure
    sims = {mode: {h.id: h.similarity for h in memory.search("ORA-00257", k=7, mode=mode)} for mode in
            ("lexical", "dense", "hybrid")}  # fmt: skip
    for rid, sim in sims["lexical"].items():
        assert sims["dense"][rid] == pytest.approx(sim, abs=1e-5)
    # lexical returns only records that share a term: both Oracle errors share "ora"
    assert len(sims["lexical"]) == 2 and len(sims["dense"]) == len(sims["hybrid"]) == len(HISTORY)
    with pytest.raises(MemoryStoreError, match="unknown search mode 'fuzzy'"):
        memory.search("x", mode="fuzzy")
    with pytest.raises(MemoryQueryError, match="unknown search mode"):
        search(memory, "x", mode="fuzzy")


def test_recall_in_the_heal_graph_uses_the_hybrid_search(memory: Memory) -> None:
    hits = memory.recall(Gap(text="billing writes refused: ORA-00257", component="billing"), k=2)
    assert hits[0].resolution == "moved archived redo logs to the spare volume"
    dense = memory.search("billing writes refused: ORA-00257", k=2, mode="dense")
    assert {h.id for h in hits} <= {h.id for h in memory.search("billing writes refused: ORA-00257", k=7)}
    assert dense  # both answer; the hybrid order is what recall returns
    assert memory.settings.memory_search_mode == "hybrid"


def test_pending_heal_records_are_found_by_words(settings: Settings) -> None:
    from tests.test_memory import RESTART, _heal

    m = Memory(settings)
    gap = Gap(text="cron job died: status=11/SEGV in libfoo.so.3", component="cron")
    m.store(_heal(gap, RESTART, __import__("agentheal.models").models.RunStatus.healed, "r1"), ["x"])
    assert m.count_indexed() == 0  # pending: not in the vector index yet
    [hit] = m.search("libfoo.so.3", k=1, mode="lexical")
    assert hit.gap == gap.text
    m.flush()
    assert m.search("libfoo.so.3", k=1, mode="lexical")[0].id == hit.id


def test_a_memory_folder_from_before_gets_its_lexical_index_on_open(
    memory: Memory, settings: Settings
) -> None:
    memory.close()
    db = sqlite3.connect(settings.memory_dir / "records.sqlite")
    for table in ("records_fts", "lexical_stats", "lexical_terms"):
        db.execute(f"DROP TABLE {table}")
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    again = Memory(settings)
    assert again.count() == len(HISTORY)  # nothing lost
    assert again.search("ORA-00257", k=1, mode="lexical")[0].resolution.startswith("moved archived redo")
    db = sqlite3.connect(settings.memory_dir / "records.sqlite")
    assert db.execute("SELECT docs FROM lexical_stats").fetchone()[0] == len(HISTORY)
    assert db.execute("SELECT docs FROM lexical_terms WHERE term = 'ora'").fetchone()[0] == 2
    db.close()


def test_a_replaced_record_keeps_the_term_counts_right(settings: Settings) -> None:
    from agentheal.models import Check, Plan, Resolution, RunStatus, Step

    memory = Memory(settings)
    plan = Plan(
        hypothesis="port taken",
        steps=[Step(action="restart", component="web")],
        checks=[Check(component="web")],
    )
    first = Resolution(run_id="r1", gap=Gap(text="web down: EADDRINUSE", component="web"), plan=plan,
                       status=RunStatus.failed)  # fmt: skip
    memory.store(first, [])
    memory.store(first.model_copy(update={"status": RunStatus.healed}), [])  # the same attempt: replaced
    store = memory._records
    assert store.doc_freqs(["eaddrinuse", "web"]) == {"eaddrinuse": 1, "web": 1}
    assert store.lexical_stats()[0] == 1
    [hit] = memory.search("EADDRINUSE", k=3, mode="lexical")
    assert hit.outcome == "healed"


def test_cli_memory_search_modes(memory: Memory, capsys: pytest.CaptureFixture[str]) -> None:
    memory.close()
    for mode in ("lexical", "dense", "hybrid"):
        assert main(["memory", "search", "ORA-00257", "--k", "2", "--mode", mode, "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert set(hits[0]) == {"id", "gap", "resolution", "outcome", "similarity", "component"}
    assert hits[0]["resolution"] == "moved archived redo logs to the spare volume"
    assert main(["memory", "search", "ORA-00257", "--mode", "fuzzy"]) == 2
    assert "--mode must be hybrid, dense or lexical" in capsys.readouterr().err


def test_the_retrieval_set_hybrid_beats_both(settings: Settings) -> None:
    """The README's table: hybrid at least as good as the better of the other two at every k, better at 1."""
    scores = {s.mode: s for s in evaluate(ROOT / "eval" / "retrieval")}
    for k in KS:
        assert scores["hybrid"].hits[k] >= max(scores["lexical"].hits[k], scores["dense"].hits[k]), k
    assert scores["hybrid"].hits[1] > max(scores["lexical"].hits[1], scores["dense"].hits[1])


def test_a_broken_retrieval_set_is_named(tmp_path: Path) -> None:
    (tmp_path / "records.jsonl").write_text(json.dumps({"gap": "x", "tags": ["cause:a"]}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"query": "x", "cause": "b"}) + "\n")
    with pytest.raises(RetrievalSetError, match="line 1: no record has cause 'b'"):
        load_set(tmp_path)


@pytest.mark.slow
def test_http_memory_search_takes_the_mode(tmp_path: Path) -> None:
    from conftest import stop_processes_under, tiny_estate
    from test_api_ops import ApiServer

    server = ApiServer(tmp_path, tiny_estate(tmp_path))
    try:
        with server.client("admin") as admin:
            assert admin.post("/memory", json={"records": HISTORY}).status_code == 200
            for mode in ("lexical", "dense", "hybrid"):
                hits = admin.get("/memory/search", params={"q": "ORA-00257", "k": 2, "mode": mode})
                assert hits.status_code == 200, hits.text
            assert hits.json()[0]["resolution"] == "moved archived redo logs to the spare volume"
            lexical = admin.get("/memory/search", params={"q": "ORA-00257", "k": 5, "mode": "lexical"}).json()
            assert len(lexical) == 2  # only the records that share a term
            bad = admin.get("/memory/search", params={"q": "x", "mode": "fuzzy"})
            assert bad.status_code == 422 and "mode" in bad.text
    finally:
        server.stop()
        stop_processes_under(tmp_path)
