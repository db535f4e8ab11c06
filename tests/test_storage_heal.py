"""Heals on both backends: an offline heal of a killed process lands in the events and the
checkpoints of the home's database and is read back by another process (`runs show`); the server's
heal pool drives several heals at once, each worker thread with its own checkpointer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.events import EventStore
from agentheal.graphs.context import HealContext
from agentheal.models import Gap
from agentheal.services.heal import HealPool
from agentheal.storage.checkpoints import open_checkpoints
from agentheal.storage.urls import libpq_url
from pg_cluster import postgres_fixture, ready_home_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def _checkpoint_rows(home: Settings, run_id: str) -> int:
    """Rows of the checkpoints table with this run as their thread, read with the database's own client."""
    if home.database_url is None:
        with contextlib.closing(sqlite3.connect(home.checkpoints_path)) as db:
            return int(
                db.execute("SELECT count(*) FROM checkpoints WHERE thread_id = ?", (run_id,)).fetchone()[0]
            )
    import psycopg

    with psycopg.connect(libpq_url(home.database_url.get_secret_value())) as conn:
        found = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (run_id,)).fetchone()
    assert found is not None
    return int(found[0])


def _web_down(estate: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = yaml.safe_load(estate.read_text())["components"]["web"]["probes"][0]["http"]
    assert main(["estate", "status", str(estate), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    os.kill(next(c["pid"] for c in status["components"] if c["name"] == "web"), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=0.5)
        except httpx.HTTPError:
            return
        time.sleep(0.05)
    raise AssertionError("web still answers after SIGKILL")


def test_an_offline_heal_is_recorded_in_the_database_and_read_by_another_process(
    ready_home: Settings, tiny_estate_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["estate", "up", str(tiny_estate_file)]) == 0
    capsys.readouterr()
    try:
        _web_down(tiny_estate_file, capsys)
        code = main(["heal", "--gap", "web is down: connection refused", "--component", "web",
                     "--estate", str(tiny_estate_file), "--json"])  # fmt: skip
        result: dict[str, Any] = json.loads(capsys.readouterr().out)
        assert (code, result["status"]) == (0, "healed"), result
    finally:
        main(["estate", "down", str(tiny_estate_file)])
    run_id = result["run_id"]

    store = EventStore(ready_home.events_url)
    try:
        detail = store.run(run_id)
        assert detail is not None and detail.totals.nodes > 0 and detail.actions[0].step.action == "restart"
    finally:
        store.close()
    # one: at the breakpoint before its first action; its end and answer are the event store's
    assert _checkpoint_rows(ready_home, run_id) == 1
    if ready_home.database_url is not None:
        assert not ready_home.checkpoints_path.exists()  # nothing of the run went to the SQLite files
        assert not (ready_home.home_dir / "events.sqlite").exists()

    shown = _another_process(ready_home, "runs", "show", run_id[:10], "--json")
    assert shown.returncode == 0, shown.stderr
    story = json.loads(shown.stdout)
    assert (story["row"]["run_id"], story["row"]["status"]) == (run_id, "healed")


def _another_process(home: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """`agentheal ARGV` in a process of its own, on the same home and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
    env.update(AGENTHEAL_HOME=str(home.home), AGENTHEAL_CONFIG=os.environ["AGENTHEAL_CONFIG"])
    if home.database_url is not None:
        env["AGENTHEAL_DATABASE_URL"] = home.database_url.get_secret_value()
    return subprocess.run(
        [sys.executable, "-m", "agentheal", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_run_waiting_for_approval_is_resumed_by_another_process_from_its_checkpoint(
    ready_home: Settings, tiny_estate_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("max_auto_risk: none\n")  # every action waits for a person
    assert main(["estate", "up", str(tiny_estate_file)]) == 0
    capsys.readouterr()
    try:
        _web_down(tiny_estate_file, capsys)
        code = main(["heal", "--gap", "web is down", "--component", "web", "--estate", str(tiny_estate_file),
                     "--policy", str(policy), "--json"])  # fmt: skip
        waiting = json.loads(capsys.readouterr().out)
        assert (code, waiting["status"]) == (1, "awaiting_approval"), waiting
        assert _checkpoint_rows(ready_home, waiting["run_id"]) > 0
        # what an approver is shown (API, chat, MCP): the plan, from the checkpoint wherever it is
        from agentheal.events import EventStore
        from agentheal.services.runs import show_run

        shown = show_run(EventStore(ready_home.events_url), waiting["run_id"], ready_home)
        assert shown is not None and shown["plan"]["steps"][0]["action"] == "restart", shown

        approved = _another_process(ready_home, "approve", waiting["run_id"][:10], "--json")
        assert approved.returncode == 0, approved.stderr
        done = json.loads(approved.stdout)
        assert (done["run_id"], done["status"]) == (waiting["run_id"], "healed")
        assert [(a["action"], a["outcome"]) for a in done["actions"]] == [("restart", "ok")]
    finally:
        main(["estate", "down", str(tiny_estate_file)])


def test_the_heal_pool_checkpoints_each_heal_in_the_database(ready_home: Settings) -> None:
    ctx = HealContext(settings=ready_home)  # no estate: each heal escalates after triage, quickly
    pool = HealPool(ctx, max_heals=3)
    pool.warm()
    try:
        gaps = [Gap(text=f"{c} fault", component=c) for c in ("web", "db", "cache")]
        submitted = [pool.submit(g, actor="tester", door="test") for g in gaps]
        results = [future.result(60) for _, future, _ in submitted]
    finally:
        pool.close()
    assert {r["status"] for r in results} == {"escalated"}
    with open_checkpoints(ready_home) as checkpoints:
        for run_id, _, _ in submitted:
            found = checkpoints.saver.get_tuple({"configurable": {"thread_id": run_id}})
            assert found is not None and found.checkpoint["channel_values"]["run_id"] == run_id
    assert {r.run_id for r in ctx.events.runs()} == {s[0] for s in submitted}
