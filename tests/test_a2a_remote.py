"""Remote personas: a second A2A agent on loopback (built with `a2a-sdk`) answers with a plan; it is
registered with `agents add-remote` and a gap routed to it heals end to end. An agent proposing a
forbidden action is escalated and nothing runs; one that never answers is escalated at its time-out;
a run killed while it waits resumes at restart and waits for the same task."""

from __future__ import annotations

import asyncio
import contextlib
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

import pytest
from a2a.helpers.proto_helpers import get_data_parts, new_data_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Task, TaskState, TaskStatus
from starlette.applications import Starlette

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.events import EventStore
from conftest import free_port, served

pytestmark = pytest.mark.slow

GAP = "ledger balances drift: settlement entries are double-posted by the web tier"


class LedgerAgent(AgentExecutor):
    """The remote specialist: answers each task with a plan, a forbidden one, later, or never."""

    def __init__(self, mode: str, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.mode, self.delay_s, self.gate = mode, delay_s, gate
        self.received: list[dict[str, Any]] = []
        self.answered = 0

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None and context.task_id and context.context_id
        (payload,) = get_data_parts(context.message.parts)
        self.received.append(payload)
        await event_queue.enqueue_event(
            Task(
                id=context.task_id,
                context_id=context.context_id,
                history=[context.message],
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
            )
        )
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        if self.mode == "silent":
            return  # the task stays working: no answer, ever
        await asyncio.sleep(self.delay_s)
        while self.gate is not None and not self.gate.is_set():  # the test says when it may answer
            await asyncio.sleep(0.02)
        component = payload["component"]
        step = {"action": "restart", "component": component, "why": "reload the ledger's posting worker"}
        if self.mode == "forbidden":
            step = {"action": "shell", "component": component, "args": {"cmd": "rm -rf /var/ledger"}}
        if self.mode == "malformed":  # steps as words: not a plan
            bad = {"hypothesis": "it is the worker", "steps": "restart the worker, I think"}
            await updater.add_artifact([new_data_part(bad, "application/json")], name="plan", last_chunk=True)
            await updater.complete()
            return
        plan = {"hypothesis": "a stuck posting worker re-sends entries", "steps": [step],
                "checks": [{"component": component}]}  # fmt: skip
        if self.mode == "retry" and len(self.received) == 1:  # a first plan that cannot validate
            stop = {"action": "stop", "component": component}
            plan = {"hypothesis": "the worker must rest", "steps": [stop],
                    "checks": [{"component": component, "settle_s": 0, "deadline_s": 0.3}]}  # fmt: skip
        await updater.add_artifact([new_data_part(plan, "application/json")], name="plan", last_chunk=True)
        await updater.complete()
        self.answered += 1

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


@contextlib.contextmanager
def remote_agent(
    mode: str, delay_s: float = 0.0, gate: threading.Event | None = None
) -> Iterator[tuple[str, LedgerAgent]]:
    """The ledger agent served on a free loopback port: its base URL and the executor."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    card = AgentCard(
        name="Ledger reconciler",
        description="Reconciles the payment ledger: drifting balances, double-posted settlement entries, "
        "stuck settlement batches and posting workers that re-send entries.",
        version="1.0",
        supported_interfaces=[
            AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["application/json"],
        default_output_modes=["application/json"],
        skills=[AgentSkill(id="reconcile", name="Reconcile the ledger", tags=["ledger", "settlement"],
                           description="Plans the repair of double-posted or drifting ledger entries.")],
    )  # fmt: skip
    executor = LedgerAgent(mode, delay_s, gate)
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
    with served(app, port):
        yield base, executor


@pytest.fixture
def estate(settings: Settings, tiny_estate_file: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    assert main(["estate", "up", str(tiny_estate_file)]) == 0
    capsys.readouterr()
    yield tiny_estate_file
    main(["estate", "down", str(tiny_estate_file)])


def _add(capsys: pytest.CaptureFixture[str], base: str, timeout: float = 30) -> str:
    code = main(["agents", "add-remote", base, "--components", "web", "--timeout", str(timeout)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _heal(capsys: pytest.CaptureFixture[str], estate: Path) -> dict[str, Any]:
    main(["heal", "--gap", GAP, "--component", "web", "--estate", str(estate), "--json", "-q"])
    out = capsys.readouterr()
    assert out.out, out.err
    return dict(json.loads(out.out))


def _approve(capsys: pytest.CaptureFixture[str], run_id: str) -> dict[str, Any]:
    main(["approve", run_id, "--json"])
    return dict(json.loads(capsys.readouterr().out))


def _web_pid(capsys: pytest.CaptureFixture[str], estate: Path) -> int:
    main(["estate", "status", str(estate), "--json"])
    return int(
        next(c["pid"] for c in json.loads(capsys.readouterr().out)["components"] if c["name"] == "web")
    )


def test_a_gap_routed_to_a_remote_agent_heals_with_its_plan(
    settings: Settings, estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with remote_agent("plan") as (base, agent):
        assert "added ledger-reconciler" in _add(capsys, base)
        persona = (settings.generated_personas_dir / "ledger-reconciler.md").read_text()
        assert f"a2a: {base}" in persona
        before = _web_pid(capsys, estate)
        waiting = _heal(capsys, estate)
    # its plan passes the guard like any other: a new agent's first heals wait for a person
    assert waiting["persona"] == "ledger-reconciler", waiting
    assert waiting["status"] == "awaiting_approval" and "first 3 need a person" in waiting["reason"]
    assert [s["action"] for s in waiting["plan"]["steps"]] == ["restart"] and waiting["actions"] == []
    result = _approve(capsys, waiting["run_id"])
    assert result["status"] == "healed", result["reason"]
    assert [a["action"] for a in result["actions"]] == ["restart"] and _web_pid(capsys, estate) != before
    (sent,) = agent.received
    assert (
        sent["gap"] == GAP
        and sent["component"] == "web"
        and "restart" in [a["name"] for a in sent["actions"]]
    )
    assert sent["findings"]["facts"]  # the diagnosis went with it
    assert main(["agents", "list", "--json"]) == 0
    listed = {a["name"]: a for a in json.loads(capsys.readouterr().out)}
    assert listed["ledger-reconciler"]["runs"] == 1 and listed["ledger-reconciler"]["heals"] == 1
    assert "availability" in listed  # beside the local ones
    assert main(["agents", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["ledger-reconciler"].endswith(f"100%  {base}") and rows["availability"].endswith("local")
    assert main(["agents", "show", "ledger-reconciler"]) == 0
    shown = capsys.readouterr().out
    assert f"remote agent over A2A at {base}; waits 30 s for a plan; no token" in shown
    assert "1 run(s)" in shown and "1 healed" in shown and "from the Agent Card of Ledger reconciler" in shown
    assert main(["agents", "show", "ledger-reconciler", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["remote"] == {
        "a2a": base,
        "timeout_s": 30.0,
        "token_env": None,
    }


@pytest.mark.parametrize(
    ("mode", "why"),
    [("forbidden", "policy refused the persona plan: "), ("malformed", "answered malformed: steps")],
)
def test_a_forbidden_or_malformed_remote_plan_never_runs(
    settings: Settings, estate: Path, capsys: pytest.CaptureFixture[str], mode: str, why: str
) -> None:
    with remote_agent(mode) as (base, _agent):
        _add(capsys, base)
        before = _web_pid(capsys, estate)
        result = _heal(capsys, estate)
    assert result["status"] == "escalated" and why in result["reason"], result["reason"]
    assert result["actions"] == [] and _web_pid(capsys, estate) == before


def test_a_silent_remote_agent_is_escalated_at_its_time_out(
    settings: Settings, estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with remote_agent("silent") as (base, agent):
        _add(capsys, base, timeout=1.5)
        result = _heal(capsys, estate)
    assert result["status"] == "escalated"
    assert "ledger-reconciler" in result["reason"] and "did not answer within 1.5 s" in result["reason"]
    assert result["actions"] == [] and len(agent.received) == 1


def _kill_while_waiting(settings: Settings, estate: Path, agent: LedgerAgent) -> Any:
    """A heal in its own process, SIGKILLed once its run waits in `interrupt()` for the task it sent
    (the CLI asks the agent in that process meanwhile); the run it left `awaiting_remote`."""
    args = ["heal", "--gap", GAP, "--component", "web", "--estate", str(estate), "--json", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "agentheal", *args], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    events, deadline = EventStore(settings.events_url), time.monotonic() + 60
    while not events.runs(limit=5, status="awaiting_remote"):  # the task is sent and recorded first
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    (row,) = events.runs(limit=5)
    assert row.status.value == "awaiting_remote" and len(agent.received) == 1
    assert row.reason is not None and row.reason.startswith("awaiting remote task ")
    return row


def test_a_run_killed_while_it_waits_resumes_and_waits_for_the_same_task(
    settings: Settings, estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = EventStore(settings.events_url)
    with remote_agent("plan", delay_s=3) as (base, agent):
        _add(capsys, base)
        row = _kill_while_waiting(settings, estate, agent)
        resumed = _heal(capsys, estate)  # the same gap again: the open run is resumed
    assert resumed["run_id"] == row.run_id and resumed["status"] == "awaiting_approval", resumed["reason"]
    assert _approve(capsys, row.run_id)["status"] == "healed"
    assert len(agent.received) == 1  # nothing was sent twice
    detail = events.run(row.run_id)
    assert detail is not None
    assert any(e.node == "remote" and e.detail.startswith("resumed: still waiting") for e in detail.timeline)


def test_a_resumed_run_keeps_its_deadline_and_is_escalated_when_the_agent_stays_silent(
    settings: Settings, estate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with remote_agent("silent") as (base, agent):
        _add(capsys, base, timeout=5)
        row = _kill_while_waiting(settings, estate, agent)
        result = _heal(capsys, estate)
        ended = time.time()
    assert result["run_id"] == row.run_id and result["status"] == "escalated"
    assert "did not answer within 5 s" in result["reason"] and len(agent.received) == 1
    detail = EventStore(settings.events_url).run(row.run_id)
    assert detail is not None
    (sent,) = [e for e in detail.timeline if e.node == "remote" and e.detail.startswith("asked")]
    assert ended - sent.at.timestamp() < 5 + 4  # the deadline counts from the send, not the resume


def test_add_remote_names_what_is_wrong(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    assert main(["agents", "add-remote", nobody]) == 2
    assert f"no Agent Card at {nobody}" in capsys.readouterr().err
    with remote_agent("plan") as (base, _agent):
        _add(capsys, base)
        assert main(["agents", "add-remote", base]) == 2
        err = capsys.readouterr().err
        assert "exists already" in err and "--force" in err
        assert main(["agents", "add-remote", base, "--name", "ledger-two", "--kinds", "nonsense"]) == 2
        assert "kinds.0" in capsys.readouterr().err
    assert not (settings.generated_personas_dir / "ledger-two.md").exists()


def test_a_second_attempt_asks_the_remote_agent_again_once(
    settings: Settings, estate: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Each attempt's plan is its own task, each waited for through interrupt(): the failed plan's
    answer is not taken again for the retry, and no task is sent twice."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("generated_first_heals: 0\nmax_auto_risk: high\n")  # stop is high risk
    with remote_agent("retry", delay_s=0.6) as (base, agent):
        _add(capsys, base)
        args = ["heal", "--gap", GAP, "--component", "web", "--estate", str(estate), "--policy", str(policy)]
        main([*args, "--json", "-q"])
        result = json.loads(capsys.readouterr().out)
    assert result["status"] == "healed", result["reason"]
    assert [a["action"] for a in result["actions"]] == ["stop", "restart"]
    assert len(agent.received) == 2 and agent.answered == 2
    detail = EventStore(settings.events_url).run(result["run_id"])
    assert detail is not None
    asked = [e for e in detail.timeline if e.node == "remote" and e.detail.startswith("asked")]
    assert [e.data["attempt"] for e in asked] == [0, 1] and asked[0].data["task"] != asked[1].data["task"]
    waited = [e.data["waiting"] for e in detail.timeline if e.node == "remote" and "waiting" in e.data]
    assert waited == [e.data["task"] for e in asked]  # each through interrupt()
