"""Recall latency with 100,000 stored resolutions on the scale-out setup: the vectors on a `chroma run`
server (`AGENTHEAL_MEMORY_URL`), the records and their lexical index in PostgreSQL
(`AGENTHEAL_DATABASE_URL`), both on loopback, started here in throwaway folders (as the tests start
them: tests/pg_cluster.py, tests/chroma_server.py) and stopped after.

The store is filled and queried as bench_recall fills and queries the embedded one (same texts, same
perturbed vectors, same 200 queries, `Memory.recall` in its default mode, hybrid), after the
VACUUM ANALYZE autovacuum would run after such a load; the baseline is the bare `collection.query`
through the same server on an already computed vector. Run by
bench_recall (so `make bench` runs it), or alone: `python bench/bench_recall_server.py`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_recall as embedded

GOAL_P95_MS = 30.0
TESTS = Path(__file__).resolve().parent.parent / "tests"


def _engines() -> tuple[Any, Any]:
    """A PostgreSQL cluster and a Chroma server on loopback, or the reason there are none."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import chroma_server
    import pg_cluster

    cluster = pg_cluster.start()
    try:
        server = chroma_server.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster, server


def _settle(url: str) -> float:
    """VACUUM ANALYZE memory's tables, as autovacuum does within a minute of a bulk load (a freshly
    loaded table has no statistics and a long GIN pending list): timed from then on, the figure is a
    running worker's, not that of the minute after an import of 100,000 records. Returns its seconds."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) memory_records, memory_lexical_terms, memory_lexical_stats")
    return time.perf_counter() - started


def _p95(values: list[float]) -> float:
    return embedded._p95(values)


def run() -> list[dict[str, Any]]:
    import numpy as np

    from agentheal.config import Settings
    from agentheal.memory import Memory
    from agentheal.models import Gap

    cluster, server = _engines()
    try:
        rng = np.random.default_rng(7)
        with tempfile.TemporaryDirectory(prefix="agentheal-bench-recall-server-") as tmp:
            settings = Settings(
                home=Path(tmp),
                embed_base_url=None,
                database_url=cluster.new_database(upgraded=True),
                memory_url=server.url,
            )
            memory = Memory(settings)
            fill_s = embedded._fill(memory, rng)
            assert memory.count() == embedded.RECORDS == memory.count_indexed()
            vacuum_s = _settle(settings.database_url.get_secret_value())
            queries = [(t.format(c=c), c) for t in embedded.QUERY_TEMPLATES for c in embedded.COMPONENTS]
            picked = rng.choice(len(queries), embedded.QUERIES, replace=False)
            gaps = [Gap(text=queries[i][0], component=queries[i][1]) for i in picked]
            for gap in gaps[:5]:  # connections made, the model loaded: as a running worker has them
                memory.recall(gap, k=embedded.K)
            ours = []
            for gap in gaps:
                started = time.perf_counter()
                hits = memory.recall(gap, k=embedded.K)
                ours.append((time.perf_counter() - started) * 1000)
                assert len(hits) == embedded.K
            by_mode: dict[str, list[float]] = {"dense": [], "lexical": []}
            for mode, times in by_mode.items():
                for gap in gaps:
                    started = time.perf_counter()
                    memory.search(gap.text, k=embedded.K, mode=mode)
                    times.append((time.perf_counter() - started) * 1000)
            bare = []
            for vector in memory.embedder.embed([g.text for g in gaps]):
                started = time.perf_counter()
                memory.collection.query(
                    query_embeddings=vector[None, :],
                    n_results=embedded.K,
                    include=["documents", "metadatas", "distances"],
                )
                bare.append((time.perf_counter() - started) * 1000)
            memory.close()
    finally:
        server.stop()
        cluster.stop()
    p50, p95, b50, b95 = statistics.median(ours), _p95(ours), statistics.median(bare), _p95(bare)
    goal = (
        f"p95 under {GOAL_P95_MS:g} ms with {embedded.RECORDS:,} records on a Chroma server and PostgreSQL "
        "(baseline: bare query through the server)"
    )
    rows: list[dict[str, Any]] = [
        {"name": "recall_server_p50_100k", "value": round(p50, 2), "unit": "ms", "baseline": round(b50, 2),
         "ratio": round(p50 / b50, 2), "goal": goal, "met": p95 < GOAL_P95_MS},
        {"name": "recall_server_p95_100k", "value": round(p95, 2), "unit": "ms", "baseline": round(b95, 2),
         "ratio": round(p95 / b95, 2), "goal": goal, "met": p95 < GOAL_P95_MS},
        {"name": "memory_server_fill_100k", "value": round(fill_s, 1), "unit": "s", "baseline": None,
         "ratio": None, "goal": "under 600 s for 100,000 records through the server and PostgreSQL "
         f"(then VACUUM ANALYZE: {vacuum_s:.1f} s)", "met": fill_s < 600},
    ]  # fmt: skip
    rows += [
        {
            "name": f"recall_server_{mode}_p95_100k",
            "value": round(_p95(times), 2),
            "unit": "ms",
            "baseline": round(b95, 2),
            "ratio": round(_p95(times) / b95, 2),
            "goal": f"no goal: {mode} search alone (the goal is on recall_server_p95_100k, hybrid)",
            "met": True,
        }
        for mode, times in by_mode.items()
    ]
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for row in run():
        print(row)
