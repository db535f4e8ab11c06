"""Gap throughput of 1, 2 and 3 workers sharing one PostgreSQL, as a ratio to one worker on SQLite.

Each worker is a process running a real heal pool (4 heals at once, one per component) on a real
HealContext (event store, checkpoints, chromadb memory in its own home, personas, policy) whose
estate backend sleeps 50 ms per action to stand for real work, and answers its questions at once.
Every gap is new (its own fingerprint) over 24 components; the availability persona's playbook
restarts the component; no rate limit, so every gap is healed.

- Baseline: one worker on SQLite submits the gaps to its own pool and waits for every heal.
- Ours: the workers are started and warm; the gaps are queued in the shared work table at once;
  the time is from the first gap queued to the last item done (the work table's times, on the
  server's clock). Workers' start-up is not timed in either.
- Each figure is the median of REPEATS runs, the configurations measured in turn; every run's
  figure is kept in the row (`runs`).

Goal (the issue's): 3 workers at least 2x one worker on SQLite. A throwaway PostgreSQL is started
(tests/pg_cluster.py) unless AGENTHEAL_TEST_POSTGRES_URL names one.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# Long enough that the start and the end (the last 12 heals of 3 workers, with fewer running each
# moment) are a small part of it: at 150 gaps they were a tenth of a 3.5 s run, and 3 workers
# measured 1.75-2.09x in three runs; at 300, 2.05x in each of three.
GAPS = 300
POLL_S = 0.1
# More components than the 12 heals 3 workers run at once, as an estate has. With 12, as many as
# heal slots, each component's heals were one chain (one heal of a component at a time) and the
# slowest of 12 chains set the time, not the workers: the other components sat idle for the last
# 0.3-0.7 s of a 6.5 s run. One SQLite worker's 4 slots always find a free component either way.
COMPONENTS = 24
MAX_HEALS = 4
GOAL = "3 workers >= 2x one worker on SQLite"
# Each figure is the median of this many runs. One run of 3 workers read from 0.9x to 1.1x of
# another's on this host, the code unchanged: the figure of one run told more of the host's moment
# than of the workers.
REPEATS = 3


def _estate(root: Path) -> tuple[Path, Path]:
    lines = ["name: bench", "components:"]
    for i in range(COMPONENTS):
        lines += [f"  c{i}:", "    command: [python3, -m, http.server, '1', --bind, 127.0.0.1]",
                  "    probes:", "      - tcp: 127.0.0.1:1", "    depends_on: []"]  # fmt: skip
    estate = root / "estate.yaml"
    estate.write_text("\n".join(lines) + "\n")
    policy = root / "policy.yaml"
    policy.write_text("rate_limits: []\n")
    return estate, policy


def _env(url: str | None, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
    env["AGENTHEAL_CONFIG"] = "/nonexistent/agentheal.toml"
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")])
    env["AGENTHEAL_WORKER_NAME"] = name
    if url is not None:
        env["AGENTHEAL_DATABASE_URL"] = url
    return env


def _start(root: Path, name: str, url: str | None, estate: Path, policy: Path) -> subprocess.Popen[str]:
    args = [str(root / f"home-{name}"), str(estate), str(policy), str(MAX_HEALS), str(GAPS), str(COMPONENTS)]
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "_work_worker.py"), *args],
        env=_env(url, name), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc


def _ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"a bench worker did not start (exit {proc.wait()}): {line!r}")


def _sqlite(root: Path, estate: Path, policy: Path) -> float:
    proc = _start(root, "sqlite", None, estate, policy)
    _ready(proc)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    result = json.loads(proc.stdout.readline())
    proc.wait()
    if result["statuses"] != {"healed": GAPS}:
        raise RuntimeError(f"expected {GAPS} healed gaps on SQLite, got {result['statuses']}")
    return GAPS / float(result["seconds"])


def _postgres(root: Path, url: str, workers: int, estate: Path, policy: Path) -> float:
    from _work_worker import gap_text

    from agentheal.models import Gap
    from agentheal.work import WorkQueue
    from agentheal.work.queue import DONE

    procs = [_start(root, f"pg{workers}-{i}", url, estate, policy) for i in range(workers)]
    queue = WorkQueue(url)
    try:
        for proc in procs:
            _ready(proc)
        for i in range(GAPS):
            queue.enqueue(Gap(text=gap_text(i), component=f"c{i % COMPONENTS}"))
        # (asked seldom: this process's reads must not take the CPU the workers are measured on)
        while queue.counts()[DONE] < GAPS:
            time.sleep(POLL_S)
        items = queue.items(limit=GAPS + 1)
        outcomes = {i.outcome for i in items}
        if outcomes != {"healed"}:
            raise RuntimeError(f"expected every gap healed on PostgreSQL, got {outcomes}")
        # from the first gap queued to the last heal's end, both on the server's clock
        ends = [i.finished_at for i in items if i.finished_at is not None]
        seconds = (max(ends) - min(i.queued_at for i in items)).total_seconds()
    finally:
        queue.close()
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.write("stop\n")
                proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=120)
    return GAPS / seconds


def run() -> list[dict[str, Any]]:
    sys.path.insert(0, str(BENCH.parent / "tests"))
    import pg_cluster

    cluster = pg_cluster.start()
    runs: dict[int, list[float]] = {workers: [] for workers in (0, 1, 2, 3)}  # 0: one SQLite worker
    try:
        with tempfile.TemporaryDirectory(prefix="agentheal-bench-workers-") as tmp:
            estate, policy = _estate(Path(tmp))
            # the configurations in turn, each time in new homes and a new database: what slows
            # this host for a while slows each of them
            for rep in range(REPEATS):
                root = Path(tmp) / f"rep{rep}"
                root.mkdir()
                runs[0].append(_sqlite(root, estate, policy))
                for workers in (1, 2, 3):
                    url = cluster.new_database(upgraded=True)
                    runs[workers].append(_postgres(root, url, workers, estate, policy))
    finally:
        cluster.stop()
    baseline = statistics.median(runs[0])
    rows: list[dict[str, Any]] = [
        {"name": "workers_sqlite_1_gaps_per_s", "value": baseline, "unit": "gaps/s", "baseline": None,
         "ratio": None, "goal": "baseline", "met": True, "runs": runs[0]}
    ]  # fmt: skip
    for workers in (1, 2, 3):
        value = statistics.median(runs[workers])
        ratio = value / baseline
        rows.append({"name": f"workers_postgres_{workers}_gaps_per_s", "value": value, "unit": "gaps/s",
                     "baseline": baseline, "ratio": ratio, "goal": GOAL if workers == 3 else "reported",
                     "met": ratio >= 2.0 if workers == 3 else True, "runs": runs[workers]})  # fmt: skip
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
