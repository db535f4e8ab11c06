"""A run waiting for a remote persona's agent holds no worker: on `agentheal serve` with a one-worker
heal pool, a second gap heals while the first waits (the agent holds its answer until the test lets
it go); the server's poller then resumes the first with the agent's plan. `agentheal runs resume`
resumes a waiting run from a shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentheal.api.app import create_app
from agentheal.api.tokens import TokenStore
from agentheal.cli import main
from agentheal.config import Settings
from agentheal.estate.local import LocalBackend
from agentheal.events import EventStore
from test_a2a_remote import GAP, remote_agent
from test_api_core import _backend, served

pytestmark = pytest.mark.slow


@pytest.fixture
def estate_up(settings: Settings, tiny_estate_api_file: Path) -> Iterator[tuple[Path, LocalBackend]]:
    backend = _backend(settings, tiny_estate_api_file)
    assert all(r.outcome == "ok" for r in backend.up())
    yield tiny_estate_api_file, backend
    backend.down()


def _until(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _add(capsys: pytest.CaptureFixture[str], base: str) -> None:
    assert main(["agents", "add-remote", base, "--components", "web", "--timeout", "60"]) == 0
    capsys.readouterr()


def test_a_run_waiting_for_a_remote_agent_frees_the_only_worker(
    settings: Settings, estate_up: tuple[Path, LocalBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    estate_file, backend = estate_up
    token = TokenStore(settings.home_dir).add("ops", "operator")
    auth = {"Authorization": f"Bearer {token}"}
    gate = threading.Event()
    fast = settings.model_copy(update={"remote_poll_s": 0.1})
    with remote_agent("plan", gate=gate) as (agent_url, agent):
        _add(capsys, agent_url)
        with served(create_app(fast, estate_path=estate_file, max_heals=1)) as base:
            sent = httpx.post(f"{base}/gaps", json={"text": GAP, "component": "web"}, headers=auth)
            assert sent.status_code == 202, sent.text
            first = sent.json()["run_id"]

            def status(run_id: str) -> str:
                return str(httpx.get(f"{base}/runs/{run_id}", headers=auth).json()["status"])

            _until("the first run waits for the agent", lambda: status(first) == "awaiting_remote")
            listed = httpx.get(f"{base}/runs", params={"status": "awaiting_remote"}, headers=auth).json()
            assert [r["run_id"] for r in listed["runs"]] == [first]
            metrics = httpx.get(f"{base}/metrics", headers=auth).text
            assert (
                "agentheal_remote_waiting 1.0" in metrics
                and 'agentheal_runs{status="awaiting_remote"} 1.0' in metrics
            )
            (api,) = [h for h in backend.status() if h.name == "api"]
            assert api.pid
            os.kill(api.pid, signal.SIGKILL)
            second = httpx.post(
                f"{base}/gaps",
                params={"wait": "true", "timeout": 60},
                json={"text": "api is down: connection refused", "component": "api"},
                headers=auth,
                timeout=90,
            )
            # healed by the one worker while the first run still waits: the agent has not answered
            assert second.status_code == 200 and second.json()["status"] == "healed", second.text
            assert status(first) == "awaiting_remote" and agent.answered == 0
            gate.set()
            _until("the poller resumes the first run", lambda: status(first) == "awaiting_approval")
            shown = httpx.get(f"{base}/runs/{first}", headers=auth).json()
    assert [s["action"] for s in shown["plan"]["steps"]] == ["restart"] and agent.answered == 1
    assert len(agent.received) == 1  # asked many times, sent once
    detail = EventStore(settings.events_url).run(first)
    assert detail is not None
    (asked,) = [e for e in detail.timeline if e.node == "remote" and e.data.get("kind") == "remote"]
    assert asked.detail.startswith("asked ledger-reconciler")


def _left_waiting(settings: Settings, estate_file: Path) -> Any:
    """A heal started by the CLI in its own process, killed once its run waits: the run's row."""
    args = ["heal", "--gap", GAP, "--component", "web", "--estate", str(estate_file), "--json", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "agentheal", *args], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    events = EventStore(settings.events_url)
    try:
        (row,) = _until("the run waits", lambda: events.runs(limit=5, status="awaiting_remote"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    return row


def test_a_remote_poller_thread_resumes_runs_through_its_pool(
    settings: Settings, estate_up: tuple[Path, LocalBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    from agentheal.graphs.context import HealContext
    from agentheal.protocols.a2a_wait import RemotePoller
    from agentheal.services.heal import HealPool

    estate_file, _backend = estate_up
    gate = threading.Event()
    with remote_agent("plan", gate=gate) as (agent_url, agent):
        _add(capsys, agent_url)
        row = _left_waiting(settings, estate_file)
        ctx = HealContext(
            settings=settings.model_copy(update={"remote_poll_s": 0.1}), estate_path=estate_file
        )
        pool = HealPool(ctx, max_heals=1)
        poller = RemotePoller(pool).start()
        try:
            time.sleep(0.5)  # asked a few times meanwhile: the agent works, the run still waits
            assert EventStore(settings.events_url).run(row.run_id).row.status.value == "awaiting_remote"  # type: ignore[union-attr]
            gate.set()
            _until(
                "the poller resumes it",
                lambda: ctx.events.run(row.run_id).row.status.value == "awaiting_approval",
            )  # type: ignore[union-attr]
        finally:
            poller.stop()
            pool.close()
    assert len(agent.received) == 1 and agent.answered == 1


def test_runs_resume_resumes_a_waiting_run_from_a_shell(
    settings: Settings, estate_up: tuple[Path, LocalBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    estate_file, _backend = estate_up
    gate = threading.Event()
    with remote_agent("plan", gate=gate) as (agent_url, agent):
        _add(capsys, agent_url)
        row = _left_waiting(settings, estate_file)
        assert main(["runs", "resume", row.run_id[:12], "--no-wait", "--json"]) == 1
        still = json.loads(capsys.readouterr().out)
        assert still["status"] == "awaiting_remote" and still["reason"].startswith("awaiting remote task")
        gate.set()
        assert main(["runs", "resume", row.run_id[:12], "--json"]) == 1  # not healed: awaits approval
        resumed = json.loads(capsys.readouterr().out)
    assert resumed["run_id"] == row.run_id and resumed["status"] == "awaiting_approval", resumed["reason"]
    assert len(agent.received) == 1
    assert main(["runs", "resume", row.run_id[:12]]) == 2
    assert "not awaiting a remote agent" in capsys.readouterr().err


def test_a_run_waiting_on_serve_survives_a_restart_and_is_escalated_at_its_deadline(
    settings: Settings, estate_up: tuple[Path, LocalBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    estate_file, _backend = estate_up
    token = TokenStore(settings.home_dir).add("ops", "operator")
    auth = {"Authorization": f"Bearer {token}"}
    fast = settings.model_copy(update={"remote_poll_s": 0.1})
    with remote_agent("silent") as (agent_url, agent):
        assert main(["agents", "add-remote", agent_url, "--components", "web", "--timeout", "3"]) == 0
        capsys.readouterr()
        with served(create_app(fast, estate_path=estate_file)) as base:
            run_id = httpx.post(f"{base}/gaps", json={"text": GAP, "component": "web"}, headers=auth).json()[
                "run_id"
            ]

            def status() -> str:
                return str(httpx.get(f"{base}/runs/{run_id}", headers=auth).json()["status"])

            _until("the run waits", lambda: status() == "awaiting_remote")
        # a new server process finds the run waiting, keeps its deadline, and escalates it there
        with served(create_app(fast, estate_path=estate_file)) as base:
            assert status() in ("awaiting_remote", "escalated")
            _until("the run is escalated", lambda: status() == "escalated")
            shown = httpx.get(f"{base}/runs/{run_id}", headers=auth).json()
    assert "ledger-reconciler" in shown["reason"] and "did not answer within 3 s" in shown["reason"]
    assert shown["actions"] == [] and len(agent.received) == 1
