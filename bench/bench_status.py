"""`agentheal status` and `agentheal report` over an event store of one million events, as ratios to
`agentheal --help` (the CLI's own start) measured in the same run.

The store: 90,000 heal runs over 30 days, each with its gap report, eight node transitions and an
action (11 rows a run: 990,000), plus detector gaps, predictions, evolutions and probe results to
reach one million rows in all, written straight into the real tables (SQLite, WAL) in the formats
SQLAlchemy writes. Goals (issue 14): status under 1 s (stretch 0.3 s), the report under 5 s.

The figures' summary (agentheal.metrics.summary) is folded from the events by the first status
after they were written: that first run is reported on its own row (a store upgraded to the
summary pays it once), the status row is the median of the runs after it, and a third row is a
status after 1,000 more heal runs ended (what a fold of new events costs on top).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

AGENTHEAL = Path(sys.executable).parent / "agentheal"
RUNS = 90_000
NODES = ("triage", "recall", "route", "diagnose", "plan", "guard", "execute", "validate")
EXTRA = {"gaps": 4_000, "predictions": 2_000, "evolutions": 500, "probe_results": 3_500}


def _t(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's DateTime on SQLite


def build_store(home: Path, runs: int = RUNS) -> int:
    """Write the history under `home`; returns how many rows (events) it holds."""
    from agentheal.config import Settings
    from agentheal.events import EventStore

    store = EventStore(Settings(home=home).events_url)
    store.close()
    rnd = random.Random(14)
    now = datetime.now(UTC).replace(tzinfo=None)
    start = now - timedelta(days=29.9)  # all inside the 30 days status shows
    statuses = ["healed"] * 8 + ["escalated", "failed"]
    personas = ["availability", "config", "storage", "network"]
    db = sqlite3.connect(home / "events.sqlite")
    gaps, rows, nodes, actions = [], [], [], []
    for i in range(runs):
        began = start + timedelta(seconds=i * 29.8 * 86400 / runs)  # all over by now
        fp = f"fp{rnd.randrange(3000):05d}"
        took = rnd.lognormvariate(1.5, 0.8)
        gap = json.dumps({"text": f"gap {fp}", "fingerprint": fp, "source": "user", "kind": "incident"})
        gaps.append((fp, "incident", "web", "medium", f"gap {fp}", gap, _t(began), _t(began)))
        run_id = f"{i:032x}"
        rows.append((run_id, fp, "web", f"gap {fp}", gap, rnd.choice(statuses), rnd.choice(personas),
                     "persona", _t(began), _t(began + timedelta(seconds=took))))  # fmt: skip
        for k, node in enumerate(NODES):
            nodes.append((run_id, node, "", "{}", _t(began + timedelta(seconds=took * k / 8))))
        actions.append(
            (run_id, "restart", "web", 0, "ok", "{}", "{}", _t(began + timedelta(seconds=took / 2)))
        )
    for _ in range(EXTRA["gaps"]):
        at = start + timedelta(seconds=rnd.uniform(0, 30 * 86400))
        gap = json.dumps({"text": "web down", "source": "monitor", "kind": "incident"})
        lag = timedelta(seconds=rnd.uniform(1, 30))
        gaps.append(("mon", "incident", "web", "high", "web down", gap, _t(at - lag), _t(at)))
    db.executemany("INSERT INTO gaps (fingerprint, kind, component, severity, text, gap, created_at, "
                   "recorded_at) VALUES (?,?,?,?,?,?,?,?)", gaps)  # fmt: skip
    db.executemany("INSERT INTO runs (run_id, fingerprint, component, gap_text, gap, status, persona, "
                   "source, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)  # fmt: skip
    db.executemany("INSERT INTO node_events (run_id, node, detail, data, at) VALUES (?,?,?,?,?)", nodes)
    db.executemany("INSERT INTO actions (run_id, action, component, dry_run, outcome, step, result, at) "
                   "VALUES (?,?,?,?,?,?,?,?)", actions)  # fmt: skip
    outcomes = ["avoided", "avoided", "breached", "false", "missed"]
    db.executemany(
        "INSERT INTO predictions (series, component, text, made_at, acted, outcome, checked_at, data, "
        '"limit") VALUES (?,?,?,?,?,?,?,?,?)',
        [("disk", "web", "disk fills", _t(now - timedelta(days=rnd.uniform(1, 29))), rnd.random() < 0.7,
          rnd.choice(outcomes), _t(now - timedelta(hours=rnd.uniform(1, 20))), "{}", 100.0)
         for _ in range(EXTRA["predictions"])],
    )  # fmt: skip
    db.executemany(
        "INSERT INTO evolutions (id, kind, target, status, created_at, decided_at, reason, data) "
        "VALUES (?,?,?,?,?,?,?,?)",
        [(f"ev{i}", "add_check", "web", rnd.choice(["kept", "reverted"]), _t(now - timedelta(days=2)),
          _t(now - timedelta(days=1)), "", "{}") for i in range(EXTRA["evolutions"])],
    )  # fmt: skip
    db.executemany(  # a watch's batches: a minute of answers per component
        "INSERT INTO probe_results (component, answers, passed, at) VALUES (?,?,?,?)",
        [(rnd.choice(["web", "api", "db"]), 60, 60 - (rnd.random() < 0.1),
          _t(now - timedelta(seconds=i * 60))) for i in range(EXTRA["probe_results"])],
    )  # fmt: skip
    db.commit()
    tables = ("gaps", "runs", "node_events", "actions", "predictions", "evolutions", "probe_results")
    total = sum(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
    db.close()
    return int(total)


def add_runs(home: Path, runs: int) -> None:
    """Heal runs that ended just now (each with its gap report), as a busy estate adds them."""
    rnd = random.Random(15)
    now = datetime.now(UTC).replace(tzinfo=None)
    db = sqlite3.connect(home / "events.sqlite")
    gaps, rows = [], []
    for i in range(runs):
        began = now - timedelta(seconds=60 - i * 50 / runs)
        fp = f"fp{rnd.randrange(3000):05d}"
        gap = json.dumps({"text": f"gap {fp}", "fingerprint": fp, "source": "user", "kind": "incident"})
        gaps.append((fp, "incident", "web", "medium", f"gap {fp}", gap, _t(began), _t(began)))
        rows.append((f"new{i:029x}", fp, "web", f"gap {fp}", gap, "healed", "availability", "persona",
                     _t(began), _t(began + timedelta(seconds=rnd.uniform(1, 9)))))  # fmt: skip
    db.executemany("INSERT INTO gaps (fingerprint, kind, component, severity, text, gap, created_at, "
                   "recorded_at) VALUES (?,?,?,?,?,?,?,?)", gaps)  # fmt: skip
    db.executemany("INSERT INTO runs (run_id, fingerprint, component, gap_text, gap, status, persona, "
                   "source, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)  # fmt: skip
    db.commit()
    db.close()


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - started


def _median_wall(cmd: list[str], env: dict[str, str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        events = build_store(home)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
        env |= {"AGENTHEAL_HOME": str(home), "AGENTHEAL_CONFIG": str(Path(tmp) / "none.toml")}
        status = [str(AGENTHEAL), "status", "--json"]
        first_s = _wall(status, env)  # folds every event into the summary
        out = subprocess.run(status, env=env, capture_output=True, text=True, check=True)
        rate = next(f for f in json.loads(out.stdout)["figures"] if f["name"] == "gap_resolution_rate")
        if rate["n"] != RUNS:  # every run ended inside the window
            raise AssertionError(f"status counted {rate['n']} ended runs, the store holds {RUNS}")
        baseline = _median_wall([str(AGENTHEAL), "--help"], env)
        status_s = _median_wall(status, env)
        report_s = _median_wall([str(AGENTHEAL), "report", "--out", str(Path(tmp) / "r.html")], env)
        add_runs(home, 1_000)
        after_s = _wall(status, env)
    return [
        {"name": "status_first_run_1m_events", "value": round(first_s, 3), "unit": "s",
         "baseline": round(baseline, 3), "ratio": round(first_s / baseline, 2),
         "goal": "no goal: the first status after the events were written folds them all into the "
                 "figures' summary (once per store)", "met": True},
        {"name": "status_after_1000_new_runs", "value": round(after_s, 3), "unit": "s",
         "baseline": round(baseline, 3), "ratio": round(after_s / baseline, 2),
         "goal": "no goal: status folding 1,000 runs (and their reports) that ended since the last one",
         "met": True},
        {"name": "status_wall_time_1m_events", "value": round(status_s, 3), "unit": "s",
         "baseline": round(baseline, 3), "ratio": round(status_s / baseline, 2),
         "goal": f"under 1 s (stretch 0.3 s) over {events:,} events; baseline: agentheal --help",
         "met": status_s < 1.0},
        {"name": "report_build_time_1m_events", "value": round(report_s, 3), "unit": "s",
         "baseline": round(baseline, 3), "ratio": round(report_s / baseline, 2),
         "goal": f"under 5 s over {events:,} events; baseline: agentheal --help", "met": report_s < 5.0},
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run():
        print(row)
