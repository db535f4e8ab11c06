"""Memory on both of its setups, with real engines: the embedded default (chromadb's PersistentClient
and records.sqlite in the home folder) and the scale-out one (`AGENTHEAL_DATABASE_URL` on a real
PostgreSQL for the records, `AGENTHEAL_MEMORY_URL` on a real `chroma run` server for the vectors).

Import and recall, each search mode giving the hits of the embedded default, a heal's record recalled
by another process, several processes writing at once, the terms re-indexed by one of several
processes, and the errors that name what is wrong (a server that does not answer, a database
without memory's tables).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import pg_cluster
from agentheal.config import Settings
from agentheal.memory import Memory, MemoryStoreError
from agentheal.models import Gap, RunStatus
from chroma_server import ChromaServer, chroma_fixture, memory_home_fixture, scaleout  # noqa: F401  (fixtures)
from pg_cluster import postgres_fixture  # noqa: F401  (fixtures)
from test_hybrid_recall import HISTORY as IDENTIFIERS
from test_memory import HISTORY, RESTART, _heal, _write

COMPONENTS = ["web", "api", "db", "cache", "worker", "queue", "lb", "auth", "billing", "cron"]
PROBLEMS = [
    "{c} process is not running, probes fail",
    "{c} returns 502 to every request",
    "{c} log file grew to 4 GB and fills the disk",
    "disk on the {c} host is 97% full because of logs",
    "{c} writes fail: no space left on device",
    "{c} config file was edited by hand and now fails to parse",
    "{c} connection pool exhausted, requests queue up",
    "{c} file descriptors exhausted: too many open files",
    "{c} was stopped by the OOM killer, exit 137",
    "{c} port already in use, bind fails on start: EADDRINUSE",
]
QUERIES = [
    "the web service keeps dying right after it starts",
    "db is out of disk space, cannot write",
    "EADDRINUSE",
    "exit 137",
    "cache cannot open more files",
    "no space left on device",
    "billing configuration looks broken since this morning",
    "ORA-00257",
    "ECONNREFUSED db-01.prod",
    # terms in most records: more candidates than a search's pool, so which ones it takes counts
    "the process fails, the disk is full of log files, the config does not parse, requests fail",
    "web fails: disk full, too many open files, connection pool exhausted",
]


def _many() -> list[dict[str, Any]]:
    """More records than a search's candidate pool, many sharing terms: the pools' ranking counts."""
    return [
        {
            "gap": p.format(c=c),
            "resolution": f"fix {n} of {c}",
            "outcome": "healed" if n % 3 else "failed",
            "component": c,
        }
        for n, p in enumerate(PROBLEMS)
        for c in COMPONENTS
    ]


def _hits(memory: Memory, query: str, mode: str) -> tuple[list[tuple[str, str]], list[float]]:
    """The hits in order, and their cosines (compared within float32's rounding, not to the digit)."""
    found = memory.search(query, k=8, mode=mode)
    return [(h.id, h.outcome) for h in found], [h.similarity for h in found]


def test_import_and_recall(memory_home: Settings, tmp_path: Path) -> None:
    home = memory_home
    memory = Memory(home)
    assert memory.import_jsonl(_write(tmp_path / "m.jsonl", HISTORY)).imported == 4
    hits = memory.search("no space left on device on the database server", k=3)
    assert hits[0].gap == "disk on db host is 98% full, writes failing" and "rotated" in hits[0].resolution
    again = memory.import_jsonl(tmp_path / "m.jsonl")
    assert again.imported == 0 and "line 1: skipped, already in memory" in again.errors
    gap = Gap(text="web process is down", component="web")
    for n, status in enumerate([RunStatus.healed, RunStatus.healed, RunStatus.failed]):
        memory.store(_heal(gap, RESTART, status, f"run-{n}"), ["process_down"])
    assert (memory.count(), memory.count_indexed()) == (7, 4)  # the heals wait for a batch
    recalled = memory.recall(Gap(text="the web process died", component="web"), k=3)
    assert {(h.healed_count, h.failed_count) for h in recalled} == {(2, 1)}
    assert memory.playbook(gap.fingerprint, ["process_down"]) is None  # failed last
    assert memory.flush() == 3 and Memory(home).count_indexed() == 7


def test_every_mode_gives_the_hits_of_the_embedded_default(
    settings: Settings,
    postgres: pg_cluster.Cluster,
    chroma: ChromaServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    records = _write(tmp_path / "m.jsonl", [*_many(), *IDENTIFIERS])
    embedded = Memory(settings)
    shared = Memory(
        scaleout(settings.model_copy(update={"home": tmp_path / "other"}), postgres, chroma, monkeypatch)
    )
    assert shared.where == f"the Chroma server at {chroma.url}"
    for memory in (embedded, shared):
        assert memory.import_jsonl(records).imported == len(PROBLEMS) * len(COMPONENTS) + len(IDENTIFIERS)
    gap = Gap(text="cron job died: status=11/SEGV in libfoo.so.3", component="cron")
    for memory in (embedded, shared):  # one pending heal record too, searched in the record store
        memory.store(_heal(gap, RESTART, RunStatus.healed, "run-p"), ["segv"])
    assert shared.count() == embedded.count() and shared.count_indexed() == embedded.count_indexed()
    assert shared._records.lexical_stats() == pytest.approx(embedded._records.lexical_stats())
    for query in [*QUERIES, "libfoo.so.3"]:
        for mode in ("hybrid", "dense", "lexical"):
            want, cosines = _hits(embedded, query, mode)
            assert want or mode == "lexical"
            got, shared_cosines = _hits(shared, query, mode)
            assert got == want, (query, mode)
            assert shared_cosines == pytest.approx(cosines, abs=1e-5), (query, mode)


_LEARNED = textwrap.dedent(
    """
    import json, sys
    from agentheal.config import Settings
    from agentheal.memory import Memory
    from agentheal.models import Gap

    memory = Memory(Settings())
    hits = memory.recall(Gap(text=sys.argv[1], component="web"), k=1)
    found = [[h.id, h.outcome, h.healed_count, h.plan.signature() if h.plan else None] for h in hits]
    print(json.dumps(found))
    """
)


@pytest.mark.slow
def test_a_heal_learns_a_record_another_process_recalls(
    memory_home: Settings, tiny_estate_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentheal.cli import main
    from test_storage_heal import _web_down

    assert main(["estate", "up", str(tiny_estate_file)]) == 0
    capsys.readouterr()
    try:
        _web_down(tiny_estate_file, capsys)
        code = main(["heal", "--gap", "web is down: connection refused", "--component", "web",
                     "--estate", str(tiny_estate_file), "--json"])  # fmt: skip
        result = json.loads(capsys.readouterr().out)
        assert (code, result["status"]) == (0, "healed"), result
    finally:
        main(["estate", "down", str(tiny_estate_file)])
    # Another process, with only the environment to go by: the home, the database and the server.
    proc = subprocess.run(
        [sys.executable, "-c", _LEARNED, "web refuses connections"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    [[record_id, outcome, healed, signature]] = json.loads(proc.stdout)
    assert record_id.startswith(f"heal-{result['run_id']}-") and outcome == "healed" and healed == 1
    assert signature is not None and "(web)" in signature


_WRITER = textwrap.dedent(
    """
    import sys
    from agentheal.config import Settings
    from agentheal.memory import Memory
    from agentheal.models import Gap, Plan, Resolution, RunStatus, Step

    settings = Settings(memory_index_batch=4)
    memory = Memory(settings)
    plan = Plan(hypothesis="it died", steps=[Step(action="restart", component="web")], source="persona")
    for n in range(int(sys.argv[2])):
        gap = Gap(text=f"web worker {sys.argv[1]} crashed: SIGSEGV in request {n}", component="web")
        done = Resolution(run_id=f"w{sys.argv[1]}-{n}", gap=gap, plan=plan, status=RunStatus.healed)
        memory.store(done, [])
    print("done")
    """
)


def test_several_processes_write_at_once_and_nothing_is_lost(
    settings: Settings, postgres: pg_cluster.Cluster, chroma: ChromaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = scaleout(settings, postgres, chroma, monkeypatch)
    Memory(home).close()  # the terms indexed once, before the writers race
    writers, each = 3, 25
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(w), str(each)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0 and out.strip() == "done", err
    memory = Memory(home)
    total = writers * each
    assert memory.count() == total
    memory.flush()
    assert memory.count_indexed() == total  # every record's vector on the server, once
    assert memory._records.doc_freqs(["sigsegv", "web"]) == {"sigsegv": total, "web": total}
    assert memory._records.lexical_stats()[0] == total
    hits = memory.search("worker 1 crashed SIGSEGV request 7", k=1, mode="lexical")
    assert hits[0].id.startswith("heal-w1-7-")


_OPENER = textwrap.dedent(
    """
    from agentheal.config import Settings
    from agentheal.memory import Memory

    memory = Memory(Settings())
    print(memory.count(), memory.search("ORA-00257", k=1, mode="lexical")[0].resolution)
    """
)


def test_terms_of_another_version_are_indexed_again_by_one_of_several_processes(
    settings: Settings,
    postgres: pg_cluster.Cluster,
    chroma: ChromaServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import psycopg

    home = scaleout(settings, postgres, chroma, monkeypatch)
    memory = Memory(home)
    memory.import_jsonl(_write(tmp_path / "m.jsonl", IDENTIFIERS))
    memory.close()
    assert home.database_url is not None
    with psycopg.connect(home.database_url.get_secret_value(), autocommit=True) as conn:
        # as an agentheal whose terms differ left them: wrong counts, no tsvector match
        conn.execute("UPDATE memory_lexical_stats SET terms_version = 1, docs = 99, terms = 5")
        conn.execute("UPDATE memory_records SET tsv = ''::tsvector")
        conn.execute("UPDATE memory_lexical_terms SET docs = 42")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert out.strip() == f"{len(IDENTIFIERS)} moved archived redo logs to the spare volume"
    again = Memory(home)
    assert again._records.lexical_stats()[0] == len(IDENTIFIERS)
    assert again._records.doc_freqs(["ora", "ora-00257"]) == {"ora": 2, "ora-00257": 1}


def test_a_chroma_server_that_does_not_answer_is_named(settings: Settings) -> None:
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MemoryStoreError, match=f"the Chroma server at {url} .*does not answer"):
        Memory(Settings(home=settings.home, memory_url=url))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("127.0.0.1:8000", "expected http://HOST:PORT of a Chroma server"),
        ("ftp://127.0.0.1:8000", "scheme 'ftp'"),
        ("http://127.0.0.1:port", "expected http://HOST:PORT"),
        ("http://127.0.0.1:8000/api", "no path"),
    ],
)
def test_a_memory_url_that_is_not_a_server_is_refused(settings: Settings, given: str, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="memory_url") as info:
        Settings(home=settings.home, memory_url=given)
    assert message in str(info.value)
    assert Settings(home=settings.home, memory_url=" http://db-01:8000/ ").memory_url == "http://db-01:8000"
    assert Settings(home=settings.home, memory_url="").memory_url is None


def test_a_database_without_memory_tables_is_refused_naming_the_upgrade(
    settings: Settings, postgres: pg_cluster.Cluster
) -> None:
    url = postgres.new_database()  # empty: no `agentheal db upgrade` yet
    with pytest.raises(MemoryStoreError, match=r"has no memory tables .*run `agentheal db upgrade`"):
        Memory(Settings(home=settings.home, database_url=url))


def test_recall_survives_postgresql_dropping_the_connection(
    settings: Settings,
    postgres: pg_cluster.Cluster,
    chroma: ChromaServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import psycopg

    home = scaleout(settings, postgres, chroma, monkeypatch)
    memory = Memory(home)
    memory.import_jsonl(_write(tmp_path / "m.jsonl", HISTORY))
    assert home.database_url is not None
    with psycopg.connect(home.database_url.get_secret_value(), autocommit=True) as admin:
        # as a restart or an idle time-out does: the store's connection is closed under it
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert ended and all(row[0] for row in ended)
    hits = memory.search("no space left on device on the database server", k=1)
    assert hits[0].resolution == "rotated and compressed logs, cleaned tmp"
    memory.store(_heal(Gap(text="web is down", component="web"), RESTART, RunStatus.healed, "run-1"), [])
    assert memory.count() == 5


def _lexical_index_is_exact(url: str) -> None:
    """The term counts and corpus figures on PostgreSQL are those of the records as they stand."""
    import collections

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT terms, n FROM memory_records").fetchall()
        want = collections.Counter(term for terms, _ in rows for term in set(terms.split()))
        got = dict(conn.execute("SELECT term, docs FROM memory_lexical_terms WHERE docs <> 0").fetchall())
        stats = conn.execute("SELECT docs, terms FROM memory_lexical_stats").fetchone()
    assert got == dict(want)
    assert stats == (len(rows), sum(n for _, n in rows))


def test_heals_of_one_worker_learn_and_recall_at_once(
    settings: Settings, postgres: pg_cluster.Cluster, chroma: ChromaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's heals run in threads: their writes, some replacing the same record with other
    words, and their recalls go on at once on the store's connections; nothing is lost, the term
    counts stay exact, and a recall finds what it finds alone."""
    import threading

    from agentheal.models import Plan, Resolution, Step

    home = scaleout(settings, postgres, chroma, monkeypatch).model_copy(update={"memory_index_batch": 5})
    memory = Memory(home)
    memory.import_objects(_many())
    queries = QUERIES[:4]
    plan = Plan(hypothesis="it died", steps=[Step(action="restart", component="web")], source="persona")
    threads, each, errors = 4, 12, []
    start = threading.Barrier(threads)

    def heal(t: int) -> None:
        try:
            start.wait()
            for n in range(each):
                # runs 0-5 are stored by every thread, each with its own words: replaced at once
                run = f"shared-{n}" if n < 6 else f"t{t}-{n}"
                gap = Gap(text=f"web thread{t} crashed SIGSEGV round{n} near{t * n}", component="web")
                status = RunStatus.healed if (t + n) % 3 else RunStatus.failed
                memory.store(Resolution(run_id=run, gap=gap, plan=plan, status=status), [])
                if t == 0:
                    memory.search(queries[n % len(queries)], k=5)
        except Exception as exc:  # reported below, from the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=heal, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors and not any(w.is_alive() for w in workers), errors
    assert memory.count() == len(_many()) + 6 + threads * (each - 6)
    assert len(memory._records._idle) > 1  # the threads had connections of their own
    assert home.database_url is not None
    _lexical_index_is_exact(home.database_url.get_secret_value())
    assert memory._records.doc_freqs(["sigsegv"]) == {"sigsegv": 6 + threads * (each - 6)}
    memory.flush()
    assert memory.count_indexed() == memory.count()
    # recalls at once find what each finds alone
    alone = {q: _recalled(memory, q) for q in queries}
    found: dict[str, Any] = {}
    readers = [threading.Thread(target=lambda q=q: found.update({q: _recalled(memory, q)})) for q in queries]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=60)
    assert found == alone


def _recalled(memory: Memory, query: str) -> list[tuple[str, str, int, int]]:
    return [(h.id, h.outcome, h.healed_count, h.failed_count) for h in memory.recall(Gap(text=query), k=5)]
