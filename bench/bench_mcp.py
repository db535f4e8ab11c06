"""Agent coordination: MCP and A2A round trips.

- `mcp_search_memory_p95_ms`: `agentheal mcp` over stdio, driven by the official SDK's client from
  this process (a second process, as a desktop agent would), memory holding 500 past resolutions:
  the p95 of 200 warm `search_memory` calls. Goal: under 30 ms. Baseline: the same search through
  `agentheal.services.memory.search` in this process (what the tool itself calls); ratio = MCP /
  in-process, so the ratio is the protocol's cost.
- `mcp_relay_search_memory_p95_ms`: the same calls through `agentheal mcp --server URL --token T`
  (the stdio relay beside a running `agentheal serve`, which holds the 500 records): p95 of 200
  warm calls. Goal: under 30 ms, as over stdio. Baseline: `GET /memory/search` on that server from
  this process, so the ratio is what MCP and the relay add to the server's own answer.
- `remote_persona_overhead_ms`: the plan step of a remote persona (`remote_plan`: the A2A task sent
  to an a2a-sdk agent on loopback, then followed to its answer) minus the agent's own time in its
  executor (measured there), median of 40. Goal: under 20 ms. Baseline: a local persona's
  `plan_for` on the same gap.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

CALLS = 200
RECORDS = 500
GOAL_MCP_MS = 30.0
GOAL_REMOTE_MS = 20.0
_TOPICS = ["disk full", "connection refused", "config drift", "memory leak", "slow queries", "bad release",
           "stale lock", "queue stalled", "certificate expired", "dns failure"]  # fmt: skip


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def _memory_file(path: Path) -> None:
    lines = []
    for i in range(RECORDS):
        topic = _TOPICS[i % len(_TOPICS)]
        tier = ["db", "web", "api"][i % 3]
        record = {
            "gap": f"{topic} on host {i} of the {tier} tier",
            "resolution": f"fixed {topic} by step {i}",
        }
        lines.append(json.dumps({**record, "outcome": "healed"}))
    path.write_text("\n".join(lines) + "\n")


async def _mcp_calls(env: dict[str, str], args: tuple[str, ...] = ()) -> list[float]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "agentheal", "mcp", *args], env=env)
    times = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for i in range(CALLS + 5):
            started = time.perf_counter()
            result = await session.call_tool("search_memory", {"query": f"{_TOPICS[i % 10]} on a database"})
            took = time.perf_counter() - started
            if result.isError:
                raise RuntimeError(f"search_memory failed: {result.content}")
            if i >= 5:  # the first calls open memory and the embedding model
                times.append(took * 1000)
    return times


def _mcp_row() -> dict[str, Any]:
    from agentheal.config import Settings
    from agentheal.memory import Memory
    from agentheal.services.memory import search

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
        env |= {"AGENTHEAL_HOME": str(home), "AGENTHEAL_CONFIG": str(Path(tmp) / "none.toml")}
        settings = Settings(home=home)
        memory = Memory(settings)
        _memory_file(Path(tmp) / "m.jsonl")
        memory.import_jsonl(Path(tmp) / "m.jsonl")
        memory.flush()
        local = []
        for i in range(CALLS + 5):
            started = time.perf_counter()
            search(memory, f"{_TOPICS[i % 10]} on a database", 5)
            if i >= 5:
                local.append((time.perf_counter() - started) * 1000)
        del memory  # one writer per folder: the MCP server opens it next
        remote = asyncio.run(_mcp_calls(env))
    value, baseline = _p95(remote), _p95(local)
    return {
        "name": "mcp_search_memory_p95_ms",
        "value": round(value, 2),
        "unit": "ms",
        "baseline": round(baseline, 2),
        "ratio": round(value / baseline, 2),
        "goal": f"< {GOAL_MCP_MS:g} ms p95 of {CALLS} warm search_memory calls over stdio ({RECORDS} "
        "records); baseline: the same search in-process",
        "met": value < GOAL_MCP_MS,
    }


def _relay_row() -> dict[str, Any]:
    import socket
    import subprocess

    import httpx

    from agentheal.api.tokens import TokenStore
    from agentheal.config import Settings
    from agentheal.memory import Memory

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
        env |= {"AGENTHEAL_HOME": str(home), "AGENTHEAL_CONFIG": str(Path(tmp) / "none.toml")}
        settings = Settings(home=home)
        memory = Memory(settings)
        _memory_file(Path(tmp) / "m.jsonl")
        memory.import_jsonl(Path(tmp) / "m.jsonl")
        memory.flush()
        del memory  # one writer per folder: the server opens it next
        token = TokenStore(settings.home_dir).add("bench", "viewer")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        # a latency figure: the per-token rate limit (50/s) would refuse a quick host's calls
        env["AGENTHEAL_API_RATE_PER_S"] = "0"
        serve = subprocess.Popen(
            [sys.executable, "-m", "agentheal", "serve", "--port", str(port), "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if http.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if serve.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"agentheal serve did not start (exit {serve.poll()})")
                    time.sleep(0.1)
                direct = []
                for i in range(CALLS + 5):
                    started = time.perf_counter()
                    http.get("/memory/search", params={"q": f"{_TOPICS[i % 10]} on a database", "k": 5})
                    if i >= 5:
                        direct.append((time.perf_counter() - started) * 1000)
            relayed = asyncio.run(_mcp_calls(env, ("--server", base, "--token", token)))
        finally:
            serve.terminate()
            serve.wait(30)
    value, baseline = _p95(relayed), _p95(direct)
    return {
        "name": "mcp_relay_search_memory_p95_ms",
        "value": round(value, 2),
        "unit": "ms",
        "baseline": round(baseline, 2),
        "ratio": round(value / baseline, 2),
        "goal": f"< {GOAL_MCP_MS:g} ms p95 of {CALLS} warm search_memory calls through `agentheal mcp "
        f"--server` ({RECORDS} records on the server); baseline: GET /memory/search on that server",
        "met": value < GOAL_MCP_MS,
    }


def _serve_agent(port: int, own_file: Path) -> None:
    """The instant agent, in its own process (so its work does not share this one's GIL)."""
    own: list[float] = []
    _, server = _agent(own, port)
    try:
        while True:
            time.sleep(0.2)
            if own:
                with own_file.open("a") as fh:
                    fh.writelines(f"{v}\n" for v in own[:])
                own.clear()
    finally:
        server.should_exit = True


def _agent(own: list[float], port: int) -> tuple[str, Any]:
    import uvicorn
    from a2a.helpers.proto_helpers import new_data_part
    from a2a.server.agent_execution import AgentExecutor
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types import (
        AgentCapabilities,
        AgentCard,
        AgentInterface,
        AgentSkill,
        Task,
        TaskState,
        TaskStatus,
    )
    from starlette.applications import Starlette

    class Instant(AgentExecutor):
        async def execute(self, context: Any, queue: Any) -> None:
            started = time.perf_counter()
            submitted = TaskStatus(state=TaskState.TASK_STATE_SUBMITTED)
            await queue.enqueue_event(
                Task(id=context.task_id, context_id=context.context_id, status=submitted)
            )
            updater = TaskUpdater(queue, context.task_id, context.context_id)
            plan = {"hypothesis": "h", "steps": [{"action": "restart", "component": "web"}]}
            await updater.add_artifact([new_data_part(plan)], name="plan", last_chunk=True)
            await updater.complete()
            own.append((time.perf_counter() - started) * 1000)

        async def cancel(self, context: Any, queue: Any) -> None:
            raise NotImplementedError

    base = f"http://127.0.0.1:{port}"
    card = AgentCard(name="instant", description="answers at once", version="1",
                     supported_interfaces=[AgentInterface(url=f"{base}/", protocol_binding="JSONRPC",
                                                          protocol_version="1.0")],
                     capabilities=AgentCapabilities(),
                     skills=[AgentSkill(id="p", name="plan", description="p")])  # fmt: skip
    handler = DefaultRequestHandler(agent_executor=Instant(), task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return base, server


def _remote_row() -> dict[str, Any]:
    import socket
    import subprocess

    import httpx

    from agentheal.config import Settings
    from agentheal.graphs.context import HealContext
    from agentheal.models import Diagnosis, Gap, RunStatus
    from agentheal.personas import Registry
    from agentheal.protocols.a2a_client import remote_plan
    from agentheal.protocols.a2a_remote import fetch_card, persona_from_card

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    own_file = Path(tempfile.mkdtemp()) / "own.txt"
    agent = subprocess.Popen([sys.executable, __file__, "--agent", str(port), str(own_file)],
                             stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/.well-known/agent-card.json", timeout=1)
            break
        except httpx.HTTPError:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bench's A2A agent did not start") from None
            time.sleep(0.1)
    own: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(home=Path(tmp) / "home")
            ctx = HealContext(settings=settings)
            persona = persona_from_card(fetch_card(base), base)
            local = Registry.load(settings).get("availability")
            gap = Gap(text="web is down: connection refused", component="web")
            diagnosis = Diagnosis(facts=["process_down"], evidence=["pid file names a dead process"],
                                  hypothesis="web died", component="web")  # fmt: skip

            def ask() -> float:
                run_id = uuid.uuid4().hex
                ctx.events.begin_heal(gap, run_id)  # the story the task id is recorded in
                started = time.perf_counter()
                remote_plan(ctx, run_id, persona, gap, diagnosis)
                took = (time.perf_counter() - started) * 1000
                ctx.events.finish_run(run_id, RunStatus.healed, persona=persona.name, source="persona",
                                      reason=None, result={})  # fmt: skip
                return took

            for _ in range(5):  # warm: imports, connections
                ask()
            time.sleep(0.5)
            own_file.write_text("")
            remote, baseline = [], []
            for _ in range(40):
                remote.append(ask())
                started = time.perf_counter()
                local.plan_for(gap, ["process_down"], "web")
                baseline.append((time.perf_counter() - started) * 1000)
        time.sleep(0.5)
        own = [float(v) for v in own_file.read_text().split()]
    finally:
        agent.terminate()
        agent.wait(10)
    overhead = statistics.median(remote) - statistics.median(own)
    base_ms = statistics.median(baseline)
    return {
        "name": "remote_persona_overhead_ms",
        "value": round(overhead, 2),
        "unit": "ms",
        "baseline": round(base_ms, 3),
        "ratio": round(overhead / base_ms, 1) if base_ms else None,
        "goal": f"< {GOAL_REMOTE_MS:g} ms: a remote persona's plan step over A2A on loopback minus the "
        f"agent's own time ({statistics.median(own):.2f} ms); baseline: a local persona's plan_for",
        "met": overhead < GOAL_REMOTE_MS,
    }


def run() -> list[dict[str, Any]]:
    return [_mcp_row(), _relay_row(), _remote_row()]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--agent"]:
        _serve_agent(int(sys.argv[2]), Path(sys.argv[3]))
    for row in run():
        print(row)
