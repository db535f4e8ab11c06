"""Remote personas: another agent, reached over A2A (`a2a-sdk`), designs the plan for a persona.

A persona file with `remote: {a2a: URL}` is routed to like any persona. At `plan`, the gap and the
redacted findings go to the agent as an A2A task, and the run waits for its answer. The task's id is
recorded in the run's story before the wait, so a run resumed after a restart waits for the same
task (nothing is sent twice) and keeps the same deadline. The plan that comes back is parsed into
the typed plan and goes through the guard, approval and validation like any other; an agent that
does not answer in time, answers malformed, or fails the task ends the run in an escalation with
the reason. `agentheal agents add-remote URL` reads the agent's card and writes its persona file.

What the agent receives (a data part): `{"gap", "component", "findings": {"hypothesis", "facts",
"evidence"}, "actions": [{"name", "risk", "description", "args"}], "components"}`. What it answers:
an artifact with a data part `{"hypothesis", "steps": [{"action", "component", "args"}], "rollback",
"checks"}` (a plan, as the LLM planner answers it).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentheal.redaction import cut, redact

if TYPE_CHECKING:
    from agentheal.graphs.context import HealContext
    from agentheal.models import Diagnosis, Gap, Plan
    from agentheal.persona_model import Persona, RemoteAgent

__all__ = ["RemoteError", "remote_plan"]

_POLL_S = 0.2
_EVIDENCE_CHARS = 1500


class RemoteError(Exception):
    """The remote agent gave no usable plan; the message says why (it is the escalation's reason)."""


@functools.cache
def _tls() -> Any:
    """One TLS context for every call: making one costs tens of milliseconds."""
    import httpx

    return httpx.create_ssl_context()


def _client_config(remote: RemoteAgent) -> tuple[Any, Any]:
    import httpx
    from a2a.client import ClientConfig

    headers = {}
    if remote.token_env:
        token = os.environ.get(remote.token_env)
        if not token:
            raise RemoteError(f"the environment variable {remote.token_env} (the agent's token) is not set")
        headers["Authorization"] = f"Bearer {token}"
    http = httpx.AsyncClient(headers=headers, timeout=30, verify=_tls())
    return http, ClientConfig(httpx_client=http, streaming=False, polling=True)


async def _ask(
    name: str,
    remote: RemoteAgent,
    sent: tuple[str, float] | None,
    message: Callable[[], Any],
    record: Callable[[str], tuple[str, float]],
) -> Any:
    """Send the task (unless `sent`: a resumed run's), record it, and wait for its answer; the task
    once it is terminal or needs input, None at the deadline."""
    from a2a.client import create_client

    http, config = _client_config(remote)
    async with http:
        try:
            client = await create_client(remote.a2a, client_config=config)
        except Exception as exc:  # unreachable, no card: the run escalates with it
            raise RemoteError(
                f"could not reach {name} at {remote.a2a}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            if sent is None:
                sent = record(await _send(client, message()))
            task_id, sent_at = sent
            try:
                return await _wait(client, task_id, sent_at + remote.timeout_s)
            except Exception as exc:
                raise RemoteError(f"{name} at {remote.a2a}: {type(exc).__name__}: {exc}") from None
        finally:
            await client.close()


async def _send(client: Any, message: Any) -> str:
    from a2a.types import SendMessageRequest

    try:
        async for event in client.send_message(SendMessageRequest(message=message)):
            if event.HasField("task"):
                return str(event.task.id)
            if event.HasField("message"):
                raise RemoteError("the agent answered with a message, not a task")
    except RemoteError:
        raise
    except Exception as exc:  # refused, broken: the run escalates with it
        raise RemoteError(f"the task was not taken: {type(exc).__name__}: {exc}") from None
    raise RemoteError("the agent answered no task")


async def _wait(client: Any, task_id: str, deadline: float) -> Any:
    import anyio
    from a2a.types import GetTaskRequest, TaskState

    settled = {TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_REJECTED,
               TaskState.TASK_STATE_CANCELED, TaskState.TASK_STATE_INPUT_REQUIRED,
               TaskState.TASK_STATE_AUTH_REQUIRED}  # fmt: skip
    # A quick agent is heard within milliseconds (asked every 5 ms for its first quarter second);
    # a slow one is asked less and less often, every _POLL_S at most.
    started, pause = time.monotonic(), 0.005
    while time.time() < deadline:
        task = await client.get_task(GetTaskRequest(id=task_id))
        if task.status.state in settled:
            return task
        await anyio.sleep(min(pause, max(deadline - time.time(), 0)))
        if time.monotonic() - started > 0.25:
            pause = min(pause * 2, _POLL_S)
    return None


def _payload(ctx: HealContext, persona: Persona, gap: Gap, diagnosis: Diagnosis) -> dict[str, Any]:
    from agentheal.estate.actions import CATALOGUE, args_json_schema

    actions = [
        {
            "name": n,
            "risk": s.risk.value,
            "description": s.description,
            "args": args_json_schema(s.args_model),
        }
        for n, s in CATALOGUE.items()
        if n in persona.actions and not s.read_only
    ]
    budget = ctx.settings.llm_tool_output_chars
    return {
        "gap": redact(gap.text),
        "component": gap.component,
        "kind": gap.kind.value,
        "severity": gap.severity.value,
        "findings": {
            "hypothesis": redact(diagnosis.hypothesis),
            "facts": list(diagnosis.facts),
            # redacted before cut, as every observation: a cut through a secret could leave half of it
            "evidence": [cut(redact(e), min(budget, _EVIDENCE_CHARS)) for e in diagnosis.evidence],
        },
        "actions": actions,
        "components": sorted(ctx.estate.components) if ctx.estate is not None else [],
    }


def _sent_task(ctx: HealContext, run_id: str, persona: str) -> tuple[str, float] | None:
    """The task this run already sent to `persona` (a resumed run waits for it), and when."""
    from agentheal.services.runs import node_events_after

    after, found = 0, None
    while True:
        rows = node_events_after(ctx.events, run_id, after, limit=500)
        for row in rows:
            data = row.get("data") or {}
            if row["node"] == "remote" and data.get("a2a_task") and data.get("persona") == persona:
                found = (str(data["a2a_task"]), float(data["sent_at"]))
        if len(rows) < 500:
            return found
        after = rows[-1]["id"]


def remote_plan(ctx: HealContext, run_id: str, persona: Persona, gap: Gap, diagnosis: Diagnosis) -> Plan:
    """Ask the persona's remote agent for a plan and wait for it (durably: see the module).

    Raises:
        RemoteError: no answer in time, a failed or refused task, or an answer that is not a plan.
    """
    import anyio

    remote = persona.remote
    assert remote is not None
    sent = _sent_task(ctx, run_id, persona.name)
    if sent is not None:
        ctx.say(run_id, "remote", f"resumed: still waiting for {persona.name}'s task {sent[0]}",
                {"persona": persona.name, "resumed_task": sent[0]})  # fmt: skip

    def message() -> Any:
        from a2a.helpers.proto_helpers import new_data_part, new_text_part
        from a2a.types import Message, Role

        summary = f"agentheal asks {persona.name} for a plan: {redact(gap.text)[:300]}"
        parts = [
            new_data_part(_payload(ctx, persona, gap, diagnosis), "application/json"),
            new_text_part(summary),
        ]
        return Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=parts)

    def record(task_id: str) -> tuple[str, float]:
        # in the story before the wait: a run resumed after a crash finds it and sends nothing again
        at = time.time()
        data = {"a2a_task": task_id, "persona": persona.name, "url": remote.a2a, "sent_at": at}
        ctx.say(run_id, "remote", f"asked {persona.name} at {remote.a2a} for a plan (task {task_id})", data)
        return task_id, at

    task = anyio.run(_ask, persona.name, remote, sent, message, record)
    if task is None:
        raise RemoteError(f"{persona.name} ({remote.a2a}) did not answer within {remote.timeout_s:g} s")
    return _plan_of(persona.name, task)


def _plan_of(name: str, task: Any) -> Plan:
    from a2a.helpers.proto_helpers import get_data_parts
    from a2a.types import TaskState
    from pydantic import ValidationError

    from agentheal.models import Plan, PlanReply

    state = TaskState.Name(task.status.state).removeprefix("TASK_STATE_").lower()
    said = " ".join(p.text for p in task.status.message.parts if p.HasField("text"))[:300]
    if task.status.state != TaskState.TASK_STATE_COMPLETED:
        raise RemoteError(f"{name} ended its task {state}" + (f": {said}" if said else ""))
    data = [d for a in task.artifacts for d in get_data_parts(a.parts) if isinstance(d, dict)]
    if not data:
        raise RemoteError(f"{name} answered malformed: no plan (a data part) in its artifacts")
    try:
        reply = PlanReply.model_validate(_ints(data[0]))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise RemoteError(f"{name} answered malformed: {problems}") from None
    return Plan(hypothesis=reply.hypothesis, steps=reply.steps, rollback=reply.rollback, checks=reply.checks,
                source="persona", playbook=f"remote:{name}")  # fmt: skip


def _ints(value: Any) -> Any:
    """JSON numbers through protobuf's Value come back as floats: whole ones are ints again."""
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value
